"""The service's database: directory, calendars, history, upcoming visits, API keys and audit.

SQLAlchemy 2 with typed declarative models. A SQLite file by default (``sqlite:///referral.db``,
embedded, zero set-up), PostgreSQL by URL (``postgresql+psycopg://user@host/db``). The schema
uses only portable types (String, Integer, Double, Boolean, naive DateTime, JSON), so the same
code runs on both. What differs on PostgreSQL:

* the contract tables' strings use the "C" collation (byte order, as SQLite compares), so
  ordering by id and the indexes do not depend on the server's default locale;
* bulk loads send each chunk of rows as one ``INSERT ... SELECT FROM unnest(<arrays>)`` with
  binary parameters (about three times faster than executemany); SQLite uses executemany;
* pooled connections are checked before use (``pool_pre_ping``): a server restart does not
  break the next request;
* on a SQLite file, the two statements of every request (the key lookup, the audit row) run on
  a per-thread sqlite3 connection with the SQL and type conversions SQLAlchemy compiled for
  them (`DirectSqlite`): SQLAlchemy's pool checkout and execution machinery cost three times
  the statements themselves. PostgreSQL keeps its pooled connections for them.

The data-contract tables mirror ``features.contract.TABLES`` column for column, except that
``patients`` never stores the audit-only ``race_ethnicity`` (it is not even read from the files).
Contract timestamps are naive clinic-local wall-clock times, as in the files; the service's own
timestamps (audit, contacts, keys) are naive UTC.

No foreign keys between the contract tables: availability and appointments refer to each other
(a circular pair), bulk loads would have to be ordered, and referential integrity is what
``referral-ml validate`` checks before a dataset is loaded.

Nothing here logs patient identifiers or attributes; audit rows hold HMAC-SHA256 hashes of
patient and referral ids (``hash_id``), salted per database (or by ``REFERRAL_ML_AUDIT_SALT``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Engine,
    Index,
    Integer,
    Select,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql.dml import Insert

from features.contract import AUDIT_ONLY_COLUMNS
from features.geo import haversine_km
from features.no_show import FLAT_OPTIONAL, FLAT_REQUIRED
from serving.schemas import ContactChannel, ContactOutcome

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "sqlite:///referral.db"
SALT_ENV: Final = "REFERRAL_ML_AUDIT_SALT"
CHUNK_ROWS: Final = 20_000  # rows per executemany batch while loading


def utcnow() -> datetime:
    """The current time as naive UTC (how the service's own timestamps are stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


def hash_id(value: str, salt: str) -> str:
    """HMAC-SHA256 of an identifier keyed by `salt`, as 64 hex characters (for the audit trail)."""
    return hmac.new(salt.encode("utf-8"), str(value).encode("utf-8"), hashlib.sha256).hexdigest()


# Strings of the contract tables: byte-wise ("C") collation on PostgreSQL, like SQLite's BINARY,
# so `ORDER BY id` gives the same order on both whatever the server's locale (and btree
# comparisons skip the locale's collation rules).
Str: Final = String().with_variant(String(collation="C"), "postgresql")


class StoreError(ValueError):
    """The database URL is unusable or the server cannot be reached (a one-line message without
    the password)."""


class Base(DeclarativeBase):
    """Declarative base of every table of the service database."""


# ---------------------------------------------------------------------------------------------
# Data-contract tables (loaded from a dataset folder).
# ---------------------------------------------------------------------------------------------


class Organization(Base):
    __tablename__ = "organizations"

    organization_id: Mapped[str] = mapped_column(Str, primary_key=True)
    name: Mapped[str] = mapped_column(Str)
    kind: Mapped[str] = mapped_column(Str)
    system_id: Mapped[str | None] = mapped_column(Str)
    metro: Mapped[str] = mapped_column(Str)
    address_line: Mapped[str] = mapped_column(Str)
    city: Mapped[str] = mapped_column(Str)
    state: Mapped[str] = mapped_column(Str)
    postal_code: Mapped[str] = mapped_column(Str)
    latitude: Mapped[float] = mapped_column(Double)
    longitude: Mapped[float] = mapped_column(Double)


class Plan(Base):
    __tablename__ = "plans"

    insurance_plan_id: Mapped[str] = mapped_column(Str, primary_key=True)
    plan_name: Mapped[str] = mapped_column(Str)
    payer_type: Mapped[str] = mapped_column(Str)
    plan_type: Mapped[str] = mapped_column(Str)
    network_ids: Mapped[str] = mapped_column(Str)  # '|'-joined; '' = open network
    out_of_network_coverage: Mapped[bool] = mapped_column(Boolean)


class Patient(Base):
    """What recommendations and risk need; never race/ethnicity (audit-only, kept out)."""

    __tablename__ = "patients"

    patient_id: Mapped[str] = mapped_column(Str, primary_key=True)
    birth_year: Mapped[int] = mapped_column(Integer)
    sex: Mapped[str] = mapped_column(Str)
    preferred_language: Mapped[str] = mapped_column(Str)
    latitude: Mapped[float] = mapped_column(Double)
    longitude: Mapped[float] = mapped_column(Double)
    insurance_plan_id: Mapped[str] = mapped_column(Str)  # payer_type comes from plans


class ReferringProvider(Base):
    __tablename__ = "referring_providers"

    provider_id: Mapped[str] = mapped_column(Str, primary_key=True)
    first_name: Mapped[str] = mapped_column(Str)
    last_name: Mapped[str] = mapped_column(Str)
    organization_id: Mapped[str] = mapped_column(Str)


class Specialist(Base):
    __tablename__ = "specialists"
    __table_args__ = (Index("ix_specialists_specialty", "specialty"),)

    specialist_id: Mapped[str] = mapped_column(Str, primary_key=True)
    first_name: Mapped[str] = mapped_column(Str)
    last_name: Mapped[str] = mapped_column(Str)
    sex: Mapped[str] = mapped_column(Str)
    languages: Mapped[str] = mapped_column(Str)
    specialty: Mapped[str] = mapped_column(Str)
    focus_codes: Mapped[str] = mapped_column(Str)
    organization_id: Mapped[str] = mapped_column(Str, index=True)
    network_ids: Mapped[str] = mapped_column(Str)
    accepted_plan_ids: Mapped[str] = mapped_column(Str)
    latitude: Mapped[float] = mapped_column(Double)
    longitude: Mapped[float] = mapped_column(Double)
    accepting_new_patients: Mapped[bool] = mapped_column(Boolean)
    weekly_capacity: Mapped[int] = mapped_column(Integer)
    rating: Mapped[float | None] = mapped_column(Double)
    review_count: Mapped[int] = mapped_column(Integer)


class Slot(Base):
    __tablename__ = "availability"
    __table_args__ = (Index("ix_availability_specialist_start", "specialist_id", "start"),)

    slot_id: Mapped[str] = mapped_column(Str, primary_key=True)
    specialist_id: Mapped[str] = mapped_column(Str)
    start: Mapped[datetime] = mapped_column(DateTime)
    end: Mapped[datetime] = mapped_column(DateTime)
    slot_type: Mapped[str] = mapped_column(Str)
    status: Mapped[str] = mapped_column(Str)
    booked_at: Mapped[datetime | None] = mapped_column(DateTime)
    appointment_id: Mapped[str | None] = mapped_column(Str)


class Referral(Base):
    __tablename__ = "referrals"

    referral_id: Mapped[str] = mapped_column(Str, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    patient_id: Mapped[str] = mapped_column(Str, index=True)
    referring_provider_id: Mapped[str | None] = mapped_column(Str)
    specialty: Mapped[str] = mapped_column(Str)
    reason_code: Mapped[str] = mapped_column(Str)
    urgency: Mapped[str] = mapped_column(Str)
    referral_type: Mapped[str] = mapped_column(Str)
    specialist_id: Mapped[str | None] = mapped_column(Str, index=True)
    status: Mapped[str] = mapped_column(Str)
    status_at: Mapped[datetime | None] = mapped_column(DateTime)


class Appointment(Base):
    __tablename__ = "appointments"

    appointment_id: Mapped[str] = mapped_column(Str, primary_key=True)
    referral_id: Mapped[str] = mapped_column(Str, index=True)
    patient_id: Mapped[str] = mapped_column(Str, index=True)
    specialist_id: Mapped[str] = mapped_column(Str, index=True)
    slot_id: Mapped[str] = mapped_column(Str)
    visit_kind: Mapped[str] = mapped_column(Str)
    booked_at: Mapped[datetime] = mapped_column(DateTime)
    appointment_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    text_reminder: Mapped[bool] = mapped_column(Boolean)
    outreach_call: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str | None] = mapped_column(Str)
    outcome_at: Mapped[datetime | None] = mapped_column(DateTime)


# ---------------------------------------------------------------------------------------------
# The service's own tables.
# ---------------------------------------------------------------------------------------------


class Contact(Base):
    """Outreach contact log: one row per attempt, by appointment. `note` is the coordinator's
    short free text (it may name a person or a time: it is stored here, never logged)."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    appointment_id: Mapped[str] = mapped_column(String, index=True)
    contacted_at: Mapped[datetime] = mapped_column(DateTime)  # naive UTC
    channel: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(200))


# Columns added after a table's first release: (table, column, DDL type). `create()` adds those an
# existing database lacks (create_all only creates missing tables).
_ADDED_COLUMNS: Final = (("contacts", "note", "VARCHAR(200)"),)


def _add_missing_columns(conn: Connection) -> None:
    inspector = inspect(conn)
    for table, column, ddl in _ADDED_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


class Audit(Base):
    """One row per request: who, what, hashed ids, model versions, status."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_key_at", "key_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)  # naive UTC
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[str | None] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(64))
    patient_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    referral_hash: Mapped[str | None] = mapped_column(String(64))
    model_versions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[int] = mapped_column(Integer)


class ApiKey(Base):
    """API keys: only a salted slow hash of the secret is stored (see serving.keys)."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)  # naive UTC
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class Prediction(Base):
    """The prediction log: one row per score the service returned (or, for the worklist,
    computed). `subject` is the appointment id (no-show, outreach-uplift) or the referral id
    (specialist-ranker, only when the request named one); `item` the ranked specialist; never a
    patient id. `at` is naive UTC; `as_of` the service's clock when it scored (clinic-local,
    like the contract's timestamps: a synthetic world's snapshot time under REFERRAL_ML_NOW),
    which monitoring compares with the visit's time."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_model_subject", "model", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)  # naive UTC
    as_of: Mapped[datetime | None] = mapped_column(DateTime)  # the service's clock
    request_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(32))  # no-show | specialist-ranker | outreach-uplift
    model_version: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(64))
    item: Mapped[str | None] = mapped_column(String(64))
    rank: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Double)


class Feedback(Base):
    """Outcome events pushed to POST /feedback (or loaded in bulk): one row per distinct event.
    The unique key (kind, subject, outcome, occurred_at) makes a replayed event a duplicate."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("kind", "subject", "outcome", "occurred_at", name="uq_feedback_event"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # appointment | referral
    subject: Mapped[str] = mapped_column(String(64))  # appointment_id | referral_id
    outcome: Mapped[str] = mapped_column(String(16))  # the outcome or the referral status
    occurred_at: Mapped[datetime] = mapped_column(DateTime)  # clinic-local, as the contract
    outreach_call: Mapped[bool | None] = mapped_column(Boolean)
    specialist_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime)  # naive UTC


class Setting(Base):
    """Small per-database settings (the audit salt when none comes from the environment)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


# Contract tables the store holds, in load order, with their models.
DATA_MODELS: Final[dict[str, type[Base]]] = {
    "organizations": Organization,
    "plans": Plan,
    "patients": Patient,
    "referring_providers": ReferringProvider,
    "specialists": Specialist,
    "availability": Slot,
    "referrals": Referral,
    "appointments": Appointment,
}
SERVICE_MODELS: Final[dict[str, type[Base]]] = {
    "contacts": Contact,
    "audit": Audit,
    "api_keys": ApiKey,
    "predictions": Prediction,
    "feedback": Feedback,
}

PREDICTION_MODELS: Final = ("no-show", "specialist-ranker", "outreach-uplift")
APPOINTMENT_OUTCOMES: Final = ("attended", "no_show", "cancelled")
REFERRAL_STATUSES: Final = ("scheduled", "completed", "leaked")
FEEDBACK_KINDS: Final = {"appointment": APPOINTMENT_OUTCOMES, "referral": REFERRAL_STATUSES}

# The flat per-appointment columns of features.no_show.flatten_world, without race/ethnicity.
UPCOMING_COLUMNS: Final = (*FLAT_REQUIRED, *FLAT_OPTIONAL, "outcome", "outcome_at")


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@functools.cache
def _insert_statement(model: type[Base]) -> Insert:
    """The INSERT of a table, built once: building the statement and its cache key on every
    call cost as much as the write itself (the audit row, the prediction log: once or twice
    per request)."""
    return insert(_table(model))


def _columns(name: str) -> list[str]:
    return [c.name for c in _table(DATA_MODELS[name]).columns]


def _kind(column: Any) -> str:
    """'datetime', 'bool', 'int', 'float' or 'str' for a column's SQLAlchemy type."""
    t = column.type
    if isinstance(t, DateTime):
        return "datetime"
    if isinstance(t, Boolean):
        return "bool"
    if isinstance(t, Integer):
        return "int"
    if isinstance(t, Double):
        return "float"
    return "str"


def _python_values(series: pd.Series, kind: str) -> list[Any]:
    """A column as Python values for the DB driver, nulls as None."""
    missing = series.isna().to_numpy()
    if kind == "datetime":
        values = pd.to_datetime(series).dt.to_pydatetime()
        out = values.tolist() if isinstance(values, np.ndarray) else list(values)
    elif kind == "bool":
        out = [bool(v) for v in series.to_numpy(dtype=object)]
    elif kind == "int":
        out = series.to_numpy(dtype=object).tolist()
        out = [int(v) if v is not None and not pd.isna(v) else None for v in out]
    elif kind == "float":
        out = series.to_numpy(dtype=float, na_value=np.nan).tolist()
    else:
        out = series.astype(object).tolist()
    if missing.any():
        for i in np.flatnonzero(missing):
            out[i] = None
    return out


def _frame(rows: Sequence[Any], columns: Sequence[Any]) -> pd.DataFrame:
    """Result rows as a DataFrame with the parquet files' dtypes (str, bool, int64, float64,
    datetime64[us]); nulls as NaN/NaT."""
    names = [c.name for c in columns]
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    data: dict[str, pd.Series] = {}
    for col, cells in zip(columns, by_column, strict=True):
        values = pd.Series(cells, dtype=object)
        kind = _kind(col)
        if kind == "datetime":
            data[col.name] = pd.to_datetime(values, format="ISO8601").astype("datetime64[us]")
        elif kind == "bool":
            data[col.name] = values.astype(bool)
        elif kind == "int":  # a nullable column with nulls (the prediction log's rank): float
            data[col.name] = (
                pd.to_numeric(values) if values.isna().any() else values.astype("int64")
            )
        elif kind == "float":
            data[col.name] = pd.to_numeric(values).astype("float64")
        else:
            data[col.name] = values.astype("str")
    return pd.DataFrame(data, columns=names)


class Store:
    """The service database behind one SQLAlchemy engine."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        audit_salt: str | None = None,
        checkpoint_seconds: float | None = None,
        **engine_kw: Any,
    ):
        """`url`: SQLAlchemy URL (default: the SQLite file referral.db in the working directory).
        `audit_salt`: key of the audit hashes (default: $REFERRAL_ML_AUDIT_SALT, else a random
        salt created once per database and kept in its settings table).
        `checkpoint_seconds` (SQLite files; servers): copy the write-ahead log into the database
        from a background thread every that many seconds, instead of in whichever commit
        crosses SQLite's 1,000-page threshold (which then fsyncs and copies the log before it
        returns: about a third of a /no_show_risk request's time, amortised, as it writes 2,000
        prediction-log rows)."""
        self.url = url
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() != "sqlite":
                engine_kw.setdefault("pool_pre_ping", True)
            self.engine: Engine = create_engine(parsed, **engine_kw)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = "; PostgreSQL: postgresql+psycopg://user@host/db" if "postgres" in url else ""
            raise StoreError(f"not a usable database URL ({first}{hint})") from None
        self._audit_salt = audit_salt or os.environ.get(SALT_ENV) or None
        self.direct: DirectSqlite | None = None
        self._checkpointer: _Checkpointer | None = None
        if self.engine.dialect.name == "sqlite":
            database = _sqlite_file(self.engine)
            if database is not None and checkpoint_seconds is not None:
                self._checkpointer = _Checkpointer(database, checkpoint_seconds)
            pragmas = functools.partial(_sqlite_pragmas, autocheckpoint=self._checkpointer is None)
            event.listen(self.engine, "connect", pragmas)
            if database is not None:
                self.direct = DirectSqlite(database, self.engine.dialect, pragmas)

    def create(self) -> None:
        """Create the tables and indexes that do not exist yet. Raises StoreError when the
        database cannot be reached."""
        try:
            connection = self.engine.connect()
        except DBAPIError as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            reason = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
            raise StoreError(f"cannot connect to {where}: {reason}") from None
        with connection as conn:
            Base.metadata.create_all(conn)
            _add_missing_columns(conn)
            conn.commit()

    def dispose(self) -> None:
        """Close the engine's pooled connections (and the direct SQLite ones)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        if self.direct is not None:
            self.direct.close()

    def select_one(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of a SELECT (a plain tuple, values converted as SQLAlchemy would), or
        None: on the direct SQLite connection when there is one (for statements on the request
        path, built once), else on a pooled connection."""
        if self.direct is not None:
            return self.direct.select_one(statement, params)
        with self.engine.connect() as conn:
            row = conn.execute(statement, dict(params)).first()
        return None if row is None else tuple(row)

    # -- loading --------------------------------------------------------------------------------

    def load_dataset(self, directory: Path, replace: bool = True) -> dict[str, int]:
        """Load a dataset folder's Parquet files (as written by `referral-ml generate`) in one
        transaction; returns rows loaded per table. `replace` empties the contract tables first
        (the service tables: contacts, audit, keys are kept); without it rows are appended and a
        duplicate key raises. `referring_providers.parquet` is optional; the others are required.
        Run `referral-ml validate` first: types are converted here, values are not checked."""
        directory = Path(directory)
        frames: dict[str, pd.DataFrame] = {}
        for name in DATA_MODELS:
            path = directory / f"{name}.parquet"
            if not path.exists():
                if name == "referring_providers":
                    continue
                raise FileNotFoundError(f"{path} is missing")
            wanted = [c for c in _columns(name) if c not in AUDIT_ONLY_COLUMNS]
            present = _parquet_columns(path)
            missing = [c for c in wanted if c not in present]
            if missing:
                raise ValueError(f"{path.name}: missing columns {missing}")
            frames[name] = pd.read_parquet(path, columns=wanted)  # race/ethnicity never read
        return self.load_frames(frames, replace=replace)

    def load_frames(self, frames: dict[str, pd.DataFrame], replace: bool = True) -> dict[str, int]:
        """Load contract tables (columns as in the Parquet files) in one transaction; returns rows
        loaded per table. `replace` empties every contract table first, as `load_dataset` does."""
        t0 = time.perf_counter()
        counts: dict[str, int] = {}
        with self.engine.begin() as conn:
            if replace:
                for name in reversed(DATA_MODELS):
                    conn.execute(delete(_table(DATA_MODELS[name])))
            for name, df in frames.items():
                df = df.drop(columns=[c for c in AUDIT_ONLY_COLUMNS if c in df.columns])
                table = _table(DATA_MODELS[name])
                values = [_python_values(df[c.name], _kind(c)) for c in table.columns]
                _insert(conn, table, values)
                counts[name] = len(df)
        log.info(
            "loaded %s rows into %s tables in %.1f s",
            sum(counts.values()),
            len(counts),
            time.perf_counter() - t0,
        )
        return counts

    # -- reading --------------------------------------------------------------------------------

    def read_tables(self, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Contract tables as DataFrames with the Parquet files' column names and dtypes
        (strings, bools, int64, float64, naive datetime64), ordered by primary key.
        `patients` has no race_ethnicity column."""
        wanted = list(DATA_MODELS) if names is None else list(names)
        unknown = [n for n in wanted if n not in DATA_MODELS]
        if unknown:
            raise KeyError(f"not a stored contract table: {unknown}")
        out: dict[str, pd.DataFrame] = {}
        with self.engine.connect() as conn:
            for name in wanted:
                table = _table(DATA_MODELS[name])
                cols = list(table.columns)
                rows = conn.execute(select(*cols).order_by(*table.primary_key.columns)).all()
                out[name] = _frame(rows, cols)
        return out

    def patient(self, patient_id: str) -> dict[str, Any] | None:
        """One stored patient's matching fields (no race/ethnicity: never stored), or None."""
        cols = [
            Patient.birth_year,
            Patient.sex,
            Patient.preferred_language,
            Patient.latitude,
            Patient.longitude,
            Patient.insurance_plan_id,
        ]
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).where(Patient.patient_id == patient_id)).first()
        return None if row is None else dict(row._mapping)

    def upcoming_appointments(
        self,
        start: datetime | pd.Timestamp,
        end: datetime | pd.Timestamp,
        specialty: str | None = None,
        organization_id: str | None = None,
        *,
        include_outcomes: bool = False,
    ) -> pd.DataFrame:
        """Appointments without an outcome with start <= appointment_at < end, optionally of one
        specialty and/or organization, as the flat no-show rows (UPCOMING_COLUMNS, the columns
        of features.no_show.flatten_world without race/ethnicity), ordered by time.
        `include_outcomes`: those with an outcome too (monitoring rebuilds their features)."""
        ap, pt, sp, rf, pl = (_table(m) for m in (Appointment, Patient, Specialist, Referral, Plan))
        query = (
            select(
                ap.c.appointment_id,
                ap.c.booked_at,
                ap.c.appointment_at,
                ap.c.patient_id,
                pt.c.birth_year,
                pt.c.sex,
                pt.c.preferred_language.label("language"),
                pl.c.payer_type,
                pt.c.latitude.label("patient_latitude"),
                pt.c.longitude.label("patient_longitude"),
                sp.c.latitude.label("specialist_latitude"),
                sp.c.longitude.label("specialist_longitude"),
                sp.c.specialty,
                ap.c.specialist_id,
                sp.c.organization_id,
                rf.c.urgency,
                rf.c.referral_type,
                ap.c.visit_kind,
                ap.c.text_reminder,
                ap.c.outreach_call,
                ap.c.outcome,
                ap.c.outcome_at,
            )
            .select_from(ap)
            .outerjoin(pt, pt.c.patient_id == ap.c.patient_id)
            .outerjoin(pl, pl.c.insurance_plan_id == pt.c.insurance_plan_id)
            .outerjoin(sp, sp.c.specialist_id == ap.c.specialist_id)
            .outerjoin(rf, rf.c.referral_id == ap.c.referral_id)
            .where(ap.c.appointment_at >= _naive(start), ap.c.appointment_at < _naive(end))
            .order_by(ap.c.appointment_at, ap.c.appointment_id)
        )
        if not include_outcomes:
            query = query.where(ap.c.outcome.is_(None))
        if specialty is not None:
            query = query.where(sp.c.specialty == specialty)
        if organization_id is not None:
            query = query.where(sp.c.organization_id == organization_id)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            rows = result.all()
        cols = list(query.selected_columns)
        df = _frame(rows, cols)
        if df["birth_year"].dtype != "int64":  # a patient missing from the table
            df["birth_year"] = pd.to_numeric(df["birth_year"], errors="coerce")
        df["age"] = df["appointment_at"].dt.year.to_numpy() - df["birth_year"].to_numpy(dtype=float)
        df["distance_km"] = haversine_km(
            df["patient_latitude"].to_numpy(dtype=float),
            df["patient_longitude"].to_numpy(dtype=float),
            df["specialist_latitude"].to_numpy(dtype=float),
            df["specialist_longitude"].to_numpy(dtype=float),
        )
        return df[list(UPCOMING_COLUMNS)]

    def outcome_events(self, patient_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Recorded outcomes of these patients' appointments (every patient's with None):
        patient_id, specialist_id, organization_id, outcome, outcome_at, ordered by patient and
        time: the history for no-show features."""
        ap, sp = _table(Appointment), _table(Specialist)
        cols = [
            ap.c.patient_id,
            ap.c.specialist_id,
            sp.c.organization_id,
            ap.c.outcome,
            ap.c.outcome_at,
        ]
        base = (
            select(*cols)
            .select_from(ap)
            .outerjoin(sp, sp.c.specialist_id == ap.c.specialist_id)
            .where(ap.c.outcome.is_not(None), ap.c.outcome_at.is_not(None))
            # appointment_id breaks ties: the same order on every database
            .order_by(ap.c.patient_id, ap.c.outcome_at, ap.c.appointment_id)
        )
        rows: list[Any] = []
        with self.engine.connect() as conn:
            if patient_ids is None:
                rows.extend(conn.execute(base).all())
            else:
                ids = sorted({str(p) for p in patient_ids})
                for lo in range(0, len(ids), 500):  # bounded IN lists
                    query = base.where(ap.c.patient_id.in_(ids[lo : lo + 500]))
                    rows.extend(conn.execute(query).all())
        return _frame(rows, cols)

    # -- service tables -------------------------------------------------------------------------

    def record_contact(
        self,
        appointment_id: str,
        channel: ContactChannel | str,
        outcome: ContactOutcome | str,
        key_id: str | None = None,
        contacted_at: datetime | None = None,
        note: str | None = None,
    ) -> int:
        """Log one outreach attempt for a stored appointment; returns the contact's id.
        Raises KeyError for an unknown appointment and ValueError for an unknown channel or
        outcome (neither message echoes the submitted value)."""
        try:
            channel = ContactChannel(channel)
        except ValueError:
            raise ValueError(
                f"channel must be one of {', '.join(c.value for c in ContactChannel)}"
            ) from None
        try:
            outcome = ContactOutcome(outcome)
        except ValueError:
            raise ValueError(
                f"outcome must be one of {', '.join(o.value for o in ContactOutcome)}"
            ) from None
        with Session(self.engine) as session, session.begin():
            if session.get(Appointment, appointment_id) is None:
                raise KeyError("unknown appointment_id")
            contact = Contact(
                appointment_id=appointment_id,
                contacted_at=_naive(contacted_at) if contacted_at else utcnow(),
                channel=channel.value,
                outcome=outcome.value,
                key_id=key_id,
                note=note,
            )
            session.add(contact)
            session.flush()
            return contact.id

    def contacts(self, appointment_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The contact log (all of it, or for these appointments), oldest first."""
        table = _table(Contact)
        cols = list(table.columns)
        query = select(*cols).order_by(table.c.contacted_at, table.c.id)
        if appointment_ids is not None:
            query = query.where(table.c.appointment_id.in_(list(appointment_ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(rows, cols)

    # -- prediction log and outcome feedback ----------------------------------------------------

    def log_predictions(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append prediction-log rows (columns of `Prediction` but id; `at` defaults to now,
        UTC) in one bulk insert; returns the rows written. Callers on the request path catch
        failures themselves (a log write never fails a request)."""
        if not rows:
            return 0
        now = utcnow()
        table = _table(Prediction)
        cols = [c for c in table.columns if c.name != "id"]
        values = [[r.get(c.name) for r in rows] for c in cols]
        at = [c.name for c in cols].index("at")
        values[at] = [v or now for v in values[at]]
        with self.engine.begin() as conn:
            _insert(conn, table, values, cols)
        return len(rows)

    def predictions(self, model: str | None = None) -> pd.DataFrame:
        """The prediction log (of one model, or all), oldest first."""
        table = _table(Prediction)
        cols = list(table.columns)
        query = select(*cols).order_by(table.c.id)
        if model is not None:
            query = query.where(table.c.model == model)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(rows, cols)

    def apply_feedback(self, events: pd.DataFrame) -> tuple[int, int, list[int]]:
        """Record outcome events and apply them to the contract rows; idempotent.

        `events`: one row per event, columns
            kind           "appointment" or "referral" (required)
            appointment_id the appointment (kind appointment)
            referral_id    the referral (kind referral)
            outcome        attended | no_show | cancelled (kind appointment)
            status         scheduled | completed | leaked (kind referral)
            occurred_at    when it happened: clinic-local naive (an aware time is converted
                           to UTC and made naive)
            outreach_call  optional bool (appointment; null: leave the stored value)
            specialist_id  optional (referral: the specialist chosen; null: leave it)
        Absent optional columns are null. Values must already be valid (the HTTP layer's
        pydantic models check them); a bad kind, outcome or status, or a missing id or time,
        raises ValueError naming the column and row position (never the value).

        Returns (recorded, duplicates, unknown): `recorded` events new to the `feedback` table
        (unique on kind, subject id, outcome/status, occurred_at); `duplicates` those already
        stored or repeated earlier in `events` (stored once, applied once); `unknown` the
        positions (0-based, in `events` order) whose appointment/referral id is not in the
        store (neither stored nor applied). Each recorded event updates its contract row
        (appointments.outcome/outcome_at/outreach_call, referrals.status/status_at/
        specialist_id) unless the row already holds a later event (outcome_at/status_at after
        occurred_at); of several new events for one row the latest applies. One transaction."""
        n = len(events)
        if n == 0:
            return 0, 0, []
        ev = events.reset_index(drop=True)

        def column(name: str) -> list[Any]:
            if name not in ev.columns:
                return [None] * n
            return [None if _is_null(v) else v for v in ev[name].astype(object)]

        kinds, outcomes, statuses = column("kind"), column("outcome"), column("status")
        appointment_ids, referral_ids = column("appointment_id"), column("referral_id")
        calls, specialists, times = (
            column("outreach_call"),
            column("specialist_id"),
            column("occurred_at"),
        )
        parsed: list[tuple[str, str, str, datetime, Any, Any]] = []
        for i in range(n):
            kind = kinds[i]
            if kind not in FEEDBACK_KINDS:
                raise ValueError(f"row {i}: kind must be appointment or referral")
            subject = appointment_ids[i] if kind == "appointment" else referral_ids[i]
            id_column = "appointment_id" if kind == "appointment" else "referral_id"
            value = outcomes[i] if kind == "appointment" else statuses[i]
            value_column = "outcome" if kind == "appointment" else "status"
            if subject is None or str(subject) == "":
                raise ValueError(f"row {i}: {id_column} is required")
            if value not in FEEDBACK_KINDS[kind]:
                allowed = ", ".join(FEEDBACK_KINDS[kind])
                raise ValueError(f"row {i}: {value_column} must be one of {allowed}")
            if times[i] is None:
                raise ValueError(f"row {i}: occurred_at is required")
            try:
                at = _naive(times[i])
            except (ValueError, TypeError):
                raise ValueError(f"row {i}: occurred_at must be a date-time") from None
            call = None if calls[i] is None else bool(calls[i])
            extra = call if kind == "appointment" else specialists[i]
            parsed.append((kind, str(subject), str(value), at, extra, None))
        for attempt in range(2):  # a concurrent insert of the same event: retry once
            try:
                return self._apply_feedback(parsed)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _apply_feedback(
        self, parsed: list[tuple[str, str, str, datetime, Any, Any]]
    ) -> tuple[int, int, list[int]]:
        fb, ap, rf = _table(Feedback), _table(Appointment), _table(Referral)
        with self.engine.begin() as conn:
            known: dict[str, set[str]] = {}
            stored: set[tuple[str, str, str, datetime]] = set()
            for kind, key in (
                ("appointment", ap.c.appointment_id),
                ("referral", rf.c.referral_id),
            ):
                ids = sorted({p[1] for p in parsed if p[0] == kind})
                known[kind] = set()
                for lo in range(0, len(ids), 500):  # bounded IN lists
                    chunk = ids[lo : lo + 500]
                    known[kind].update(
                        str(v) for v in conn.execute(select(key).where(key.in_(chunk))).scalars()
                    )
                    query = select(fb.c.kind, fb.c.subject, fb.c.outcome, fb.c.occurred_at).where(
                        fb.c.kind == kind, fb.c.subject.in_(chunk)
                    )
                    stored.update(
                        (str(k), str(s), str(o), _naive(t)) for k, s, o, t in conn.execute(query)
                    )
            unknown: list[int] = []
            new: list[dict[str, Any]] = []
            duplicates = 0
            received = utcnow()
            for i, (kind, subject, value, at, extra, _) in enumerate(parsed):
                if subject not in known[kind]:
                    unknown.append(i)
                    continue
                key4 = (kind, subject, value, at)
                if key4 in stored:
                    duplicates += 1
                    continue
                stored.add(key4)
                new.append(
                    {
                        "kind": kind,
                        "subject": subject,
                        "outcome": value,
                        "occurred_at": at,
                        "outreach_call": extra if kind == "appointment" else None,
                        "specialist_id": None
                        if kind == "appointment" or extra is None
                        else str(extra),
                        "received_at": received,
                    }
                )
            if new:
                conn.execute(insert(fb), new)
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            for row in sorted(new, key=lambda r: r["occurred_at"]):
                latest[(row["kind"], row["subject"])] = row  # the latest event per contract row
            appointment_updates = [
                {
                    "b_id": r["subject"],
                    "b_outcome": r["outcome"],
                    "b_at": r["occurred_at"],
                    "b_call": r["outreach_call"],
                }
                for (kind, _), r in latest.items()
                if kind == "appointment"
            ]
            referral_updates = [
                {
                    "b_id": r["subject"],
                    "b_status": r["outcome"],
                    "b_at": r["occurred_at"],
                    "b_specialist": r["specialist_id"],
                }
                for (kind, _), r in latest.items()
                if kind == "referral"
            ]
            if appointment_updates:
                conn.execute(
                    update(ap)
                    .where(ap.c.appointment_id == bindparam("b_id"))
                    .where(ap.c.outcome_at.is_(None) | (ap.c.outcome_at <= bindparam("b_at")))
                    .values(
                        outcome=bindparam("b_outcome"),
                        outcome_at=bindparam("b_at"),
                        outreach_call=func.coalesce(bindparam("b_call"), ap.c.outreach_call),
                    ),
                    appointment_updates,
                )
            if referral_updates:
                conn.execute(
                    update(rf)
                    .where(rf.c.referral_id == bindparam("b_id"))
                    .where(rf.c.status_at.is_(None) | (rf.c.status_at <= bindparam("b_at")))
                    .values(
                        status=bindparam("b_status"),
                        status_at=bindparam("b_at"),
                        specialist_id=func.coalesce(bindparam("b_specialist"), rf.c.specialist_id),
                    ),
                    referral_updates,
                )
        return len(new), duplicates, unknown

    def no_show_log(self, start: datetime, end: datetime) -> pd.DataFrame:
        """No-show predictions of appointments with start <= appointment_at < end, joined to
        the stored appointment (time, outcome), its patient's birth year and payer type (never
        the patient id): as_of, at, model_version, appointment_id, score, appointment_at,
        outcome, birth_year, payer_type; one row per logged prediction, oldest first."""
        pr, ap, pt, pl = (_table(m) for m in (Prediction, Appointment, Patient, Plan))
        query = (
            select(
                pr.c.as_of,
                pr.c.at,
                pr.c.model_version,
                pr.c.subject.label("appointment_id"),
                pr.c.score,
                ap.c.appointment_at,
                ap.c.outcome,
                pt.c.birth_year,
                pl.c.payer_type,
            )
            .select_from(pr)
            .join(ap, ap.c.appointment_id == pr.c.subject)
            .outerjoin(pt, pt.c.patient_id == ap.c.patient_id)
            .outerjoin(pl, pl.c.insurance_plan_id == pt.c.insurance_plan_id)
            .where(pr.c.model == "no-show")
            .where(ap.c.appointment_at >= _naive(start), ap.c.appointment_at < _naive(end))
            .order_by(pr.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        df = _frame(rows, list(query.selected_columns))
        df["birth_year"] = pd.to_numeric(df["birth_year"], errors="coerce")
        return df

    def ranker_log(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Ranker predictions logged with start <= as_of < end for stored referrals, with the
        referral's status and chosen specialist: as_of, request_id, referral_id, item, rank,
        status, chosen_specialist_id; oldest first."""
        pr, rf = _table(Prediction), _table(Referral)
        query = (
            select(
                pr.c.as_of,
                pr.c.request_id,
                pr.c.subject.label("referral_id"),
                pr.c.item,
                pr.c.rank,
                rf.c.status,
                rf.c.specialist_id.label("chosen_specialist_id"),
            )
            .select_from(pr)
            .join(rf, rf.c.referral_id == pr.c.subject)
            .where(pr.c.model == "specialist-ranker")
            .where(pr.c.as_of >= _naive(start), pr.c.as_of < _naive(end))
            .order_by(pr.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(rows, list(query.selected_columns))

    def get_setting(self, name: str) -> str | None:
        with Session(self.engine) as session:
            row = session.get(Setting, name)
            return None if row is None else row.value

    def set_setting(self, name: str, value: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.merge(Setting(name=name, value=value))

    @property
    def audit_salt(self) -> str:
        """The key of the audit hashes: given, from the environment, or this database's own."""
        if self._audit_salt is None:
            with Session(self.engine) as session, session.begin():
                row = session.get(Setting, "audit_salt")
                if row is None:
                    row = Setting(name="audit_salt", value=secrets.token_hex(32))
                    session.add(row)
                self._audit_salt = row.value
        return self._audit_salt

    def write_audit(
        self,
        *,
        request_id: str,
        endpoint: str,
        status: int,
        key_id: str | None = None,
        role: str | None = None,
        patient_id: str | None = None,
        referral_id: str | None = None,
        model_versions: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append one audit row; patient and referral ids are stored only as hash_id hashes.
        Returns the row id."""
        salt = self.audit_salt
        row = {
            "at": _naive(at) if at else utcnow(),
            "request_id": request_id,
            "key_id": key_id,
            "role": str(role) if role is not None else None,
            "endpoint": endpoint,
            "patient_hash": hash_id(patient_id, salt) if patient_id else None,
            "referral_hash": hash_id(referral_id, salt) if referral_id else None,
            "model_versions": model_versions,
            "status": int(status),
        }
        if self.direct is not None:
            return self.direct.insert(_table(Audit), row)
        # SQLAlchemy Core, not an ORM session: one row per request, on the request path
        with self.engine.begin() as conn:
            result = conn.execute(_insert_statement(Audit), row)
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def counts(self) -> dict[str, int]:
        """Rows per table (contract and service tables)."""
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for name, model in {**DATA_MODELS, **SERVICE_MODELS}.items():
                out[name] = int(
                    conn.execute(select(func.count()).select_from(_table(model))).scalar_one()
                )
        return out


# PostgreSQL array types of the column kinds, for the unnest bulk insert.
_PG_ARRAYS: Final = {
    "datetime": "timestamp[]",
    "bool": "boolean[]",
    "int": "bigint[]",
    "float": "double precision[]",
    "str": "text[]",
}


def _insert(
    conn: Connection,
    table: Table,
    values: list[list[Any]],
    columns: Sequence[Column[Any]] | None = None,
) -> None:
    """Insert rows given column by column (`values` in the order of `columns`, default every
    column of the table), CHUNK_ROWS at a time.

    psycopg (PostgreSQL): one ``INSERT INTO t (...) SELECT * FROM unnest(%b::type[], ...)`` per
    chunk, each column one binary array parameter: a round trip and a statement per chunk
    instead of per row, and no per-row parameter handling in Python or SQLAlchemy. Elsewhere
    (SQLite): the driver's executemany of the chunk's rows, each column's values converted once
    by its type's bind processor (SQLAlchemy's own executemany built and processed a parameter
    dict per row: 48 ms for the 2,000 prediction-log rows of one /no_show_risk request)."""
    cols = list(table.columns) if columns is None else list(columns)
    n = len(values[0]) if values else 0
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        quote = conn.dialect.identifier_preparer.quote
        arrays = ", ".join(f"%b::{_PG_ARRAYS[_kind(c)]}" for c in cols)
        sql = (
            f"INSERT INTO {conn.dialect.identifier_preparer.format_table(table)} "
            f"({', '.join(quote(c.name) for c in cols)}) SELECT * FROM unnest({arrays})"
        )
        for lo in range(0, n, CHUNK_ROWS):
            conn.exec_driver_sql(sql, tuple(v[lo : lo + CHUNK_ROWS] for v in values))
        return
    names = [c.name for c in cols]
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=names)
    dialect = conn.dialect  # the dialect's own type (SQLite's DATETIME writes its text format)
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
    converted = [_bound(v, p) for v, p in zip(values, processors, strict=True)]
    if compiled.positional and compiled.positiontup is not None:
        order = [names.index(k) for k in compiled.positiontup]
        rows: list[Any] = list(zip(*(converted[i] for i in order), strict=True))
    else:
        rows = [dict(zip(names, row, strict=True)) for row in zip(*converted, strict=True)]
    for lo in range(0, n, CHUNK_ROWS):
        conn.exec_driver_sql(str(compiled), rows[lo : lo + CHUNK_ROWS])


def _bound(values: list[Any], process: Callable[[Any], Any] | None) -> list[Any]:
    """A column's values as the driver takes them (its type's bind processor; each distinct
    value converted once: a log batch shares its times and request id)."""
    if process is None:
        return values
    done: dict[Any, Any] = {}
    out = []
    for v in values:
        try:
            out.append(done[v] if v in done else done.setdefault(v, process(v)))
        except TypeError:  # an unhashable value (a JSON document)
            out.append(process(v))
    return out


def _naive(value: datetime | pd.Timestamp) -> datetime:
    """A naive datetime (an aware one is converted to UTC first)."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _is_null(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or other container: not a null
        return False


def _parquet_columns(path: Path) -> set[str]:
    return set(pq.read_schema(path).names)


class DirectSqlite:
    """Statements on the request path, run on a per-thread sqlite3 connection (autocommit: an
    INSERT is its own transaction; a SELECT sees every committed change, a key revoked by
    another worker included). SQLAlchemy compiles each statement once for the SQLite dialect;
    its bind and result processors convert the values, so rows are stored and read exactly as
    through the engine. Only for a SQLite file (an in-memory database is per connection)."""

    def __init__(
        self, database: str, dialect: Any, pragmas: Callable[[Any, Any], None] | None = None
    ) -> None:
        self.database = database
        self.dialect = dialect
        self._pragmas = pragmas or _sqlite_pragmas
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []
        self._generation = 0  # bumped by close(): threads then reconnect
        self._selects: dict[int, tuple[Select[Any], str, list[str], list[Any]]] = {}
        self._inserts: dict[tuple[str, tuple[str, ...]], tuple[str, list[Any]]] = {}

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        key = (self._generation, os.getpid())
        if getattr(local, "key", None) != key:
            conn = sqlite3.connect(
                self.database, timeout=5.0, isolation_level=None, check_same_thread=False
            )
            self._pragmas(conn, None)
            with self._lock:
                self._open.append(conn)
            local.conn, local.key = conn, key
        return local.conn  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            self._generation += 1
            opened, self._open = self._open, []
        for conn in opened:
            conn.close()

    def select_one(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        compiled = self._selects.get(id(statement))
        if compiled is None or compiled[0] is not statement:
            c = statement.compile(dialect=self.dialect)
            names = list(c.positiontup or [])
            results = [
                col.type.dialect_impl(self.dialect).result_processor(self.dialect, None)
                for col in statement.selected_columns
            ]
            compiled = (statement, c.string, names, results)
            self._selects[id(statement)] = compiled
        _, sql, names, results = compiled
        row = self._connection().execute(sql, [params[n] for n in names]).fetchone()
        if row is None:
            return None
        return tuple(v if f is None else f(v) for f, v in zip(results, row, strict=True))

    def insert(self, table: Table, row: Mapping[str, Any]) -> int:
        """INSERT one row (its keys are the columns); returns the new row id."""
        key = (table.name, tuple(row))
        compiled = self._inserts.get(key)
        if compiled is None:
            c = insert(table).compile(dialect=self.dialect, column_keys=list(row))
            binds = [
                table.c[name].type.dialect_impl(self.dialect).bind_processor(self.dialect)
                for name in (c.positiontup or [])
            ]
            if list(c.positiontup or []) != list(row):
                raise ValueError(f"unexpected parameter order for {table.name}")
            compiled = (c.string, binds)
            self._inserts[key] = compiled
        sql, binds = compiled
        values = [v if f is None else f(v) for f, v in zip(binds, row.values(), strict=True)]
        cursor = self._connection().execute(sql, values)
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)


def _sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite engine; None for an in-memory (per connection) database."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class _Checkpointer:
    """A daemon thread that checkpoints a SQLite file's write-ahead log every `seconds`
    (PASSIVE: it copies what no reader still needs and never blocks readers or writers; a
    checkpoint another process is running makes it wait for the next turn)."""

    def __init__(self, database: str, seconds: float) -> None:
        self.database = database
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.seconds):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.database, timeout=5.0, isolation_level=None)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the next turn tries again
                log.debug("WAL checkpoint skipped (%s)", type(exc).__name__)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, autocheckpoint: bool = True) -> None:
    """SQLite connection settings: wait for locks instead of failing at once; WAL for files so
    readers are not blocked by a writer; no checkpoints in commits when a `_Checkpointer` runs
    them in the background (`autocheckpoint=False`)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    if not autocheckpoint:
        cursor.execute("PRAGMA wal_autocheckpoint = 0")
    cursor.close()
