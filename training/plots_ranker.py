"""Reports for the specialist ranker, drawn from its test pairs (`RankerTraining.test`).

The test frame holds one row per (referral, candidate specialist), rows of a referral
consecutive, with the logged grade `label`, one `score_<name>` column per ranking (higher ranks
first) and, on synthetic data, the true match `utility`. The gain of a candidate is its oracle
gain when the truth is there (utility above the worst known candidate of the referral, as
`training.ranker.evaluate`; referrals with fewer than two known utilities are left out), else
its logged gain 2**grade - 1. Rankings order candidates by score, ties by row order, exactly as
`training.ranker.ndcg_at`.

- `gain_by_position` / `gain_by_position_plot`: mean gain at rank positions 1..k per ranking,
  with the ideal ranking's as the ceiling.
- `metric_by_group` / `metric_by_group_plot`: NDCG@k per referral group (specialty, urgency)
  for every ranking, to see where the ranker is weaker than the baselines.

The plot functions write one PNG (Agg backend, figure always closed) and return its path.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.codes import specialties
from training.plot_support import _pretty, _pyplot, _saved
from training.ranker import _groups, ndcg_at

__all__ = [
    "gain_by_position",
    "gain_by_position_plot",
    "metric_by_group",
    "metric_by_group_plot",
]

SCORE_PREFIX = "score_"
RANKER = "ranker"  # the trained model's ranking, drawn most prominently
IDEAL = "ideal"  # best possible order of each referral's candidates (gain_by_position)
DEFAULT_GROUP_RANKINGS = ("ranker", "weighted_rule", "historical_choice", "nearest")
GAIN_TITLES = {
    "oracle": "gain = true match utility above the referral's worst candidate (synthetic truth)",
    "logged": "gain = logged outcome 2^grade - 1 (3 completed, 2 booked, 1 chosen only, 0 not)",
}


# ---------------------------------------------------------------- per-referral gains


def _rankings(test: pd.DataFrame) -> list[str]:
    """Names of the rankings (the `score_*` columns), in column order."""
    names = [
        str(c).removeprefix(SCORE_PREFIX) for c in test.columns if str(c).startswith(SCORE_PREFIX)
    ]
    if not names:
        raise ValueError(f"the test frame has no {SCORE_PREFIX}* column: nothing to rank")
    return names


def _gain_kind(test: pd.DataFrame) -> str:
    """ "oracle" when the frame carries any known true utility, else "logged"."""
    return "oracle" if "utility" in test.columns and test["utility"].notna().any() else "logged"


def _per_referral(
    test: pd.DataFrame,
) -> tuple[str, list[np.ndarray], dict[str, list[np.ndarray]], np.ndarray]:
    """Gain kind, each kept referral's gains and per-ranking scores, and its first row.

    Rows of a referral must be consecutive (as `training.ranker` writes them). Under the oracle
    gain only candidates with a known utility count, and referrals with fewer than two of them
    are left out (as `evaluate` does).
    """
    missing = [c for c in ("referral_id", "label") if c not in test.columns]
    if missing:
        raise ValueError(f"the test frame lacks columns {missing}")
    names = _rankings(test)
    if test.empty:
        raise ValueError("the test frame has no rows")
    ids = test["referral_id"].to_numpy()
    sizes = _groups(ids)
    if len(sizes) != pd.Series(ids).nunique():
        raise ValueError("rows of a referral must be consecutive (sort by referral_id)")
    bounds = np.r_[0, np.cumsum(sizes)]
    kind = _gain_kind(test)
    if kind == "oracle":
        values = test["utility"].to_numpy(dtype=float)
    else:
        values = 2.0 ** test["label"].to_numpy(dtype=float) - 1
    all_scores = {n: test[f"{SCORE_PREFIX}{n}"].to_numpy(dtype=float) for n in names}
    gains: list[np.ndarray] = []
    scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
    firsts = []
    for a, b in itertools.pairwise(bounds):
        g = values[a:b]
        keep = np.ones(len(g), dtype=bool)
        if kind == "oracle":
            keep = ~np.isnan(g)
            if keep.sum() < 2:
                continue
            g = g[keep] - g[keep].min()
        gains.append(g)
        for n in names:
            scores[n].append(all_scores[n][a:b][keep])
        firsts.append(a)
    return kind, gains, scores, np.asarray(firsts, dtype=np.int64)


# ---------------------------------------------------------------- gain by position


def gain_by_position(test: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Mean gain at rank positions 1..k per ranking, and of the ideal ranking.

    Long format: ranking, position, mean_gain; rankings in `score_*` column order, then
    "ideal" (every referral's candidates sorted by their gain). The mean is over all kept
    referrals at every position: a referral with fewer than `position` candidates adds 0 there,
    so each curve sums to the mean cumulative gain@k. Oracle gain when `utility` is present,
    else the logged gain (see the module docstring).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    _, gains, scores, _ = _per_referral(test)
    return _gain_table(gains, scores, k)


def _gain_table(
    gains: list[np.ndarray], scores: dict[str, list[np.ndarray]], k: int
) -> pd.DataFrame:
    if not gains:
        raise ValueError("no referral has two candidates with a known utility")

    def mean_at_positions(ordered: list[np.ndarray]) -> np.ndarray:
        padded = np.zeros((len(ordered), k))
        for i, g in enumerate(ordered):
            top = g[:k]
            padded[i, : len(top)] = top
        return padded.mean(axis=0)

    curves = {
        name: mean_at_positions(
            [g[np.argsort(-s, kind="stable")] for g, s in zip(gains, per, strict=True)]
        )
        for name, per in scores.items()
    }
    curves[IDEAL] = mean_at_positions([np.sort(g)[::-1] for g in gains])
    return pd.DataFrame(
        [
            {"ranking": name, "position": p + 1, "mean_gain": float(curve[p])}
            for name, curve in curves.items()
            for p in range(k)
        ]
    )


def gain_by_position_plot(test: pd.DataFrame, out: Path, k: int = 10) -> Path:
    """Mean gain by rank position: one line per ranking, the ranker boldest, the ideal dashed.

    The legend lists the rankings by their cumulative gain over positions 1..k (best first,
    ideal at the top); the title says which gain is plotted (true utility or logged outcome).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    kind, gains, scores, _ = _per_referral(test)
    table = _gain_table(gains, scores, k)
    names = list(dict.fromkeys(table["ranking"]))
    total = table.groupby("ranking")["mean_gain"].sum()
    # Draw the ranker last (on top); list the legend by cumulative gain, ideal first.
    drawn = [n for n in names if n not in (RANKER, IDEAL)] + [
        n for n in (IDEAL, RANKER) if n in names
    ]
    plt = _pyplot()
    colours = plt.get_cmap("tab10").colors
    others = iter(c for i, c in enumerate(colours) if i != 0)
    colour_of = {n: next(others) for n in names if n not in (RANKER, IDEAL)}
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    with _saved(fig, out):
        handles: dict[str, Any] = {}
        for name in drawn:
            rows = table[table["ranking"] == name]
            is_ranker, is_ideal = name == RANKER, name == IDEAL
            (line,) = ax.plot(
                rows["position"],
                rows["mean_gain"],
                marker="o" if is_ranker else ("" if is_ideal else "."),
                color="C0" if is_ranker else ("0.35" if is_ideal else colour_of[name]),
                lw=3.0 if is_ranker else (1.8 if is_ideal else 1.3),
                ls="--" if is_ideal else "-",
                ms=6 if is_ranker else 5,
                zorder=5 if is_ranker else 3,
                alpha=1.0 if is_ranker or is_ideal else 0.85,
                label=f"{_pretty(name)} (sum {total[name]:.2f})",
            )
            handles[name] = line
        order = sorted(handles, key=lambda n: (n != IDEAL, -total[n]))
        ax.legend(
            [handles[n] for n in order],
            [handles[n].get_label() for n in order],
            loc="upper right",
            fontsize=9,
            title=f"ranking (sum of mean gain, positions 1-{k})",
            title_fontsize=9,
        )
        ax.set_xticks(range(1, k + 1))
        ax.set(
            xlim=(0.7, k + 0.3),
            ylim=(0, None),
            xlabel="rank position",
            ylabel=f"mean {kind} gain per referral",
        )
        ax.grid(alpha=0.3)
        ax.text(
            0.01,
            0.02,
            "past the first positions a ranking can lie above the ideal:\n"
            "the ideal has already placed the best candidates",
            transform=ax.transAxes,
            fontsize=8,
            color="0.35",
            va="bottom",
        )
        ax.set_title(
            f"Gain by rank position on {len(gains):,} test referrals\n{GAIN_TITLES[kind]}",
            fontsize=11,
        )
    return Path(out)


# ---------------------------------------------------------------- NDCG by group


def metric_by_group(
    test: pd.DataFrame, column: str, k: int = 5, min_referrals: int = 30
) -> pd.DataFrame:
    """NDCG@k per value of a referral-level `column` (e.g. specialty, urgency), every ranking.

    Columns: group, referrals, ranking, ndcg, metric. `referrals` counts the group's referrals
    with a defined NDCG (some gain to rank); groups with fewer than `min_referrals` are dropped.
    The NDCG is `training.ranker.ndcg_at` per referral, averaged: oracle NDCG when `utility`
    is present, else logged NDCG; `metric` names which (e.g. "oracle NDCG@5"). Rows are ordered
    by group size (largest first), rankings in `score_*` column order. `column` must be constant
    within each referral (ValueError otherwise); missing values form the group "unknown".
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if column not in test.columns:
        raise ValueError(f"the test frame has no column {column!r}")
    varying = test.groupby("referral_id", sort=False)[column].nunique(dropna=False)
    if (varying > 1).any():
        raise ValueError(f"{column!r} varies within a referral: group by a referral-level column")
    kind, gains, scores, firsts = _per_referral(test)
    values = test[column].astype(object).where(test[column].notna(), "unknown").to_numpy()
    group_of = values[firsts] if len(firsts) else np.array([], dtype=object)
    ndcg = {name: ndcg_at(gains, per, k) for name, per in scores.items()}
    metric = f"{kind} NDCG@{k}"
    defined = ~np.isnan(next(iter(ndcg.values()))) if gains else np.array([], dtype=bool)
    sizes = pd.Series(group_of[defined]).value_counts(sort=False)
    kept = sorted(
        (g for g, n in sizes.items() if n >= min_referrals), key=lambda g: (-sizes[g], str(g))
    )
    rows = [
        {
            "group": g,
            "referrals": int(sizes[g]),
            "ranking": name,
            "ndcg": float(np.nanmean(values_[group_of == g])),
            "metric": metric,
        }
        for g in kept
        for name, values_ in ndcg.items()
    ]
    return pd.DataFrame(rows, columns=["group", "referrals", "ranking", "ndcg", "metric"])


def _group_label(group: Any, column: str) -> str:
    if column == "specialty":
        known = specialties()
        return known[group].name if group in known else str(group)
    return str(group)


def metric_by_group_plot(
    table: pd.DataFrame,
    column: str,
    out: Path,
    rankings: Sequence[str] = DEFAULT_GROUP_RANKINGS,
) -> Path:
    """Horizontal grouped bars of `metric_by_group`'s NDCG: one block per group, one bar per
    ranking, groups sorted by the ranker's value (best at the top).

    Groups are labelled with their referral count (specialty names instead of NUCC codes when
    `column` is "specialty"); each bar carries its value. Rankings absent from the table are
    skipped; without the ranker the first ranking shown sets the order.
    """
    missing = [c for c in ("group", "referrals", "ranking", "ndcg") if c not in table.columns]
    if missing:
        raise ValueError(f"group table lacks columns {missing}")
    present = set(table["ranking"])
    shown = [r for r in rankings if r in present]
    metric = str(table["metric"].iloc[0]) if "metric" in table.columns and len(table) else "NDCG"
    plt = _pyplot()
    colours = plt.get_cmap("tab10").colors
    others = iter(c for i, c in enumerate(colours) if i != 0)
    colour_of = {r: (colours[0] if r == RANKER else next(others)) for r in shown}
    wide = table[table["ranking"].isin(shown)].pivot_table(
        index="group", columns="ranking", values="ndcg", aggfunc="first"
    )
    n_groups = len(wide)
    bar = 0.8 / max(1, len(shown))
    height = max(4.0, n_groups * (len(shown) * 0.22 + 0.3) + 2.0)
    fig, ax = plt.subplots(figsize=(10, height), layout="constrained")
    with _saved(fig, out):
        ax.set_title(
            f"{metric[:1].upper()}{metric[1:]} by {_pretty(column)} "
            "(test referrals per group in brackets)",
            fontsize=11,
        )
        if not shown or wide.empty:
            ax.text(0.5, 0.5, "no group with enough referrals", ha="center", va="center")
            ax.set_axis_off()
            return Path(out)
        key = RANKER if RANKER in wide.columns else shown[0]
        wide = wide.sort_values(key, ascending=True, kind="stable")  # best ends at the top
        counts = table.drop_duplicates("group").set_index("group")["referrals"]
        ypos = np.arange(n_groups, dtype=float)
        for j, name in enumerate(shown):
            # The first ranking is the top bar of each block.
            offset = (len(shown) - 1) / 2 * bar - j * bar
            vals = (
                wide[name].to_numpy(dtype=float)
                if name in wide.columns
                else np.full(n_groups, np.nan)
            )
            is_ranker = name == RANKER
            ax.barh(
                ypos + offset,
                vals,
                height=bar * 0.92,
                color=colour_of[name],
                alpha=1.0 if is_ranker else 0.8,
                edgecolor="black" if is_ranker else "none",
                linewidth=0.8,
                label=_pretty(name),
                zorder=3,
            )
            for y, v in zip(ypos + offset, vals, strict=True):
                if np.isfinite(v):
                    ax.text(
                        v + 0.005,
                        y,
                        f"{v:.3f}",
                        va="center",
                        fontsize=7,
                        color="0.1" if is_ranker else "0.35",
                        fontweight="bold" if is_ranker else "normal",
                    )
        ax.set_yticks(
            ypos,
            [f"{_group_label(g, column)}  ({int(counts[g]):,})" for g in wide.index],
            fontsize=9,
        )
        ax.set(
            xlim=(0, 1.08),
            ylim=(-0.6, n_groups - 0.4),
            xlabel=f"mean {metric} per referral (higher is better)",
        )
        ax.grid(alpha=0.3, axis="x", zorder=0)
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(shown), fontsize=9)
    return Path(out)
