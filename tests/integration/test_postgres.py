"""The service database on a real PostgreSQL server: every read, query and answer is the one the
same world gives on SQLite (the server is started by the `postgres_url` fixture)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from sqlalchemy import func, insert, select

from serving import keys
from serving.keys import Role
from serving.runtime import Runtime
from serving.schemas import NoShowRiskRequest, RecommendRequest, WorklistRequest
from serving.store import DATA_MODELS, Audit, Plan, Store, StoreError, _table, hash_id, utcnow
from tests.integration.postgres import create_database
from tests.integration.servers import Server, call, free_port, referral_service
from tests.integration.test_serving_cli import cli
from tests.unit.test_runtime import _referral, _window

pytestmark = pytest.mark.integration

SALT = "pg-test-salt"
EVER = (pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01"))


@pytest.fixture(scope="module")
def pg(postgres_url: str, small_world: Path) -> Iterator[Store]:
    store = Store(create_database(postgres_url, "contract"), audit_salt=SALT)
    store.create()
    store.load_dataset(small_world)
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('lite') / 'referral.db'}", audit_salt=SALT)
    store.create()
    store.load_dataset(small_world)
    yield store
    store.dispose()


def _rows(store: Store, model: type[Any]) -> list[dict[str, Any]]:
    table = _table(model)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


# ---------------------------------------------------------------------------------------------
# The store.
# ---------------------------------------------------------------------------------------------


def test_tables_read_back_exactly_as_from_sqlite(pg: Store, lite: Store) -> None:
    got, want = pg.read_tables(), lite.read_tables()
    assert list(got) == list(want) == list(DATA_MODELS)
    for name in DATA_MODELS:
        assert len(want[name]), name
        # Same columns, dtypes (naive datetime64[us], bool, int64, float64, str), order and values:
        # the server's default collation is ICU en-US, so ids must still sort byte-wise.
        assert_frame_equal(got[name], want[name], check_exact=True, obj=name)


def test_ids_sort_byte_wise_whatever_the_server_locale(postgres_url: str) -> None:
    # Ids whose order differs between byte order (SQLite) and en-US collation (this server)
    ids = ["PLN-b", "PLN-B", "PLN_a", "PLN a", "PLN-A-1", "PLNa", "pln-0", "PLN-é", "PLN-z"]
    store = Store(create_database(postgres_url, "collation"))
    try:
        store.create()
        rows = [
            {
                "insurance_plan_id": i,
                "plan_name": i,
                "payer_type": "commercial",
                "plan_type": "PPO",
                "network_ids": "",
                "out_of_network_coverage": True,
            }
            for i in ids
        ]
        with store.engine.begin() as conn:
            conn.execute(insert(_table(Plan)), rows)
        assert store.read_tables(["plans"])["plans"]["insurance_plan_id"].tolist() == sorted(ids)
    finally:
        store.dispose()


def test_queries_answer_as_on_sqlite(pg: Store, lite: Store) -> None:
    upcoming = lite.upcoming_appointments(*EVER)
    assert len(upcoming)
    assert_frame_equal(pg.upcoming_appointments(*EVER), upcoming, check_exact=True)
    # An aware bound is compared as naive UTC on both (here: 6 hours after the first visit).
    start = pd.Timestamp(upcoming["appointment_at"].iloc[0]).tz_localize("America/Chicago")
    for kw in (
        {"specialty": upcoming["specialty"].value_counts().index[0]},
        {"organization_id": upcoming["organization_id"].value_counts().index[0]},
    ):
        want = lite.upcoming_appointments(start, EVER[1], **kw)
        assert len(want)
        assert_frame_equal(pg.upcoming_appointments(start, EVER[1], **kw), want, check_exact=True)
    # More patients than one IN list holds (500)
    patients = lite.read_tables(["patients"])["patients"]["patient_id"].iloc[:1200]
    events = lite.outcome_events(patients)
    assert events["patient_id"].nunique() > 500
    assert_frame_equal(pg.outcome_events(patients), events, check_exact=True)


def test_contacts_and_audit_rows_as_on_sqlite(pg: Store, lite: Store) -> None:
    appointment = str(lite.upcoming_appointments(*EVER)["appointment_id"].iloc[0])
    at = datetime(2025, 1, 2, 3, 4, 5, 678901)
    for store in (pg, lite):
        store.record_contact(appointment, "call", "transport_arranged", "k1", contacted_at=at)
        aware = datetime(2025, 1, 3, 12, 0, tzinfo=UTC)
        store.record_contact(appointment, "text", "no_answer", contacted_at=aware)
        with pytest.raises(KeyError):
            store.record_contact("AP-NOPE", "call", "no_answer")
        store.write_audit(
            request_id="r1",
            endpoint="/recommend",
            status=200,
            key_id="k1",
            role=Role.REFERRAL_UI,
            patient_id="PT0000001",
            referral_id="RF00000001",
            model_versions={"ranker": "7", "no_show": "unversioned", "n": 1.5},
            at=at,
        )
        store.write_audit(request_id="r2", endpoint="/no_show_risk", status=401)
    contacts = lite.contacts([appointment])
    assert len(contacts) == 2 and contacts["contacted_at"].iloc[1] == pd.Timestamp(
        "2025-01-03 12:00"
    )
    assert_frame_equal(pg.contacts([appointment]), contacts, check_exact=True)
    got, want = _rows(pg, Audit), _rows(lite, Audit)
    assert got[0].pop("at") == want[0].pop("at") == at
    stamps = [got[1].pop("at"), want[1].pop("at")]  # utcnow(), naive, moments apart
    assert all(s.tzinfo is None and abs(s - utcnow()) < timedelta(minutes=5) for s in stamps)
    assert got == want
    assert got[0]["patient_hash"] == hash_id("PT0000001", SALT)
    assert got[0]["model_versions"] == {"ranker": "7", "no_show": "unversioned", "n": 1.5}


def test_prediction_log_rows_as_on_sqlite(pg: Store, lite: Store) -> None:
    # Given one batch of ranker rows (item, rank) and risk rows (no item, no rank), nulls mixed
    at = datetime(2025, 2, 3, 4, 5, 6, 789012)
    rows: list[dict[str, Any]] = [
        {
            "model": "specialist-ranker",
            "model_version": "3",
            "subject": "RF1",
            "item": "S1",
            "rank": 1,
            "score": 2.5,
            "request_id": "q1",
            "as_of": at,
            "at": at,
        },
        {
            "model": "no-show",
            "model_version": "2",
            "subject": "AP1",
            "score": 0.25,
            "request_id": "q2",
            "as_of": at,
            "at": at,
        },
    ]
    for store in (pg, lite):
        assert store.log_predictions(rows) == 2
    # Then both databases read them back the same, nulls included
    got, want = (
        s.predictions().query("request_id in ('q1', 'q2')").reset_index(drop=True)
        for s in (pg, lite)
    )
    assert_frame_equal(got.drop(columns="id"), want.drop(columns="id"), check_exact=True)
    assert got["rank"].isna().tolist() == [False, True] and got["at"].tolist() == [at, at]


def test_api_keys_on_postgres(pg: Store) -> None:
    keys.clear_cache()
    made = {role: keys.create_key(pg, role) for role in Role}
    for role, (key_id, secret) in made.items():
        assert keys.verify(pg, secret) == (key_id, role)
    listed = {k["key_id"]: k for k in keys.list_keys(pg)}
    assert {key_id for key_id, _ in made.values()} <= set(listed)
    assert all(
        isinstance(k["created_at"], datetime) and k["revoked_at"] is None for k in listed.values()
    )
    key_id, secret = made[Role.OUTREACH]
    assert keys.revoke(pg, key_id)
    assert keys.verify(pg, secret) is None
    assert not keys.revoke(pg, key_id)
    assert {k["key_id"]: k for k in keys.list_keys(pg)}[key_id]["revoked_at"] is not None
    # Another process (no cache) verifies the admin key against the same server
    keys.clear_cache()
    admin_id, admin_secret = made[Role.ADMIN]
    assert keys.verify(Store(pg.url), admin_secret) == (admin_id, Role.ADMIN)
    assert keys.verify(pg, admin_secret[:-1] + ("A" if admin_secret[-1] != "A" else "B")) is None


def test_unreachable_or_malformed_urls_are_one_line_store_errors(postgres_url: str) -> None:
    refused = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{free_port()}/referral"
    unknown_db = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    for url in (refused, unknown_db):
        with pytest.raises(StoreError, match=r"^cannot connect to ") as err:
            Store(url).create()
        assert "\n" not in str(err.value) and "s3cret" not in str(err.value)
    for url in ("not a url", "postgresql+nodriver://postgres@127.0.0.1/referral"):
        with pytest.raises(StoreError, match=r"^not a usable database URL"):
            Store(url)


# ---------------------------------------------------------------------------------------------
# The CLI.
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_store_load_into_postgres_is_idempotent(
    postgres_url: str, small_world: Path, lite: Store, tmp_path: Path
) -> None:
    url = create_database(postgres_url, "cli")
    runs = [
        cli("store", "load", "--data", str(small_world), "--db", url, cwd=tmp_path) for _ in "12"
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    # The same counts printed twice (the time after them aside), and stored once
    assert runs[0].stdout.rsplit("(", 1)[0] == runs[1].stdout.rsplit("(", 1)[0]
    assert "specialists 300" in runs[1].stdout
    store = Store(url)
    try:
        want = lite.counts()
        assert {n: c for n, c in store.counts().items() if n in DATA_MODELS} == {
            n: want[n] for n in DATA_MODELS
        }
        with store.engine.connect() as conn:
            for model in DATA_MODELS.values():
                (key,) = _table(model).primary_key.columns
                distinct = conn.execute(select(func.count(func.distinct(key)))).scalar_one()
                assert distinct == want[_table(model).name]
    finally:
        store.dispose()


@pytest.mark.parametrize("kind", ["refused", "malformed"])
def test_cli_bad_database_url_is_a_one_line_error(
    kind: str, small_world: Path, tmp_path: Path
) -> None:
    url = {
        "refused": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/referral",
        "malformed": "postgresql+psycopg://postgres@127.0.0.1:notaport/referral",
    }[kind]
    for command in (["store", "load", "--data", str(small_world)], ["keys", "list"]):
        run = cli(*command, "--db", url, cwd=tmp_path)
        assert run.returncode != 0
        assert "Traceback" not in run.stderr + run.stdout
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr


# ---------------------------------------------------------------------------------------------
# The service.
# ---------------------------------------------------------------------------------------------


def _appointments(store: Store, n: int = 40) -> dict[str, Any]:
    """A /no_show_risk body: the first `n` upcoming appointments of the store, as submitted."""
    upcoming = store.upcoming_appointments(*EVER).head(n)
    fields = ["appointment_id", "patient_id", "sex", "language", "payer_type", "specialist_id"]
    fields += ["organization_id", "specialty", "urgency", "referral_type", "visit_kind"]
    return {
        "appointments": [
            {
                **{f: str(r[f]) for f in fields},
                "age": int(r["age"]),
                "distance_km": round(float(r["distance_km"]), 3),
                "booked_at": r["booked_at"].isoformat(timespec="seconds"),
                "appointment_at": r["appointment_at"].isoformat(timespec="seconds"),
                "text_reminder": bool(r["text_reminder"]),
                "outreach_call": bool(r["outreach_call"]),
            }
            for _, r in upcoming.iterrows()
        ]
    }


@pytest.mark.slow
def test_runtime_on_postgres_answers_as_on_sqlite(
    pg: Store,
    lite: Store,
    bundles: dict[str, Path],
    as_of: datetime,
) -> None:
    on_pg = Runtime(pg.url, bundles["ranker"], bundles["no_show"], now=as_of)
    on_lite = Runtime(lite.url, bundles["ranker"], bundles["no_show"], now=as_of)
    assert on_pg.load(), on_pg.not_ready_reason
    assert on_lite.load(), on_lite.not_ready_reason
    try:
        referrals = [_referral(lite), _referral(lite, insurance_plan_id="PLAN-NOPE")]
        referrals.append({**_referral(lite), "k": 20})
        for body in referrals:
            req = RecommendRequest.model_validate(body)
            want = on_lite.recommend(req, "r").model_dump()
            assert want["specialists"]
            assert on_pg.recommend(req, "r").model_dump() == want
        risk = NoShowRiskRequest.model_validate(_appointments(lite))
        want = on_lite.no_show_risk(risk, "r").model_dump()
        assert len(want["predictions"]) == 40
        assert on_pg.no_show_risk(risk, "r").model_dump() == want
        start, end = _window(lite)
        worklist = WorklistRequest(start=start.date(), end=end.date(), capacity=500)
        want = on_lite.worklist(worklist, "w").model_dump()
        assert want["rows"]
        assert on_pg.worklist(worklist, "w").model_dump() == want
    finally:
        on_pg.store.dispose()
        on_lite.store.dispose()


@pytest.mark.slow
def test_service_over_http_on_postgres_writes_the_audit_trail(
    postgres_url: str,
    small_world: Path,
    bundles: dict[str, Path],
    as_of: datetime,
    tmp_path: Path,
) -> None:
    url = create_database(postgres_url, "service")
    store = Store(url)
    try:
        store.create()
        store.load_dataset(small_world)
        key_id, secret = keys.create_key(store, Role.REFERRAL_UI)
        salt = store.audit_salt  # the database's own: the service reads the same one
        body = _referral(store)
        with referral_service(
            tmp_path,
            store_url=url,
            ranker=bundles["ranker"],
            no_show=bundles["no_show"],
            as_of=as_of.isoformat(),
        ) as base:
            status, headers, text_ = call(Server(base, store, {}, {}), "/recommend", body, secret)
        assert status == 200, text_
        assert json.loads(text_)["specialists"]
        rows = [r for r in _rows(store, Audit) if r["request_id"] == headers["x-request-id"]]
        assert len(rows) == 1, rows
        (row,) = rows
        assert (row["endpoint"], row["status"], row["key_id"]) == ("/recommend", 200, key_id)
        patient_id = str(body["referral"]["patient"]["patient_id"])
        assert row["patient_hash"] == hash_id(patient_id, salt)
        assert row["model_versions"] == {"ranker": "7", "no_show": "unversioned"}
    finally:
        store.dispose()
