"""The subgroup calibration audit PNG: observed vs predicted no-show rate per subgroup level.

Public through `training.plots` with the other report plots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.model_card import RATIO_BAND
from training.plot_support import _pyplot, _saved, wilson_interval

SUBGROUP_ZOOM_MIN_ROWS = 50  # smaller levels may fall outside the zoomed left panel
RATIO_VIEW = (0.25, 4.0)  # ratios beyond are drawn as arrows at the edge
SUBGROUP_COLUMNS = (
    "group",
    "level",
    "n",
    "auc",
    "mean_predicted",
    "observed",
    "observed_over_predicted",
    "calibration_slope",
)


def subgroup_calibration_plot(table: pd.DataFrame, path: Path) -> Path:
    """Observed vs mean predicted no-show rate per subgroup level (an audit), and their ratio.

    `table` is `training.metrics.subgroup_table`'s frame: group, level, n, auc, mean_predicted,
    observed, observed_over_predicted, calibration_slope. Left: one point per level (colour by
    group, size by n, red edge when outside the band), the diagonal and the band where
    observed/predicted is within 0.8-1.25, zoomed on the levels with at least
    `SUBGROUP_ZOOM_MIN_ROWS` rows. Right: every level's ratio on a log axis with its 95% Wilson
    interval (from the observed rate and n), levels outside the band in red, ratios beyond
    0.25-4 drawn as arrows at the edge. Race/ethnicity levels, if present, are shown here only
    to audit the model; they are never an input.
    """
    missing = [c for c in SUBGROUP_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"subgroup table lacks columns {missing}")
    rows = table.dropna(subset=["mean_predicted", "observed", "n"]).reset_index(drop=True)
    rows = rows.astype({"mean_predicted": float, "observed": float, "n": float})
    rows = rows[rows["n"] > 0].reset_index(drop=True)
    ratio = rows["observed_over_predicted"].astype(float).to_numpy()
    low, high = RATIO_BAND
    outside = np.isfinite(ratio) & ((ratio < low) | (ratio > high))
    group_of = rows["group"].astype(str).to_numpy()
    groups = list(dict.fromkeys(group_of))

    plt = _pyplot()
    from matplotlib.lines import Line2D

    colours = plt.get_cmap("tab10").colors
    colour_of = {g: colours[i % len(colours)] for i, g in enumerate(groups)}
    height = max(5.5, 0.3 * len(rows) + 2.2)
    fig, (ax, ax_ratio) = plt.subplots(
        1,
        2,
        figsize=(14, height),
        gridspec_kw={"width_ratios": [1.15, 1]},
        layout="constrained",
    )
    with _saved(fig, path):
        fig.suptitle(
            "Subgroup calibration audit (test set): observed vs predicted no-show rate\n"
            "race/ethnicity appears only as an audit, never as a model input",
            fontsize=12,
        )
        if rows.empty:
            for a in (ax, ax_ratio):
                a.text(0.5, 0.5, "no subgroup rows", ha="center", va="center")
                a.set_axis_off()
            return Path(path)

        # Left: zoom on the levels large enough to read; tiny ones stay in the right panel.
        n = rows["n"].to_numpy()
        xy = rows[["mean_predicted", "observed"]].to_numpy()
        big = n >= SUBGROUP_ZOOM_MIN_ROWS
        framed = xy[big] if big.any() else xy
        top, bottom = float(framed.max()), float(framed.min())
        pad = max(0.12 * (top - bottom), 0.01)
        lim = (max(0.0, bottom - pad), min(1.0, top + pad))
        inside = ((xy >= lim[0]) & (xy <= lim[1])).all(axis=1)
        grid = np.linspace(*lim, 50)
        ax.fill_between(grid, grid * low, np.minimum(grid * high, 1), color="tab:green", alpha=0.12)
        ax.plot(lim, lim, color="0.5", ls=":", lw=1.2)
        sizes = 25 + 175 * np.sqrt(n / n.max())
        for g in groups:
            m = (group_of == g) & inside
            ax.scatter(
                xy[m, 0],
                xy[m, 1],
                s=sizes[m],
                color=colour_of[g],
                alpha=0.8,
                edgecolors=np.where(outside[m], "red", "white"),
                linewidths=np.where(outside[m], 2.0, 0.8),
                zorder=3,
            )
        # Name flagged levels and levels standing apart; the right panel names them all.
        scaled = (xy - lim[0]) / (lim[1] - lim[0])
        gaps = np.sqrt(((scaled[:, None, :] - scaled[None, :, :]) ** 2).sum(axis=2))
        np.fill_diagonal(gaps, np.inf)
        apart = gaps.min(axis=1) > 0.06
        for i in np.flatnonzero(inside & (outside | apart)):
            ax.annotate(
                str(rows.at[i, "level"]),
                (xy[i, 0], xy[i, 1]),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=7.5,
                color="red" if outside[i] else "0.2",
                fontweight="bold" if outside[i] else "normal",
            )
        handles = [
            Line2D(
                [], [], color="tab:green", alpha=0.3, lw=8, label=f"ratio within {low:g}-{high:g}"
            ),
            Line2D([], [], color="0.5", ls=":", label="observed = predicted"),
            *(Line2D([], [], ls="", marker="o", color=colour_of[g], label=g) for g in groups),
        ]
        ax.legend(handles=handles, loc="lower right", fontsize=8.5, framealpha=0.9)
        hidden = int((~inside).sum())
        if hidden:
            ax.text(
                0.02,
                0.98,
                f"{hidden} small level(s) outside this view: see the right panel",
                transform=ax.transAxes,
                va="top",
                fontsize=8,
                color="0.3",
            )
        ax.set(
            xlim=lim,
            ylim=lim,
            xlabel="mean predicted no-show probability",
            ylabel="observed no-show rate",
            title="Per level (size = rows; red edge = outside the band)",
        )
        ax.grid(alpha=0.3)

        # Right: every level's ratio with its 95% interval, groups stacked top to bottom.
        ypos = np.arange(len(rows))[::-1].astype(float)
        events = np.round(rows["observed"].to_numpy() * n)
        w_low, w_high = wilson_interval(events, n)
        predicted = rows["mean_predicted"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            r_low, r_high = w_low / predicted, w_high / predicted
        lo_edge, hi_edge = RATIO_VIEW
        shown = np.clip(ratio, lo_edge, hi_edge)
        ax_ratio.axvspan(low, high, color="tab:green", alpha=0.12)
        ax_ratio.axvline(1.0, color="0.5", ls=":", lw=1.2)
        finite = np.isfinite(ratio)
        for i in np.flatnonzero(finite):
            colour = "red" if outside[i] else colour_of[group_of[i]]
            if np.isfinite(r_low[i]) and np.isfinite(r_high[i]):
                ax_ratio.plot(
                    np.clip([r_low[i], r_high[i]], lo_edge, hi_edge),
                    [ypos[i], ypos[i]],
                    color=colour,
                    alpha=0.45,
                    lw=1.5,
                    zorder=2,
                )
            if ratio[i] < lo_edge or ratio[i] > hi_edge:
                marker, size = ("<" if ratio[i] < lo_edge else ">"), 70
                ax_ratio.annotate(
                    f"{ratio[i]:.2f}",
                    (shown[i], ypos[i]),
                    xytext=(8 if ratio[i] < lo_edge else -8, 4),
                    textcoords="offset points",
                    ha="left" if ratio[i] < lo_edge else "right",
                    fontsize=7.5,
                    color="red",
                )
            else:
                marker, size = ("X", 70) if outside[i] else ("o", 40)
            ax_ratio.scatter(shown[i], ypos[i], color=colour, marker=marker, s=size, zorder=4)
        ax_ratio.set_yticks(
            ypos,
            [f"{r['group']}: {r['level']}  (n={int(r['n']):,})" for _, r in rows.iterrows()],
            fontsize=8,
        )
        for tick, bad in zip(ax_ratio.get_yticklabels(), outside, strict=True):
            if bad:
                tick.set_color("red")
        ax_ratio.set_xscale("log")
        ticks = [0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0]
        ax_ratio.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax_ratio.minorticks_off()
        ax_ratio.set(
            xlim=(lo_edge / 1.08, hi_edge * 1.08),
            ylim=(-0.7, len(rows) - 0.3),
            xlabel="observed / predicted with 95% interval (log scale; band 0.8-1.25)",
            title="Observed / predicted per level",
        )
        ax_ratio.grid(alpha=0.3, axis="x")
    return Path(path)
