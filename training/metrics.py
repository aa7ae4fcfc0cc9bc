"""Evaluation metrics for probability models: discrimination, calibration, outreach recall, subgroups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.metrics import ranking_metrics

__all__ = ["ranking_metrics"]  # the one ROC-AUC, shared with the service (features.metrics)

SUBGROUP_MIN_ROWS = 500  # subgroups smaller than this are reported but not gated


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, bins: int = 10, *, order: np.ndarray | None = None
) -> float:
    """ECE over equal-mass bins: mean |observed rate - mean predicted|, weighted by bin size.
    `order`: np.argsort(p, kind="stable"), when the caller has it already."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable") if order is None else order
    total = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        total += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return total / len(y)


def recall_at_daily_capacity(
    y: np.ndarray, p: np.ndarray, day: np.ndarray, share: float = 0.2
) -> float:
    """Share of all no-shows reached when the riskiest `share` of each day's visits are called
    (ties in risk called in row order; rows without a risk never)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    missed = y.sum()
    if not missed:
        return float("nan")
    _, day_code = np.unique(np.asarray(day), return_inverse=True)
    day_code = day_code.reshape(-1)
    # Each day's rows riskiest first, ties in row order (lexsort is stable); NaN risks last.
    order = np.lexsort((-p, day_code))
    sizes = np.bincount(day_code)
    first = np.cumsum(sizes) - sizes
    days = day_code[order]
    rank = np.arange(1, len(order) + 1) - first[days]
    called = (rank <= np.ceil(share * sizes[days])) & ~np.isnan(p[order])
    return float(y[order][called].sum() / missed)


def logistic_1d(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(slope, intercept) of an unpenalised logistic regression of y on one feature x, by
    Newton's method (what Platt scaling and the calibration slope need). The same fit as
    scikit-learn's LogisticRegression(C=1e6) to ~1e-6 (a test checks it), in milliseconds
    where lbfgs took seconds on a million rows. Separable data (no finite optimum) stops at
    the last step that still improved the likelihood."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta = np.array([0.0, np.log(rate / (1 - rate))])  # start at the base rate
    design = np.column_stack([x, np.ones_like(x)])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    best = loglik(beta)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        w = p * (1 - p)
        hessian = (design * w[:, None]).T @ design + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, design.T @ (y - p))
        candidate = beta + step
        value = loglik(candidate)
        while value < best - 1e-12 and np.abs(step).max() > 1e-12:  # halve an overshoot
            step = step / 2
            candidate = beta + step
            value = loglik(candidate)
        if value < best - 1e-12:
            break
        gain = value - best
        beta, best = candidate, max(value, best)
        if np.abs(step).max() < 1e-8 or gain < 1e-10 * len(y):
            break
    return float(beta[0]), float(beta[1])


def calibration_slope(y: np.ndarray, p: np.ndarray) -> float:
    """Slope of a logistic regression of outcomes on logit(p): 1 is ideal, < 1 over-confident."""
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        return float("nan")
    z = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    return logistic_1d(z, y)[0]


def binary_metrics(y: np.ndarray, p: np.ndarray, day: np.ndarray | None = None) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, log loss, ECE (and recall at 20% daily calls when days are given)."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    both = bool(len(y)) and 0 < y.sum() < len(y)
    order = np.argsort(p, kind="stable")  # one sort for the curves and the calibration bins
    nan = (float("nan"), float("nan"))
    auc, average_precision = ranking_metrics(y, p, order=order) if both else nan
    # Brier score and log loss as scikit-learn's brier_score_loss and log_loss compute them
    # (a test holds them equal), without their input checks, which cost more than the sums.
    brier = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    logloss = float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))) if len(y) else float("nan")
    out = {
        "roc_auc": auc,
        "pr_auc": average_precision,
        "brier": brier,
        "log_loss": logloss,
        "ece": expected_calibration_error(y, p, order=order),
        "mean_predicted": float(p.mean()),
        "observed_rate": float(y.mean()),
    }
    if day is not None:
        out["recall_at_20pct_daily"] = recall_at_daily_capacity(y, p, day)
    return out


def _level_codes(values: np.ndarray | pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's level code and the level names (as text; missing values are "unknown"):
    the distinct values are factorized first and only they are turned into text, so a
    categorical or text column of a million rows costs one hash pass, not a million strings."""
    column = values if isinstance(values, np.ndarray) else pd.Series(values, copy=False)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    names = [str(v) for v in uniques]
    if (codes < 0).any():
        names.append("unknown")
        codes = np.where(codes < 0, len(names) - 1, codes)
    # Values that read the same as text (1 and "1", or "unknown" and a missing value) are one
    # level, as when every value is turned into text first.
    merged, levels = pd.factorize(pd.Index(names, dtype=object))
    return merged[codes], [str(v) for v in levels]


def subgroup_table(y: np.ndarray, p: np.ndarray, groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per subgroup level: n, AUC, mean predicted, observed rate, their ratio and calibration slope."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    rows = []
    # One sort of all the scores: each level's rows in score order are then a selection of it
    # (a stable sort restricted to a subset is the subset's stable sort).
    order = np.argsort(p, kind="stable")
    for group, values in groups.items():
        codes, levels = _level_codes(values)
        for k in np.argsort(np.asarray(levels, dtype=object).astype(str), kind="stable"):
            m = codes == k
            yy, pp = y[m], p[m]
            level_order = (np.cumsum(m) - 1)[order[m[order]]]
            observed, predicted = float(yy.mean()), float(pp.mean())
            rows.append(
                {
                    "group": group,
                    "level": str(levels[k]),
                    "n": int(m.sum()),
                    "auc": ranking_metrics(yy, pp, order=level_order)[0],
                    "mean_predicted": predicted,
                    "observed": observed,
                    "observed_over_predicted": observed / predicted
                    if predicted > 0
                    else float("nan"),
                    "calibration_slope": calibration_slope(yy, pp)
                    if m.sum() >= 50
                    else float("nan"),
                }
            )
    return pd.DataFrame(rows)
