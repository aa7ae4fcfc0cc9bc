"""Shared pieces of the no-show PNG reports: figure handling, input checks and statistics.

- `_pyplot` / `_saved`: lazy pyplot on the Agg backend; a figure written as PNG and always closed.
- `_labels_and_probabilities`, `_both_classes`: checks of labels and scores before drawing.
- `equal_mass_bins`, `wilson_interval`, `reliability_table`, `ece_from_table`: the calibration
  statistics behind the reliability diagram and the subgroup audit.
- `_numeric_features`, `_swarm_offsets`: colour values and point layout of the SHAP beeswarm.

The plot functions themselves live in `training.plots`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
WILSON_Z = 1.959963984540054  # two-sided 95%


# ---------------------------------------------------------------- figures and input checks


def _pyplot() -> Any:
    """pyplot on the Agg backend (switched only when another backend is active)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _saved(fig: Figure, path: Path) -> Iterator[Figure]:
    """Yield the figure for drawing, then write it to `path` as PNG; always close it."""
    plt = _pyplot()
    try:
        yield fig
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def _labels_and_probabilities(y: Any, p: Any, name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and finite probabilities in [0, 1] of the same length, or ValueError."""
    y_arr = np.asarray(y).astype(float).ravel()
    p_arr = np.asarray(p, dtype=float).ravel()
    if len(y_arr) == 0:
        raise ValueError("no rows to plot")
    if len(y_arr) != len(p_arr):
        raise ValueError(f"{name} has {len(p_arr)} values for {len(y_arr)} labels")
    if not np.isin(y_arr, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    if not np.isfinite(p_arr).all() or (p_arr < 0).any() or (p_arr > 1).any():
        raise ValueError(f"{name} must be finite probabilities in [0, 1]")
    return y_arr.astype(int), p_arr


def _both_classes(y: np.ndarray) -> None:
    if len(np.unique(y)) < 2:
        raise ValueError("labels hold a single class: ROC, PR and gain curves are undefined")


def _pretty(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------- calibration statistics


def equal_mass_bins(p: np.ndarray, bins: int) -> list[np.ndarray]:
    """Row indices of `bins` equal-mass bins of `p` (sorted, stable), as the ECE metric uses."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    order = np.argsort(p, kind="stable")
    return [chunk for chunk in np.array_split(order, min(bins, len(order))) if len(chunk)]


def wilson_interval(k: np.ndarray, n: np.ndarray, z: float = WILSON_Z) -> tuple[np.ndarray, ...]:
    """Wilson score interval (low, high) for k successes out of n."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    phat = k / n
    denom = 1 + z**2 / n
    centre = (phat + z**2 / (2 * n)) / denom
    half = z * np.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per equal-mass bin: n, mean predicted, observed rate and its 95% Wilson interval."""
    rows = []
    for chunk in equal_mass_bins(p, bins):
        rows.append({"n": len(chunk), "mean_predicted": p[chunk].mean(), "events": y[chunk].sum()})
    table = pd.DataFrame(rows)
    table["observed"] = table["events"] / table["n"]
    low, high = wilson_interval(table["events"].to_numpy(), table["n"].to_numpy())
    table["low"], table["high"] = low, high
    return table


def ece_from_table(table: pd.DataFrame) -> float:
    """Size-weighted mean |observed - mean predicted| over the bins of a reliability table."""
    gap = (table["observed"] - table["mean_predicted"]).abs()
    return float((gap * table["n"]).sum() / table["n"].sum())


# ---------------------------------------------------------------- SHAP beeswarm


def _numeric_features(X: pd.DataFrame) -> pd.DataFrame:
    """Feature values for colouring: categoricals/strings as category codes (NaN when missing)."""
    out = {}
    for c in X.columns:
        col = X[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy().astype(float)
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            out[c] = pd.to_numeric(col, errors="coerce").astype(float).to_numpy()
            continue
        else:
            codes = pd.Categorical(col).codes.astype(float)
        codes[codes < 0] = np.nan
        out[c] = codes
    return pd.DataFrame(out, index=X.index)


def _swarm_offsets(values: np.ndarray, rng: np.random.Generator, nbins: int = 100) -> np.ndarray:
    """Vertical offsets in [-1, 1] that pile up points sharing an x bin (shap's beeswarm)."""
    span = values.max() - values.min()
    quant = np.round(nbins * (values - values.min()) / (span + 1e-12))
    order = np.lexsort((rng.random(len(values)), quant))
    layer = pd.Series(quant[order]).groupby(quant[order]).cumcount().to_numpy()
    ys = np.empty(len(values))
    ys[order] = np.ceil(layer / 2) * np.where(layer % 2 == 1, 1.0, -1.0)
    top = np.abs(ys).max()
    return ys / top if top > 0 else ys
