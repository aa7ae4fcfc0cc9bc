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

from dataclasses import dataclass
from typing import Final

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
        langs = {lang: i for i, lang in enumerate(LANGUAGES)}
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
            speaks=membership(specialists["languages"], langs),
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


def pair_features(ctx: RankingContext, pairs: pd.DataFrame) -> pd.DataFrame:
    """Features for (referral, candidate) pairs.

    `pairs` columns: specialist_row (row in ctx.specialists), as_of (the referral time),
    latitude, longitude (patient), insurance_plan_id, reason_code, urgency, language, sex,
    patient_id (optional), referring_system (optional health-system id of the referring practice).
    """
    sp = ctx.specialists
    rows = pairs["specialist_row"].to_numpy(dtype=np.int64)
    spec_ids = sp["specialist_id"].to_numpy()[rows]
    as_of = pd.to_datetime(pairs["as_of"])
    plan = pairs["insurance_plan_id"].map(ctx.plan_index)
    known_plan = plan.notna().to_numpy()
    p = plan.fillna(0).to_numpy(dtype=np.int64)
    cat = pairs["reason_code"].str.slice(0, 3).map(ctx.category_index)
    lang = pairs["language"].map({lang: i for i, lang in enumerate(LANGUAGES)})
    X = pd.DataFrame(index=pairs.index)
    X["distance_km"] = haversine_km(
        pairs["latitude"].to_numpy(dtype=float),
        pairs["longitude"].to_numpy(dtype=float),
        sp["latitude"].to_numpy()[rows],
        sp["longitude"].to_numpy()[rows],
    )
    X["focus_match"] = np.where(
        cat.notna(), ctx.treats[rows, cat.fillna(0).to_numpy(dtype=np.int64)], False
    ).astype(float)
    X["in_network"] = np.where(known_plan, ctx.in_network[p, rows], False).astype(float)
    X["accepts_plan"] = np.where(known_plan, ctx.accepts[p, rows], False).astype(float)
    wait = ctx.availability.days_until_free(spec_ids, as_of.to_numpy())
    X["next_available_days"] = wait
    X["load_ratio"] = ctx.bookings.load_ratio(rows, as_of.to_numpy())
    X["rating_shrunk"] = ctx.rating_shrunk[rows]
    X["review_count"] = sp["review_count"].to_numpy(dtype=float)[rows]
    non_english = (pairs["language"] != "en").to_numpy()
    X["language_match"] = (
        non_english
        & lang.notna().to_numpy()
        & ctx.speaks[rows, lang.fillna(0).to_numpy(dtype=np.int64)]
    ).astype(float)
    X["sex_match"] = (sp["sex"].to_numpy()[rows] == pairs["sex"].to_numpy()).astype(float)
    if _after_all_events(ctx, as_of):
        X["specialist_completion_rate"] = ctx.completion_now[rows]
        X["specialist_no_show_rate"] = ctx.no_show_now[rows]
        patients = pairs["patient_id"].astype(str).tolist() if "patient_id" in pairs else None
        X["continuity"] = (
            np.array(
                [(p, s) in ctx.continuity_now for p, s in zip(patients, spec_ids, strict=True)],
                dtype=float,
            )
            if patients is not None and ctx.continuity_now
            else 0.0
        )
    else:
        keyed = pairs.assign(specialist_id=spec_ids, _as_of=as_of.to_numpy())
        X["specialist_completion_rate"] = _rate(
            ctx.referral_events, keyed, COMPLETION_PRIOR, success=True
        )
        X["specialist_no_show_rate"] = _rate(ctx.visit_events, keyed, NO_SHOW_PRIOR, success=False)
        X["continuity"] = _continuity(ctx.visit_events, keyed)
    referring = (
        pairs["referring_system"].fillna("").astype(str).to_numpy()
        if "referring_system" in pairs
        else ""
    )
    X["same_system"] = ((ctx.system[rows] == referring) & (ctx.system[rows] != "")).astype(float)
    level = pairs["urgency"].map(URGENCY_LEVEL).fillna(0).to_numpy(dtype=float)
    X["urgency_level"] = level
    X["urgency_x_wait"] = level * wait
    return X[list(PAIR_FEATURES)]


def _after_all_events(ctx: RankingContext, as_of: pd.Series) -> bool:
    """Whether every row's time is after the latest recorded outcome (the serving case)."""
    if len(as_of) == 0:
        return False
    if np.isnat(ctx.events_until):
        return True
    return bool(np.asarray(as_of.min(), dtype="datetime64[s]") > ctx.events_until)


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
