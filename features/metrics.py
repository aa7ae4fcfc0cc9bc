"""Discrimination metrics the training jobs and the service share (numpy only: the service
imports no training code, nor scikit-learn)."""

from __future__ import annotations

import numpy as np


def ranking_metrics(
    y: np.ndarray, p: np.ndarray, *, order: np.ndarray | None = None
) -> tuple[float, float]:
    """(ROC-AUC, average precision) of scores `p` for binary labels `y` containing both
    classes, from one sort: the curves of scikit-learn's roc_auc_score and
    average_precision_score (tied scores form one threshold), which sort the scores and check
    the labels again for each metric (a test holds them equal to 1e-12). NaN with one class.
    `order`: np.argsort(p, kind="stable"), when the caller has it already."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    order = (np.argsort(p, kind="stable") if order is None else order)[::-1]
    scores, hits = p[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # each threshold's last row
    tps = np.cumsum(hits)[last]
    fps = 1.0 + last - tps
    if not len(tps) or tps[-1] == 0 or fps[-1] == 0:
        return float("nan"), float("nan")
    auc = np.trapezoid(np.r_[0.0, tps] / tps[-1], np.r_[0.0, fps] / fps[-1])
    recall = tps / tps[-1]
    precision = tps / (tps + fps)
    average_precision = np.sum(np.diff(np.r_[0.0, recall]) * precision)
    return float(auc), float(average_precision)
