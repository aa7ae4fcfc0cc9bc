"""Cross-table checks of the data contract: foreign keys, accepted plans, appointments against
their referrals and slots, and double booking.

The checks are vectorised and run on loosely typed tables (``features.validation`` converts
them), so one bad cell does not stop them; each problem is added to a ``ValidationReport``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa_
import pyarrow.compute as pc

from features import contract
from features.report import ValidationReport, show_value

_FOREIGN_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("patients", "insurance_plan_id", "plans", "insurance_plan_id"),
    ("referring_providers", "organization_id", "organizations", "organization_id"),
    ("specialists", "organization_id", "organizations", "organization_id"),
    ("availability", "specialist_id", "specialists", "specialist_id"),
    ("availability", "appointment_id", "appointments", "appointment_id"),
    ("referrals", "patient_id", "patients", "patient_id"),
    ("referrals", "referring_provider_id", "referring_providers", "provider_id"),
    ("referrals", "specialist_id", "specialists", "specialist_id"),
    ("appointments", "referral_id", "referrals", "referral_id"),
    ("appointments", "patient_id", "patients", "patient_id"),
    ("appointments", "specialist_id", "specialists", "specialist_id"),
    ("appointments", "slot_id", "availability", "slot_id"),
)


def _positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """For each value, the row of its first match in ``keys`` (-1 when absent or null); hashed."""
    found = pc.index_in(pa_.array(values, from_pandas=True), value_set=pa_.array(keys.dropna()))
    return pc.fill_null(found, -1).to_numpy().astype(np.int64)


def _lookup(values: pd.Series, parent: pd.DataFrame, key: str, column: str) -> pd.Series:
    """parent[column] of the row whose ``key`` equals each value (null where there is none)."""
    keys = parent[key]
    pos = _positions(values, keys)
    # keys.dropna() shifted the rows; map the positions back to rows of the parent.
    rows = np.flatnonzero(keys.notna().to_numpy())
    found = pos >= 0
    taken = parent[column].iloc[rows[np.where(found, pos, 0)]] if len(rows) else None
    if taken is None:
        return pd.Series(pd.NA, index=values.index, dtype=object)
    out = pd.Series(taken.to_numpy(), index=values.index, dtype=taken.dtype)
    return out.where(found)


def _no_match(values: pd.Series, column: str, parent: str, key: str) -> Callable[[int], str]:
    """The sentence for a foreign key whose value names no row of the parent table."""
    return lambda r: f"{column} {show_value(values.iat[r])} does not match any {key} in {parent}"


def cross_table_violations(report: ValidationReport, t: dict[str, pd.DataFrame]) -> None:
    """Check the (loosely typed) tables against each other; tables that are absent are skipped."""
    for child, column, parent, key in _FOREIGN_KEYS:
        if child in t and parent in t and column in t[child] and key in t[parent]:
            values = t[child][column]
            bad = values.notna().to_numpy() & (_positions(values, t[parent][key]) < 0)
            report.add_mask(
                child,
                column,
                "foreign_key",
                bad,
                _no_match(values, column, parent, key),
            )
    _accepted_plans(report, t)
    appointments = t.get("appointments")
    if appointments is None:
        return
    _appointments_vs_referrals(report, appointments, t.get("referrals"))
    _appointments_vs_slots(report, appointments, t.get("availability"))


def _accepted_plans(report: ValidationReport, t: dict[str, pd.DataFrame]) -> None:
    specialists, plans = t.get("specialists"), t.get("plans")
    if specialists is None or plans is None:
        return
    if "accepted_plan_ids" not in specialists or "insurance_plan_id" not in plans:
        return
    parts = specialists["accepted_plan_ids"].str.split(contract.SEP).explode()
    parts = parts[parts.notna() & parts.ne("")].astype("str")
    unknown = parts[_positions(parts, plans["insurance_plan_id"]) < 0]
    if not len(unknown):
        return
    first_unknown = unknown.groupby(level=0).first()
    report.add_rows(
        "specialists",
        "accepted_plan_ids",
        "foreign_key",
        first_unknown.index.to_numpy(),
        lambda r: (
            f"accepted_plan_ids names {show_value(first_unknown[r])}, which is not an "
            "insurance_plan_id in plans"
        ),
    )


def _differs(mine: pd.Series, theirs: pd.Series) -> np.ndarray:
    """True where both sides are present and unequal."""
    both = mine.notna().to_numpy() & theirs.notna().to_numpy()
    out = np.zeros(len(mine), dtype=bool)
    out[both] = mine.to_numpy()[both] != theirs.to_numpy()[both]
    return out


def _must_match(
    report: ValidationReport,
    child: pd.DataFrame,
    column: str,
    key: pd.Series,
    parent: pd.DataFrame,
    parent_key: str,
    parent_column: str,
    parent_name: str,
) -> None:
    """Each row's `column` must equal `parent_column` of the parent row it points to via `key`."""
    theirs = _lookup(key, parent, parent_key, parent_column)
    mine = child[column]
    report.add_mask(
        "appointments",
        column,
        f"matches_{parent_name}",
        _differs(mine, theirs),
        lambda r: (
            f"{column} {show_value(mine.iat[r])} differs from the {parent_column} "
            f"{show_value(theirs.iat[r])} of its {parent_name} {show_value(key.iat[r])}"
        ),
    )


def _appointments_vs_referrals(
    report: ValidationReport, appointments: pd.DataFrame, referrals: pd.DataFrame | None
) -> None:
    if referrals is None or "referral_id" not in appointments or "referral_id" not in referrals:
        return
    referral_id = appointments["referral_id"]
    if "patient_id" in appointments and "patient_id" in referrals:
        _must_match(
            report,
            appointments,
            "patient_id",
            referral_id,
            referrals,
            "referral_id",
            "patient_id",
            "referral",
        )
    if "booked_at" in appointments and "created_at" in referrals:
        created = _lookup(referral_id, referrals, "referral_id", "created_at")
        booked = appointments["booked_at"]
        bad = (booked < created).to_numpy(dtype=bool, na_value=False)
        report.add_mask(
            "appointments",
            "booked_at",
            "after_referral",
            bad,
            lambda r: (
                f"booked_at {show_value(booked.iat[r])} is before its referral "
                f"{show_value(referral_id.iat[r])} was created ({show_value(created.iat[r])})"
            ),
        )


def _appointments_vs_slots(
    report: ValidationReport, appointments: pd.DataFrame, slots: pd.DataFrame | None
) -> None:
    if "slot_id" not in appointments:
        return
    slot_id = appointments["slot_id"]
    taken = (slot_id.notna() & slot_id.duplicated(keep="first")).to_numpy().copy()
    if taken.any() and slots is not None and "slot_id" in slots:
        taken &= _positions(slot_id, slots["slot_id"]) >= 0  # unknown slots: foreign_key says so
    if taken.any():
        first_holder = _positions(slot_id, slot_id)
        report.add_mask(
            "appointments",
            "slot_id",
            "double_booked",
            taken,
            lambda r: (
                f"slot_id {show_value(slot_id.iat[r])} is already booked by row "
                f"{first_holder[r]}; a slot holds one appointment"
            ),
        )
    if slots is None or "slot_id" not in slots:
        return
    if "appointment_at" in appointments and "start" in slots:
        _must_match(
            report, appointments, "appointment_at", slot_id, slots, "slot_id", "start", "slot"
        )
    if "specialist_id" in appointments and "specialist_id" in slots:
        _must_match(
            report,
            appointments,
            "specialist_id",
            slot_id,
            slots,
            "slot_id",
            "specialist_id",
            "slot",
        )
    if "appointment_id" in slots and "appointment_id" in appointments:
        held = slots["appointment_id"]
        booked_in = _lookup(held, appointments, "appointment_id", "slot_id")
        own = slots["slot_id"]
        report.add_mask(
            "availability",
            "appointment_id",
            "matches_appointment",
            _differs(booked_in, own),
            lambda r: (
                f"appointment_id {show_value(held.iat[r])} is booked in slot "
                f"{show_value(booked_in.iat[r])}, not in this slot {show_value(own.iat[r])}"
            ),
        )
