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

import os
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from typing import Any, Final, TypeVar

import numpy as np
import pandas as pd

from features.contract import AUDIT_ONLY_COLUMNS
from features.geo import haversine_km
from features.history import NEVER, HistoryIndex, as_seconds, key_positions

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
    """One flat row per appointment from the contract's tables (plus evaluation columns).

    Each appointment's patient, specialist and referral is found once, by position in its table
    (the distinct ids hashed, not every row's); every joined column is then a take. The id and
    text columns joined from the patients, plans, specialists and referrals tables are
    categoricals whose categories are those tables' values (the same for any subset of the
    appointments, e.g. each Dask partition), so that selecting rows, factorizing and looking
    up history read integer codes rather than a million strings. An id found in no table keeps
    its value (an extra category); a joined attribute of it is missing, as with a lookup."""
    ap = tables["appointments"]
    pt = tables["patients"].set_index("patient_id")
    pl = tables["plans"].set_index("insurance_plan_id")
    sp = tables["specialists"].set_index("specialist_id")
    rf = tables["referrals"].set_index("referral_id")
    patient_id, patient = _joined_keys(ap["patient_id"], pt.index)
    specialist_id, spec = _joined_keys(ap["specialist_id"], sp.index)
    _, referral = _joined_keys(ap["referral_id"], rf.index)
    plan = _take(key_positions(pt["insurance_plan_id"], pl.index), patient, -1)
    appointment_at = pd.to_datetime(ap["appointment_at"])
    flat = pd.DataFrame(
        {
            "appointment_id": ap["appointment_id"],
            "booked_at": pd.to_datetime(ap["booked_at"]),
            "appointment_at": appointment_at,
            "patient_id": patient_id,
            "age": appointment_at.dt.year.to_numpy()
            - _take(pt["birth_year"].to_numpy(dtype=float), patient, np.nan),
            "sex": _joined(pt["sex"], patient),
            "language": _joined(pt["preferred_language"], patient),
            "payer_type": _joined(pl["payer_type"], plan),
            "distance_km": haversine_km(
                _take(pt["latitude"].to_numpy(dtype=float), patient, np.nan),
                _take(pt["longitude"].to_numpy(dtype=float), patient, np.nan),
                _take(sp["latitude"].to_numpy(dtype=float), spec, np.nan),
                _take(sp["longitude"].to_numpy(dtype=float), spec, np.nan),
            ),
            "specialty": _joined(sp["specialty"], spec),
            "specialist_id": specialist_id,
            "organization_id": _joined(sp["organization_id"], spec),
            "urgency": _joined(rf["urgency"], referral),
            "referral_type": _joined(rf["referral_type"], referral),
            "visit_kind": ap["visit_kind"],
            "text_reminder": ap["text_reminder"].astype(bool),
            "outreach_call": ap["outreach_call"].astype(bool),
            "outcome": ap["outcome"],
            "outcome_at": pd.to_datetime(ap["outcome_at"]),
            # audit only; absent from the service store (which never holds it): then unknown
            "race_ethnicity": _joined(pt["race_ethnicity"], patient)
            if "race_ethnicity" in pt.columns
            else pd.Series(pd.NA, index=ap.index, dtype="string"),
        },
        index=ap.index,
    )
    return flat.reset_index(drop=True)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its categorical columns as plain text (missing stays missing): flat rows
    as a request, a file or a model signature holds them."""
    categorical = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return (
        frame.assign(**{c: frame[c].astype("str") for c in categorical}) if categorical else frame
    )


def _take(values: np.ndarray, positions: np.ndarray, missing: Any) -> np.ndarray:
    """values[positions], `missing` where a position is -1."""
    if not len(values):
        return np.full(len(positions), missing, dtype=np.result_type(values.dtype, type(missing)))
    return np.where(positions >= 0, values[np.maximum(positions, 0)], missing)


def _joined(column: pd.Series, positions: np.ndarray) -> pd.Categorical:
    """A dimension table's column for each appointment (positions in the table; -1: none), as
    a categorical of the column's distinct values."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return pd.Categorical.from_codes(
        _take(codes, positions, -1), categories=pd.Index(uniques, tupleize_cols=False)
    )


def _joined_keys(keys: pd.Series, index: pd.Index) -> tuple[pd.Categorical, np.ndarray]:
    """The appointments' ids of a dimension table as a categorical of the table's ids (plus
    any id the table lacks, after them), and each one's position in the table (-1: none)."""
    positions = key_positions(keys, index)
    categories = pd.Index(index, tupleize_cols=False)
    codes = positions
    lost = (positions < 0) & keys.notna().to_numpy(dtype=bool)
    if lost.any():
        extra, first = pd.factorize(keys[lost])
        categories = categories.append(pd.Index(first, tupleize_cols=False))
        codes = positions.copy()
        codes[lost] = len(index) + extra
    return pd.Categorical.from_codes(codes, categories=categories), positions


def prediction_time(flat: pd.DataFrame, offset_days: float | None) -> pd.Series:
    """When the prediction is made: at booking, or offset_days before the visit (not before booking)."""
    booked = pd.to_datetime(flat["booked_at"])
    if offset_days is None:
        return booked
    before = pd.to_datetime(flat["appointment_at"]) - pd.to_timedelta(offset_days, unit="D")
    return before.where(before > booked, booked)


# Whose smoothed no-show rates are features, from their attended/no-show visits.
ENTITY_KEYS: Final = ("specialist_id", "organization_id")
VISIT_OUTCOMES: Final = ("attended", "no_show")
HISTORY_KEYS: Final = ("patient_id", *ENTITY_KEYS)


@dataclass(frozen=True, eq=False)
class FeatureHistory:
    """The outcome history `build_features` reads, indexed once: every outcome by patient
    (prior visits, no-shows, cancellations) and the attended/no-show visits by specialist and by
    clinic (their no-show rates).

    The service builds one per load and passes it with every request, so a request does not
    filter, factorize and sort every recorded outcome again; given a plain events frame,
    `build_features` indexes it for that call only. Either way the features are the same.
    """

    patients: HistoryIndex | None  # None: no events at all (history features take defaults)
    entities: Mapping[str, HistoryIndex]  # ENTITY_KEYS the events have a column for

    @classmethod
    def from_events(
        cls, events: pd.DataFrame | None, keys: Collection[str] = HISTORY_KEYS
    ) -> FeatureHistory:
        """Index `events` (as `history_events` or `Store.outcome_events` give them) by those
        of `keys` that features read. None: no history (defaults, entity base rates)."""
        if events is None:
            return cls(None, {})
        jobs: dict[str, Callable[[], HistoryIndex]] = {}
        if "patient_id" in keys and len(events):
            jobs["patient_id"] = partial(HistoryIndex.build, events, "patient_id")
        for key in ENTITY_KEYS:
            if key in keys and key in events.columns:
                jobs[key] = partial(HistoryIndex.build, events, key, VISIT_OUTCOMES)
        built = dict(zip(jobs, _concurrently(list(jobs.values()), len(events)), strict=True))
        patients = built.pop("patient_id", None)
        return cls(patients, built)


_T = TypeVar("_T")
# From this many rows the three keys' history work runs in threads: factorizing, sorting and
# binary searches release the GIL, so on 2 cores a million training rows take ~40% less; a
# request's few rows would only pay the threads' start.
CONCURRENT_ROWS: Final = 100_000


def _concurrently(jobs: list[Callable[[], _T]], rows: int) -> list[_T]:
    """The jobs' results in order: in threads (one per job, at most the cores) for `rows` of
    CONCURRENT_ROWS or more, else one after another."""
    if rows < CONCURRENT_ROWS or len(jobs) < 2:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def _entity_rate(
    flat: pd.DataFrame, history: FeatureHistory, seconds: np.ndarray, key: str, base_rate: float
) -> np.ndarray:
    """Smoothed no-show rate of a specialist or clinic from visits with outcomes before as_of."""
    index = history.entities.get(key)
    if index is None or key not in flat.columns or flat[key].isna().all():
        return np.full(len(flat), base_rate)
    h = index.counts(index.codes(flat[key]), seconds)
    n = h.prior_appointments.astype(float)
    ns = h.prior_no_shows.astype(float)
    return (ns + ENTITY_STRENGTH * base_rate) / (n + ENTITY_STRENGTH)


def history_events(flat: pd.DataFrame) -> pd.DataFrame:
    """Outcome events (who, where, what, when) of flat rows that have an outcome."""
    cols = [c for c in ("patient_id", "specialist_id", "organization_id") if c in flat.columns]
    has = flat["outcome"].notna() & flat["outcome_at"].notna()
    return flat.loc[has, [*cols, "outcome", "outcome_at"]].reset_index(drop=True)


def build_features(
    flat: pd.DataFrame,
    events: pd.DataFrame | FeatureHistory | None,
    spec: NoShowFeatureSpec | None = None,
    *,
    offset_days: float | None = None,
    extra_numeric: tuple[str, ...] = (),
    extra_categorical: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, NoShowFeatureSpec]:
    """The model matrix for flat rows, as of each row's prediction time.

    `events` is the outcome history: an events frame (`history_events`), the same indexed once
    (`FeatureHistory`, what the service keeps between requests), or None for none. Without
    `spec` (training) the spec is derived from the columns present and returned; with `spec`
    (scoring, serving) the same columns and category levels are rebuilt, missing inputs
    becoming NaN so the model treats them as unknown.
    """
    leaked = AUDIT_ONLY_COLUMNS & set(extra_numeric + extra_categorical)
    if leaked or (spec and AUDIT_ONLY_COLUMNS & set(spec.columns)):
        raise ValueError(f"audit-only columns can never be model inputs: {sorted(leaked)}")
    if spec is not None:
        offset_days = spec.offset_days
        extra_numeric, extra_categorical = tuple(spec.extra_numeric), tuple(spec.extra_categorical)
    history = (
        events
        if isinstance(events, FeatureHistory)
        else FeatureHistory.from_events(events, [k for k in HISTORY_KEYS if k in flat.columns])
    )
    n = len(flat)
    booked = pd.to_datetime(flat["booked_at"])
    appt = pd.to_datetime(flat["appointment_at"])
    seconds = as_seconds(prediction_time(flat, offset_days))
    lead = (appt - booked).dt.total_seconds().to_numpy() / 86_400.0
    # Columns as arrays, framed once at the end (no frame grown column by column and copied).
    X: dict[str, np.ndarray] = {}
    X["lead_days"] = np.maximum(lead, 0.0)
    X["same_day"] = (appt.dt.normalize() == booked.dt.normalize()).astype(float).to_numpy()
    X["booked_weekday"] = booked.dt.day_of_week.astype(float).to_numpy()
    X["booked_hour"] = booked.dt.hour.astype(float).to_numpy()
    X["visit_weekday"] = appt.dt.day_of_week.astype(float).to_numpy()
    X["visit_hour"] = appt.dt.hour.astype(float).to_numpy()
    for col in ("age", "distance_km"):
        X[col] = _numeric_column(flat, col)
    for col in ("text_reminder", "outreach_call"):
        X[col] = flat[col].astype(float).to_numpy() if col in flat else np.full(n, np.nan)

    base = spec.base_rate if spec else _base_rate(flat)
    patients = history.patients
    has_patients = "patient_id" in flat.columns and patients is not None
    lookups: list[Callable[[], Any]] = [
        lambda: _entity_rate(flat, history, seconds, "specialist_id", base),
        lambda: _entity_rate(flat, history, seconds, "organization_id", base),
    ]
    if has_patients:
        assert patients is not None
        lookups.append(lambda: patients.counts(patients.codes(flat["patient_id"]), seconds))
    found = _concurrently(lookups, n)
    if has_patients:
        h = found[2]
        visits = (h.prior_appointments - h.prior_cancellations).astype(float)
        X["prior_appointments"] = h.prior_appointments.astype(float)
        X["prior_no_shows"] = h.prior_no_shows.astype(float)
        X["prior_cancellations"] = h.prior_cancellations.astype(float)
        X["prior_no_show_rate"] = (X["prior_no_shows"] + RATE_STRENGTH * base) / (
            visits + RATE_STRENGTH
        )
        X["days_since_last_no_show"] = h.days_since_last_no_show.astype(float)
    else:
        for col in ("prior_appointments", "prior_no_shows", "prior_cancellations"):
            X[col] = np.zeros(n)
        X["prior_no_show_rate"] = np.full(n, base)
        X["days_since_last_no_show"] = np.full(n, NEVER)
    X["specialist_no_show_rate"], X["clinic_no_show_rate"] = found[0], found[1]
    for col in extra_numeric:
        X[col] = _numeric_column(flat, col)

    categorical = [c for c in CATEGORICAL if c in flat.columns] + list(extra_categorical)
    # Each categorical column factorized once: its few distinct values give both the training
    # levels and the codes (a million rows hold a handful of languages or specialties).
    factorized = {c: pd.factorize(flat[c], use_na_sentinel=True) for c in categorical if c in flat}
    if spec is None:
        numeric = [c for c, v in X.items() if not np.isnan(v).all()]
        levels = {c: sorted(str(v) for v in uniques) for c, (_, uniques) in factorized.items()}
        spec = NoShowFeatureSpec(
            numeric=numeric,
            categorical=levels,
            offset_days=offset_days,
            extra_numeric=list(extra_numeric),
            extra_categorical=list(extra_categorical),
            base_rate=base,
        )
    columns: dict[str, Any] = {
        c: X[c].astype(float, copy=False) if c in X else np.full(n, np.nan) for c in spec.numeric
    }
    for col, cats in spec.categorical.items():
        columns[col] = _categorical(factorized.get(col), n, cats)
    return pd.DataFrame(columns, index=flat.index), spec


def _numeric_column(flat: pd.DataFrame, col: str) -> np.ndarray:
    """A flat column as floats (unparseable values and a missing column: NaN)."""
    if col not in flat:
        return np.full(len(flat), np.nan)
    return pd.to_numeric(flat[col], errors="coerce").to_numpy(dtype=float)


def _categorical(
    factorized: tuple[np.ndarray, Any] | None, n: int, categories: list[str]
) -> pd.Categorical:
    """The column as a Categorical of the model's levels (unknown values and a missing column:
    NaN), from its factorization: the same as pd.Categorical(column.astype("string"),
    categories), with the string conversion and the lookup done per distinct value."""
    dtype = _category_dtype(tuple(categories))
    if factorized is None or not len(factorized[1]):
        return pd.Categorical.from_codes(np.full(n, -1), dtype=dtype)
    codes, uniques = factorized
    if not pd.api.types.is_string_dtype(uniques.dtype):  # str(value), as astype("string")
        uniques = pd.Series(uniques).astype("string")
    known = dtype.categories.get_indexer(uniques)
    return pd.Categorical.from_codes(np.where(codes >= 0, known[codes], -1), dtype=dtype)


@lru_cache(maxsize=256)
def _category_dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    """One (immutable) dtype per level list: the service builds the same few on every request,
    and each new one validates its levels and hashes them again."""
    return pd.CategoricalDtype(list(categories))


def _base_rate(flat: pd.DataFrame) -> float:
    """No-show rate among rows with an attended/no-show outcome (the smoothing prior)."""
    if "outcome" not in flat.columns:
        return RATE_PRIOR
    done = flat["outcome"].isin(["attended", "no_show"])
    return float((flat.loc[done, "outcome"] == "no_show").mean()) if done.any() else RATE_PRIOR
