"""PNG reports for the no-show model, drawn from arrays (no MLflow, no training, no file reading).

Every function writes one PNG and returns its path. matplotlib is imported lazily and switched to
the non-interactive Agg backend inside the functions, and every figure is closed before
returning, also when drawing fails.

- `roc_pr_plot`: ROC and precision-recall curves of the model, its baselines and the ceiling.
- `calibration_plot`: reliability diagram on equal-mass bins with 95% Wilson intervals and ECE.
- `subgroup_calibration_plot`: observed vs predicted no-show rate per subgroup level (audit).
- `shap_summary_plot`: a SHAP beeswarm from a precomputed contribution matrix.
- `gain_by_threshold_plot`: share of all no-shows reached when calling the riskiest x%.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.plot_subgroups import subgroup_calibration_plot
from training.plot_support import (
    _both_classes,
    _labels_and_probabilities,
    _numeric_features,
    _pretty,
    _pyplot,
    _saved,
    _swarm_offsets,
    ece_from_table,
    reliability_table,
)

__all__ = [
    "calibration_plot",
    "gain_by_threshold_plot",
    "roc_pr_plot",
    "shap_summary_plot",
    "subgroup_calibration_plot",
]

MODEL = "model"  # the key of the trained model in `roc_pr_plot`'s scores


# ---------------------------------------------------------------- ROC / PR


def roc_pr_plot(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """ROC and precision-recall panels, one line per score; "model" boldest; chance lines.

    `scores` maps a name (the trained model is "model"; baselines such as "logistic_regression";
    the true probabilities of a synthetic world under a name containing "ceiling") to one score
    per label. The legend gives ROC-AUC and average precision of each.
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    if not scores:
        raise ValueError("scores is empty: nothing to plot")
    y_int = np.asarray(y).astype(int).ravel()
    checked = {name: _labels_and_probabilities(y_int, s, name)[1] for name, s in scores.items()}
    _both_classes(y_int)
    prevalence = float(y_int.mean())
    # The model last so it is drawn on top, but first in the legends.
    names = [n for n in checked if n != MODEL] + ([MODEL] if MODEL in checked else [])
    plt = _pyplot()
    colours = plt.get_cmap("tab10").colors
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
    with _saved(fig, path):
        others = iter(c for i, c in enumerate(colours) if i != 0)
        for name in names:
            s = checked[name]
            is_model = name == MODEL
            is_ceiling = "ceiling" in name or "oracle" in name
            style: dict[str, Any] = {
                "color": colours[0] if is_model else ("0.35" if is_ceiling else next(others)),
                "lw": 3.0 if is_model else 1.4,
                "ls": "--" if is_ceiling else "-",
                "zorder": 5 if is_model else 3,
                "alpha": 1.0 if is_model else 0.9,
            }
            fpr, tpr, _ = roc_curve(y_int, s)
            auc = roc_auc_score(y_int, s)
            ax_roc.plot(fpr, tpr, label=f"{_pretty(name)} (AUC {auc:.3f})", **style)
            precision, recall, _ = precision_recall_curve(y_int, s)
            ap = average_precision_score(y_int, s)
            ax_pr.step(
                recall, precision, where="post", label=f"{_pretty(name)} (AP {ap:.3f})", **style
            )
        ax_roc.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1.2, label="chance (AUC 0.500)")
        ax_pr.axhline(
            prevalence, color="0.6", ls=":", lw=1.2, label=f"chance (AP = rate {prevalence:.3f})"
        )
        ax_roc.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false positive rate (attenders flagged)",
            ylabel="true positive rate (no-shows flagged)",
            title="ROC",
        )
        ax_pr.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="recall (share of no-shows flagged)",
            ylabel="precision (no-show rate among flagged)",
            title="Precision-recall",
        )
        for ax, loc in ((ax_roc, "lower right"), (ax_pr, "upper right")):
            handles, labels = ax.get_legend_handles_labels()
            first = [i for i, lab in enumerate(labels) if lab.startswith(f"{MODEL} (")]
            order = first + [i for i in range(len(labels)) if i not in first]
            ax.legend([handles[i] for i in order], [labels[i] for i in order], loc=loc, fontsize=9)
            ax.grid(alpha=0.3)
        fig.suptitle(
            f"No-show discrimination on the test set (n = {len(y_int):,}, "
            f"no-show rate {prevalence:.3f})"
        )
    return Path(path)


# ---------------------------------------------------------------- calibration


def calibration_plot(
    y: np.ndarray,
    p: np.ndarray,
    path: Path,
    bins: int = 10,
    oracle: np.ndarray | None = None,
) -> Path:
    """Reliability diagram on equal-mass bins, ECE in the title, histogram of predictions below.

    Each point is one bin: mean predicted probability vs observed no-show rate, with its 95%
    Wilson interval. ECE is the size-weighted mean |observed - predicted| over the same bins
    (as `training.metrics.expected_calibration_error`). When `oracle` (the true probabilities of
    a synthetic world) is given, its own reliability curve is drawn too.
    """
    y_int, p_arr = _labels_and_probabilities(y, p)
    table = reliability_table(y_int, p_arr, bins)
    ece = ece_from_table(table)
    oracle_arr: np.ndarray | None = None
    oracle_table: pd.DataFrame | None = None
    # Zoom on where the predictions are: the bins and 99.5% of the predictions fit.
    top = [np.quantile(p_arr, 0.995), table["high"].max()]
    if oracle is not None:
        _, oracle_arr = _labels_and_probabilities(y_int, oracle, "oracle")
        oracle_table = reliability_table(y_int, oracle_arr, bins)
        top += [np.quantile(oracle_arr, 0.995), oracle_table["high"].max()]
    limit = float(min(1.0, max(top) * 1.1 + 0.01))

    plt = _pyplot()
    fig, (ax, ax_hist) = plt.subplots(
        2,
        1,
        figsize=(7.5, 8),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
        layout="constrained",
    )
    with _saved(fig, path):
        ax.plot([0, limit], [0, limit], color="0.6", ls=":", lw=1.2, label="perfect calibration")
        ax.errorbar(
            table["mean_predicted"],
            table["observed"],
            yerr=[table["observed"] - table["low"], table["high"] - table["observed"]],
            fmt="o-",
            color="C0",
            lw=2,
            ms=6,
            capsize=3,
            label=f"model (ECE {ece:.3f})",
            zorder=4,
        )
        if oracle_table is not None:
            ax.errorbar(
                oracle_table["mean_predicted"],
                oracle_table["observed"],
                yerr=[
                    oracle_table["observed"] - oracle_table["low"],
                    oracle_table["high"] - oracle_table["observed"],
                ],
                fmt="s--",
                color="0.35",
                lw=1.3,
                ms=5,
                capsize=2,
                label=f"ground-truth probabilities (ECE {ece_from_table(oracle_table):.3f})",
                zorder=3,
            )
        ax.set(
            xlim=(0, limit),
            ylim=(0, limit),
            ylabel="observed no-show rate (95% Wilson interval)",
        )
        ax.set_title(
            f"Calibration: ECE = {ece:.3f}  ({len(table)} equal-mass bins, n = {len(y_int):,})"
        )
        ax.legend(loc="upper left", fontsize=9)
        ax.grid(alpha=0.3)

        edges = np.linspace(0, limit, 41)
        ax_hist.hist(p_arr, bins=edges, color="C0", alpha=0.7, label="model")
        if oracle_arr is not None:
            ax_hist.hist(
                oracle_arr, bins=edges, histtype="step", color="0.3", lw=1.3, label="ground truth"
            )
            ax_hist.legend(loc="upper right", fontsize=8)
        beyond = int((p_arr > limit).sum())
        if beyond:
            ax_hist.annotate(
                f"{beyond:,} predictions above {limit:.2f} not shown",
                (0.99, 0.55),
                xycoords="axes fraction",
                ha="right",
                fontsize=8,
                color="0.3",
            )
        ax_hist.set(xlabel="predicted no-show probability", ylabel="rows")
        ax_hist.grid(alpha=0.3)
    return Path(path)


# ---------------------------------------------------------------- SHAP


def shap_summary_plot(
    contributions: pd.DataFrame, X: pd.DataFrame, path: Path, max_display: int = 15
) -> Path:
    """SHAP beeswarm of precomputed contributions (LightGBM pred_contrib), coloured by value.

    `contributions` has the columns of `X` (a trailing bias column such as "expected_value" or
    "bias" is ignored) and one row per row of `X`, in the same order. Features are ordered by
    mean |contribution|; the top `max_display` are drawn. Pandas Categorical (and string)
    columns are coloured by their category codes; missing values are grey. Drawn directly with
    matplotlib in the layout of `shap.summary_plot` (faster to import and free of global state).
    """
    if len(contributions) != len(X):
        raise ValueError(f"{len(contributions)} contribution rows for {len(X)} feature rows")
    absent = [c for c in X.columns if c not in contributions.columns]
    if absent:
        raise ValueError(f"contributions lack feature columns {absent}")
    if max_display < 1:
        raise ValueError("max_display must be at least 1")
    values = contributions[list(X.columns)].to_numpy(dtype=float)
    features = _numeric_features(X)
    importance = np.nanmean(np.abs(values), axis=0) if len(values) else np.zeros(X.shape[1])
    shown = list(np.argsort(-importance, kind="stable")[:max_display])
    rng = np.random.default_rng(0)

    plt = _pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("shap_red_blue", ["#008bfb", "#8a36c8", "#ff0052"])
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(shown) + 1.8), layout="constrained")
    with _saved(fig, path):
        ax.axvline(0, color="0.6", lw=1, zorder=1)
        for pos, j in enumerate(reversed(shown)):
            v = values[:, j]
            keep = np.isfinite(v)
            v = v[keep]
            if len(v) == 0:
                continue
            ys = pos + 0.38 * _swarm_offsets(v, rng)
            f = features.iloc[:, j].to_numpy()[keep]
            known = np.isfinite(f)
            if known.any():
                vmin, vmax = np.nanpercentile(f[known], [5, 95])
                if vmin == vmax:
                    vmin, vmax = float(np.min(f[known])), float(np.max(f[known]))
                colour = np.clip((f - vmin) / ((vmax - vmin) or 1.0), 0, 1)
            ax.scatter(v[~known], ys[~known], color="#777777", s=9, alpha=0.7, lw=0, zorder=2)
            ax.scatter(
                v[known],
                ys[known],
                c=colour[known] if known.any() else None,
                cmap=cmap,
                vmin=0,
                vmax=1,
                s=9,
                alpha=0.8,
                lw=0,
                zorder=3,
                rasterized=True,
            )
        names = [str(X.columns[j]) for j in reversed(shown)]
        ax.set_yticks(range(len(shown)), names, fontsize=10)
        ax.set_ylim(-0.7, len(shown) - 0.3)
        ax.set_xlabel("SHAP value (contribution to the log-odds of a no-show)")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.tick_params(axis="y", length=0)
        ax.grid(alpha=0.25, axis="x")
        from matplotlib.cm import ScalarMappable

        bar = fig.colorbar(ScalarMappable(cmap=cmap), ax=ax, aspect=40, pad=0.01, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value (categories: code order; grey = missing)", fontsize=9)
        bar.outline.set_visible(False)
        ax.set_title(
            f"What drives predicted no-show risk: top {len(shown)} of {X.shape[1]} features "
            f"by mean |SHAP| ({len(X):,} test rows)",
            fontsize=11,
        )
    return Path(path)


# ---------------------------------------------------------------- outreach gain


def gain_by_threshold_plot(
    y: np.ndarray,
    p: np.ndarray,
    path: Path,
    capacities: Sequence[float] = (0.05, 0.1, 0.2, 0.3),
) -> Path:
    """Share of all no-shows reached (recall) vs share of visits called, riskiest first.

    The ranking is pooled over the whole test period (not per day). Random calling is the
    diagonal and a perfect ranking reaches everyone once the no-show rate is called. Each
    capacity gets a mark with the recall it reaches and the no-show rate among those called.
    """
    y_int, p_arr = _labels_and_probabilities(y, p)
    _both_classes(y_int)
    if any(not 0 < c <= 1 for c in capacities):
        raise ValueError("capacities must be shares in (0, 1]")
    n, events = len(y_int), int(y_int.sum())
    order = np.argsort(-p_arr, kind="stable")
    reached = np.concatenate([[0.0], np.cumsum(y_int[order]) / events])
    called = np.arange(n + 1) / n
    rate = events / n

    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(8, 6.5), layout="constrained")
    with _saved(fig, path):
        ax.plot(called, reached, color="C0", lw=2.5, label="model ranking", zorder=4)
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1.2, label="random calling")
        ax.plot(
            [0, rate, 1],
            [0, 1, 1],
            color="0.4",
            ls="--",
            lw=1,
            label=f"perfect ranking (no-show rate {rate:.1%})",
        )
        summary = [f"{'calling top':>11}  {'reaches':>8}  {'no-show rate of called':>22}"]
        for c in sorted(capacities):
            k = int(np.ceil(c * n))
            recall = reached[k]
            precision = y_int[order[:k]].mean()
            ax.plot([c, c], [0, recall], color="C3", ls=":", lw=1)
            ax.scatter([c], [recall], color="C3", s=45, zorder=5)
            ax.annotate(
                f"{recall:.0%}",
                (c, recall),
                xytext=(7, -13),
                textcoords="offset points",
                ha="left",
                fontsize=9,
                color="C3",
                fontweight="bold",
                zorder=6,
            )
            summary.append(f"{c:>11.0%}  {recall:>8.1%}  {precision:>22.1%}")
        ax.text(
            0.98,
            0.2,
            "\n".join(summary),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            family="monospace",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "0.8"},
        )
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.02),
            xlabel="share of visits called (riskiest first)",
            ylabel="share of all no-shows reached (recall)",
        )
        ax.set_title(
            f"Outreach gain: calling the riskiest visits first\n"
            f"(pooled over the test period, n = {n:,}, {events:,} no-shows)",
            fontsize=11,
        )
        ax.legend(loc="lower right", fontsize=9)
        ax.grid(alpha=0.3)
    return Path(path)
