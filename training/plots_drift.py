"""PNG report of an input drift report (`features.drift.drift_report`), drawn from its dict.

`drift_plot(report, path)`: PSI per feature as horizontal bars, worst on top, coloured by status,
with the two thresholds as vertical lines; beside it the reference and recent shares per bucket
of the three worst features. matplotlib is imported lazily (Agg backend) and the figure is
always closed, as in `training.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from features.drift import DEFAULT_THRESHOLDS, MISSING, OTHER
from training.plot_support import _pretty, _pyplot, _saved

__all__ = ["drift_plot"]

STATUS_COLOURS = {"stable": "#4c9a2a", "moderate": "#e8a317", "significant": "#c0392b"}
REFERENCE_COLOUR, RECENT_COLOUR = "0.6", "#1f77b4"
PANELS = 3  # share panels: the worst features


def drift_plot(report: dict[str, Any], path: Path) -> Path:
    """One PNG: PSI by feature (sorted, threshold lines, colour = status) and the bucket
    shares before (training) and after (the window) of the PANELS worst features."""
    features: dict[str, Any] = report.get("features") or {}
    if not features:
        raise ValueError("the drift report has no features: nothing to plot")
    summary = report.get("summary", {})
    low, high = summary.get("thresholds", DEFAULT_THRESHOLDS)
    order = sorted(features, key=lambda c: features[c]["psi"])  # barh draws bottom-up
    worst = order[::-1][:PANELS]
    plt = _pyplot()
    # Tall enough for the PSI bars and for the buckets of the share panels
    buckets = sum(len(features[c]["buckets"]) for c in worst)
    height = max(6.0, 0.3 * len(order) + 1.8, 0.24 * buckets + 2.8)
    fig = plt.figure(figsize=(14, height), layout="constrained")
    grid = fig.add_gridspec(len(worst), 2, width_ratios=(1.0, 1.15))
    with _saved(fig, path):
        ax = fig.add_subplot(grid[:, 0])
        psi = np.array([features[c]["psi"] for c in order])
        colours = [STATUS_COLOURS.get(features[c]["status"], "0.5") for c in order]
        ax.barh(np.arange(len(order)), psi, color=colours, height=0.7)
        ax.set_yticks(np.arange(len(order)), [_pretty(c) for c in order], fontsize=9)
        ax.set_ylim(-0.6, len(order) - 0.4)
        right = max(float(psi.max()), high) * 1.18
        ax.set_xlim(0, right)
        for i, v in enumerate(psi):
            ax.text(v + right * 0.01, i, f"{v:.3f}", va="center", fontsize=8)
        ax.axvline(low, color=STATUS_COLOURS["moderate"], ls="--", lw=1.3)
        ax.axvline(high, color=STATUS_COLOURS["significant"], ls="--", lw=1.3)
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=STATUS_COLOURS[s])
            for s in ("stable", "moderate", "significant")
        ]
        names = [
            f"stable (< {low:g})",
            f"moderate ({low:g} - {high:g})",
            f"significant (>= {high:g})",
        ]
        ax.legend(handles, names, loc="lower right", fontsize=9, title="PSI status")
        ax.set_xlabel("population stability index (PSI) vs the training inputs")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title("Input drift by feature")

        for row, name in enumerate(worst):
            _share_panel(fig.add_subplot(grid[row, 1]), name, features[name])

        window = report.get("window", {})
        span = (
            f"visits [{window['start'][:10]}, {window['end'][:10]}): " if "start" in window else ""
        )
        fig.suptitle(
            f"Drift of the model inputs: {span}{summary.get('window_rows', '?')} recent rows vs "
            f"{summary.get('reference_rows', '?')} training rows "
            f"(overall: {summary.get('status', '?')})",
            fontsize=12,
        )
    return Path(path)


def _share_panel(ax: Any, name: str, feature: dict[str, Any]) -> None:
    """Reference and recent share per bucket of one feature, as paired horizontal bars."""
    buckets = list(feature["buckets"])
    ref = np.asarray(feature["reference_shares"], dtype=float)
    recent = np.asarray(feature["recent_shares"], dtype=float)
    # Empty special buckets ("other", "missing") on both sides only take up room.
    special = (OTHER, MISSING)
    keep = [i for i, b in enumerate(buckets) if ref[i] > 0 or recent[i] > 0 or b not in special]
    keep = keep or list(range(len(buckets)))
    y = np.arange(len(keep))[::-1]  # the first bucket on top
    ax.barh(y + 0.2, ref[keep], height=0.4, color=REFERENCE_COLOUR, label="training")
    ax.barh(y - 0.2, recent[keep], height=0.4, color=RECENT_COLOUR, label="recent window")
    ax.set_yticks(y, [buckets[i] for i in keep], fontsize=8)
    ax.set_xlabel("share of rows", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlim(0, max(float(ref[keep].max()), float(recent[keep].max())) * 1.15)
    ax.grid(axis="x", alpha=0.3)
    colour = STATUS_COLOURS.get(feature["status"], "black")
    p_value = feature.get("p_value")
    p_text = ""
    if p_value is not None:  # a p-value below the smallest double comes out as 0
        p_text = f", chi-square p {p_value:.2g}" if p_value > 0 else ", chi-square p < 1e-300"
    ax.set_title(
        f"{_pretty(name)}: PSI {feature['psi']:.3f} ({feature['status']}{p_text})",
        fontsize=10,
        color=colour,
    )
    ax.legend(fontsize=8, loc="best")
