"""No-show features: one definition for training, batch scoring and the service.

Two steps. `flatten_world` joins the contract's tables into one row per appointment with the
flat columns below (a data scientist's own file, or a service request, arrives in that shape
directly). `build_features` turns flat rows plus the outcome history into the model matrix, as
of a prediction time: by default the booking time, or `offset_days` before the visit (never
before booking). History counts only outcomes known strictly before the prediction time.

Race/ethnicity never enters: it is not a flat column and `build_features` refuses audit-only
columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from features.contract import AUDIT_ONLY_COLUMNS
from features.geo import haversine_km
from features.history import patient_history

# The flat per-appointment input. Required columns first; the rest are used when present.
FLAT_REQUIRED: Final = ("appointment_id", "booked_at", "appointment_at")
FLAT_OPTIONAL: Final = (
    "patient_id",
    "age",
    "sex",
    "language",
    "payer_type",
    "distance_km",
    "specialty",
    "specialist_id",
    "organization_id",
    "urgency",
    "referral_type",
    "visit_kind",
    "text_reminder",
    "outreach_call",
)
# Columns kept beside the features for evaluation only (labels, audits); never model inputs.
EVALUATION_COLUMNS: Final = ("outcome", "outcome_at", "race_ethnicity")

CATEGORICAL: Final = (
    "sex",
    "language",
    "payer_type",
    "specialty",
    "urgency",
    "referral_type",
    "visit_kind",
)
# Known direction of effect, enforced as LightGBM monotone constraints (+1 up, -1 down).
MONOTONE: Final = {
    "lead_days": 1,
    "prior_no_shows": 1,
    "prior_no_show_rate": 1,
    "text_reminder": -1,
    "outreach_call": -1,
}
# Features computed from the flat columns (not inputs themselves): an own-data extra column
# may not take one of these names.
DERIVED: Final = (
    "lead_days",
    "same_day",
    "booked_weekday",
    "booked_hour",
    "visit_weekday",
    "visit_hour",
    "prior_appointments",
    "prior_no_shows",
    "prior_cancellations",
    "prior_no_show_rate",
    "days_since_last_no_show",
    "specialist_no_show_rate",
    "clinic_no_show_rate",
)
# What each model input means, in words a coordinator reads (the worklist's top factors).
FEATURE_LABELS: Final = {
    "age": "patient's age",
    "sex": "patient's sex",
    "language": "preferred language",
    "payer_type": "kind of coverage",
    "distance_km": "distance to the clinic",
    "specialty": "specialty",
    "urgency": "urgency",
    "referral_type": "kind of referral",
    "visit_kind": "new or follow-up visit",
    "text_reminder": "text reminder",
    "outreach_call": "outreach call",
    "lead_days": "days between booking and visit",
    "same_day": "booked the same day",
    "booked_weekday": "day of the week it was booked",
    "booked_hour": "hour it was booked",
    "visit_weekday": "day of the week of the visit",
    "visit_hour": "time of day of the visit",
    "prior_appointments": "earlier appointments",
    "prior_no_shows": "earlier no-shows",
    "prior_cancellations": "earlier cancellations",
    "prior_no_show_rate": "share of earlier visits missed",
    "days_since_last_no_show": "time since the last missed visit",
    "specialist_no_show_rate": "the specialist's no-show rate",
    "clinic_no_show_rate": "the clinic's no-show rate",
}
AGE_BANDS: Final = (
    (0, 18, "0-17"),
    (18, 35, "18-34"),
    (35, 50, "35-49"),
    (50, 65, "50-64"),
    (65, 200, "65+"),
)
RATE_PRIOR: Final = 0.2
RATE_STRENGTH: Final = 5.0
ENTITY_STRENGTH: Final = 30.0


@dataclass
class NoShowFeatureSpec:
    """What a trained model needs to rebuild its inputs: saved beside the model as JSON."""

    numeric: list[str]
    categorical: dict[str, list[str]]
    offset_days: float | None = None
    extra_numeric: list[str] = field(default_factory=list)
    extra_categorical: list[str] = field(default_factory=list)
    base_rate: float = RATE_PRIOR

    @property
    def columns(self) -> list[str]:
        """Model input columns, in order."""
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoShowFeatureSpec:
        """Inverse of to_dict."""
        return cls(**data)


def age_band(age: pd.Series | np.ndarray) -> np.ndarray:
    """Age bands used for features and subgroup audits."""
    a = np.asarray(age, dtype=float)
    out = np.full(len(a), "unknown", dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(a >= lo) & (a < hi)] = name
    return out


def flatten_world(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One flat row per appointment from the contract's tables (plus evaluation columns)."""
    ap = tables["appointments"]
    pt = tables["patients"].set_index("patient_id")
    pl = tables["plans"].set_index("insurance_plan_id")
    sp = tables["specialists"].set_index("specialist_id")
    rf = tables["referrals"].set_index("referral_id")
    patient = ap["patient_id"]
    spec = ap["specialist_id"]
    referral = ap["referral_id"]
    appointment_at = pd.to_datetime(ap["appointment_at"])
    flat = pd.DataFrame(
        {
            "appointment_id": ap["appointment_id"],
            "booked_at": pd.to_datetime(ap["booked_at"]),
            "appointment_at": appointment_at,
            "patient_id": patient,
            "age": appointment_at.dt.year.to_numpy()
            - patient.map(pt["birth_year"]).to_numpy(dtype=float),
            "sex": patient.map(pt["sex"]),
            "language": patient.map(pt["preferred_language"]),
            "payer_type": patient.map(pt["insurance_plan_id"]).map(pl["payer_type"]),
            "distance_km": haversine_km(
                patient.map(pt["latitude"]).to_numpy(dtype=float),
                patient.map(pt["longitude"]).to_numpy(dtype=float),
                spec.map(sp["latitude"]).to_numpy(dtype=float),
                spec.map(sp["longitude"]).to_numpy(dtype=float),
            ),
            "specialty": spec.map(sp["specialty"]),
            "specialist_id": spec,
            "organization_id": spec.map(sp["organization_id"]),
            "urgency": referral.map(rf["urgency"]),
            "referral_type": referral.map(rf["referral_type"]),
            "visit_kind": ap["visit_kind"],
            "text_reminder": ap["text_reminder"].astype(bool),
            "outreach_call": ap["outreach_call"].astype(bool),
            "outcome": ap["outcome"],
            "outcome_at": pd.to_datetime(ap["outcome_at"]),
            # audit only; absent from the service store (which never holds it): then unknown
            "race_ethnicity": patient.map(pt["race_ethnicity"])
            if "race_ethnicity" in pt.columns
            else pd.Series(pd.NA, index=ap.index, dtype="string"),
        }
    )
    return flat.reset_index(drop=True)


def prediction_time(flat: pd.DataFrame, offset_days: float | None) -> pd.Series:
    """When the prediction is made: at booking, or offset_days before the visit (not before booking)."""
    booked = pd.to_datetime(flat["booked_at"])
    if offset_days is None:
        return booked
    before = pd.to_datetime(flat["appointment_at"]) - pd.to_timedelta(offset_days, unit="D")
    return before.where(before > booked, booked)


def _entity_rate(
    flat: pd.DataFrame, events: pd.DataFrame, as_of: pd.Series, key: str, base_rate: float
) -> np.ndarray:
    """Smoothed no-show rate of a specialist or clinic from visits with outcomes before as_of."""
    if key not in flat.columns or key not in events.columns or flat[key].isna().all():
        return np.full(len(flat), base_rate)
    visits = events[events["outcome"].isin(["attended", "no_show"])]
    h = patient_history(flat.assign(_as_of=as_of.to_numpy()), visits, as_of="_as_of", key=key)
    n = h["prior_appointments"].to_numpy(dtype=float)
    ns = h["prior_no_shows"].to_numpy(dtype=float)
    return (ns + ENTITY_STRENGTH * base_rate) / (n + ENTITY_STRENGTH)


def history_events(flat: pd.DataFrame) -> pd.DataFrame:
    """Outcome events (who, where, what, when) of flat rows that have an outcome."""
    cols = [c for c in ("patient_id", "specialist_id", "organization_id") if c in flat.columns]
    has = flat["outcome"].notna() & flat["outcome_at"].notna()
    return flat.loc[has, [*cols, "outcome", "outcome_at"]].reset_index(drop=True)


def build_features(
    flat: pd.DataFrame,
    events: pd.DataFrame | None,
    spec: NoShowFeatureSpec | None = None,
    *,
    offset_days: float | None = None,
    extra_numeric: tuple[str, ...] = (),
    extra_categorical: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, NoShowFeatureSpec]:
    """The model matrix for flat rows, as of each row's prediction time.

    Without `spec` (training) the spec is derived from the columns present and returned; with
    `spec` (scoring, serving) the same columns and category levels are rebuilt, missing inputs
    becoming NaN so the model treats them as unknown.
    """
    leaked = AUDIT_ONLY_COLUMNS & set(extra_numeric + extra_categorical)
    if leaked or (spec and AUDIT_ONLY_COLUMNS & set(spec.columns)):
        raise ValueError(f"audit-only columns can never be model inputs: {sorted(leaked)}")
    if spec is not None:
        offset_days = spec.offset_days
        extra_numeric, extra_categorical = tuple(spec.extra_numeric), tuple(spec.extra_categorical)
    booked = pd.to_datetime(flat["booked_at"])
    appt = pd.to_datetime(flat["appointment_at"])
    as_of = prediction_time(flat, offset_days)
    lead = (appt - booked).dt.total_seconds().to_numpy() / 86_400.0
    X = pd.DataFrame(index=flat.index)
    X["lead_days"] = np.maximum(lead, 0.0)
    X["same_day"] = (appt.dt.normalize() == booked.dt.normalize()).astype(float).to_numpy()
    X["booked_weekday"] = booked.dt.day_of_week.astype(float).to_numpy()
    X["booked_hour"] = booked.dt.hour.astype(float).to_numpy()
    X["visit_weekday"] = appt.dt.day_of_week.astype(float).to_numpy()
    X["visit_hour"] = appt.dt.hour.astype(float).to_numpy()
    for col in ("age", "distance_km"):
        X[col] = (
            pd.to_numeric(flat[col], errors="coerce").to_numpy(dtype=float)
            if col in flat
            else np.nan
        )
    for col in ("text_reminder", "outreach_call"):
        X[col] = flat[col].astype(float).to_numpy() if col in flat else np.nan

    base = spec.base_rate if spec else _base_rate(flat)
    if "patient_id" in flat.columns and events is not None and len(events):
        h = patient_history(flat.assign(_as_of=as_of.to_numpy()), events, as_of="_as_of")
        visits = (h["prior_appointments"] - h["prior_cancellations"]).to_numpy(dtype=float)
        X["prior_appointments"] = h["prior_appointments"].to_numpy(dtype=float)
        X["prior_no_shows"] = h["prior_no_shows"].to_numpy(dtype=float)
        X["prior_cancellations"] = h["prior_cancellations"].to_numpy(dtype=float)
        X["prior_no_show_rate"] = (X["prior_no_shows"] + RATE_STRENGTH * base) / (
            visits + RATE_STRENGTH
        )
        X["days_since_last_no_show"] = h["days_since_last_no_show"].to_numpy(dtype=float)
    else:
        for col in ("prior_appointments", "prior_no_shows", "prior_cancellations"):
            X[col] = 0.0
        X["prior_no_show_rate"] = base
        X["days_since_last_no_show"] = 9_999.0
    ev = events if events is not None else pd.DataFrame(columns=["outcome", "outcome_at"])
    X["specialist_no_show_rate"] = _entity_rate(flat, ev, as_of, "specialist_id", base)
    X["clinic_no_show_rate"] = _entity_rate(flat, ev, as_of, "organization_id", base)
    for col in extra_numeric:
        X[col] = (
            pd.to_numeric(flat[col], errors="coerce").to_numpy(dtype=float)
            if col in flat
            else np.nan
        )

    categorical = [c for c in CATEGORICAL if c in flat.columns] + list(extra_categorical)
    if spec is None:
        numeric = [c for c in X.columns if X[c].notna().any()]
        levels = {
            c: sorted(str(v) for v in flat[c].dropna().unique())
            for c in categorical
            if c in flat.columns
        }
        spec = NoShowFeatureSpec(
            numeric=numeric,
            categorical=levels,
            offset_days=offset_days,
            extra_numeric=list(extra_numeric),
            extra_categorical=list(extra_categorical),
            base_rate=base,
        )
    out = X.reindex(columns=spec.numeric).astype(float)
    for col, cats in spec.categorical.items():
        values = (
            flat[col].astype("string")
            if col in flat.columns
            else pd.Series(pd.NA, index=flat.index)
        )
        out[col] = pd.Categorical(values, categories=cats)
    return out, spec


def _base_rate(flat: pd.DataFrame) -> float:
    """No-show rate among rows with an attended/no-show outcome (the smoothing prior)."""
    if "outcome" not in flat.columns:
        return RATE_PRIOR
    done = flat["outcome"].isin(["attended", "no_show"])
    return float((flat.loc[done, "outcome"] == "no_show").mean()) if done.any() else RATE_PRIOR
