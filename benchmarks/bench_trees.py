"""Compiled trees vs LightGBM: model compute of both served models, side by side in one run.

For the no-show bundle on 1 / 100 / 1,000 / 10,000 rows of its real feature matrix and the
ranker bundle on 100 / 2,000 / 20,000 real candidate rows, each repetition times, interleaved:

- `Booster.predict(raw_score=True)` with the model's own thread setting and with num_threads=1;
- lleaves, compiled (`features.compiled.LleavesScorer`, 1 thread: what the service runs), from
  the same DataFrame, and the DataFrame -> matrix encoding alone (part of that time);
- treelite/tl2cgen, compiled C via gcc (`Predictor(nthread=1)`), from the same encoding;
- `Booster.predict` (1 thread) on that encoding too: LightGBM without its own DataFrame
  conversion, which is most of a small call's time, so that the speed-up of compiling alone
  shows apart from that of skipping the conversion.

Reported: medians (and p90) per size, speed-ups against the faster LightGBM variant, compile and
load times, and the largest |raw score - LightGBM's| of each compiler over every row timed (the
no-show model's raw log-odds before Platt calibration; the ranker's scores). A compiler is
adopted when it is at least 3x faster at every serving size (no-show 1-1,000 rows, ranker
100-2,000) with every difference <= 1e-6.

    python benchmarks/bench_trees.py [--data data/world-medium] [--no-show DIR] [--ranker DIR]
    python benchmarks/bench_trees.py --quick --data DIR --no-show DIR --ranker DIR   (smoke test)

Bundles default to the newest models in the BentoML store (`referral-ml export`). Writes
benchmarks/results/trees-<date>.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(ROOT))

from features import compiled  # noqa: E402
from features.contract import TABLES  # noqa: E402
from features.matcher import Matcher, MatchRequest, SpecialistRanker  # noqa: E402
from features.no_show import history_events  # noqa: E402
from features.predictor import NoShowPredictor  # noqa: E402

NO_SHOW_SIZES: Final = (1, 100, 1_000, 10_000)
RANKER_SIZES: Final = (100, 2_000, 20_000)
QUICK_NO_SHOW_SIZES: Final = (1, 20, 100)
QUICK_RANKER_SIZES: Final = (10, 50)
SERVING: Final = {"no-show": (1, 1_000), "specialist-ranker": (20, 2_000)}  # rows, both included
GOAL_SPEEDUP: Final = 3.0
BACKENDS: Final = ("lightgbm_default", "lightgbm_1_thread", "lleaves", "tl2cgen")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    versions = {"lightgbm": lgb.__version__, "pandas": pd.__version__, "numpy": np.__version__}
    for name in ("lleaves", "llvmlite", "treelite", "tl2cgen"):
        try:
            versions[name] = __import__("importlib.metadata").metadata.version(name)
        except Exception:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        **versions,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "REFERRAL_ML_"))},
    }


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def code_version() -> dict[str, Any]:
    """The commit measured and the code files changed on top of it."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        return run.stdout.rstrip("\n") if run.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "features", "benchmarks").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip() or None, "changed": [c[3:] for c in changed]}


def store_bundle(name: str) -> Path | None:
    """The newest BentoML store model of this name, or None."""
    try:
        import bentoml

        return Path(bentoml.models.get(f"{name}:latest").path)
    except Exception:
        return None


# -- the real feature matrices ------------------------------------------------------------------


def no_show_matrix(predictor: NoShowPredictor, data: Path, rows: int, seed: int) -> pd.DataFrame:
    """The no-show model matrix of `rows` random appointments of the world (with history)."""
    from training.no_show import load_world

    flat = load_world(data).flat
    events = history_events(flat)
    sample = flat.sample(min(rows, len(flat)), random_state=seed, replace=rows > len(flat))
    return predictor.features(sample.reset_index(drop=True), events)


def ranker_matrix(ranker: SpecialistRanker, data: Path, rows: int, seed: int) -> pd.DataFrame:
    """`rows` candidate rows as the service builds them: real referrals through retrieval (the
    hard filters) and pair features, one referral after another until there are enough."""
    tables = {name: pd.read_parquet(data / f"{name}.parquet") for name in TABLES}
    now = pd.Timestamp(json.loads((data / "manifest.json").read_text())["as_of"])
    matcher = Matcher.from_tables(ranker, tables, now=now)
    parts, total = [], 0
    requests = referral_requests(tables, seed)
    while total < rows:
        for req in requests:
            found = matcher.index.retrieve(req.retrieval())
            if len(found.rows):
                parts.append(matcher.candidate_features(req, found))
                total += len(found.rows)
            if total >= rows:
                break
        if not parts:
            raise ValueError(f"no referral of {data} retrieves a candidate")
    X = pd.concat(parts, ignore_index=True).iloc[:rows]
    return X[list(ranker.features)].reset_index(drop=True)


def referral_requests(tables: dict[str, pd.DataFrame], seed: int) -> list[MatchRequest]:
    """The world's referrals, shuffled, as the referral UI would send them."""
    rf = tables["referrals"].sample(frac=1.0, random_state=seed)
    pt = tables["patients"].set_index("patient_id").reindex(rf["patient_id"])
    plan = pt["insurance_plan_id"].astype(object)
    return [
        MatchRequest(
            latitude=float(lat),
            longitude=float(lon),
            specialty=str(specialty),
            reason_code=str(reason),
            urgency=str(urgency),
            insurance_plan_id=None if pd.isna(p) else str(p),
            language=str(language),
            patient_id=str(patient),
        )
        for lat, lon, specialty, reason, urgency, p, language, patient in zip(
            pt["latitude"],
            pt["longitude"],
            rf["specialty"],
            rf["reason_code"],
            rf["urgency"],
            plan,
            pt["preferred_language"],
            rf["patient_id"],
            strict=True,
        )
        if not (pd.isna(lat) or pd.isna(lon))
    ]


# -- compilers ---------------------------------------------------------------------------------


def compile_lleaves(
    booster: lgb.Booster, model_file: Path, workdir: Path
) -> tuple[compiled.LleavesScorer | None, dict[str, Any]]:
    """A fresh lleaves build (never the cache) and its load, timed."""
    t0 = time.perf_counter()
    try:
        path = compiled.build_library(model_file, workdir / "lleaves")
    except Exception as exc:
        return None, {"error": f"{type(exc).__name__}: {exc}"}
    compile_s = time.perf_counter() - t0
    settings = compiled.TreeSettings(backend="lleaves", threads=1, cache_dir=workdir / "lleaves")
    copy = workdir / "lleaves" / "model.txt"
    copy.write_bytes(model_file.read_bytes())
    t0 = time.perf_counter()
    try:  # backend "lleaves": the library loads and matches LightGBM's probe scores, or raises
        scorer = compiled.scorer_for(booster, copy, settings, model_file.parent.name)
    except ValueError as exc:
        return None, {"error": str(exc)}
    load_s = time.perf_counter() - t0
    assert isinstance(scorer, compiled.LleavesScorer)
    return scorer, {
        "compile_seconds": compile_s,
        "load_seconds": load_s,
        "library_bytes": path.stat().st_size,
    }


def compile_tl2cgen(booster: lgb.Booster, workdir: Path) -> tuple[Any, dict[str, Any]]:
    """treelite import + tl2cgen C export compiled by gcc (parallel translation units)."""
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        return None, {"error": f"not installed ({exc.name})"}
    workdir.mkdir(parents=True, exist_ok=True)
    model_file = workdir / "model.txt"
    booster.save_model(str(model_file))
    libpath = workdir / "tl2cgen.so"
    t0 = time.perf_counter()
    try:
        model = treelite.frontend.load_lightgbm_model(str(model_file))
        cores = os.cpu_count() or 1
        tl2cgen.export_lib(
            model, toolchain="gcc", libpath=str(libpath), params={"parallel_comp": cores}
        )
    except Exception as exc:
        return None, {"error": f"{type(exc).__name__}: {exc}"}
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor = tl2cgen.Predictor(str(libpath), nthread=1)
    load_s = time.perf_counter() - t0
    return predictor, {
        "compile_seconds": compile_s,
        "load_seconds": load_s,
        "library_bytes": libpath.stat().st_size,
        "parallel_compile_units": cores,
    }


# -- timing ------------------------------------------------------------------------------------


def repeats_for(rows: int, base: int) -> int:
    """More repetitions for small inputs (their timings are short and noisy)."""
    if rows <= 100:
        return base
    if rows <= 2_000:
        return max(3, base // 4)
    return max(3, base // 20)


def bench_model(
    name: str,
    booster: lgb.Booster,
    model_file: Path,
    X: pd.DataFrame,
    sizes: tuple[int, ...],
    base_repeats: int,
    workdir: Path,
) -> dict[str, Any]:
    """Compile with both compilers, then time every backend on every size, interleaved."""
    lleaves_scorer, lleaves_info = compile_lleaves(booster, model_file, workdir / name)
    tl_predictor, tl_info = compile_tl2cgen(booster, workdir / name / "tl2cgen")
    encoder = compiled.FrameEncoder(booster.num_feature(), list(booster.pandas_categorical or []))

    def tl2cgen_score(frame: pd.DataFrame) -> np.ndarray:
        import tl2cgen

        dmat = tl2cgen.DMatrix(encoder(frame), dtype="float64")
        return np.asarray(tl_predictor.predict(dmat, pred_margin=True), dtype=float).reshape(-1)

    fns: dict[str, Callable[[pd.DataFrame], Any]] = {
        "lightgbm_default": lambda f: booster.predict(f, raw_score=True),
        "lightgbm_1_thread": lambda f: booster.predict(f, raw_score=True, num_threads=1),
        "lightgbm_encoded": lambda f: booster.predict(encoder(f), raw_score=True, num_threads=1),
        "encode": encoder,
    }
    if lleaves_scorer is not None:
        fns["lleaves"] = lleaves_scorer.raw_score
    if tl_predictor is not None:
        fns["tl2cgen"] = tl2cgen_score

    results = []
    worst = {"lleaves": 0.0, "tl2cgen": 0.0}
    for n in sizes:
        frame = X.iloc[:n]
        reference = np.asarray(booster.predict(frame, raw_score=True, num_threads=1))
        for backend in ("lleaves", "tl2cgen"):
            if backend in fns:
                diff = np.abs(np.asarray(fns[backend](frame)) - reference)
                worst[backend] = max(worst[backend], float(diff.max()))
        times: dict[str, list[float]] = {k: [] for k in fns}
        repeats = repeats_for(n, base_repeats)
        for i in range(repeats + 1):  # the first round warms up
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn(frame)
                if i:
                    times[key].append((time.perf_counter() - t0) * 1e3)
        ms = {
            key: {"p50": float(np.median(v)), "p90": float(np.percentile(v, 90))}
            for key, v in times.items()
        }
        best_lgb = min(ms["lightgbm_default"]["p50"], ms["lightgbm_1_thread"]["p50"])
        results.append(
            {
                "rows": n,
                "repeats": repeats,
                "ms": ms,
                "speedup_vs_lightgbm": {
                    b: best_lgb / ms[b]["p50"] for b in ("lleaves", "tl2cgen") if b in ms
                },
                "speedup_vs_lightgbm_encoded": {
                    b: ms["lightgbm_encoded"]["p50"] / ms[b]["p50"]
                    for b in ("lleaves", "tl2cgen")
                    if b in ms
                },
            }
        )
    low, high = SERVING[name]
    serving = [r for r in results if low <= r["rows"] <= high] or results
    verdicts = {}
    for backend, info in (("lleaves", lleaves_info), ("tl2cgen", tl_info)):
        if "error" in info:
            verdicts[backend] = {"meets_goal": False, "why": info["error"]}
            continue
        least = min(r["speedup_vs_lightgbm"][backend] for r in serving)
        exact = worst[backend] <= compiled.TOLERANCE
        verdicts[backend] = {
            "min_serving_speedup": least,
            "min_serving_speedup_vs_lightgbm_encoded": min(
                r["speedup_vs_lightgbm_encoded"][backend] for r in serving
            ),
            "max_abs_diff": worst[backend],
            "meets_goal": bool(least >= GOAL_SPEEDUP and exact),
        }
    return {
        "model": name,
        "trees": booster.num_trees(),
        "features": booster.num_feature(),
        "pandas_categorical_columns": len(booster.pandas_categorical or []),
        "lightgbm_default_threads": _default_threads(booster),
        "compile": {"lleaves": lleaves_info, "tl2cgen": tl_info},
        "max_abs_diff": worst,
        "sizes": results,
        "serving_rows": [low, high],
        "verdict": verdicts,
    }


def _default_threads(booster: lgb.Booster) -> Any:
    """The num_threads a loaded model predicts with when none is passed (its training setting)."""
    return booster.params.get("num_threads", "OpenMP default")


# -- report ------------------------------------------------------------------------------------


def markdown(out: dict[str, Any]) -> str:
    """The figures as Markdown tables: compile, latency per size, verdict."""
    lines = [
        "| model | trees | compiler | compile (s) | load (s) | max abs diff vs LightGBM |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for m in out["models"]:
        for backend in ("lleaves", "tl2cgen"):
            info = m["compile"][backend]
            if "error" in info:
                lines.append(
                    f"| {m['model']} | {m['trees']} | {backend} | - | - | {info['error']} |"
                )
                continue
            lines.append(
                f"| {m['model']} | {m['trees']} | {backend} | {info['compile_seconds']:.1f} | "
                f"{info['load_seconds']:.2f} | {m['max_abs_diff'][backend]:.1e} |"
            )
    lines += [
        "",
        "| model | rows | LightGBM, default threads | LightGBM, 1 thread | lleaves, 1 thread "
        "| tl2cgen, 1 thread | (encode) | LightGBM on the encoding, 1 thread "
        "| lleaves speed-up | tl2cgen speed-up | lleaves vs LightGBM on the encoding |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in out["models"]:
        for r in m["sizes"]:
            ms, up, enc = r["ms"], r["speedup_vs_lightgbm"], r["speedup_vs_lightgbm_encoded"]

            def cell(key: str, ms: dict[str, Any] = ms) -> str:
                return f"{ms[key]['p50']:.3f}" if key in ms else "-"

            def ratio(key: str, up: dict[str, float] = up) -> str:
                return f"{up[key]:.1f}x" if key in up else "-"

            lines.append(
                f"| {m['model']} | {r['rows']:,} | {cell('lightgbm_default')} | "
                f"{cell('lightgbm_1_thread')} | {cell('lleaves')} | {cell('tl2cgen')} | "
                f"{cell('encode')} | {cell('lightgbm_encoded')} | {ratio('lleaves')} | "
                f"{ratio('tl2cgen')} | {ratio('lleaves', enc)} |"
            )
    lines += [
        "",
        "| model | compiler | least speed-up at serving sizes | ... against LightGBM on the "
        f"encoding | meets >= {GOAL_SPEEDUP:.0f}x and <= {compiled.TOLERANCE:g} |",
        "|---|---|---:|---:|---|",
    ]
    for m in out["models"]:
        lo, hi = m["serving_rows"]
        for backend, v in m["verdict"].items():
            least = f"{v['min_serving_speedup']:.1f}x" if "min_serving_speedup" in v else "-"
            key = "min_serving_speedup_vs_lightgbm_encoded"
            encoded = f"{v[key]:.1f}x" if key in v else "-"
            lines.append(
                f"| {m['model']} ({lo:,}-{hi:,} rows) | {backend} | {least} | {encoded} | "
                f"{'yes' if v['meets_goal'] else 'NO'} |"
            )
    lines.append("")
    lines.append(
        "Milliseconds, medians; speed-ups against the faster LightGBM on the DataFrame (what "
        f"was served); adopted: {out['adopted'] or 'none'}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "world-medium")
    parser.add_argument("--no-show", type=Path, help="no-show bundle (default: BentoML store)")
    parser.add_argument("--ranker", type=Path, help="ranker bundle (default: BentoML store)")
    parser.add_argument("--repeats", type=int, default=200, help="for inputs of <= 100 rows")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    no_show_dir = args.no_show or store_bundle("no-show")
    ranker_dir = args.ranker or store_bundle("specialist-ranker")
    if no_show_dir is None or ranker_dir is None:
        parser.error("no bundles: pass --no-show and --ranker, or run `referral-ml export` first")
    if not (args.data / "appointments.parquet").exists():
        parser.error(f"no world in {args.data} (generate one with `referral-ml generate`)")
    ns_sizes = QUICK_NO_SHOW_SIZES if args.quick else NO_SHOW_SIZES
    rk_sizes = QUICK_RANKER_SIZES if args.quick else RANKER_SIZES
    repeats = 5 if args.quick else args.repeats
    load_before = os.getloadavg()

    predictor = NoShowPredictor.load(no_show_dir)
    ranker = SpecialistRanker.load(ranker_dir)
    t0 = time.perf_counter()
    X_ns = no_show_matrix(predictor, args.data, max(ns_sizes), args.seed)
    X_rk = ranker_matrix(ranker, args.data, max(rk_sizes), args.seed)
    matrices_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = [
            bench_model(
                "no-show",
                predictor.booster,
                no_show_dir / "model.txt",
                X_ns,
                ns_sizes,
                repeats,
                work,
            ),
            bench_model(
                "specialist-ranker",
                ranker.booster,
                ranker_dir / "model.txt",
                X_rk,
                rk_sizes,
                repeats,
                work,
            ),
        ]
    adopted = [
        b for b in ("lleaves", "tl2cgen") if all(m["verdict"][b]["meets_goal"] for m in models)
    ]
    # What the serving set-up picks on this machine (REFERRAL_ML_TREES etc. apply).
    settings = compiled.TreeSettings.from_env()
    serving_backend = {
        "no-show": NoShowPredictor.load(no_show_dir, trees=settings).backend,
        "specialist-ranker": SpecialistRanker.load(ranker_dir, trees=settings).backend,
    }
    out = {
        "machine": machine(),
        "date": date.today().isoformat(),
        "code": code_version(),
        "quick": args.quick,
        "data": str(args.data),
        "bundles": {"no-show": str(no_show_dir), "specialist-ranker": str(ranker_dir)},
        "matrices_seconds": matrices_s,
        "models": models,
        "adopted": adopted[0] if adopted else None,
        "goal": f">= {GOAL_SPEEDUP:.0f}x at every serving size, max abs diff <= {compiled.TOLERANCE:g}",
        "serving_backend": serving_backend,
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"trees-{out['date']}.json"
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(markdown(out))
    print(f"\nserving backend here: {serving_backend}; written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
