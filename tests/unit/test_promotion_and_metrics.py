"""Metrics and promotion gates on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import expected_calibration_error, recall_at_daily_capacity, subgroup_table
from training.promotion import no_show_gates

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
