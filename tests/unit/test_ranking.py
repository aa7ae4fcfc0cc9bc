"""Ranker pair features are point-in-time; NDCG is computed as defined."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import TABLES
from features.ranking import PAIR_FEATURES, BookingIndex, RankingContext, pair_features
from tests.unit.pair_fixtures import patient_pairs
from training.ranker import _groups, ndcg_at

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tables(small_world: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}


def _pairs(tables: dict[str, pd.DataFrame], as_of: str) -> pd.DataFrame:
    return patient_pairs(tables["patients"], np.arange(50) % len(tables["specialists"]), as_of)


def test_pair_features_ignore_outcomes_after_the_referral_time(
    tables: dict[str, pd.DataFrame],
) -> None:
    # Given a context built with the full history and one built with history cut at the referral time
    as_of = "2024-06-01"
    t = tables
    full = RankingContext.build(
        t["specialists"],
        t["plans"],
        t["organizations"],
        t["availability"],
        t["appointments"],
        t["referrals"],
    )
    ap = t["appointments"]
    cut_ap = ap[ap["booked_at"] < pd.Timestamp(as_of)].copy()
    later = cut_ap["outcome_at"] >= pd.Timestamp(as_of)
    cut_ap.loc[later, ["outcome", "outcome_at"]] = None  # booked then, outcome not yet known
    cut_rf = t["referrals"][t["referrals"]["status_at"] < pd.Timestamp(as_of)]
    past = RankingContext.build(
        t["specialists"], t["plans"], t["organizations"], t["availability"], cut_ap, cut_rf
    )
    # When pair features are computed as of that time
    a = pair_features(full, _pairs(t, as_of))
    b = pair_features(past, _pairs(t, as_of))
    # Then the later outcomes change nothing
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == list(PAIR_FEATURES)


def test_serving_snapshot_matches_the_point_in_time_path(
    tables: dict[str, pd.DataFrame],
) -> None:
    # Given a context and pairs asked "as of now" (after every recorded outcome)
    t = tables
    ctx = RankingContext.build(
        t["specialists"],
        t["plans"],
        t["organizations"],
        t["availability"],
        t["appointments"],
        t["referrals"],
    )
    pairs = _pairs(t, "2030-01-01")
    # Pairs whose patient saw the specialist, so that continuity is exercised
    seen = t["appointments"][t["appointments"]["outcome"] == "attended"].head(5)
    row_of = pd.Series(np.arange(len(t["specialists"])), index=t["specialists"]["specialist_id"])
    pairs.loc[:4, "patient_id"] = seen["patient_id"].to_numpy()
    pairs.loc[:4, "specialist_row"] = row_of[seen["specialist_id"]].to_numpy()
    # When computed by the snapshot totals and by the event-by-event path
    fast = pair_features(ctx, pairs)
    slow = pair_features(dataclasses.replace(ctx, events_until=np.datetime64("2100-01-01")), pairs)
    # Then they agree, and continuity was really tested
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["continuity"].iloc[:5].eq(1.0).all()


def test_load_ratio_counts_bookings_in_the_window_before(tables: dict[str, pd.DataFrame]) -> None:
    t = tables
    sp = t["specialists"].iloc[[0]].assign(weekly_capacity=2)
    when = pd.Timestamp("2024-06-01")
    booked = [when - pd.Timedelta(days=d) for d in (1, 3, 27, 29)] + [when + pd.Timedelta(days=1)]
    ap = pd.DataFrame({"specialist_id": sp["specialist_id"].iloc[0], "booked_at": booked})
    index = BookingIndex(sp, ap)
    # 3 bookings within the 28 days before, 4 weeks x 2 slots of capacity
    ratio = index.load_ratio(np.array([0]), np.array([when.to_datetime64()]))
    assert ratio[0] == pytest.approx(3 / 8)


def test_unknown_plan_claims_no_network(tables: dict[str, pd.DataFrame]) -> None:
    t = tables
    ctx = RankingContext.build(t["specialists"], t["plans"], t["organizations"], t["availability"])
    X = pair_features(ctx, _pairs(t, "2024-06-01").assign(insurance_plan_id="NOT-A-PLAN"))
    assert (X["in_network"] == 0).all() and (X["accepts_plan"] == 0).all()


def test_ndcg_matches_the_definition() -> None:
    gains = [np.array([3.0, 0.0, 1.0])]
    perfect = ndcg_at(gains, [np.array([3.0, 1.0, 2.0])], 3)[0]
    swapped = ndcg_at(gains, [np.array([1.0, 3.0, 2.0])], 3)[0]
    ideal = 3 / np.log2(2) + 1 / np.log2(3)
    assert perfect == pytest.approx(1.0)
    assert swapped == pytest.approx((0 / np.log2(2) + 1 / np.log2(3) + 3 / np.log2(4)) / ideal)
    assert list(_groups(np.array(["a", "a", "b", "c", "c", "c"]))) == [2, 1, 3]
