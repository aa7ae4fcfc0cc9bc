"""PNG reports for the outreach-uplift model, drawn from the frames of `UpliftTraining`.

Every function writes one PNG and returns its path (Agg backend, figure always closed, also when
drawing fails). The true_* columns exist only when the world has truth (synthetic data); without
them each plot shows what the randomised outcomes estimate, and says so.

- `qini_plot`: cumulative no-shows prevented per 100 eligible appointments vs the share of
  appointments called, best-first by each score (`UpliftTraining.qini`), estimated and true.
- `policy_plot`: no-shows prevented per 100 calls per policy with 95% intervals, at the daily
  capacity (`UpliftTraining.policies`), true and estimated side by side.
- `benefit_calibration_plot`: mean predicted vs estimated (and true) benefit by decile of
  predicted benefit (`UpliftTraining.calibration`), in percentage points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.plot_support import _pyplot, _saved
from training.uplift import auuc

__all__ = ["benefit_calibration_plot", "policy_plot", "qini_plot"]

UPLIFT = "uplift"  # the chosen learner's policy, drawn most prominently
KINDS = {
    "true": "true effects (synthetic world)",
    "estimated": "estimated from the randomised outcomes",
}
POLICY_LABELS = {
    "uplift": "uplift (chosen model)",
    "risk": "risk (today's worklist)",
    "oracle": "oracle (true effect)",
    "random": "random",
}


def _kinds(columns: pd.Index) -> list[str]:
    """Which of "true" / "estimated" the frame carries (as `<kind>_...` columns), true first."""
    present = []
    for kind in KINDS:
        if any(str(c).startswith(f"{kind}_") for c in columns):
            present.append(kind)
    return present


def _style(name: str, colours: Any, others: Any) -> dict[str, Any]:
    if name == UPLIFT:
        return {"color": colours[0], "lw": 3.0, "ls": "-", "zorder": 5}
    if name == "risk":
        return {"color": colours[1], "lw": 1.8, "ls": "-", "zorder": 4}
    if name == "oracle":
        return {"color": "0.3", "lw": 1.5, "ls": "--", "zorder": 3}
    return {"color": next(others), "lw": 1.3, "ls": "-", "zorder": 3}


# ---------------------------------------------------------------- Qini curves


def qini_plot(qini: pd.DataFrame, path: Path) -> Path:
    """Qini curves: cumulative no-shows prevented per 100 eligible appointments vs the share
    of appointments called, highest score first, one line per policy.

    `qini` has `fraction` (0..1) and `estimated_<name>` / `true_<name>` columns (no-shows
    prevented per appointment of the test population, as `training.uplift.qini_curves`). One
    panel per kind present: estimated from the randomised outcomes, and true (only with truth).
    "uplift" is drawn boldest, "oracle" dashed, random calling is the straight line from 0 to
    the curves' end point. The legend gives each curve's AUUC (`training.uplift.auuc`, per 100
    appointments).
    """
    if "fraction" not in qini.columns:
        raise ValueError("the qini frame needs a 'fraction' column")
    kinds = [k for k in ("estimated", "true") if k in _kinds(qini.columns)]
    if not kinds or len(qini) < 2:
        raise ValueError("the qini frame has no estimated_* / true_* curve to plot")
    frac = qini["fraction"].to_numpy(dtype=float)
    order = np.argsort(frac, kind="stable")
    frac = frac[order]

    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(
        1,
        len(kinds),
        figsize=(6.4 * len(kinds) + 0.6, 5.8),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    with _saved(fig, path):
        for ax, kind in zip(axes[0], kinds, strict=True):
            prefix = f"{kind}_"
            names = [str(c)[len(prefix) :] for c in qini.columns if str(c).startswith(prefix)]
            # uplift last so it is drawn on top, but first in the legend
            names = sorted(names, key=lambda n: (n == UPLIFT, n == "oracle"))
            others = iter(c for i, c in enumerate(colours) if i not in (0, 1))
            end = np.nan
            for name in names:
                curve = 100 * qini[f"{prefix}{name}"].to_numpy(dtype=float)[order]
                ok = np.isfinite(curve)
                if not ok.any():
                    continue
                if np.isnan(end):
                    end = float(curve[ok][-1])
                area = auuc(curve[ok], frac[ok])
                ax.plot(
                    frac[ok],
                    curve[ok],
                    label=f"{POLICY_LABELS.get(name, name)} (AUUC {area:.2f})",
                    **_style(name, colours, others),
                )
            if np.isfinite(end):
                line = np.array([0.0, end * frac[-1]])
                ends = np.array([0.0, frac[-1]])
                ax.plot(
                    ends,
                    line,
                    color="0.55",
                    ls=":",
                    lw=1.4,
                    label=f"random (AUUC {auuc(line, ends):.2f})",
                    zorder=2,
                )
            ax.axhline(0, color="0.75", lw=0.8, zorder=1)
            handles, labels = ax.get_legend_handles_labels()
            first = [i for i, lab in enumerate(labels) if lab.startswith(POLICY_LABELS[UPLIFT])]
            rest = [i for i in range(len(labels)) if i not in first]
            ax.legend(
                [handles[i] for i in first + rest],
                [labels[i] for i in first + rest],
                loc="lower right",
                fontsize=9,
                title="AUUC: area, per 100 appointments",
                title_fontsize=8.5,
            )
            ax.xaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set(xlim=(0, 1), xlabel="share of test appointments called (highest score first)")
            ax.set_title(KINDS[kind].capitalize(), fontsize=11)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("cumulative no-shows prevented\nper 100 eligible appointments")
        fig.suptitle(
            "Qini curves on the test window: calling the appointments a score ranks first\n"
            "(ranked over the whole window, not per day)",
            fontsize=12,
        )
    return Path(path)


# ---------------------------------------------------------------- policies


def _policy_label(name: str, calls: Any) -> str:
    label = POLICY_LABELS.get(name, name)
    if name == "random":
        return f"{label}\n(mean of all)"
    try:
        return f"{label}\n({int(calls):,} calls)"
    except (TypeError, ValueError):
        return label


def policy_plot(policies: pd.DataFrame, capacity: int, path: Path) -> Path:
    """Horizontal bars of no-shows prevented per 100 calls, one per policy, with 95% interval
    whiskers; true (when present) and estimated from the outcomes side by side.

    `policies` has `policy`, `calls` and for each kind `<kind>_per_100`, `<kind>_low`,
    `<kind>_high` (as `training.uplift.policy_table`); `capacity` is the calls a day each
    policy makes (stated in the title). Missing values (such as a policy without truth) are
    left out; "random" is the expected value of a random pick, the mean over all rows.
    """
    if "policy" not in policies.columns or policies.empty:
        raise ValueError("the policies frame needs a 'policy' column and at least one row")
    kinds = [k for k in ("true", "estimated") if f"{k}_per_100" in policies.columns]
    if not kinds:
        raise ValueError("the policies frame has no true_per_100 / estimated_per_100 column")
    names = [str(p) for p in policies["policy"]]
    calls = policies["calls"] if "calls" in policies.columns else [None] * len(names)
    labels = [_policy_label(n, c) for n, c in zip(names, calls, strict=True)]
    ypos = np.arange(len(names))[::-1]  # first policy on top

    plt = _pyplot()
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(
        1,
        len(kinds),
        figsize=(5.6 * len(kinds) + 2.2, 0.62 * len(names) + 2.3),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    with _saved(fig, path):
        values_all: list[float] = [0.0]
        negative_bar = False
        for ax, kind in zip(axes[0], kinds, strict=True):
            value = pd.to_numeric(policies[f"{kind}_per_100"], errors="coerce").to_numpy(float)
            low = _column(policies, f"{kind}_low", value)
            high = _column(policies, f"{kind}_high", value)
            for y, name, v, lo, hi in zip(ypos, names, value, low, high, strict=True):
                if not np.isfinite(v):
                    ax.text(0, y, "  not available", va="center", fontsize=8.5, color="0.4")
                    continue
                colour = _bar_colour(name, colours)
                ax.barh(y, v, height=0.62, color=colour, alpha=0.9, zorder=3)
                err = [[max(v - lo, 0.0)], [max(hi - v, 0.0)]]
                ax.errorbar(v, y, xerr=err, fmt="none", ecolor="0.15", capsize=4, lw=1.2, zorder=4)
                ax.annotate(
                    f"{v:.1f} [{lo:.1f}, {hi:.1f}]",
                    (max(v, hi) if v >= 0 else min(v, lo), y),
                    xytext=(5 if v >= 0 else -5, 0),
                    textcoords="offset points",
                    ha="left" if v >= 0 else "right",
                    va="center",
                    fontsize=8.5,
                    zorder=5,
                )
                values_all += [v, lo, hi]
                negative_bar |= bool(v < 0)
            ax.axvline(0, color="0.4", lw=0.9, zorder=2)
            ax.set_title(KINDS[kind].capitalize(), fontsize=10.5)
            ax.set_xlabel("no-shows prevented per 100 calls (95% interval over test days)")
            ax.grid(alpha=0.3, axis="x", zorder=0)
        finite = [x for x in values_all if np.isfinite(x)]
        lo_x, hi_x = min(finite), max(finite)
        span = (hi_x - lo_x) or 1.0
        # room on the right (and on the left, for negative bars) for the value labels
        left = lo_x - (0.35 * span if negative_bar else 0.05 * span)
        axes[0][0].set_xlim(left, hi_x + 0.38 * span)
        axes[0][0].set_yticks(ypos, labels, fontsize=9)
        axes[0][0].set_ylim(-0.6, len(names) - 0.4)
        fig.suptitle(
            "No-shows prevented per 100 calls on the test window\n"
            f"each policy calls {capacity:,} appointments a day, highest score first",
            fontsize=12,
        )
    return Path(path)


def _column(frame: pd.DataFrame, name: str, fallback: np.ndarray) -> np.ndarray:
    if name not in frame.columns:
        return fallback
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(float)
    return np.where(np.isfinite(values), values, fallback)


def _bar_colour(name: str, colours: Any) -> Any:
    if name == UPLIFT:
        return colours[0]
    if name == "risk":
        return colours[1]
    if name == "oracle":
        return "0.45"
    if name == "random":
        return "0.75"
    return "#9ecae1"  # the other learners: a light blue


# ---------------------------------------------------------------- benefit calibration


def benefit_calibration_plot(calibration: pd.DataFrame, path: Path) -> Path:
    """By decile of predicted benefit: mean predicted benefit (x) vs the mean benefit
    estimated from the randomised outcomes and, with truth, the mean true benefit (y), in
    percentage points, with the y = x line of a perfectly calibrated benefit.

    `calibration` has `decile`, `rows`, `predicted`, `estimated` and optionally `true` (no-show
    probabilities prevented, as `training.uplift.benefit_calibration`).
    """
    needed = {"predicted", "estimated"}
    if not needed <= set(calibration.columns) or calibration.empty:
        raise ValueError("the calibration frame needs 'predicted' and 'estimated' columns")
    table = calibration.sort_values("predicted", kind="stable")
    x = 100 * table["predicted"].to_numpy(float)
    series = [("estimated", "o-", "C1", 1.8, "estimated from the randomised outcomes")]
    if "true" in table.columns and table["true"].notna().any():
        series.insert(0, ("true", "s--", "0.3", 1.5, "true effect (synthetic world)"))
    decile = table["decile"].to_numpy() if "decile" in table.columns else np.arange(len(x)) + 1
    rows = int(table["rows"].sum()) if "rows" in table.columns else None

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.8, 6.6), layout="constrained")
    with _saved(fig, path):
        ys = [x]
        for column, fmt, colour, lw, label in series:
            y = 100 * table[column].to_numpy(float)
            ys.append(y)
            ax.plot(x, y, fmt, color=colour, lw=lw, ms=6, label=label, zorder=4)
        est = 100 * table["estimated"].to_numpy(float)
        for d, xi, yi in zip(decile, x, est, strict=True):
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(
                    str(d),
                    (xi, yi),
                    xytext=(6, 0),
                    textcoords="offset points",
                    ha="left",
                    va="center",
                    fontsize=7.5,
                    color="C1",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                    zorder=6,
                )
        finite = np.concatenate([v[np.isfinite(v)] for v in ys] + [np.zeros(1)])
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.08 * ((hi - lo) or 1.0)
        lo, hi = lo - pad, hi + pad
        ax.plot(
            [lo, hi], [lo, hi], color="0.6", ls=":", lw=1.2, label="perfect calibration (y = x)"
        )
        ax.axhline(0, color="0.8", lw=0.8, zorder=1)
        xs = x[np.isfinite(x)]
        x_lo = min(float(xs.min()) if len(xs) else 0.0, 0.0) - pad
        ax.set(
            xlim=(x_lo, hi),
            ylim=(lo, hi),
            xlabel="mean predicted benefit (percentage points of no-show risk)",
            ylabel="mean benefit (percentage points)",
        )
        n = f", n = {rows:,}" if rows is not None else ""
        ax.set_title(
            f"Benefit calibration: {len(table)} deciles of predicted benefit{n}\n"
            "(labels: decile; benefit = no-show probability a call removes)",
            fontsize=11,
        )
        ax.legend(loc="upper left", fontsize=9)
        ax.grid(alpha=0.3)
    return Path(path)
