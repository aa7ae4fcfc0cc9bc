"""Metrics and promotion gates on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import expected_calibration_error, recall_at_daily_capacity, subgroup_table
from training.promotion import no_show_gates, ranker_gates

pytestmark = pytest.mark.unit


def _calibrated(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 8, n)
    return (rng.random(n) < p).astype(int), p


def test_ece_is_small_for_calibrated_and_large_for_shifted_probabilities() -> None:
    y, p = _calibrated()
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) == pytest.approx(0.1, abs=0.01)


def test_recall_at_daily_capacity_counts_per_day() -> None:
    # Two days of 10 visits; the 2 riskiest per day (20%) hold 3 of the 4 no-shows.
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1] + [1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([9, 8, 1, 1, 1, 1, 1, 1, 1, 2] + [9, 8, 1, 1, 1, 1, 1, 1, 1, 1]) / 10
    day = np.repeat([0, 1], 10)
    assert recall_at_daily_capacity(y, p, day, 0.2) == pytest.approx(3 / 4)


def test_gates_pass_a_good_candidate_and_name_the_failures_of_a_bad_one() -> None:
    y, p = _calibrated()
    groups = {"sex": np.where(np.arange(len(y)) % 2, "F", "M")}
    ok = no_show_gates(y, p, p, groups)
    assert all(g.passed for g in ok)
    # A candidate that is over-confident for one group and worse at ranking fails three gates.
    rng = np.random.default_rng(3)
    bad = np.where(groups["sex"] == "F", p * 0.6, p)
    bad = np.clip(bad + rng.normal(0, 0.15, len(p)), 0.001, 0.999)
    results = {g.name: g for g in no_show_gates(y, bad, p, groups)}
    assert not results["auc"].passed and "vs champion" in results["auc"].detail
    assert not results["ece"].passed and "over by" in results["ece"].detail
    assert (
        not results["subgroup_calibration"].passed
        and "sex=F" in results["subgroup_calibration"].detail
    )


def test_first_model_is_gated_on_calibration_only() -> None:
    y, p = _calibrated()
    results = {g.name: g for g in no_show_gates(y, p, None, {"sex": np.full(len(y), "F")})}
    assert results["auc"].passed and results["auc"].detail == "no current champion"


def test_subgroup_table_reports_each_level() -> None:
    y, p = _calibrated()
    groups = {"band": np.where(p > 0.2, "high", "low")}
    table = subgroup_table(y, p, groups)
    assert set(table["level"]) == {"high", "low"}
    assert table["n"].sum() == len(y)
    assert table["observed_over_predicted"].between(0.9, 1.1).all()


def _ranking(mean: float, lo: float, hi: float) -> dict[str, dict[str, object]]:
    return {"oracle.ndcg@5": {"mean": mean, "ci95": [lo, hi]}}


def test_ranker_gates_need_an_interval_above_every_baseline() -> None:
    # Given a candidate whose interval touches the best baseline's
    baselines = {"nearest": _ranking(0.70, 0.69, 0.71), "weighted_rule": _ranking(0.94, 0.93, 0.95)}
    by_urgency = {"routine": (500, 0.95, 0.94), "stat": (20, 0.5, 0.9)}
    touching = ranker_gates(
        "oracle.ndcg@5", _ranking(0.955, 0.945, 0.96), baselines, None, by_urgency
    )
    clear = ranker_gates("oracle.ndcg@5", _ranking(0.96, 0.955, 0.965), baselines, None, by_urgency)
    # Then only the clear winner passes beats_baselines, naming the best baseline
    verdict = {r.name: r for r in touching}
    assert (
        not verdict["beats_baselines"].passed
        and "weighted_rule" in verdict["beats_baselines"].detail
    )
    assert all(r.passed for r in clear)  # the small 'stat' group (20 < 100 referrals) is not judged


def test_ranker_gates_refuse_a_worse_champion_or_urgency_group() -> None:
    baselines = {"weighted_rule": _ranking(0.90, 0.89, 0.91)}
    candidate = _ranking(0.95, 0.945, 0.955)
    worse_than_champion = ranker_gates(
        "oracle.ndcg@5", candidate, baselines, _ranking(0.96, 0.955, 0.965), {}
    )
    urgent_worse = ranker_gates(
        "oracle.ndcg@5", candidate, baselines, None, {"urgent": (300, 0.90, 0.93)}
    )
    assert [r.name for r in worse_than_champion if not r.passed] == ["vs_champion"]
    failed = [r for r in urgent_worse if not r.passed]
    assert [r.name for r in failed] == ["urgency"] and "'urgent'" in failed[0].detail
