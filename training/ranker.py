"""Train and evaluate the specialist ranker (LightGBM LambdaRank) against baselines and the truth.

Candidates per historical referral: the CANDIDATES nearest accepting specialists of the needed or
a related specialty within RADIUS_KM, in or out of network (so the model sees what network status
is worth), plus the specialist actually chosen. Serving narrows further with the hard filters of
`features.retrieval`; training on the wider set teaches the order within any narrower one.

Logged labels (evaluation, `label`), graded per referral: 3 = the chosen specialist and the
referral was completed; 2 = chosen and a visit was booked but the referral did not complete;
1 = chosen but never scheduled (or leaked, or cancelled before booking); 0 = not chosen.

Training labels (`target`, 0..TARGET_LEVELS). The logged grades mostly say whom the referring
practice picked: a ranker trained on them learns to imitate the historical choice (habits,
proximity), not what completes. Only the chosen candidate has an observed outcome. So:

1. A completion model (LightGBM, binary) learns P(referral completed | pair features) from the
   chosen pairs of the training window, early-stopped on the next window's chosen pairs.
2. Each candidate gets a graded counterfactual label, the "direct method" of off-policy learning
   with the observed outcome where there is one (doubly-robust style): the chosen candidate gets
   its logged outcome (completed = TARGET_LEVELS, otherwise 0); every other candidate gets its
   predicted completion probability x TARGET_LEVELS, rounded.
3. LambdaRank (grouped by referral, linear label gains, monotone in distance, wait, network,
   focus, rating, language and continuity) learns the order of those labels, early-stopped on
   the time-later validation window.

On a medium world this lifts true-utility NDCG@5 from 0.887 (LambdaRank on the logged grades) to
0.957 [0.957, 0.958], above the hand-weighted rule's 0.941 [0.940, 0.941] (README, "The specialist
ranker").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.codes import specialties
from features.contract import TABLES
from features.drift import FeatureReference
from features.geo import approx_km
from features.matcher import SpecialistRanker
from features.ranking import PAIR_FEATURES, RankingContext, pair_features

LGB_RANK_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [1, 5, 10],
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "lambdarank_truncation_level": 20,
    "num_threads": 2,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
CANDIDATES, RADIUS_KM = 40, 60.0
TARGET_LEVELS = 30
COMPLETION_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "num_threads": 2,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
VALID_SHARE = 0.1
# (most boosting rounds, early-stopping patience) of the completion model and of the ranker
COMPLETION_ROUNDS, RANKER_ROUNDS = (3000, 100), (2000, 50)
# load_ratio is computed (and returned by the service) but left out of the model: busy
# specialists are the ones the historical policy routes to, so in logged data load mostly marks
# "was chosen" and it lowered true-utility NDCG@5 on a medium world (0.947 with, 0.950 without).
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in PAIR_FEATURES if f != "load_ratio")
# The ranker's score may only rise with these (+1) or fall (-1), all else equal: a closer or
# sooner specialist never drops, one leaving the network never rises. Also measured better on a
# medium world: true-utility NDCG@5 0.957 vs 0.953 unconstrained, regret@1 0.30 vs 0.35.
MONOTONE: dict[str, int] = {
    "distance_km": -1,
    "focus_match": 1,
    "in_network": 1,
    "accepts_plan": 1,
    "next_available_days": -1,
    "rating_shrunk": 1,
    "language_match": 1,
    "continuity": 1,
    "urgency_x_wait": -1,
}


@dataclass
class RankerData:
    """Candidate pairs with features and graded labels, grouped by referral (time ordered)."""

    pairs: pd.DataFrame  # referral_id, created_at, specialist_id, label, chosen, + features
    truth: pd.DataFrame | None  # referral_id, specialist_id, utility (synthetic only)


def candidate_pairs(ctx: RankingContext, refs: pd.DataFrame, k: int = CANDIDATES) -> pd.DataFrame:
    """Nearest k accepting specialists of the needed or a related specialty within RADIUS_KM,
    plus the historically chosen one (so that its logged outcome can be learned from)."""
    sp = ctx.specialists
    code = sp["specialty"].to_numpy()
    accepting = sp["accepting_new_patients"].to_numpy(dtype=bool)
    slat, slon = sp["latitude"].to_numpy(), sp["longitude"].to_numpy()
    parts = []
    for needed, idx in refs.groupby("specialty").indices.items():
        allowed = {needed, *specialties()[needed].related} if needed in specialties() else {needed}
        cand = np.flatnonzero(np.isin(code, list(allowed)) & accepting)
        if len(cand) == 0:
            continue
        for chunk in np.array_split(idx, max(1, len(idx) // 5000)):
            lat = refs["latitude"].to_numpy()[chunk]
            lon = refs["longitude"].to_numpy()[chunk]
            d = approx_km(lat[:, None], lon[:, None], slat[cand][None, :], slon[cand][None, :])
            kk = min(k, len(cand))
            near = (
                np.argpartition(d, kk - 1, axis=1)[:, :kk]
                if len(cand) > kk
                else np.argsort(d, axis=1)
            )
            dist = np.take_along_axis(d, near, axis=1)
            keep = dist <= RADIUS_KM
            r = np.broadcast_to(chunk[:, None], near.shape)[keep]
            parts.append(pd.DataFrame({"ref": r, "specialist_row": cand[near][keep]}))
    pairs = pd.concat(parts, ignore_index=True)
    spec_row = pd.Series(np.arange(len(sp)), index=sp["specialist_id"])
    chosen = refs["specialist_id"].dropna()
    chosen_pairs = pd.DataFrame(
        {
            "ref": chosen.index.to_numpy(),
            "specialist_row": spec_row.reindex(chosen.to_numpy()).to_numpy(),
        }
    ).dropna()
    pairs = pd.concat([pairs, chosen_pairs.astype(np.int64)], ignore_index=True).drop_duplicates()
    return pairs.sort_values(["ref", "specialist_row"], kind="stable").reset_index(drop=True)


def load_ranker_data(directory: Path, candidates: int = CANDIDATES) -> RankerData:
    """Referrals with a historical choice, their candidates, features and graded labels."""
    t = {name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES}
    ctx, refs = ranking_inputs(t)
    out = candidate_rows(ctx, refs, candidates)
    return RankerData(
        pairs=out.sort_values(["created_at", "referral_id"], kind="stable").reset_index(drop=True),
        truth=match_truth(directory),
    )


def ranking_inputs(t: dict[str, pd.DataFrame]) -> tuple[RankingContext, pd.DataFrame]:
    """The directory context and one row per referral with a historical choice (patient's
    location, plan, language, sex; urgency, referring system, status), from the tables."""
    ctx = RankingContext.build(
        t["specialists"],
        t["plans"],
        t["organizations"],
        t["availability"],
        t["appointments"],
        t["referrals"],
    )
    rf = t["referrals"]
    rf = rf[rf["specialist_id"].notna() & (rf["status"] != "sent")].reset_index(drop=True)
    pt = t["patients"].set_index("patient_id")
    org_system = t["organizations"].set_index("organization_id")["system_id"]
    pcp_org = t["referring_providers"].set_index("provider_id")["organization_id"]
    refs = pd.DataFrame(
        {
            "referral_id": rf["referral_id"],
            "created_at": rf["created_at"],
            "specialty": rf["specialty"],
            "specialist_id": rf["specialist_id"],
            "patient_id": rf["patient_id"],
            "latitude": rf["patient_id"].map(pt["latitude"]),
            "longitude": rf["patient_id"].map(pt["longitude"]),
            "insurance_plan_id": rf["patient_id"].map(pt["insurance_plan_id"]),
            "language": rf["patient_id"].map(pt["preferred_language"]),
            "sex": rf["patient_id"].map(pt["sex"]),
            "reason_code": rf["reason_code"],
            "urgency": rf["urgency"],
            "referring_system": rf["referring_provider_id"].map(pcp_org).map(org_system),
            "status": rf["status"],
            "booked": rf["referral_id"].isin(t["appointments"]["referral_id"]),
        }
    )
    return ctx, refs


def candidate_rows(ctx: RankingContext, refs: pd.DataFrame, candidates: int) -> pd.DataFrame:
    """Candidate pairs of `refs` (from `ranking_inputs`) with features and logged grades, each
    referral's pairs together, in specialist order."""
    cand = candidate_pairs(ctx, refs, candidates)
    r = refs.iloc[cand["ref"].to_numpy()].reset_index(drop=True)
    pairs = r.assign(specialist_row=cand["specialist_row"].to_numpy(), as_of=r["created_at"])
    X = pair_features(ctx, pairs)
    spec_ids = ctx.specialists["specialist_id"].to_numpy()[pairs["specialist_row"].to_numpy()]
    chosen = spec_ids == pairs["specialist_id"].to_numpy()
    grade = np.select(
        [
            chosen & (pairs["status"] == "completed").to_numpy(),
            chosen & pairs["booked"].to_numpy(),
            chosen,
        ],
        [3, 2, 1],
        0,
    )
    out = pd.concat(
        [
            pd.DataFrame(
                {
                    "referral_id": pairs["referral_id"].to_numpy(),
                    "created_at": pairs["created_at"].to_numpy(),
                    "specialist_id": spec_ids,
                    "specialty": pairs["specialty"].to_numpy(),
                    "urgency": pairs["urgency"].to_numpy(),
                    "label": grade,
                    "chosen": chosen,
                }
            ),
            X.reset_index(drop=True),
        ],
        axis=1,
    )
    return out


def match_truth(directory: Path) -> pd.DataFrame | None:
    """referral_id, specialist_id, utility of truth/match_utility.parquet (synthetic only)."""
    truth_path = directory / "truth" / "match_utility.parquet"
    if not truth_path.exists():
        return None
    tr = pd.read_parquet(truth_path, columns=["referral_id", "specialist_id", "utility"])
    return tr.assign(
        referral_id=tr["referral_id"].astype(str), specialist_id=tr["specialist_id"].astype(str)
    )


def _groups(referral_ids: np.ndarray) -> np.ndarray:
    """Sizes of consecutive runs of equal referral ids (rows must be grouped)."""
    change = np.r_[True, referral_ids[1:] != referral_ids[:-1]]
    starts = np.flatnonzero(change)
    return np.diff(np.r_[starts, len(referral_ids)])


def ndcg_at(gains: list[np.ndarray], scores: list[np.ndarray], k: int) -> np.ndarray:
    """NDCG@k per group for non-negative gains, ranking by score (ties by position)."""
    out = np.full(len(gains), np.nan)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for i, (g, s) in enumerate(zip(gains, scores, strict=True)):
        ideal = np.sort(g)[::-1][:k]
        best = float((ideal * discount[: len(ideal)]).sum())
        if best <= 0:
            continue
        top = g[np.argsort(-s, kind="stable")][:k]
        out[i] = float((top * discount[: len(top)]).sum()) / best
    return out


BASELINES = (
    "nearest",
    "highest_rating",
    "soonest_available",
    "weighted_rule",
    "historical_choice",
)


def baseline_scores(X: pd.DataFrame, chosen: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of the baselines on the same candidates (higher ranks first)."""
    rule = (
        1.0 * X["in_network"]
        + 0.5 * X["accepts_plan"]
        + 0.8 * X["focus_match"]
        + 0.4 * (X["rating_shrunk"] - 4.0)
        - X["distance_km"] / 25.0
        - X["next_available_days"] / 30.0
        + 0.3 * X["language_match"]
    ).to_numpy()
    return {
        "nearest": -X["distance_km"].to_numpy(),
        "highest_rating": X["rating_shrunk"].to_numpy()
        + 1e-4 * np.log1p(X["review_count"].to_numpy()),
        "soonest_available": -X["next_available_days"].to_numpy(),
        "weighted_rule": rule,
        "historical_choice": chosen.astype(float) * 1e3 - X["distance_km"].to_numpy(),
    }


def evaluate(
    test: pd.DataFrame,
    scores: dict[str, np.ndarray],
    truth: pd.DataFrame | None,
    seed: int = 0,
    n_boot: int = 200,
) -> dict[str, Any]:
    """Logged-label and ground-truth metrics per ranking, with 95% bootstrap intervals."""
    ids = test["referral_id"].to_numpy()
    sizes = _groups(ids)
    bounds = np.r_[0, np.cumsum(sizes)]
    labels = test["label"].to_numpy(dtype=float)
    utility = None
    if truth is not None:
        u = test[["referral_id", "specialist_id"]].merge(
            truth, how="left", on=["referral_id", "specialist_id"]
        )
        utility = u["utility"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, len(sizes), (n_boot, len(sizes)))
    results: dict[str, Any] = {}
    for name, s in scores.items():
        per: dict[str, np.ndarray] = {}
        g_lab = [labels[a:b] for a, b in itertools.pairwise(bounds)]
        g_s = [s[a:b] for a, b in itertools.pairwise(bounds)]
        gains = [2.0**g - 1 for g in g_lab]
        for k in (1, 5, 10):
            per[f"ndcg@{k}"] = ndcg_at(gains, g_s, k)
        rr = []
        hit = []
        for g, sc in zip(g_lab, g_s, strict=True):
            order = np.argsort(-sc, kind="stable")
            pos = int(np.flatnonzero(g[order] == g.max())[0]) + 1 if g.max() > 0 else 0
            rr.append(1.0 / pos if pos else np.nan)
            hit.append(float(0 < pos <= 5) if pos else np.nan)
        per["mrr"], per["hit@5"] = np.array(rr), np.array(hit)
        if utility is not None:
            oracle_gain, regret = [], []
            og_s = []
            for a, b in itertools.pairwise(bounds):
                uu, sc = utility[a:b], s[a:b]
                known = ~np.isnan(uu)
                if known.sum() < 2:
                    oracle_gain.append(np.zeros(1))
                    og_s.append(np.zeros(1))
                    regret.append(np.nan)
                    continue
                uu, sc = uu[known], sc[known]
                oracle_gain.append(uu - uu.min())
                og_s.append(sc)
                regret.append(float(uu.max() - uu[np.argmax(sc)]))
            per["oracle.ndcg@5"] = ndcg_at(oracle_gain, og_s, 5)
            per["oracle.regret@1"] = np.array(regret)
        summary = {}
        for metric, values in per.items():
            mean = float(np.nanmean(values))
            resampled = np.nanmean(values[boot], axis=1)
            summary[metric] = {
                "mean": mean,
                "ci95": [
                    float(np.percentile(resampled, 2.5)),
                    float(np.percentile(resampled, 97.5)),
                ],
            }
        results[name] = summary
    return results


@dataclass
class RankerTraining:
    """Everything a training run produces."""

    ranker: lgb.Booster
    completion: lgb.Booster
    metrics: dict[str, Any]
    test: pd.DataFrame  # test pairs with features, labels and every ranking's score_* column
    windows: dict[str, Any]
    reference: FeatureReference | None = None  # the training pairs' features, for drift

    def bundle(self, metadata: dict[str, Any] | None = None) -> SpecialistRanker:
        """The runtime ranker (features.matcher) for this run, with its drift reference."""
        return SpecialistRanker(self.ranker, MODEL_FEATURES, dict(metadata or {}), self.reference)


def split_windows(
    pairs: pd.DataFrame, test_from: pd.Timestamp | None, test_share: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Train / validation / test masks by referral time: test from `test_from` (default: the
    latest `test_share` of referrals), validation the VALID_SHARE of referrals before it."""
    first = pairs.drop_duplicates("referral_id")["created_at"]
    cut_valid, cut_test = window_cuts(first, test_from, test_share)
    t = pairs["created_at"]
    train = (t < cut_valid).to_numpy()
    valid = ((t >= cut_valid) & (t < cut_test)).to_numpy()
    test = (t >= cut_test).to_numpy()
    completed = pairs.loc[pairs["chosen"] & (pairs["label"] == 3), "created_at"]
    return train, valid, test, window_counts(first, completed, cut_valid, cut_test)


def window_cuts(
    first: pd.Series, test_from: pd.Timestamp | None, test_share: float = 0.2
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Where validation and test begin, from each referral's creation time (`first`)."""
    cut_test = first.quantile(1 - test_share) if test_from is None else pd.Timestamp(test_from)
    before = first[first < cut_test]
    if before.empty or (first >= cut_test).sum() == 0:
        raise ValueError(
            f"--test-from {cut_test:%Y-%m-%d} leaves no referrals before or after it "
            f"(referrals run {first.min():%Y-%m-%d} .. {first.max():%Y-%m-%d})"
        )
    share = VALID_SHARE / max(VALID_SHARE, 1 - test_share) if test_from is None else 0.125
    return before.quantile(1 - share), cut_test


def window_counts(
    first: pd.Series, completed: pd.Series, cut_valid: pd.Timestamp, cut_test: pd.Timestamp
) -> dict[str, Any]:
    """The windows' bounds and referral counts; `completed` holds the creation times of the
    completed referrals, of which train and validation need at least one each."""
    windows = {
        "train_until": str(cut_valid),
        "valid_from": str(cut_valid),
        "test_from": str(cut_test),
        "train_referrals": int((first < cut_valid).sum()),
        "valid_referrals": int(((first >= cut_valid) & (first < cut_test)).sum()),
        "test_referrals": int((first >= cut_test).sum()),
    }
    for name, inside in (
        ("train", completed < cut_valid),
        ("validation", (completed >= cut_valid) & (completed < cut_test)),
    ):
        if not inside.any():
            raise ValueError(f"the {name} window has no completed referral to learn from")
    return windows


def counterfactual_targets(pairs: pd.DataFrame, p_complete: np.ndarray) -> np.ndarray:
    """Graded training labels: observed outcome for the chosen candidate, predicted completion
    probability for the others, on 0..TARGET_LEVELS."""
    observed = np.where(pairs["label"].to_numpy() == 3, 1.0, 0.0)
    q = np.where(pairs["chosen"].to_numpy(dtype=bool), observed, p_complete)
    return np.rint(np.clip(q, 0.0, 1.0) * TARGET_LEVELS).astype(np.int64)


def train_ranker(
    data: RankerData, test_from: pd.Timestamp | None = None, seed: int = 7
) -> RankerTraining:
    """Completion model, counterfactual labels, LambdaRank; evaluated with the baselines on the
    latest referrals."""
    pairs = data.pairs
    train, valid, test, windows = split_windows(pairs, test_from)
    ids = pairs["referral_id"].to_numpy()
    X = pairs[list(MODEL_FEATURES)]
    chosen = pairs["chosen"].to_numpy(dtype=bool)
    completed = (pairs["label"].to_numpy() == 3).astype(int)
    completion = lgb.train(
        dict(COMPLETION_PARAMS, seed=seed),
        lgb.Dataset(X[train & chosen], completed[train & chosen]),
        num_boost_round=COMPLETION_ROUNDS[0],
        valid_sets=[lgb.Dataset(X[valid & chosen], completed[valid & chosen])],
        callbacks=[lgb.early_stopping(COMPLETION_ROUNDS[1], verbose=False)],
    )
    fit = train | valid
    p_complete = np.zeros(len(pairs))
    p_complete[fit] = completion.predict(X[fit], num_iteration=completion.best_iteration)
    y = counterfactual_targets(pairs, p_complete)
    dtrain = lgb.Dataset(X[train], y[train], group=_groups(ids[train]))
    dvalid = lgb.Dataset(X[valid], y[valid], group=_groups(ids[valid]), reference=dtrain)
    booster = lgb.train(
        rank_params(seed),
        dtrain,
        num_boost_round=RANKER_ROUNDS[0],
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(RANKER_ROUNDS[1], verbose=False)],
    )
    test_rows = pairs[test].reset_index(drop=True)
    reference = training_reference(X[train], seed)
    return evaluate_ranker(test_rows, booster, completion, data.truth, windows, reference)


def training_reference(X_train: pd.DataFrame, seed: int = 7) -> FeatureReference:
    """The drift reference of the training pairs' model features (a seeded sample of at most
    `features.drift.REFERENCE_SAMPLE` pairs: 200k)."""
    return FeatureReference.from_matrix(X_train[list(MODEL_FEATURES)], (), seed=seed)


def rank_params(seed: int) -> dict[str, Any]:
    """LGB_RANK_PARAMS with the seed, linear label gains and the monotone constraints."""
    return dict(
        LGB_RANK_PARAMS,
        seed=seed,
        label_gain=list(range(TARGET_LEVELS + 1)),
        monotone_constraints=[MONOTONE.get(f, 0) for f in MODEL_FEATURES],
    )


def evaluate_ranker(
    test_rows: pd.DataFrame,
    booster: lgb.Booster,
    completion: lgb.Booster,
    truth: pd.DataFrame | None,
    windows: dict[str, Any],
    reference: FeatureReference | None = None,
) -> RankerTraining:
    """Scores of the ranker, the baselines and the completion model on the test pairs (in
    referral-time order), their metrics, and the test rows with every score (and utility).
    `reference` (the training pairs' features, `training_reference`) goes into the bundle."""
    Xt = test_rows[list(MODEL_FEATURES)]
    scores = {"ranker": np.asarray(booster.predict(Xt, num_iteration=booster.best_iteration))}
    scores |= baseline_scores(test_rows, test_rows["chosen"].to_numpy())
    scores["completion_model"] = np.asarray(
        completion.predict(Xt, num_iteration=completion.best_iteration)
    )
    metrics = evaluate(test_rows, scores, truth)
    windows |= {
        "ranker_best_iteration": int(booster.best_iteration),
        "completion_best_iteration": int(completion.best_iteration),
    }
    metrics["_windows"] = windows
    for name, s in scores.items():
        test_rows[f"score_{name}"] = s
    if truth is not None:
        test_rows = test_rows.merge(
            truth, how="left", on=["referral_id", "specialist_id"], validate="1:1"
        )
    return RankerTraining(booster, completion, metrics, test_rows, windows, reference)


def metrics_document(metrics: dict[str, Any]) -> dict[str, Any]:
    """The --metrics-out JSON: test.*, oracle.*, baselines.<name>.* (means) plus intervals."""
    ranker = metrics["ranker"]
    doc: dict[str, Any] = {
        "test": {k: v["mean"] for k, v in ranker.items() if not k.startswith("oracle.")},
        "oracle": {
            k.removeprefix("oracle."): v["mean"]
            for k, v in ranker.items()
            if k.startswith("oracle.")
        },
        "baselines": {},
        "ci95": {k: v["ci95"] for k, v in ranker.items()},
        "windows": metrics.get("_windows", {}),
    }
    if "completion_model" in metrics:
        doc["completion_model"] = {k: v["mean"] for k, v in metrics["completion_model"].items()}
    for name, result in metrics.items():
        if name not in BASELINES:
            continue
        doc["baselines"][name] = {
            "test": {k: v["mean"] for k, v in result.items() if not k.startswith("oracle.")},
            "oracle": {
                k.removeprefix("oracle."): v["mean"]
                for k, v in result.items()
                if k.startswith("oracle.")
            },
            "ci95": {k: v["ci95"] for k, v in result.items()},
        }
    return doc


def format_table(metrics: dict[str, Any]) -> str:
    """Rankings side by side: logged NDCG@5, MRR, hit@5, oracle NDCG@5 [95% CI], regret@1."""
    head = f"{'':20} {'NDCG@5':>7} {'MRR':>6} {'hit@5':>6} {'oracle NDCG@5 [95% CI]':>26} {'regret@1':>9}"
    lines = [head]
    for name, r in metrics.items():
        if name.startswith("_"):
            continue
        o = r.get("oracle.ndcg@5")
        oracle = f"{o['mean']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}]" if o else "n/a"
        regret = f"{r['oracle.regret@1']['mean']:.3f}" if "oracle.regret@1" in r else "n/a"
        lines.append(
            f"{name:20} {r['ndcg@5']['mean']:7.3f} {r['mrr']['mean']:6.3f} {r['hit@5']['mean']:6.3f} {oracle:>26} {regret:>9}"
        )
    return "\n".join(lines)
