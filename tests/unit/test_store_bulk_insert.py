"""The store's bulk insert (the driver's executemany with values converted by each column's
type) writes exactly what SQLAlchemy's own executemany writes: same stored text for times,
booleans, JSON and nulls, so reads, comparisons and ordering in SQL are unchanged."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from serving.store import Appointment, Audit, Store, _insert, _table

pytestmark = pytest.mark.unit

APPOINTMENTS = [
    {
        "appointment_id": f"A{i}",
        "referral_id": "R1",
        "patient_id": "P1",
        "specialist_id": "S1",
        "slot_id": f"SL{i}",
        "visit_kind": "new",
        "booked_at": datetime(2025, 6, 1, 9, 0, 0),  # whole seconds: no fraction in the text
        "appointment_at": datetime(2025, 7, 1, 10, 30, 15, 250_000 * i),
        "text_reminder": bool(i % 2),
        "outreach_call": False,
        "outcome": None if i == 0 else "attended",
        "outcome_at": None if i == 0 else datetime(2025, 7, 1, 11, 0),
    }
    for i in range(3)
]
AUDIT = [
    {
        "id": i + 1,
        "at": datetime(2026, 1, 2, 3, 4, 5, 6),
        "request_id": f"req{i}",
        "key_id": None,
        "role": "admin",
        "endpoint": "/recommend",
        "patient_hash": None,
        "referral_hash": "h",
        "model_versions": None if i else {"no-show": "3", "ranker": "1"},
        "status": 200,
    }
    for i in range(2)
]


def _raw(store: Store, table: str) -> list[tuple[object, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]


@pytest.mark.parametrize(("model", "rows"), [(Appointment, APPOINTMENTS), (Audit, AUDIT)])
def test_bulk_insert_stores_what_sqlalchemy_stores(
    tmp_path: Path, model: type, rows: list[dict[str, object]]
) -> None:
    # Given the same rows written by SQLAlchemy Core and by the bulk path
    core, bulk = (
        Store(f"sqlite:///{tmp_path / 'core.db'}"),
        Store(f"sqlite:///{tmp_path / 'bulk.db'}"),
    )
    core.create()
    bulk.create()
    table = _table(model)
    with core.engine.begin() as conn:
        conn.execute(insert(table), rows)
    with bulk.engine.begin() as conn:
        _insert(conn, table, [[r[c.name] for r in rows] for c in table.columns])
    # Then the database holds the same text, numbers and nulls
    name = str(table.name)
    assert _raw(bulk, name) == _raw(core, name)
    assert len(_raw(bulk, name)) == len(rows)


def test_prediction_log_round_trips(tmp_path: Path) -> None:
    # Given a batch of prediction-log rows sharing their times and request id
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    store.create()
    at = datetime(2026, 12, 2, 12, 0, 0, 123_456)
    rows = [
        {
            "model": "no-show",
            "model_version": "2",
            "subject": f"A{i}",
            "score": i / 10,
            "request_id": "r",
            "as_of": at,
            **({"at": at} if i else {}),
        }
        for i in range(4)
    ]
    # When they are logged
    assert store.log_predictions(rows) == 4
    logged = store.predictions("no-show")
    # Then every row is there with its values; a row without `at` got the time of the write
    assert list(logged["subject"]) == ["A0", "A1", "A2", "A3"]
    assert list(logged["score"]) == [0.0, 0.1, 0.2, 0.3]
    assert (logged["as_of"] == at).all() and (logged["at"].iloc[1:] == at).all()
    assert logged["at"].iloc[0] > at
    assert logged["item"].isna().all()
