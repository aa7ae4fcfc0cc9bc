"""The one-feature logistic fit behind Platt scaling and the calibration slope is the maximum-
likelihood fit scikit-learn finds (to its tolerance), and at least as likely."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from training.metrics import calibration_slope, logistic_1d

pytestmark = pytest.mark.unit


def _loglik(x: np.ndarray, y: np.ndarray, slope: float, intercept: float) -> float:
    eta = slope * x + intercept
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


@pytest.mark.parametrize(
    ("n", "slope", "intercept"), [(80, 2.5, 1.0), (5000, -1.2, 0.3), (50_000, 0.9, -1.4)]
)
def test_logistic_1d_matches_scikit_learn(n: int, slope: float, intercept: float) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n) * 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-(slope * x + intercept)))).astype(int)
    ref = LogisticRegression(C=1e6, max_iter=1000, tol=1e-8).fit(x.reshape(-1, 1), y)
    a, b = logistic_1d(x, y)
    assert a == pytest.approx(ref.coef_[0, 0], abs=1e-3)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-3)
    assert _loglik(x, y, a, b) >= _loglik(x, y, ref.coef_[0, 0], ref.intercept_[0]) - 1e-9
    # the fitted slope is near the true one for the large sample
    if n >= 50_000:
        assert a == pytest.approx(slope, abs=0.05)


def test_separable_data_stops_with_a_steep_finite_slope() -> None:
    x = np.r_[np.full(10, -1.0), np.full(10, 1.0)]
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    a, b = logistic_1d(x, y)
    assert np.isfinite(a) and a > 5 and abs(b) < 1e-3


def test_calibration_slope_of_calibrated_scores_is_one() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.6, size=40_000)
    y = (rng.random(len(p)) < p).astype(int)
    assert calibration_slope(y, p) == pytest.approx(1.0, abs=0.06)
    assert calibration_slope(y, np.clip(p * 0 + 0.2 + (p - 0.2) * 2, 0.01, 0.99)) < 0.7
    assert np.isnan(calibration_slope(np.zeros(10, dtype=int), np.full(10, 0.3)))
