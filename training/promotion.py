"""Promotion gates: a candidate becomes @champion only when it is at least as good where it counts.

No-show gates, all measured on the candidate's test window (the shared window: both models
score the same rows):
- auc: candidate ROC-AUC not worse than the champion's by more than 0.005;
- ece: candidate expected calibration error at most 0.03;
- subgroup_calibration: every subgroup with at least SUBGROUP_MIN_ROWS rows has an
  observed/predicted no-show ratio within 0.8-1.25.

Specialist-ranker gates, on the candidate's test referrals, with NDCG@5 against the true
utility on synthetic data ("oracle") and against the logged outcome grades otherwise:
- beats_baselines: the candidate's 95% bootstrap interval lies above every baseline's;
- vs_champion: not worse than the champion by more than RANK_TOLERANCE (both rescored here);
- urgency: for each urgency with at least URGENCY_MIN_REFERRALS referrals, not worse than the
  hand-weighted rule by more than RANK_TOLERANCE (urgent patients must not pay for the average).

Outreach-uplift gates, on the candidate's test window, each day calling the daily capacity the
model was trained for. "Prevented" is measured with the best evidence the rows carry: the true
effects on synthetic worlds, otherwise the doubly robust estimate from the randomised outcomes
(the detail says which); intervals are 95% bootstrap intervals over days:
- beats_random: no-shows prevented per 100 calls above a random choice (interval above 0);
- not_worse_than_risk: not clearly worse than ranking by risk, today's worklist (the interval
  of the difference reaches 0 or above);
- vs_champion: not worse than the champion by more than UPLIFT_TOLERANCE per 100 calls;
- average_benefit: the mean predicted benefit within 1.96 standard errors (+ 0.5 points) of
  the benefit estimated from the randomised outcomes, so the figures shown are not inflated.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.metrics import SUBGROUP_MIN_ROWS, binary_metrics, subgroup_table

AUC_TOLERANCE = 0.005
MAX_ECE = 0.03
RATIO_BAND = (0.8, 1.25)
RANK_TOLERANCE = 0.005
URGENCY_MIN_REFERRALS = 100
UPLIFT_TOLERANCE = 0.5  # no-shows prevented per 100 calls
AVERAGE_BENEFIT_SLACK = 0.005


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict, with the measured value, the threshold and a sentence for a person."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def no_show_gates(
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray | None,
    groups: dict[str, np.ndarray],
) -> list[GateResult]:
    """Evaluate the no-show promotion gates on one shared set of labelled rows."""
    cand = binary_metrics(y, candidate)
    results = []
    if champion is None:
        results.append(
            GateResult("auc", True, cand["roc_auc"], float("nan"), "no current champion")
        )
    else:
        champ_auc = binary_metrics(y, champion)["roc_auc"]
        floor = champ_auc - AUC_TOLERANCE
        diff = cand["roc_auc"] - champ_auc
        results.append(
            GateResult(
                "auc",
                cand["roc_auc"] >= floor,
                cand["roc_auc"],
                floor,
                f"candidate AUC {cand['roc_auc']:.4f} vs champion {champ_auc:.4f} "
                f"({diff:+.4f}; allowed down to -{AUC_TOLERANCE})",
            )
        )
    results.append(
        GateResult(
            "ece",
            cand["ece"] <= MAX_ECE,
            cand["ece"],
            MAX_ECE,
            f"expected calibration error {cand['ece']:.4f} (at most {MAX_ECE})"
            + ("" if cand["ece"] <= MAX_ECE else f", over by {cand['ece'] - MAX_ECE:.4f}"),
        )
    )
    table = subgroup_table(y, candidate, groups)
    gated = table[table["n"] >= SUBGROUP_MIN_ROWS]
    lo, hi = RATIO_BAND
    ratio = gated["observed_over_predicted"]
    bad = gated[(ratio < lo) | (ratio > hi)]
    worst = float(ratio.iloc[(ratio - 1).abs().argmax()]) if len(ratio) else 1.0
    detail = (
        f"all {len(gated)} subgroups with >= {SUBGROUP_MIN_ROWS} rows within {lo}-{hi}"
        if bad.empty
        else "; ".join(
            f"{r.group}={r.level}: observed/predicted {r.observed_over_predicted:.2f} (n={r.n})"
            for r in bad.itertuples()
        )
    )
    results.append(GateResult("subgroup_calibration", bad.empty, worst, hi, detail))
    return results


def summarize(results: list[GateResult]) -> str:
    """One line per gate: PASS/FAIL, name and detail."""
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<22} {r.detail}" for r in results)


def subgroup_columns(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The audit subgroups of flat rows (age band, sex, payer type, language, race as audit)."""
    from features.no_show import age_band

    candidates = {
        "age_band": age_band(rows["age"]) if "age" in rows else None,
        "sex": rows.get("sex"),
        "payer_type": rows.get("payer_type"),
        "language": rows.get("language"),
        "race_ethnicity (audit only)": rows.get("race_ethnicity"),
    }
    return {
        k: np.asarray(v)
        for k, v in candidates.items()
        if v is not None and pd.Series(v).notna().any()
    }


def ranker_gates(
    metric: str,
    candidate: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, dict[str, Any]]],
    champion: dict[str, dict[str, Any]] | None,
    by_urgency: dict[str, tuple[int, float, float]],
) -> list[GateResult]:
    """Evaluate the ranker gates.

    `candidate`, `champion` and each baseline are `training.ranker.evaluate` results for one
    ranking ({metric: {"mean", "ci95"}}); `metric` names the NDCG used ("oracle.ndcg@5" or
    "ndcg@5"); `by_urgency` maps urgency -> (referrals, candidate value, weighted-rule value).
    """
    mean = float(candidate[metric]["mean"])
    low = float(candidate[metric]["ci95"][0])
    results = []
    highs = {name: float(r[metric]["ci95"][1]) for name, r in baselines.items()}
    best = max(highs, key=lambda k: highs[k]) if highs else None
    if best is None:
        results.append(GateResult("beats_baselines", False, mean, float("nan"), "no baselines"))
    else:
        results.append(
            GateResult(
                "beats_baselines",
                low > highs[best],
                low,
                highs[best],
                f"{metric} 95% CI low {low:.4f} vs best baseline '{best}' CI high "
                f"{highs[best]:.4f}",
            )
        )
    if champion is None:
        results.append(GateResult("vs_champion", True, mean, float("nan"), "no current champion"))
    else:
        champ = float(champion[metric]["mean"])
        results.append(
            GateResult(
                "vs_champion",
                mean >= champ - RANK_TOLERANCE,
                mean,
                champ - RANK_TOLERANCE,
                f"{metric} {mean:.4f} vs champion {champ:.4f} ({mean - champ:+.4f}; "
                f"tolerance {RANK_TOLERANCE})",
            )
        )
    worst = None
    for urgency, (n, value, rule) in sorted(by_urgency.items()):
        if n < URGENCY_MIN_REFERRALS:
            continue
        gap = value - rule
        if worst is None or gap < worst[1]:
            worst = (urgency, gap, value, rule, n)
    if worst is None:
        results.append(
            GateResult(
                "urgency", True, float("nan"), -RANK_TOLERANCE, "no urgency group large enough"
            )
        )
    else:
        urgency, gap, value, rule, n = worst
        results.append(
            GateResult(
                "urgency",
                gap >= -RANK_TOLERANCE,
                gap,
                -RANK_TOLERANCE,
                f"worst urgency '{urgency}' ({n} referrals): {metric} {value:.4f} vs weighted rule "
                f"{rule:.4f} ({gap:+.4f})",
            )
        )
    return results


# gates(evaluation folder of the candidate's run, candidate bundle, champion bundle or None)
GateFunction = Callable[[Path, Path, Path | None], list[GateResult]]


def promote_version(
    name: str,
    version: str | None,
    *,
    force: bool,
    tracking_uri: str | None,
    evaluation_dir: str,
    gates: GateFunction,
) -> tuple[bool, list[GateResult], str]:
    """Move `name`@champion to `version` (default: the latest) if it passes `gates`, or when
    forced; the gates see the candidate run's evaluation artifacts and both bundles."""
    from training import registry

    registry.configure(tracking_uri)
    candidate = registry.version(name, version) if version else registry.latest_version(name)
    if candidate is None:
        raise LookupError(f"no registered versions of '{name}': train one first")
    current = registry.champion(name)
    if current is not None and str(current.version) == str(candidate.version):
        return True, [], f"version {candidate.version} is already the champion"
    if not candidate.run_id:
        raise LookupError(f"{name} v{candidate.version} has no training run to evaluate it with")
    with tempfile.TemporaryDirectory() as tmp:
        evaluation = registry.run_artifact_dir(candidate.run_id, evaluation_dir, Path(tmp) / "eval")
        cand = registry.download_bundle(name, str(candidate.version), dst=Path(tmp) / "cand")
        champ = None
        if current is not None:
            champ = registry.download_bundle(name, str(current.version), dst=Path(tmp) / "champ")
        results = gates(evaluation, cand, champ)
    passed = all(r.passed for r in results)
    if passed or force:
        registry.set_champion(
            name, str(candidate.version), forced=not passed, gates=[r.to_dict() for r in results]
        )
    verb = (
        "promoted"
        if passed
        else ("promoted by --force despite failed gates" if force else "refused")
    )
    against = f"champion v{current.version}" if current is not None else "no current champion"
    message = f"{name} v{candidate.version} vs {against}: {verb}\n{summarize(results)}"
    return passed or force, results, message


def uplift_gates(
    day: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray | None,
    risk: np.ndarray,
    pseudo_outcome: np.ndarray,
    true_effect: np.ndarray | None,
    *,
    capacity: int,
    seed: int = 7,
) -> list[GateResult]:
    """Evaluate the outreach-uplift gates on one shared set of test rows (benefits may be NaN
    where not estimated: never called)."""
    from training.uplift import bootstrap_days, policy_picks

    evidence = "true effects" if true_effect is not None else "outcome-based (doubly robust)"
    value = true_effect if true_effect is not None else pseudo_outcome
    picks = {
        "candidate": policy_picks(candidate, day, capacity),
        "risk": policy_picks(risk, day, capacity),
        "random": np.ones(len(day), bool),
    }
    if champion is not None:
        picks["champion"] = policy_picks(champion, day, capacity)
    boot = bootstrap_days(day, {"v": value}, picks, seed)
    per_100 = {k: float(100 * value[m].mean()) for k, m in picks.items()}

    def diff(other: str) -> tuple[float, float, float]:
        d = boot["candidate:v"] - boot[f"{other}:v"]
        lo, hi = np.percentile(d, [2.5, 97.5])
        return per_100["candidate"] - per_100[other], float(lo), float(hi)

    results = []
    point, lo, hi = diff("random")
    results.append(
        GateResult(
            "beats_random",
            lo > 0,
            lo,
            0.0,
            f"{per_100['candidate']:.2f} vs {per_100['random']:.2f} no-shows prevented per 100 "
            f"calls at {capacity}/day ({evidence}); difference {point:+.2f} [{lo:+.2f}, {hi:+.2f}]",
        )
    )
    point, lo, hi = diff("risk")
    results.append(
        GateResult(
            "not_worse_than_risk",
            hi >= 0,
            hi,
            0.0,
            f"{per_100['candidate']:.2f} vs {per_100['risk']:.2f} for ranking by risk "
            f"({evidence}); difference {point:+.2f} [{lo:+.2f}, {hi:+.2f}]",
        )
    )
    if champion is None:
        results.append(
            GateResult(
                "vs_champion", True, per_100["candidate"], float("nan"), "no current champion"
            )
        )
    else:
        floor = per_100["champion"] - UPLIFT_TOLERANCE
        results.append(
            GateResult(
                "vs_champion",
                per_100["candidate"] >= floor,
                per_100["candidate"],
                floor,
                f"{per_100['candidate']:.2f} vs champion {per_100['champion']:.2f} per 100 calls "
                f"({evidence}; allowed down to -{UPLIFT_TOLERANCE})",
            )
        )
    ok = ~np.isnan(candidate)
    predicted = float(np.mean(candidate[ok])) if ok.any() else float("nan")
    estimated = float(np.mean(pseudo_outcome[ok])) if ok.any() else float("nan")
    se = float(np.std(pseudo_outcome[ok]) / np.sqrt(max(ok.sum(), 1)))
    allowed = 1.96 * se + AVERAGE_BENEFIT_SLACK
    gap = abs(predicted - estimated)
    results.append(
        GateResult(
            "average_benefit",
            bool(gap <= allowed),
            gap,
            allowed,
            f"mean predicted benefit {100 * predicted:.2f} points vs {100 * estimated:.2f} "
            f"estimated from the randomised outcomes (+/- {100 * allowed:.2f} allowed)",
        )
    )
    return results
