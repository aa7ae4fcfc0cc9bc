"""Bulk feedback: new bookings and later outcomes into the service store, from files.

    referral-ml feedback bookings --data OUT/later --db URL    # the period's new rows, no outcomes
    referral-ml feedback load FILE|OUT/later --db URL           # outcomes, as POST /feedback does

`bookings` appends the new plans, slots, referrals and appointments of a later period (as
`referral-ml generate --later-months` writes them, or the same contract columns from your
systems) with their outcomes removed: what the store knows when the bookings arrive. `load`
then applies the outcomes idempotently through `Store.apply_feedback`: from a feedback file (CSV
or Parquet, the columns of POST /feedback's events) or from a later-period folder (the outcomes
of its appointments, and of the base appointments in its `updates/`; the final referral
statuses). A bad row of a file is reported with its line and the rest is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.contract import TABLES

BOOKING_TABLES = ("plans", "availability", "referrals", "appointments")
APPOINTMENT_OUTCOMES = ("attended", "no_show", "cancelled")
REFERRAL_STATUSES = ("scheduled", "completed", "leaked")
EVENT_COLUMNS = (
    "kind",
    "appointment_id",
    "referral_id",
    "outcome",
    "status",
    "occurred_at",
    "outreach_call",
    "specialist_id",
)


@dataclass
class FeedbackResult:
    """What a load did: events recorded, duplicates, unknown ids and rejected file lines."""

    recorded: int = 0
    duplicates: int = 0
    unknown: list[str] = field(default_factory=list)  # "line N: appointment_id not in the store"
    rejected: list[str] = field(default_factory=list)  # "line N: <column> <problem>"


def append_bookings(store_url: str, later: Path) -> dict[str, int]:
    """Append a later period's new rows to the store, appointment outcomes and final referral
    statuses removed (referrals arrive 'sent', or 'scheduled' when booked)."""
    from serving.store import Store

    frames: dict[str, pd.DataFrame] = {}
    for name in BOOKING_TABLES:
        path = later / f"{name}.parquet"
        if path.exists():
            frames[name] = pd.read_parquet(path, columns=list(TABLES[name]))
    if "appointments" not in frames:
        raise FileNotFoundError(f"{later}: no appointments.parquet (is it a later-period folder?)")
    ap = frames["appointments"].copy()
    ap["outcome"] = pd.array([None] * len(ap), dtype="string")
    ap["outcome_at"] = pd.NaT
    frames["appointments"] = ap
    if "referrals" in frames:
        rf = frames["referrals"].copy()
        booked = rf["referral_id"].isin(ap["referral_id"])
        rf["status"] = pd.array(["scheduled" if b else "sent" for b in booked], dtype="string")
        rf["status_at"] = rf["created_at"]
        frames["referrals"] = rf
    store = Store(store_url)
    try:
        return store.load_frames(frames, replace=False)
    finally:
        store.dispose()


def events_from_period(later: Path) -> pd.DataFrame:
    """Feedback events of a later-period folder: each appointment's outcome (new ones and the
    base ones in updates/) and each referral's final status."""
    parts = []
    for folder in (later, later / "updates"):
        path = folder / "appointments.parquet"
        if path.exists():
            ap = pd.read_parquet(path)
            ap = ap[ap["outcome"].isin(APPOINTMENT_OUTCOMES) & ap["outcome_at"].notna()]
            parts.append(
                pd.DataFrame(
                    {
                        "kind": "appointment",
                        "appointment_id": ap["appointment_id"].astype(str),
                        "outcome": ap["outcome"].astype(str),
                        "occurred_at": pd.to_datetime(ap["outcome_at"]),
                        "outreach_call": ap["outreach_call"].astype(bool),
                    }
                )
            )
        path = folder / "referrals.parquet"
        if path.exists():
            rf = pd.read_parquet(path)
            rf = rf[rf["status"].isin(REFERRAL_STATUSES) & rf["status_at"].notna()]
            parts.append(
                pd.DataFrame(
                    {
                        "kind": "referral",
                        "referral_id": rf["referral_id"].astype(str),
                        "status": rf["status"].astype(str),
                        "occurred_at": pd.to_datetime(rf["status_at"]),
                        "specialist_id": rf["specialist_id"],
                    }
                )
            )
    if not parts:
        raise FileNotFoundError(f"{later}: no appointments or referrals to take outcomes from")
    return pd.concat(parts, ignore_index=True)


def read_event_file(path: Path) -> tuple[pd.DataFrame, list[str], list[int]]:
    """Events from a CSV or Parquet file with POST /feedback's columns: (valid rows, the
    rejected lines with their problem, the file line of each valid row). Lines count from 1
    with the header as line 1 (CSV); Parquet rows count from 1."""
    if path.suffix.lower() in (".parquet", ".pq"):
        raw = pd.read_parquet(path)
        offset = 1
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        offset = 2
    unknown_columns = [c for c in raw.columns if c not in EVENT_COLUMNS]
    if unknown_columns or "kind" not in raw.columns:
        raise ValueError(
            f"{path.name}: columns must be among {', '.join(EVENT_COLUMNS)} with 'kind' "
            f"(unexpected: {', '.join(map(str, unknown_columns)) or 'none'})"
        )
    rejected, keep, lines = [], [], []
    for i, row in enumerate(raw.to_dict("records")):
        line = i + offset

        def value(name: str, row: dict = row) -> str:
            v = row.get(name)
            return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).strip()

        kind = value("kind")
        problem = None
        if kind == "appointment":
            if not value("appointment_id"):
                problem = "appointment_id is missing"
            elif value("outcome") not in APPOINTMENT_OUTCOMES:
                problem = f"outcome must be one of {', '.join(APPOINTMENT_OUTCOMES)}"
        elif kind == "referral":
            if not value("referral_id"):
                problem = "referral_id is missing"
            elif value("status") not in REFERRAL_STATUSES:
                problem = f"status must be one of {', '.join(REFERRAL_STATUSES)}"
        else:
            problem = "kind must be appointment or referral"
        if problem is None:
            try:
                pd.Timestamp(value("occurred_at"))
                if not value("occurred_at"):
                    raise ValueError
            except ValueError:
                problem = "occurred_at is not a date-time"
        if problem is None and value("outreach_call") not in ("", "true", "false", "True", "False"):
            problem = "outreach_call must be true or false"
        if problem:
            rejected.append(f"line {line}: {problem}")
        else:
            keep.append(i)
            lines.append(line)
    events = raw.iloc[keep].reset_index(drop=True).copy()
    if len(events):
        events["occurred_at"] = pd.to_datetime(events["occurred_at"])
        if "outreach_call" in events.columns:
            events["outreach_call"] = events["outreach_call"].map(
                lambda v: None if str(v) == "" else str(v).lower() == "true"
            )
        for c in events.columns:
            if c not in ("occurred_at", "outreach_call"):
                events[c] = events[c].map(lambda v: None if v == "" else v)
    return events, rejected, lines


def load_feedback(store_url: str, source: Path) -> FeedbackResult:
    """Apply the events of a feedback file or a later-period folder to the store."""
    from serving.store import Store

    if source.is_dir():
        events, rejected = events_from_period(source), list[str]()
        lines = list(range(1, len(events) + 1))
        what = "event"
    else:
        events, rejected, lines = read_event_file(source)
        what = "line"
    result = FeedbackResult(rejected=rejected)
    if events.empty:
        return result
    store = Store(store_url)
    try:
        recorded, duplicates, unknown = store.apply_feedback(events)
    finally:
        store.dispose()
    result.recorded, result.duplicates = recorded, duplicates
    for pos in unknown:
        column = "appointment_id" if events["kind"].iloc[pos] == "appointment" else "referral_id"
        result.unknown.append(f"{what} {lines[pos]}: {column} not in the store")
    return result
