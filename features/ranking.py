"""Pair features for the specialist ranker: one row per (referral, candidate specialist).

Everything is as of the referral's creation time: next free slot from the availability
snapshot (point-in-time), the specialist's completion and no-show rates from outcomes known
before then, continuity from the patient's attended visits before then, load from the visits
booked with the specialist in the LOAD_WINDOW_DAYS before then against their weekly capacity.
Shared by training and the service.

Serving asks "as of now", after every recorded outcome: then the per-specialist rates and the
continuity pairs come from totals computed once per context (same numbers as the point-in-time
path, which tests check), so a request costs array lookups only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from features.availability import NextAvailableIndex, epoch_minutes
from features.codes import reasons
from features.contract import LANGUAGES, split_multi
from features.geo import haversine_km
from features.history import patient_history
from features.network import network_matrices

PAIR_FEATURES: Final = (
    "distance_km",
    "focus_match",
    "in_network",
    "accepts_plan",
    "next_available_days",
    "load_ratio",
    "rating_shrunk",
    "review_count",
    "language_match",
    "sex_match",
    "specialist_completion_rate",
    "specialist_no_show_rate",
    "continuity",
    "same_system",
    "urgency_level",
    "urgency_x_wait",
)
URGENCY_LEVEL: Final = {"routine": 0, "urgent": 1, "stat": 2}
RATING_PRIOR, RATING_STRENGTH = 4.0, 10.0
COMPLETION_PRIOR, RATE_STRENGTH = 0.7, 20.0
NO_SHOW_PRIOR = 0.2
LOAD_WINDOW_DAYS = 28
# A specialist with no slots at all in the directory (an imported directory without schedules)
# gets this wait: about the median wait to a new-patient opening in the simulated world, so the
# ranker neither rewards nor punishes a schedule nobody published. The reasons say so.
UNLISTED_WAIT_DAYS = 14.0
_MINUTE_SHIFT = np.int64(1) << np.int64(36)


def membership(column: pd.Series, codes: dict[str, int]) -> np.ndarray:
    """Boolean (row x code) matrix of a '|'-joined column (e.g. languages, focus codes)."""
    out = np.zeros((len(column), len(codes)), dtype=bool)
    for i, value in enumerate(column.tolist()):
        for part in split_multi(value):
            j = codes.get(part)
            if j is not None:
                out[i, j] = True
    return out


_LANGUAGE_INDEX: Final = {lang: i for i, lang in enumerate(LANGUAGES)}


@dataclass
class SpecialistArrays:
    """Per-specialist numpy columns for fast pair features (aligned with the specialist rows)."""

    specialist_id: np.ndarray  # str objects
    latitude: np.ndarray
    longitude: np.ndarray
    review_count: np.ndarray
    sex_code: np.ndarray
    sex_index: dict[str, int]
    system_code: np.ndarray  # -1 for an independent practice
    system_index: dict[str, int]
    availability_code: np.ndarray  # code in the NextAvailableIndex (-1: no slots known)

    @classmethod
    def build(
        cls, specialists: pd.DataFrame, system: np.ndarray, availability: NextAvailableIndex
    ) -> SpecialistArrays:
        ids = specialists["specialist_id"].astype(str).to_numpy(dtype=object)
        sex_code, sexes = pd.factorize(specialists["sex"].astype(str))
        systems = sorted({s for s in system.tolist() if s})
        system_index = {s: i for i, s in enumerate(systems)}
        return cls(
            specialist_id=ids,
            latitude=specialists["latitude"].to_numpy(dtype=float),
            longitude=specialists["longitude"].to_numpy(dtype=float),
            review_count=specialists["review_count"].to_numpy(dtype=float),
            sex_code=sex_code.astype(np.int64),
            sex_index={str(v): i for i, v in enumerate(sexes)},
            system_code=np.array([system_index.get(s, -1) for s in system.tolist()], np.int64),
            system_index=system_index,
            availability_code=availability.codes(specialists["specialist_id"]),
        )


@dataclass
class RankingContext:
    """A directory snapshot prepared for pair features (built once, reused for every request)."""

    specialists: pd.DataFrame
    availability: NextAvailableIndex
    in_network: np.ndarray
    accepts: np.ndarray
    plan_index: dict[str, int]
    treats: np.ndarray
    category_index: dict[str, int]
    speaks: np.ndarray
    system: np.ndarray  # health-system id per specialist ('' for independent)
    rating_shrunk: np.ndarray
    visit_events: pd.DataFrame  # specialist_id, patient_id, outcome, outcome_at
    referral_events: (
        pd.DataFrame
    )  # specialist_id, outcome (attended=completed / no_show=failed), outcome_at
    bookings: BookingIndex  # visits booked per specialist, for load vs capacity
    events_until: np.datetime64  # latest outcome_at among the events (NaT when none)
    completion_now: np.ndarray  # per specialist row: rate from every referral outcome
    no_show_now: np.ndarray  # per specialist row: rate from every visit outcome
    continuity_now: frozenset[tuple[str, str]]  # (patient_id, specialist_id) attended pairs
    arrays: SpecialistArrays = field(init=False)

    def __post_init__(self) -> None:
        self.arrays = SpecialistArrays.build(self.specialists, self.system, self.availability)

    @classmethod
    def build(
        cls,
        specialists: pd.DataFrame,
        plans: pd.DataFrame,
        organizations: pd.DataFrame,
        availability: pd.DataFrame,
        appointments: pd.DataFrame | None = None,
        referrals: pd.DataFrame | None = None,
    ) -> RankingContext:
        """Prepare arrays for a directory snapshot and the outcome history known so far."""
        in_net, accepts, plan_index = network_matrices(plans, specialists)
        cats = {c: i for i, c in enumerate(sorted({r.category for r in reasons().values()}))}
        system_of = organizations.set_index("organization_id")["system_id"]
        system = specialists["organization_id"].map(system_of).fillna("").astype(str).to_numpy()
        reviews = specialists["review_count"].to_numpy(dtype=float)
        rating = specialists["rating"].fillna(RATING_PRIOR).to_numpy(dtype=float)
        shrunk = (rating * reviews + RATING_PRIOR * RATING_STRENGTH) / (reviews + RATING_STRENGTH)
        visits = pd.DataFrame(columns=["specialist_id", "patient_id", "outcome", "outcome_at"])
        if appointments is not None:
            visits = appointments.loc[
                appointments["outcome"].isin(["attended", "no_show"]),
                ["specialist_id", "patient_id", "outcome", "outcome_at"],
            ].reset_index(drop=True)
        closed = pd.DataFrame(columns=["specialist_id", "outcome", "outcome_at"])
        if referrals is not None:
            done = referrals["status"].isin(["completed", "cancelled", "leaked", "never_scheduled"])
            done &= referrals["specialist_id"].notna()
            r = referrals.loc[done]
            closed = pd.DataFrame(
                {
                    "specialist_id": r["specialist_id"].to_numpy(),
                    "outcome": np.where(r["status"] == "completed", "attended", "no_show"),
                    "outcome_at": r["status_at"].to_numpy(),
                }
            )
        specialists = specialists.reset_index(drop=True)
        ids = specialists["specialist_id"]
        latest = pd.concat([visits["outcome_at"], closed["outcome_at"]], ignore_index=True)
        attended = visits[visits["outcome"] == "attended"]
        return cls(
            specialists=specialists,
            availability=NextAvailableIndex(availability),
            in_network=in_net,
            accepts=accepts,
            plan_index=plan_index,
            treats=membership(specialists["focus_codes"], cats),
            category_index=cats,
            speaks=membership(specialists["languages"], _LANGUAGE_INDEX),
            system=system,
            rating_shrunk=shrunk,
            visit_events=visits,
            referral_events=closed,
            bookings=BookingIndex(specialists, appointments),
            events_until=np.datetime64(pd.to_datetime(latest).max(), "s")
            if latest.notna().any()
            else np.datetime64("NaT"),
            completion_now=_rate_totals(closed, ids, COMPLETION_PRIOR, success=True),
            no_show_now=_rate_totals(visits, ids, NO_SHOW_PRIOR, success=False),
            continuity_now=frozenset(
                zip(
                    attended["patient_id"].astype(str),
                    attended["specialist_id"].astype(str),
                    strict=True,
                )
            ),
        )


class BookingIndex:
    """Visits booked per specialist, to count those booked in a window before any time."""

    def __init__(self, specialists: pd.DataFrame, appointments: pd.DataFrame | None) -> None:
        self._index = pd.Index(specialists["specialist_id"])
        capacity = specialists.get("weekly_capacity")
        self.weekly_capacity = (
            np.ones(len(specialists))
            if capacity is None
            else np.maximum(capacity.to_numpy(dtype=float, na_value=1.0), 1.0)
        )
        if appointments is None or appointments.empty:
            self._keys = np.empty(0, dtype=np.int64)
            return
        code = self._index.get_indexer(appointments["specialist_id"])
        t = epoch_minutes(appointments["booked_at"])
        ok = (code >= 0) & (t >= 0)
        self._keys = np.sort(code[ok].astype(np.int64) * _MINUTE_SHIFT + t[ok])

    def load_ratio(self, rows: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        """Visits booked in the LOAD_WINDOW_DAYS before as_of per slot of capacity then."""
        t = np.asarray(as_of, dtype="datetime64[m]").astype(np.int64)
        base = rows.astype(np.int64) * _MINUTE_SHIFT
        hi = np.searchsorted(self._keys, base + t, "left")
        lo = np.searchsorted(self._keys, base + t - LOAD_WINDOW_DAYS * 1440, "left")
        weeks = LOAD_WINDOW_DAYS / 7.0
        return (hi - lo) / (weeks * self.weekly_capacity[rows])


def _codes(values: pd.Series, mapping: dict[str, int], transform: Any = None) -> np.ndarray:
    """Integer code per row (-1 when unknown or missing), mapping each distinct value once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    keys = [transform(u) if transform else u for u in uniques.tolist()]
    table = np.array([mapping.get(k, -1) for k in keys] + [-1], dtype=np.int64)
    return table[codes]  # code -1 (missing) picks the trailing -1


def _code(value: Any, mapping: dict[str, int], transform: Any = None) -> int:
    """`_codes` for one value (every pair of a request shares it)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return -1
    return mapping.get(transform(value) if transform else value, -1)


def _category(code: Any) -> str:
    return str(code)[:3]


@dataclass
class _PairInputs:
    """The referral side of pairs as codes: per-pair arrays, or scalars a request shares."""

    rows: np.ndarray  # specialist rows in ctx.specialists
    when: np.ndarray  # datetime64 per pair
    latitude: np.ndarray | float
    longitude: np.ndarray | float
    plan: np.ndarray | int
    category: np.ndarray | int
    language: np.ndarray | int
    sex: np.ndarray | int
    referring: np.ndarray | int | None  # None: not given
    urgency: np.ndarray | int
    patient_ids: list[str] | None  # None: not given


_COLUMN: Final = {name: j for j, name in enumerate(PAIR_FEATURES)}


def pair_features(ctx: RankingContext, pairs: pd.DataFrame) -> pd.DataFrame:
    """Features for (referral, candidate) pairs.

    `pairs` columns: specialist_row (row in ctx.specialists), as_of (the referral time),
    latitude, longitude (patient), insurance_plan_id, reason_code, urgency, language, sex,
    patient_id (optional), referring_system (optional health-system id of the referring practice).
    """
    arr = ctx.arrays
    inputs = _PairInputs(
        rows=pairs["specialist_row"].to_numpy(dtype=np.int64),
        when=pd.to_datetime(pairs["as_of"]).to_numpy(),
        latitude=pairs["latitude"].to_numpy(dtype=float),
        longitude=pairs["longitude"].to_numpy(dtype=float),
        plan=_codes(pairs["insurance_plan_id"], ctx.plan_index),
        category=_codes(pairs["reason_code"], ctx.category_index, _category),
        language=_codes(pairs["language"], _LANGUAGE_INDEX),
        sex=_codes(pairs["sex"], arr.sex_index),
        referring=_codes(pairs["referring_system"].fillna(""), arr.system_index)
        if "referring_system" in pairs
        else None,
        urgency=_codes(pairs["urgency"], URGENCY_LEVEL),
        patient_ids=pairs["patient_id"].astype(str).tolist() if "patient_id" in pairs else None,
    )
    matrix = _pair_matrix(ctx, inputs)
    return pd.DataFrame(matrix, index=pairs.index, columns=list(PAIR_FEATURES))


def request_pair_features(
    ctx: RankingContext,
    rows: np.ndarray,
    *,
    as_of: pd.Timestamp,
    latitude: float,
    longitude: float,
    insurance_plan_id: str | None,
    reason_code: str,
    urgency: str,
    language: str | None,
    sex: str | None,
    patient_id: str | None = None,
    referring_system: str | None = None,
) -> np.ndarray:
    """`pair_features` of one referral against candidate `rows`, as a (rows, PAIR_FEATURES)
    float matrix: the serving path. The referral's fields are coded once, not per pair, and no
    DataFrame is built; the numbers are the same (tests check)."""
    rows = np.asarray(rows, dtype=np.int64)
    arr = ctx.arrays
    inputs = _PairInputs(
        rows=rows,
        when=np.full(len(rows), np.datetime64(as_of, "s")),
        latitude=float(latitude),
        longitude=float(longitude),
        plan=_code(insurance_plan_id, ctx.plan_index),
        category=_code(reason_code, ctx.category_index, _category),
        language=_code(language, _LANGUAGE_INDEX),
        sex=_code(sex, arr.sex_index),
        referring=_code(referring_system or "", arr.system_index),
        urgency=_code(urgency, URGENCY_LEVEL),
        patient_ids=[patient_id or ""] * len(rows),
    )
    return _pair_matrix(ctx, inputs)


def _pair_matrix(ctx: RankingContext, p: _PairInputs) -> np.ndarray:
    """The pair features, columns in PAIR_FEATURES order; referral-side inputs broadcast."""
    rows, when = p.rows, p.when
    n = len(rows)
    arr = ctx.arrays
    out = np.zeros((n, len(PAIR_FEATURES)))

    def put(name: str, values: Any) -> None:
        out[:, _COLUMN[name]] = values

    known_plan = np.asarray(p.plan) >= 0
    plan = np.maximum(p.plan, 0)
    cat = np.asarray(p.category)
    lang = np.asarray(p.language)
    lat = np.broadcast_to(np.asarray(p.latitude, dtype=float), (n,))
    lon = np.broadcast_to(np.asarray(p.longitude, dtype=float), (n,))
    put("distance_km", haversine_km(lat, lon, arr.latitude[rows], arr.longitude[rows]))
    put("focus_match", (cat >= 0) & ctx.treats[rows, np.maximum(cat, 0)])
    if len(ctx.plan_index):
        put("in_network", known_plan & ctx.in_network[plan, rows])
        put("accepts_plan", known_plan & ctx.accepts[plan, rows])
    # else: a directory without plans (e.g. imported from the CMS file): no network claim (0)
    codes = arr.availability_code[rows]
    wait = ctx.availability.days_until_free_by_code(codes, when)
    wait[codes < 0] = UNLISTED_WAIT_DAYS  # no schedule in the directory: neutral, not "none free"
    put("next_available_days", wait)
    put("load_ratio", ctx.bookings.load_ratio(rows, when))
    put("rating_shrunk", ctx.rating_shrunk[rows])
    put("review_count", arr.review_count[rows])
    non_english = lang != _LANGUAGE_INDEX["en"]
    put("language_match", non_english & (lang >= 0) & ctx.speaks[rows, np.maximum(lang, 0)])
    put("sex_match", arr.sex_code[rows] == p.sex)
    if _after_all_events(ctx, when):
        put("specialist_completion_rate", ctx.completion_now[rows])
        put("specialist_no_show_rate", ctx.no_show_now[rows])
        if p.patient_ids is not None and ctx.continuity_now:
            spec_ids = arr.specialist_id[rows]
            put(
                "continuity",
                [
                    (a, b) in ctx.continuity_now
                    for a, b in zip(p.patient_ids, spec_ids, strict=True)
                ],
            )
    else:
        keyed = pd.DataFrame({"specialist_id": arr.specialist_id[rows], "_as_of": when})
        if p.patient_ids is not None:
            keyed["patient_id"] = p.patient_ids
        put(
            "specialist_completion_rate",
            _rate(ctx.referral_events, keyed, COMPLETION_PRIOR, success=True),
        )
        put("specialist_no_show_rate", _rate(ctx.visit_events, keyed, NO_SHOW_PRIOR, success=False))
        put("continuity", _continuity(ctx.visit_events, keyed))
    if p.referring is not None:
        referring = np.asarray(p.referring)
        put("same_system", (arr.system_code[rows] == referring) & (referring >= 0))
    level = np.broadcast_to(np.maximum(np.asarray(p.urgency, dtype=float), 0.0), (n,))
    put("urgency_level", level)
    put("urgency_x_wait", level * wait)
    return out


def _after_all_events(ctx: RankingContext, when: np.ndarray) -> bool:
    """Whether every row's time is after the latest recorded outcome (the serving case)."""
    when = when[~np.isnat(when)]
    if len(when) == 0:
        return False
    if np.isnat(ctx.events_until):
        return True
    return bool(np.asarray(when.min(), dtype="datetime64[s]") > ctx.events_until)


def _rate_totals(
    events: pd.DataFrame, ids: pd.Series, prior: float, *, success: bool
) -> np.ndarray:
    """Smoothed per-specialist rate from every event (aligned with the specialist rows)."""
    if events.empty:
        return np.full(len(ids), prior)
    bad = (events["outcome"] == "no_show").to_numpy(dtype=bool)
    counts = pd.DataFrame({"s": events["specialist_id"].astype(str).to_numpy(), "bad": bad})
    g = counts.groupby("s")["bad"].agg(["size", "sum"]).reindex(ids.astype(str).to_numpy())
    n = g["size"].fillna(0).to_numpy(dtype=float)
    b = g["sum"].fillna(0).to_numpy(dtype=float)
    hits = n - b if success else b
    return (hits + RATE_STRENGTH * prior) / (n + RATE_STRENGTH)


def _rate(events: pd.DataFrame, keyed: pd.DataFrame, prior: float, *, success: bool) -> np.ndarray:
    """Smoothed per-specialist rate from events known before each pair's time."""
    if events.empty:
        return np.full(len(keyed), prior)
    h = patient_history(keyed, events, as_of="_as_of", key="specialist_id")
    n = h["prior_appointments"].to_numpy(dtype=float)
    bad = h["prior_no_shows"].to_numpy(dtype=float)
    hits = n - bad if success else bad
    return (hits + RATE_STRENGTH * prior) / (n + RATE_STRENGTH)


def _continuity(visits: pd.DataFrame, keyed: pd.DataFrame) -> np.ndarray:
    """1 when the patient attended a visit with this specialist before the referral."""
    if visits.empty or "patient_id" not in keyed:
        return np.zeros(len(keyed))
    attended = visits[visits["outcome"] == "attended"]
    ev = pd.DataFrame(
        {
            "pair": attended["patient_id"].astype(str)
            + "|"
            + attended["specialist_id"].astype(str),
            "outcome": "attended",
            "outcome_at": attended["outcome_at"].to_numpy(),
        }
    )
    rows = pd.DataFrame(
        {
            "pair": keyed["patient_id"].astype(str) + "|" + keyed["specialist_id"].astype(str),
            "_as_of": keyed["_as_of"].to_numpy(),
        }
    )
    h = patient_history(rows, ev, as_of="_as_of", key="pair")
    return (h["prior_appointments"].to_numpy() > 0).astype(float)
