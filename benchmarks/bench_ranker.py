"""Specialist ranker: training time and memory at ~100k referrals, and in-process ranking latency.

Anchors measured in the same run:
- ranking: a bare `Booster.predict` on the same prepared candidate rows (the floor for pair
  features + scoring + top k), and a bare `pred_contrib` on the top k rows (the floor for reasons);
- training: the time spent inside `lightgbm.train` (completion model + LambdaRank) against the
  whole pipeline (candidates, pair features, counterfactual labels, evaluation with baselines).

Goals (issue; reported, never asserted): training on 100k referrals x ~50 candidates < 5 min on
2 cores; ranking 2,000 candidates, features included, p50 < 20 ms; top-10 reasons < 10 ms more.

    python benchmarks/bench_ranker.py [--data data/world-medium] [--candidates 50] [--repeats 200]
    python benchmarks/bench_ranker.py --skip-training   (latency only: quick model on a subsample)

Writes benchmarks/results/ranker.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

import training.ranker as ranker_module
from features.contract import TABLES
from features.geo import haversine_km
from features.matcher import Matcher, MatchRequest, SpecialistRanker
from features.retrieval import MAX_RADIUS_KM, RetrievalResult
from training.ranker import load_ranker_data, train_ranker

TRAIN_GOAL_S = 300.0
RANK_GOAL_MS = 20.0
REASONS_GOAL_MS = 10.0
RANK_K = 10  # "top-10 reasons"
RECOMMEND_K = 5


def rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "lightgbm": lgb.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        # LightGBM's OpenMP threads spin-wait by default; on a busy machine that dominates.
        "env": {
            k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ
        },
    }


def code_version() -> dict[str, object]:
    """The commit measured and the code files changed on top of it (figures depend on both)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, check=False)
        return run.stdout.rstrip("\n") if run.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "features", "training").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip() or None, "changed": [c[3:] for c in changed]}


def pct(values: list[float]) -> dict[str, float]:
    """p50 / p95 / mean of a list of timings."""
    a = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "mean": float(a.mean()),
    }


@contextmanager
def stage_timer(
    module: ModuleType, names: list[str], seconds: dict[str, list[float]]
) -> Iterator[None]:
    """Time every call of `module.<name>` for the given names (calls append to seconds[name])."""
    originals = {name: getattr(module, name) for name in names}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds.setdefault(name, []).append(time.perf_counter() - t0)

        return timed

    for name, fn in originals.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def read_tables(directory: Path) -> tuple[dict[str, pd.DataFrame], pd.Timestamp]:
    """The contract tables of a dataset folder and its snapshot time (manifest as_of)."""
    tables = {name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES}
    manifest = json.loads((directory / "manifest.json").read_text())
    return tables, pd.Timestamp(manifest["as_of"])


def subsample_folder(directory: Path, out: Path, referrals: int, seed: int) -> Path:
    """A copy of `directory` (symlinks) whose referrals table is a random sample."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.name != "referrals.parquet":
            (out / entry.name).symlink_to(entry.resolve())
    rf = pd.read_parquet(directory / "referrals.parquet")
    if len(rf) > referrals:
        rf = rf.sample(referrals, random_state=seed).sort_values("created_at", kind="stable")
    rf.to_parquet(out / "referrals.parquet", index=False)
    return out


def bench_training(directory: Path, candidates: int) -> tuple[SpecialistRanker, dict[str, Any]]:
    """Load + features, then training, timed separately, with the main stages inside each."""
    stages: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    with stage_timer(ranker_module, ["candidate_pairs", "pair_features"], stages):
        data = load_ranker_data(directory, candidates=candidates)
    load_s = time.perf_counter() - t0
    rss_load = rss_gb()
    pairs = data.pairs
    per_ref = pairs.groupby("referral_id", sort=False).size().to_numpy()
    t0 = time.perf_counter()
    with (
        stage_timer(ranker_module.lgb, ["train"], stages),
        stage_timer(ranker_module, ["evaluate"], stages),
    ):
        result = train_ranker(data)
    train_s = time.perf_counter() - t0
    lgb_s = stages.get("train", [])
    oracle = result.metrics["ranker"].get("oracle.ndcg@5", {}).get("mean")
    out = {
        "skipped": False,
        "referrals_in_world": int(pd.read_parquet(directory / "referrals.parquet").shape[0]),
        "referrals": len(per_ref),
        "pairs": len(pairs),
        "candidates_asked": candidates,
        "mean_candidates_per_referral": float(per_ref.mean()),
        "max_candidates_per_referral": int(per_ref.max()),
        "load_and_features_seconds": load_s,
        "load_stages_seconds": {
            "candidate_pairs": sum(stages.get("candidate_pairs", [])),
            "pair_features": sum(stages.get("pair_features", [])),
        },
        "train_seconds": train_s,
        "train_stages_seconds": {
            # train_ranker fits the completion model first and LambdaRank last.
            "lightgbm_train_completion": lgb_s[0] if len(lgb_s) > 1 else None,
            "lightgbm_train_lambdarank": lgb_s[-1] if lgb_s else None,
            "lightgbm_train_calls": lgb_s,
            "evaluate": sum(stages.get("evaluate", [])),
        },
        "train_ratio_to_lightgbm": train_s / sum(lgb_s) if lgb_s else None,
        "total_seconds": load_s + train_s,
        "peak_rss_after_load_gb": rss_load,
        "peak_rss_gb": rss_gb(),
        "windows": result.windows,
        "oracle_ndcg@5": oracle,
        "test_ndcg@5": result.metrics["ranker"]["ndcg@5"]["mean"],
        "goal": f"load + train < {TRAIN_GOAL_S:.0f} s on 2 cores",
        "meets_goal": load_s + train_s < TRAIN_GOAL_S,
    }
    return result.bundle({"benchmark": True}), out


def quick_ranker(
    directory: Path, candidates: int, referrals: int, seed: int
) -> tuple[SpecialistRanker, dict[str, Any]]:
    """A ranker trained on a random sample of referrals, for latency figures only."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = subsample_folder(directory, Path(tmp) / "sample", referrals, seed)
        result = train_ranker(load_ranker_data(folder, candidates=candidates))
    return result.bundle({"benchmark": True}), {
        "skipped": True,
        "quick_referrals": referrals,
        "quick_seconds": time.perf_counter() - t0,
    }


def requests_from(tables: dict[str, pd.DataFrame], n: int, seed: int) -> list[MatchRequest]:
    """Referral requests as the UI would send them, from a random sample of real referrals."""
    rf = tables["referrals"]
    rf = rf.sample(min(n, len(rf)), random_state=seed)
    pt = tables["patients"].set_index("patient_id")
    system = tables["organizations"].set_index("organization_id")["system_id"]
    pcp_org = tables["referring_providers"].set_index("provider_id")["organization_id"]
    referring = rf["referring_provider_id"].map(pcp_org).map(system)
    out = []
    for r, ref_system in zip(rf.itertuples(index=False), referring.tolist(), strict=True):
        p = pt.loc[r.patient_id]
        out.append(
            MatchRequest(
                latitude=float(p["latitude"]),
                longitude=float(p["longitude"]),
                specialty=str(r.specialty),
                reason_code=str(r.reason_code),
                urgency=str(r.urgency),
                insurance_plan_id=None
                if pd.isna(p["insurance_plan_id"])
                else str(p["insurance_plan_id"]),
                language=str(p["preferred_language"]),
                sex=str(p["sex"]),
                patient_id=str(r.patient_id),
                referring_system=None if pd.isna(ref_system) else str(ref_system),
            )
        )
    return out


def explicit_candidates(matcher: Matcher, req: MatchRequest, n: int) -> RetrievalResult:
    """The first n directory rows as one request's candidates (no hard filters); a directory
    smaller than n is repeated (the model's and the features' work per row is the same)."""
    rows = np.arange(n, dtype=np.int64) % matcher.index.n_specialists
    idx = matcher.index
    plan_row = idx.plan_index.get(req.insurance_plan_id) if req.insurance_plan_id else None
    no = np.zeros(n, dtype=bool)
    return RetrievalResult(
        rows=rows,
        distance_km=haversine_km(
            np.full(n, req.latitude),
            np.full(n, req.longitude),
            idx.latitude[rows],
            idx.longitude[rows],
        ),
        in_network=no if plan_row is None else idx.in_network[plan_row, rows],
        accepts_plan=no if plan_row is None else idx.accepts_plan[plan_row, rows],
        out_of_network=no,
        radius_km=MAX_RADIUS_KM,
        considered=idx.n_specialists,
        unknown_plan=plan_row is None,
    )


def bench_rank(
    matcher: Matcher, req: MatchRequest, n: int, repeats: int, warmup: int
) -> dict[str, Any]:
    """rank() of n candidates with and without top-10 reasons vs the bare predict floor,
    interleaved repetition by repetition so drift hits every variant alike."""
    found = explicit_candidates(matcher, req, n)
    ranker = matcher.ranker
    cols = list(ranker.features)
    X = matcher.candidate_features(req, found)
    Xc = X[cols]
    Xn = Xc.to_numpy()
    Xtop = Xc.iloc[:RANK_K]
    times: dict[str, list[float]] = {}
    stage: dict[str, list[float]] = {}

    def clock(name: str, fn: Callable[[], Any], keep: bool) -> Any:
        t0 = time.perf_counter()
        value = fn()
        if keep:
            times.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        return value

    for i in range(warmup + repeats):
        keep = i >= warmup
        _, plain = clock("rank", lambda: matcher.rank(req, found, RANK_K, reasons=False), keep)
        _, explained = clock(
            "rank_with_reasons", lambda: matcher.rank(req, found, RANK_K, reasons=True), keep
        )
        clock("bare_predict", lambda: ranker.booster.predict(Xc), keep)
        clock("bare_predict_numpy", lambda: ranker.booster.predict(Xn), keep)
        clock(
            "bare_predict_numpy_1_thread", lambda: ranker.booster.predict(Xn, num_threads=1), keep
        )
        clock("bare_contrib_top10", lambda: ranker.booster.predict(Xtop, pred_contrib=True), keep)
        if keep:
            for key, value in plain.items():
                stage.setdefault(f"rank.{key}", []).append(value)
            for key, value in explained.items():
                stage.setdefault(f"rank_with_reasons.{key}", []).append(value)
    ms = {name: pct(values) for name, values in times.items()}
    stages = {name: pct(values)["p50"] for name, values in stage.items()}
    rank_p50, bare_p50 = ms["rank"]["p50"], ms["bare_predict"]["p50"]
    reasons_extra = ms["rank_with_reasons"]["p50"] - rank_p50
    return {
        "candidates": n,
        "k": RANK_K,
        "trees": ranker.booster.num_trees(),
        "repeats": repeats,
        "warmup": warmup,
        # features.ranking's "as of now" path (precomputed rates), as in the service.
        "serving_fast_path": bool(
            np.isnat(matcher.ctx.events_until)
            or np.datetime64(pd.Timestamp(matcher.now), "s") > matcher.ctx.events_until
        ),
        "ms": ms,
        "stage_ms_p50": stages,
        "ratio_to_bare_predict": rank_p50 / bare_p50,
        "reasons_extra_ms_p50": reasons_extra,
        "goal": f"rank p50 < {RANK_GOAL_MS:.0f} ms; top-{RANK_K} reasons < {REASONS_GOAL_MS:.0f} ms more",
        "meets_goal": rank_p50 < RANK_GOAL_MS and reasons_extra < REASONS_GOAL_MS,
    }


def bench_recommend(matcher: Matcher, requests: list[MatchRequest], warmup: int) -> dict[str, Any]:
    """End to end: retrieval + features + scoring + reasons for the top RECOMMEND_K."""
    for req in requests[:warmup]:
        matcher.recommend(req, RECOMMEND_K)
    wall: list[float] = []
    cands: list[int] = []
    stage: dict[str, list[float]] = {}
    for req in requests:
        t0 = time.perf_counter()
        result = matcher.recommend(req, RECOMMEND_K)
        wall.append((time.perf_counter() - t0) * 1e3)
        cands.append(result.candidates)
        for key, value in result.timings_ms.items():
            stage.setdefault(key, []).append(value)
    c = np.asarray(cands)
    return {
        "requests": len(requests),
        "k": RECOMMEND_K,
        "ms": pct(wall),
        "stage_ms_p50": {name: pct(values)["p50"] for name, values in stage.items()},
        "candidates": {
            "p50": float(np.median(c)),
            "mean": float(c.mean()),
            "max": int(c.max()),
            "empty": int((c == 0).sum()),
        },
    }


def markdown(out: dict[str, Any]) -> str:
    """The figures as a table: value, anchor, ratio, goal."""
    tr, rk, rc = out["training"], out["ranking"], out["recommend"]
    ms, st = rk["ms"], rk["stage_ms_p50"]
    lines = ["| figure | value | anchor | ratio | goal |", "|---|---:|---:|---:|---|"]
    if not tr["skipped"]:
        lgb_s = sum(tr["train_stages_seconds"]["lightgbm_train_calls"])
        lines += [
            f"| load + pair features: {tr['referrals']:,} referrals, {tr['pairs']:,} pairs, "
            f"{tr['mean_candidates_per_referral']:.1f} candidates/referral (s) | "
            f"{tr['load_and_features_seconds']:.1f} | pair_features "
            f"{tr['load_stages_seconds']['pair_features']:.1f} | | |",
            f"| training: completion + LambdaRank + evaluation (s) | {tr['train_seconds']:.1f} | "
            f"inside lightgbm.train {lgb_s:.1f} | {tr['train_ratio_to_lightgbm']:.1f}x | |",
            f"| load + training (s) | {tr['total_seconds']:.1f} | | | < {TRAIN_GOAL_S:.0f} s: "
            f"{'yes' if tr['meets_goal'] else 'NO'} |",
            f"| peak RSS (GB) | {tr['peak_rss_gb']:.2f} | | | |",
            f"| oracle NDCG@5 (sanity) | {tr['oracle_ndcg@5'] or float('nan'):.3f} | | | |",
        ]
    n = rk["candidates"]
    rank_ok = ms["rank"]["p50"] < RANK_GOAL_MS
    reasons_ok = rk["reasons_extra_ms_p50"] < REASONS_GOAL_MS
    lines += [
        f"| rank {n:,} candidates, features included, p50 / p95 (ms) | "
        f"{ms['rank']['p50']:.2f} / {ms['rank']['p95']:.2f} | bare predict "
        f"{ms['bare_predict']['p50']:.2f} / {ms['bare_predict']['p95']:.2f} | "
        f"{rk['ratio_to_bare_predict']:.1f}x | < {RANK_GOAL_MS:.0f} ms: {'yes' if rank_ok else 'NO'} |",
        f"| ... of which pair features / scoring, p50 (ms) | {st['rank.features']:.2f} / "
        f"{st['rank.scoring']:.2f} | bare predict on numpy {ms['bare_predict_numpy']['p50']:.2f}"
        f", 1 thread {ms['bare_predict_numpy_1_thread']['p50']:.2f} | | |",
        f"| rank {n:,} + top-{rk['k']} reasons, p50 / p95 (ms) | "
        f"{ms['rank_with_reasons']['p50']:.2f} / {ms['rank_with_reasons']['p95']:.2f} | | | |",
        f"| top-{rk['k']} reasons on top, p50 (ms) | {rk['reasons_extra_ms_p50']:.2f} | bare "
        f"pred_contrib top-{rk['k']} {ms['bare_contrib_top10']['p50']:.2f} | "
        f"{rk['reasons_extra_ms_p50'] / ms['bare_contrib_top10']['p50']:.1f}x | "
        f"< {REASONS_GOAL_MS:.0f} ms: {'yes' if reasons_ok else 'NO'} |",
        f"| recommend end to end, top {rc['k']} with reasons, {rc['requests']} requests, "
        f"p50 / p95 (ms) | {rc['ms']['p50']:.2f} / {rc['ms']['p95']:.2f} | "
        f"{rc['candidates']['p50']:.0f} candidates p50 (max {rc['candidates']['max']}) | | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/world-medium"))
    parser.add_argument("--candidates", type=int, default=50, help="per referral for training")
    parser.add_argument("--repeats", type=int, default=200, help="timed rank() repetitions")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--rank-candidates",
        default="100,2000,20000",
        help="comma-separated candidate counts for rank() (the table's first is reported by "
        "the per-size goal; every size goes into `rankings`)",
    )
    parser.add_argument("--requests", type=int, default=300, help="recommend() requests")
    parser.add_argument(
        "--skip-training",
        action="store_true",
        help="no training figures: a quick ranker on --quick-referrals referrals (or --bundle)",
    )
    parser.add_argument("--quick-referrals", type=int, default=10_000)
    parser.add_argument(
        "--bundle", type=Path, help="a saved ranker bundle (implies --skip-training)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ranker.json"
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    if not (args.data / "referrals.parquet").exists():
        parser.error(f"no referrals.parquet in {args.data} (generate a world first)")

    if args.bundle is not None:  # scored as the service scores it (REFERRAL_ML_TREES etc.)
        from features.compiled import TreeSettings

        ranker = SpecialistRanker.load(args.bundle, trees=TreeSettings.from_env())
        training: dict[str, Any] = {"skipped": True, "bundle": str(args.bundle)}
    elif args.skip_training:
        ranker, training = quick_ranker(args.data, args.candidates, args.quick_referrals, args.seed)
    else:
        ranker, training = bench_training(args.data, args.candidates)

    tables, now = read_tables(args.data)
    t0 = time.perf_counter()
    matcher = Matcher.from_tables(ranker, tables, now=now)
    build_s = time.perf_counter() - t0
    requests = requests_from(tables, args.requests, args.seed)
    warmup = max(1, min(args.warmup, args.repeats))
    sizes = [int(n) for n in str(args.rank_candidates).split(",") if n]
    rankings = [
        # fewer repetitions for the biggest size: each takes ~100x the 2,000 one's time
        bench_rank(matcher, requests[0], n, max(5, args.repeats * 2000 // max(n, 2000)), warmup)
        for n in sizes
    ]
    ranking = next((r for r in rankings if r["candidates"] == 2000), rankings[0])
    recommend = bench_recommend(matcher, requests, warmup)

    out = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "code": code_version(),
        "data": str(args.data),
        "as_of": str(now),
        "specialists": matcher.index.n_specialists,
        "scoring_backend": getattr(ranker, "backend", "lightgbm"),
        "matcher_build_seconds": build_s,
        "training": training,
        "ranking": ranking,
        "rankings": rankings,
        "recommend": recommend,
        "peak_rss_gb": rss_gb(),
        # Other processes on the machine distort every figure (LightGBM's OpenMP threads most).
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(markdown(out))
    print(
        f"\nmatcher built in {build_s:.1f} s over {out['specialists']:,} specialists; "
        f"load average before / after {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs; machine: {out['machine']}; written {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
