"""POST /feedback and Store.apply_feedback: idempotent outcome events applied to the contract
rows, unknown ids reported per event, 422s naming field and index, roles."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text

from serving.keys import Role, create_key
from serving.runtime import Runtime
from serving.service import JSON_ENDPOINTS, dispatch
from serving.store import Store
from tests.unit.runtime_fixtures import loaded_runtime

pytestmark = pytest.mark.unit

FEEDBACK = JSON_ENDPOINTS[("POST", "/feedback")]


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory,
    small_world: Path,
    bundles: dict[str, Path],
    as_of: datetime,
) -> Runtime:
    return loaded_runtime(tmp_path_factory.mktemp("fb"), small_world, bundles, as_of)


@pytest.fixture(scope="module")
def keys(runtime: Runtime) -> dict[Role, dict[str, str]]:
    return {r: {"authorization": f"Bearer {create_key(runtime.store, r)[1]}"} for r in Role}


@pytest.fixture(scope="module")
def upcoming(runtime: Runtime, as_of: datetime) -> pd.DataFrame:
    return runtime.store.upcoming_appointments(as_of, as_of + timedelta(days=30))


def _row(store: Store, sql: str, **params: Any) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(text(sql), params).one()


def _event(appointment_id: str, at: Any, outcome: str = "no_show", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "appointment",
        "appointment_id": appointment_id,
        "outcome": outcome,
        "occurred_at": pd.Timestamp(at).isoformat(),
        **extra,
    }


def test_the_same_event_twice_is_stored_and_applied_once(
    runtime: Runtime, keys: dict[Role, dict[str, str]], upcoming: pd.DataFrame
) -> None:
    a = upcoming.iloc[0]
    event = _event(str(a["appointment_id"]), a["appointment_at"], outreach_call=True)
    first = dispatch(runtime, FEEDBACK, keys[Role.INTEGRATION], {"events": [event]})
    assert first.status == 200, first.body
    assert (first.body["recorded"], first.body["duplicates"], first.body["unknown"]) == (1, 0, [])
    row = _row(
        runtime.store,
        "SELECT outcome, outcome_at, outreach_call FROM appointments WHERE appointment_id = :a",
        a=a["appointment_id"],
    )
    assert row[0] == "no_show" and pd.Timestamp(row[1]) == a["appointment_at"] and row[2] == 1
    # the worklist no longer offers it
    assert a["appointment_id"] not in set(
        runtime.store.upcoming_appointments(
            a["appointment_at"], a["appointment_at"] + timedelta(seconds=1)
        )["appointment_id"]
    )
    # a manual change after the first delivery shows whether the replay re-applies it
    with runtime.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE appointments SET outreach_call = 0 WHERE appointment_id = :a"),
            {"a": a["appointment_id"]},
        )
    again = dispatch(runtime, FEEDBACK, keys[Role.OUTREACH], {"events": [event, event]})
    assert (again.body["recorded"], again.body["duplicates"]) == (0, 2)
    stored = _row(
        runtime.store, "SELECT count(*) FROM feedback WHERE subject = :a", a=a["appointment_id"]
    )
    assert stored[0] == 1
    row = _row(
        runtime.store,
        "SELECT outreach_call FROM appointments WHERE appointment_id = :a",
        a=a["appointment_id"],
    )
    assert row[0] == 0  # not applied a second time


def test_unknown_ids_are_reported_per_event(
    runtime: Runtime, keys: dict[Role, dict[str, str]], upcoming: pd.DataFrame
) -> None:
    a = upcoming.iloc[1]
    events = [
        _event(str(a["appointment_id"]), a["appointment_at"], "attended"),
        _event("AP-NOPE-1", a["appointment_at"]),
        {
            "kind": "referral",
            "referral_id": "RF-NOPE",
            "status": "completed",
            "occurred_at": "2025-07-01T10:00:00",
        },
    ]
    out = dispatch(runtime, FEEDBACK, keys[Role.ADMIN], {"events": events})
    assert out.status == 200
    assert out.body["recorded"] == 1 and out.body["duplicates"] == 0
    assert out.body["unknown"] == [
        {"index": 1, "field": "appointment_id"},
        {"index": 2, "field": "referral_id"},
    ]
    assert "AP-NOPE-1" not in str(out.body)


def test_a_referral_event_updates_status_and_specialist(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    rf = runtime.store.read_tables(["referrals", "specialists"])
    referral = rf["referrals"].iloc[3]
    specialist = str(rf["specialists"]["specialist_id"].iloc[5])
    at = pd.Timestamp(referral["created_at"]) + pd.Timedelta(days=400)  # later than any status
    event = {
        "kind": "referral",
        "referral_id": str(referral["referral_id"]),
        "status": "leaked",
        "occurred_at": at.isoformat(),
        "specialist_id": specialist,
    }
    out = dispatch(runtime, FEEDBACK, keys[Role.INTEGRATION], {"events": [event]})
    assert out.body["recorded"] == 1, out.body
    row = _row(
        runtime.store,
        "SELECT status, status_at, specialist_id FROM referrals WHERE referral_id = :r",
        r=referral["referral_id"],
    )
    assert (row[0], pd.Timestamp(row[1]), row[2]) == ("leaked", at, specialist)


def test_an_older_event_is_recorded_but_does_not_overwrite_a_later_one(
    runtime: Runtime, upcoming: pd.DataFrame
) -> None:
    a = upcoming.iloc[2]
    at = pd.Timestamp(a["appointment_at"])
    frame = pd.DataFrame(
        [
            {
                "kind": "appointment",
                "appointment_id": a["appointment_id"],
                "outcome": "attended",
                "occurred_at": at,
            },
            {
                "kind": "appointment",
                "appointment_id": a["appointment_id"],
                "outcome": "cancelled",
                "occurred_at": at - pd.Timedelta(days=2),
            },
            {
                "kind": "appointment",
                "appointment_id": a["appointment_id"],
                "outcome": "attended",
                "occurred_at": at,
            },
        ]
    )
    assert runtime.store.apply_feedback(frame) == (2, 1, [])
    row = _row(
        runtime.store,
        "SELECT outcome FROM appointments WHERE appointment_id = :a",
        a=a["appointment_id"],
    )
    assert row[0] == "attended"
    late = frame.iloc[[1]].assign(outcome="no_show")
    assert runtime.store.apply_feedback(late) == (1, 0, [])
    row = _row(
        runtime.store,
        "SELECT outcome FROM appointments WHERE appointment_id = :a",
        a=a["appointment_id"],
    )
    assert row[0] == "attended"


def test_apply_feedback_refuses_bad_rows_naming_column_and_row(runtime: Runtime) -> None:
    bad = pd.DataFrame(
        [
            {
                "kind": "appointment",
                "appointment_id": "X1",
                "outcome": "maybe",
                "occurred_at": "2025-07-01",
            }
        ]
    )
    with pytest.raises(ValueError, match="row 0: outcome") as err:
        runtime.store.apply_feedback(bad)
    assert "maybe" not in str(err.value)


def test_bad_events_are_422_naming_field_and_index(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    events = [
        _event("AP1", "2025-07-01T08:00:00"),
        {"kind": "visit", "appointment_id": "AP2"},
        _event("AP3", "2025-07-01T08:00:00", outcome="maybe-SECRET"),
        {**_event("AP4", "2025-07-01T08:00:00"), "occurred_at": "2025-07-01T08:00:00Z"},
        {
            "kind": "referral",
            "referral_id": "RF1",
            "status": "completed",
            "occurred_at": "2025-07-01T08:00:00",
            "specialist_id": "123",
        },
    ]
    out = dispatch(runtime, FEEDBACK, keys[Role.ADMIN], {"events": events})
    assert out.status == 422
    fields = {e["field"] for e in out.body["errors"]}
    assert {
        "events.1.kind",
        "events.2.outcome",
        "events.3.occurred_at",
        "events.4.specialist_id",
    } <= fields
    assert "SECRET" not in str(out.body) and "visit" not in str(out.body)
    assert (
        dispatch(runtime, FEEDBACK, keys[Role.ADMIN], {"events": []}).body["errors"][0]["field"]
        == "events"
    )
    many = {"events": [_event(f"AP{i}", "2025-07-01T08:00:00") for i in range(10_001)]}
    assert dispatch(runtime, FEEDBACK, keys[Role.ADMIN], many).status == 422


def test_roles_and_audit(
    runtime: Runtime, keys: dict[Role, dict[str, str]], upcoming: pd.DataFrame
) -> None:
    a = upcoming.iloc[4]
    body = {"events": [_event(str(a["appointment_id"]), a["appointment_at"], "attended")]}
    assert dispatch(runtime, FEEDBACK, keys[Role.REFERRAL_UI], body).status == 403
    assert dispatch(runtime, FEEDBACK, {}, body).status == 401
    out = dispatch(runtime, FEEDBACK, keys[Role.INTEGRATION], body)
    assert out.status == 200
    row = _row(
        runtime.store,
        "SELECT endpoint, role, status FROM audit WHERE request_id = :r",
        r=out.body["request_id"],
    )
    assert tuple(row) == ("/feedback", "integration", 200)
    # an integration key may call nothing else that scores
    risk = JSON_ENDPOINTS[("POST", "/no_show_risk")]
    assert dispatch(runtime, risk, keys[Role.INTEGRATION], {"appointments": []}).status == 403
