"""The service database: bulk load, faithful read-back, worklist query, API keys, audit trail."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from features.contract import TABLES
from features.no_show import build_features, flatten_world, history_events
from features.ranking import RankingContext, pair_features
from features.retrieval import DirectoryIndex, RetrievalRequest
from serving import keys
from serving.keys import Role
from serving.store import DATA_MODELS, UPCOMING_COLUMNS, Store, hash_id
from tests.unit.pair_fixtures import patient_pairs

pytestmark = pytest.mark.unit

KEYS = {
    "organizations": "organization_id",
    "plans": "insurance_plan_id",
    "patients": "patient_id",
    "referring_providers": "provider_id",
    "specialists": "specialist_id",
    "availability": "slot_id",
    "referrals": "referral_id",
    "appointments": "appointment_id",
}


@pytest.fixture(scope="module")
def parquet(small_world: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'referral.db'}", audit_salt="s1")
    store.create()
    store.load_dataset(small_world)
    return store


@pytest.fixture(scope="module")
def from_db(loaded: Store) -> dict[str, pd.DataFrame]:
    return loaded.read_tables()


def _db_text(store: Store, table: str) -> str:
    """Every cell of a table as one string, to scan for things that must not be there."""
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT * FROM {table}")).all()
    return "\n".join("|".join(str(v) for v in row) for row in rows)


def _normalised(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Parquet data in the store's read-back dtypes (str, datetime64[us]), sorted by key."""
    out = df.sort_values(key, kind="stable").reset_index(drop=True)
    for col in out.columns:
        if pd.api.types.is_datetime64_dtype(out[col]):
            out[col] = out[col].astype("datetime64[us]")
        elif pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].astype("str")
    return out


# ---------------------------------------------------------------------------------------------
# Loading and reading back.
# ---------------------------------------------------------------------------------------------


def test_load_counts_equal_the_parquet_files(
    loaded: Store, parquet: dict[str, pd.DataFrame]
) -> None:
    # Given a store loaded from the small world
    # When its tables are counted
    counts = loaded.counts()
    # Then every contract table holds exactly the file's rows
    for name in DATA_MODELS:
        assert counts[name] == len(parquet[name]), name
    assert counts["availability"] > 1_000 and counts["appointments"] > 1_000


def test_race_ethnicity_is_never_stored(loaded: Store, parquet: dict[str, pd.DataFrame]) -> None:
    # Given a world whose patients file carries race/ethnicity
    assert "race_ethnicity" in parquet["patients"].columns
    # When the stored patients table is inspected
    columns = {c["name"] for c in inspect(loaded.engine).get_columns("patients")}
    # Then the column does not exist and no value of it was written
    assert "race_ethnicity" not in columns
    assert columns == set(TABLES["patients"]) - {"race_ethnicity"}
    cells = set(_db_text(loaded, "patients").replace("\n", "|").split("|"))
    assert not cells & {"white", "black", "hispanic", "asian"}


@pytest.mark.parametrize("name", list(DATA_MODELS))
def test_read_tables_round_trips_the_parquet_data(
    name: str, from_db: dict[str, pd.DataFrame], parquet: dict[str, pd.DataFrame]
) -> None:
    # Given a table read back from the store and the same table read from its file
    got = from_db[name]
    expected = _normalised(
        parquet[name].drop(columns=["race_ethnicity"], errors="ignore"), KEYS[name]
    )
    # Then the columns, their kinds and every value are the same
    assert list(got.columns) == list(expected.columns)
    for col in got.columns:
        want = parquet[name][col].dtype
        if pd.api.types.is_datetime64_dtype(want):
            assert pd.api.types.is_datetime64_dtype(got[col]), col
        elif pd.api.types.is_bool_dtype(want):
            assert got[col].dtype == bool, col
        elif pd.api.types.is_integer_dtype(want):
            assert got[col].dtype == "int64", col
        elif pd.api.types.is_float_dtype(want):
            assert got[col].dtype == "float64", col
        else:
            assert pd.api.types.is_string_dtype(got[col]), col
    pd.testing.assert_frame_equal(got, expected)


def test_multi_value_and_null_cells_survive(
    from_db: dict[str, pd.DataFrame], parquet: dict[str, pd.DataFrame]
) -> None:
    # Given '|'-joined lists, empty lists, and nullable columns
    sp = from_db["specialists"].set_index("specialist_id")
    src = parquet["specialists"].set_index("specialist_id")
    multi = src["languages"].str.contains("|", regex=False)
    assert multi.any()
    # Then joined strings are unchanged and nulls stay nulls (not 'None' or '')
    assert (sp.loc[src.index[multi], "languages"] == src.loc[multi, "languages"]).all()
    assert (sp["focus_codes"].reindex(src.index) == src["focus_codes"]).all()
    av = from_db["availability"]
    assert (
        av["appointment_id"].isna().sum() == parquet["availability"]["appointment_id"].isna().sum()
    )
    assert not av["appointment_id"].isin(["None", "nan", ""]).any()
    ap = from_db["appointments"]
    assert ap["outcome"].isna().sum() == parquet["appointments"]["outcome"].isna().sum() > 0
    assert ap["outcome_at"].isna().sum() == parquet["appointments"]["outcome_at"].isna().sum()


def test_loading_twice_with_replace_does_not_duplicate(tmp_path: Path, small_world: Path) -> None:
    # Given a store loaded once
    store = Store(f"sqlite:///{tmp_path / 'twice.db'}")
    store.create()
    first = store.load_dataset(small_world)
    # When the same folder is loaded again, replacing
    second = store.load_dataset(small_world, replace=True)
    # Then the counts are those of one load
    assert first == second
    counts = store.counts()
    assert all(counts[name] == first[name] for name in first)
    # And appending the same rows is refused as duplicate keys (nothing half-written)
    with pytest.raises(IntegrityError):
        store.load_dataset(small_world, replace=False)
    assert store.counts() == counts


def test_a_missing_file_or_column_is_named(tmp_path: Path, small_world: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bad.db'}")
    store.create()
    folder = tmp_path / "partial"
    folder.mkdir()
    for name in ("organizations", "plans"):
        (folder / f"{name}.parquet").write_bytes((small_world / f"{name}.parquet").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"patients\.parquet"):
        store.load_dataset(folder)
    for name in TABLES:
        (folder / f"{name}.parquet").write_bytes((small_world / f"{name}.parquet").read_bytes())
    pd.read_parquet(folder / "plans.parquet").drop(columns=["payer_type"]).to_parquet(
        folder / "plans.parquet"
    )
    with pytest.raises(ValueError, match="payer_type"):
        store.load_dataset(folder)


# ---------------------------------------------------------------------------------------------
# The feature code consumes the read-back tables exactly like the files.
# ---------------------------------------------------------------------------------------------


def _context(t: dict[str, pd.DataFrame]) -> RankingContext:
    return RankingContext.build(
        t["specialists"],
        t["plans"],
        t["organizations"],
        t["availability"],
        t["appointments"],
        t["referrals"],
    )


def _pairs(t: dict[str, pd.DataFrame], specialist_ids: np.ndarray, as_of: str) -> pd.DataFrame:
    """Pairs of the first patients with the given specialists, rows in t's specialist order."""
    row_of = pd.Series(np.arange(len(t["specialists"])), index=t["specialists"]["specialist_id"])
    patients = t["patients"].sort_values("patient_id")
    return patient_pairs(patients, row_of[specialist_ids].to_numpy(), as_of)


@pytest.mark.parametrize("as_of", ["2024-06-01", "2030-01-01"])
def test_pair_features_from_the_store_equal_those_from_the_files(
    as_of: str, from_db: dict[str, pd.DataFrame], parquet: dict[str, pd.DataFrame]
) -> None:
    # Given ranking contexts built from the files and from the store's tables
    files, db = _context(parquet), _context(from_db)
    # And pairs with specialists that have history, including patients who saw them
    seen = parquet["appointments"][parquet["appointments"]["outcome"] == "attended"]
    ids = np.r_[
        seen["specialist_id"].head(10).to_numpy(),
        parquet["specialists"]["specialist_id"].to_numpy()[::7][:40],
    ]
    a_pairs, b_pairs = _pairs(parquet, ids, as_of), _pairs(from_db, ids, as_of)
    a_pairs.loc[:9, "patient_id"] = b_pairs.loc[:9, "patient_id"] = (
        seen["patient_id"].head(10).to_numpy()
    )
    # When pair features are computed on each
    a = pair_features(files, a_pairs)
    b = pair_features(db, b_pairs)
    # Then they are identical, and the history-dependent features were really exercised
    pd.testing.assert_frame_equal(a, b)
    assert a.notna().all().all()
    if as_of == "2030-01-01":
        assert a["continuity"].iloc[:10].eq(1.0).all()


def test_retrieval_from_the_store_finds_the_same_specialists(
    from_db: dict[str, pd.DataFrame], parquet: dict[str, pd.DataFrame]
) -> None:
    # Given directory indexes built from the files and from the store
    files = DirectoryIndex(_context(parquet).specialists, parquet["plans"])
    db = DirectoryIndex(_context(from_db).specialists, from_db["plans"])
    patients = parquet["patients"].head(20)
    specialties = parquet["specialists"]["specialty"].value_counts().index[:4]
    found_any = False
    for (_, p), specialty in zip(patients.iterrows(), np.resize(specialties, 20), strict=True):
        req = RetrievalRequest(
            latitude=float(p["latitude"]),
            longitude=float(p["longitude"]),
            specialty=str(specialty),
            urgency="routine",
            insurance_plan_id=str(p["insurance_plan_id"]),
            language=str(p["preferred_language"]),
        )
        # When one referral is retrieved from each
        a, b = files.retrieve(req), db.retrieve(req)
        ids_a = parquet["specialists"]["specialist_id"].to_numpy()[a.rows]
        ids_b = from_db["specialists"]["specialist_id"].to_numpy()[b.rows]
        # Then the same specialists at the same distances come back
        assert sorted(ids_a) == sorted(ids_b)
        assert np.allclose(np.sort(a.distance_km), np.sort(b.distance_km))
        found_any |= len(ids_a) > 0
    assert found_any


# ---------------------------------------------------------------------------------------------
# The worklist query.
# ---------------------------------------------------------------------------------------------


def _expected_upcoming(parquet: dict[str, pd.DataFrame], start: str, end: str) -> pd.DataFrame:
    flat = flatten_world(parquet)
    keep = (
        flat["outcome"].isna()
        & (flat["appointment_at"] >= pd.Timestamp(start))
        & (flat["appointment_at"] < pd.Timestamp(end))
    )
    return flat[keep].sort_values(["appointment_at", "appointment_id"]).reset_index(drop=True)


def test_upcoming_appointments_are_the_flat_rows_in_the_window(
    loaded: Store, parquet: dict[str, pd.DataFrame]
) -> None:
    # Given the first two weeks after the world's last recorded outcome
    ap = parquet["appointments"]
    start = ap.loc[ap["outcome"].isna(), "appointment_at"].min().normalize()
    end = start + pd.Timedelta(days=14)
    expected = _expected_upcoming(parquet, str(start), str(end))
    assert len(expected) > 10
    # When the store is asked for them
    got = loaded.upcoming_appointments(start, end)
    # Then they are exactly flatten_world's rows for those visits, without race/ethnicity
    assert list(got.columns) == list(UPCOMING_COLUMNS)
    assert "race_ethnicity" not in got.columns
    want = expected[list(UPCOMING_COLUMNS)]
    assert list(got["appointment_id"]) == list(want["appointment_id"])
    for col in ("age", "distance_km"):
        assert np.allclose(got[col].to_numpy(float), want[col].to_numpy(float)), col
    for col in ("sex", "language", "payer_type", "specialty", "urgency", "referral_type"):
        assert list(got[col].astype(str)) == list(want[col].astype(str)), col
    assert (got["appointment_at"] >= start).all() and (got["appointment_at"] < end).all()
    # And the no-show features built from them equal those built from the files
    events = history_events(flatten_world(parquet))
    a, spec = build_features(want.reset_index(drop=True), events)
    b, _ = build_features(got, events, spec)
    pd.testing.assert_frame_equal(a, b, check_exact=False)


def test_upcoming_appointments_filter_by_specialty_and_organization(
    loaded: Store, parquet: dict[str, pd.DataFrame]
) -> None:
    ap = parquet["appointments"]
    start = ap.loc[ap["outcome"].isna(), "appointment_at"].min().normalize()
    end = start + pd.Timedelta(days=30)
    everything = loaded.upcoming_appointments(start, end)
    specialty = everything["specialty"].value_counts().index[0]
    # When filtered by one specialty
    one = loaded.upcoming_appointments(start, end, specialty=specialty)
    # Then only and all of that specialty's visits come back
    assert len(one) == (everything["specialty"] == specialty).sum() > 0
    assert (one["specialty"] == specialty).all()
    # And by organization likewise
    org = one["organization_id"].iloc[0]
    by_org = loaded.upcoming_appointments(start, end, organization_id=org)
    assert len(by_org) == (everything["organization_id"] == org).sum() > 0
    # And a window before the data, or an unknown specialty, is empty (not an error)
    assert loaded.upcoming_appointments("2000-01-01", "2000-02-01").empty
    assert loaded.upcoming_appointments(start, end, specialty="000000000X").empty
    # And a narrower window is a subset
    half = loaded.upcoming_appointments(start, start + pd.Timedelta(days=7))
    assert set(half["appointment_id"]) < set(everything["appointment_id"])


def test_outcome_events_are_a_patients_history(
    loaded: Store, parquet: dict[str, pd.DataFrame]
) -> None:
    flat = flatten_world(parquet)
    patients = flat.loc[flat["outcome"].notna(), "patient_id"].unique()[:25]
    got = loaded.outcome_events(patients)
    want = history_events(flat)
    want = want[want["patient_id"].isin(patients)]
    assert len(got) == len(want) > 0
    assert set(got["patient_id"]) == set(patients)


# ---------------------------------------------------------------------------------------------
# Contacts and audit.
# ---------------------------------------------------------------------------------------------


def test_contacts_are_recorded_for_known_appointments(tmp_path: Path, small_world: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'contacts.db'}")
    store.create()
    store.load_dataset(small_world)
    appointment = store.read_tables(["appointments"])["appointments"]["appointment_id"].iloc[0]
    # When a call is recorded
    contact_id = store.record_contact(appointment, "call", "reached", key_id="k1", note="8:15")
    # Then it is in the log with a naive UTC time
    log = store.contacts([appointment])
    assert list(log["id"]) == [contact_id]
    assert log["channel"].iloc[0] == "call" and log["key_id"].iloc[0] == "k1"
    assert log["note"].iloc[0] == "8:15"
    assert abs(
        log["contacted_at"].iloc[0] - pd.Timestamp.now("UTC").tz_localize(None)
    ) < pd.Timedelta(minutes=1)
    # And unknown appointments or channels are refused without echoing the value
    with pytest.raises(KeyError):
        store.record_contact("AP-NOPE", "call", "reached")
    with pytest.raises(ValueError, match="channel must be one of") as err:
        store.record_contact(appointment, "pigeon", "reached")
    assert "pigeon" not in str(err.value)
    assert store.counts()["contacts"] == 1


def test_audit_rows_store_hashes_not_ids(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'audit.db'}", audit_salt="pepper")
    store.create()
    # When a request about a patient and a referral is audited
    store.write_audit(
        request_id="req-1",
        key_id="abc",
        role=Role.OUTREACH,
        endpoint="/no_show_risk",
        status=200,
        patient_id="PT0001234",
        referral_id="RF0009999",
        model_versions={"no-show": "7"},
    )
    # Then the raw ids appear nowhere, their keyed hashes do
    dump = _db_text(store, "audit")
    assert "PT0001234" not in dump and "RF0009999" not in dump
    assert hash_id("PT0001234", "pepper") in dump and hash_id("RF0009999", "pepper") in dump
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT role, status, model_versions FROM audit")).one()
    assert row[0] == "outreach" and row[1] == 200 and '"7"' in row[2]


def test_hash_id_is_keyed_hmac_sha256() -> None:
    expected = hmac.new(b"salt", b"PT1", hashlib.sha256).hexdigest()
    assert hash_id("PT1", "salt") == expected
    assert hash_id("PT1", "other") != expected and hash_id("PT2", "salt") != expected
    assert len(expected) == 64


def test_the_audit_salt_persists_per_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REFERRAL_ML_AUDIT_SALT", raising=False)
    url = f"sqlite:///{tmp_path / 'salt.db'}"
    first = Store(url)
    first.create()
    salt = first.audit_salt
    assert len(salt) == 64 and Store(url).audit_salt == salt
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    other.create()
    assert other.audit_salt != salt
    monkeypatch.setenv("REFERRAL_ML_AUDIT_SALT", "from-env")
    assert Store(url).audit_salt == "from-env"


# ---------------------------------------------------------------------------------------------
# API keys.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def key_store(tmp_path: Path) -> Store:
    keys.clear_cache()
    store = Store(f"sqlite:///{tmp_path / 'keys.db'}")
    store.create()
    return store


@pytest.mark.parametrize("role", list(Role))
def test_a_created_key_verifies_with_its_role(key_store: Store, role: Role) -> None:
    key_id, secret = keys.create_key(key_store, role)
    assert secret.startswith(f"rml_{key_id}_")
    assert keys.verify(key_store, secret) == (key_id, role)
    assert keys.verify(key_store, secret) == (key_id, role)  # cached path


def test_wrong_tampered_or_foreign_secrets_do_not_verify(key_store: Store) -> None:
    key_id, secret = keys.create_key(key_store, "outreach")
    other_id, other = keys.create_key(key_store, "admin")
    keys.verify(key_store, secret)  # cache the good one: tampering must not ride on it
    last = "A" if secret[-1] != "A" else "B"
    assert keys.verify(key_store, secret[:-1] + last) is None
    assert (
        keys.verify(key_store, secret.replace(key_id, other_id)) is None
    )  # right id, wrong secret
    assert keys.verify(key_store, other.replace(other_id, key_id)) is None
    assert keys.verify(key_store, f"rml_{'0' * 16}_{secret.split('_', 2)[2]}") is None
    for junk in ("", None, "rml_", secret + "x", secret.upper(), "x" * 10_000):
        assert keys.verify(key_store, junk) is None
    assert keys.verify(key_store, other) == (other_id, Role.ADMIN)


def test_a_revoked_key_stops_at_once_even_when_cached(key_store: Store) -> None:
    key_id, secret = keys.create_key(key_store, "referral_ui")
    assert keys.verify(key_store, secret) is not None
    # When it is revoked through another Store object (another worker's view of the database)
    assert keys.revoke(Store(key_store.url), key_id)
    # Then it no longer verifies here, although this process had it cached
    assert keys.verify(key_store, secret) is None
    assert not keys.revoke(key_store, key_id)  # already revoked
    listed = keys.list_keys(key_store)
    assert listed[0]["key_id"] == key_id and listed[0]["revoked_at"] is not None


def test_the_secret_is_not_stored(key_store: Store) -> None:
    key_id, secret = keys.create_key(key_store, "admin")
    random_part = secret.split("_", 2)[2]
    dump = _db_text(key_store, "api_keys")
    assert key_id in dump
    assert random_part not in dump and secret not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() not in dump
    assert "scrypt$" in dump


def test_unknown_roles_are_refused(key_store: Store) -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        keys.create_key(key_store, "superuser")
    assert key_store.counts()["api_keys"] == 0


def test_create_adds_the_note_column_to_an_older_contacts_table(tmp_path: Path) -> None:
    # Given a database whose contacts table predates the note column
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE contacts (id INTEGER PRIMARY KEY, appointment_id VARCHAR, "
                "contacted_at DATETIME, channel VARCHAR(16), outcome VARCHAR(32), "
                "key_id VARCHAR(32))"
            )
        )
    engine.dispose()
    # When the store is created on it, Then the column is there and usable
    store = Store(url)
    store.create()
    store.create()  # and a second create changes nothing
    with store.engine.connect() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("contacts")]
    assert columns.count("note") == 1


# ---------------------------------------------------------------------------------------------
# The direct SQLite path of the request statements (key lookup, audit row)
# ---------------------------------------------------------------------------------------------


def _audit_rows(store: Store) -> list[tuple[object, ...]]:
    """Every audit row as SQLite stores it (text, not converted), without the id."""
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit ORDER BY id")).all()
    return [tuple(row)[1:] for row in rows]


def test_direct_audit_rows_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}", audit_salt="s")
    store.create()
    assert store.direct is not None
    at = datetime(2026, 1, 2, 3, 4, 5, 678901)
    rows = [
        dict(request_id="r", endpoint="/recommend", status=200, key_id="k", role="admin")
        | dict(patient_id="P1", referral_id="R1", model_versions={"ranker": "3"}, at=at),
        dict(request_id="q", endpoint="/whoami", status=401, at=at),  # NULLs, JSON null
    ]
    direct = store.direct
    ids = [store.write_audit(**row) for row in rows]  # type: ignore[arg-type]
    store.direct = None  # the same rows through SQLAlchemy's engine
    ids += [store.write_audit(**row) for row in rows]  # type: ignore[arg-type]
    store.direct = direct
    assert ids == [1, 2, 3, 4]
    stored = _audit_rows(store)
    assert stored[:2] == stored[2:]
    assert stored[0][0] == "2026-01-02 03:04:05.678901" and stored[1][7] == "null"


def test_direct_select_converts_values_like_the_engine(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.create()
    key_id, _ = keys.create_key(store, "outreach")
    keys.revoke(store, key_id)
    statement = keys._key_lookup()
    direct = store.select_one(statement, {"key_id": key_id})
    store.direct = None
    through_engine = store.select_one(statement, {"key_id": key_id})
    assert direct == through_engine
    assert direct is not None and isinstance(direct[2], datetime)
    assert store.select_one(statement, {"key_id": "nobody"}) is None


def test_direct_connections_per_thread_lose_no_row(tmp_path: Path) -> None:
    # Two stores on one file (two workers), several threads each, writing at once
    url = f"sqlite:///{tmp_path / 't.db'}"
    first, second = Store(url, audit_salt="s"), Store(url, audit_salt="s")
    first.create()

    def write(store: Store, name: str) -> None:
        for i in range(40):
            store.write_audit(request_id=f"{name}-{i}", endpoint="/recommend", status=200)

    threads = [
        threading.Thread(target=write, args=(store, f"{n}{t}"))
        for n, store in (("a", first), ("b", second))
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [row[1] for row in _audit_rows(first)]
    assert len(ids) == len(set(ids)) == 8 * 40


def test_dispose_closes_direct_connections_and_the_next_call_reconnects(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'd.db'}", audit_salt="s")
    store.create()
    store.write_audit(request_id="before", endpoint="/x", status=200)
    store.dispose()
    store.write_audit(request_id="after", endpoint="/x", status=200)
    assert [row[1] for row in _audit_rows(store)] == ["before", "after"]


def test_an_in_memory_database_has_no_direct_path() -> None:
    store = Store("sqlite://", audit_salt="s")
    store.create()
    assert store.direct is None
    key_id, secret = keys.create_key(store, "admin")
    assert keys.verify(store, secret) == (key_id, Role.ADMIN)
    store.write_audit(request_id="r", endpoint="/x", status=200)
    assert [row[1] for row in _audit_rows(store)] == ["r"]


def _checkpointed_audit_ids(path: Path) -> list[str]:
    """The audit rows in the database file itself, ignoring the write-ahead log (immutable)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM audit ORDER BY id")]
    except sqlite3.OperationalError:  # the table itself is still in the log
        return []
    finally:
        conn.close()


def test_a_server_store_checkpoints_in_the_background_not_in_commits(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = Store(f"sqlite:///{path}", audit_salt="s", checkpoint_seconds=0.2)
    store.create()
    with store.engine.connect() as conn:  # commits never checkpoint on these connections
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    store.write_audit(request_id="logged", endpoint="/x", status=200)  # into the log only
    deadline = time.monotonic() + 10
    while "logged" not in _checkpointed_audit_ids(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _checkpointed_audit_ids(path) == ["logged"]  # copied into the file by the thread
    thread = store._checkpointer._thread  # type: ignore[union-attr]
    store.dispose()
    assert not thread.is_alive()


def test_a_store_without_background_checkpoints_keeps_sqlites_own(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'n.db'}", audit_salt="s")
    store.create()
    assert store._checkpointer is None
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
