"""The one-sort ROC-AUC and average precision are scikit-learn's, ties and all."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from training.metrics import binary_metrics, ranking_metrics, subgroup_table

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_equal_scikit_learn(seed: int) -> None:
    # Given scores with many ties (rounded) or none, and labels of both classes
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 5000))
    p = rng.beta(2, 6, n)
    if seed % 2:
        p = np.round(p, 2)
    y = (rng.random(n) < p).astype(int)
    y[:2] = [0, 1]
    # When both are computed from one sort
    auc, ap = ranking_metrics(y, p)
    # Then they equal scikit-learn's to rounding
    assert auc == pytest.approx(roc_auc_score(y, p), rel=1e-12, abs=1e-12)
    assert ap == pytest.approx(average_precision_score(y, p), rel=1e-12, abs=1e-12)


def test_one_class_gives_nan() -> None:
    assert all(np.isnan(v) for v in ranking_metrics(np.zeros(5, int), np.linspace(0, 1, 5)))
    metrics = binary_metrics(np.ones(5, int), np.linspace(0.1, 0.9, 5))
    assert np.isnan(metrics["roc_auc"]) and np.isnan(metrics["pr_auc"])


def test_subgroup_auc_is_scikit_learns_per_level() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(3000)
    y = (rng.random(3000) < p).astype(int)
    groups = {"g": rng.choice(np.array(["b", "a", None], dtype=object), 3000)}
    table = subgroup_table(y, p, groups)
    assert table["level"].tolist() == ["a", "b", "unknown"]
    for level, auc in zip(table["level"], table["auc"], strict=True):
        values = np.where(groups["g"] == None, "unknown", groups["g"])  # noqa: E711
        m = values == level
        assert auc == pytest.approx(roc_auc_score(y[m], p[m]), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_brier_and_log_loss_equal_scikit_learn(seed: int) -> None:
    from sklearn.metrics import brier_score_loss, log_loss

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    p = rng.beta(2, 6, n)
    p[: min(n, 3)] = [0.0, 1.0, 0.5][: min(n, 3)]  # clipped to 1e-6 .. 1 - 1e-6, as before
    y = (rng.random(n) < p).astype(int)
    m = binary_metrics(y, p)
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    assert m["brier"] == pytest.approx(brier_score_loss(y, clipped), rel=1e-12, abs=1e-15)
    assert m["log_loss"] == pytest.approx(log_loss(y, clipped, labels=[0, 1]), rel=1e-12)


def test_subgroup_levels_read_the_same_whatever_the_column_type() -> None:
    # Given one audit column as an object array, a categorical and Arrow text, with missing
    # values and a level literally named "unknown"
    import pandas as pd

    rng = np.random.default_rng(9)
    p = rng.random(4000)
    y = (rng.random(4000) < p).astype(int)
    raw = rng.choice(np.array(["es", "en", "unknown", None], dtype=object), 4000)
    forms = {
        "object": raw,
        "categorical": pd.Categorical(raw),
        "text": pd.Series(raw, dtype="str").array,
    }
    tables = {name: subgroup_table(y, p, {"language": v}) for name, v in forms.items()}
    # Then each gives the same table: missing values and "unknown" are one level, as before
    want = tables["object"]
    assert want["level"].tolist() == ["en", "es", "unknown"]
    unknown = (raw == None) | (raw == "unknown")  # noqa: E711
    assert want.set_index("level").loc["unknown", "n"] == unknown.sum()
    for table in tables.values():
        pd.testing.assert_frame_equal(table, want)
