"""Every benchmark in one command (`make bench`): one results file and one Markdown table.

Each benchmark runs in its own process (so its peak memory is its own), one after another (so
none disturbs another on a 2-core machine), and writes its own JSON into
`benchmarks/results/<date>/`. Then this script reads them and writes

    benchmarks/results/<date>.json   machine, code version, every summary row, the raw results
    benchmarks/results/<date>.md     the table kept in the README

Every row is a figure measured side by side with its anchor in the same run: the absolute
value, the anchor's value and the ratio, and the issue's target when there is one.

    python benchmarks/run_all.py [--only generate,no_show,ranker,trees,service,directory]
        [--quick] [--results DIR] [--large DIR] [--medium DIR]

`--quick` runs each harness on tiny inputs (a smoke run: the figures mean nothing); the test
suite runs it so the harnesses cannot rot. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
BENCH: Final = ROOT / "benchmarks"
PY: Final = sys.executable


@dataclass
class Row:
    """One figure of the table."""

    area: str
    figure: str
    value: float
    unit: str
    anchor: str = ""
    anchor_value: float | None = None
    ratio: float | None = None  # value / anchor_value unless the row says otherwise
    target: str = ""
    met: bool | None = None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1e6, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def code_version() -> dict[str, Any]:
    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return run.stdout.strip()

    # the results folder itself is not code: a re-run replaces its own earlier files
    dirty = git("status", "-s", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(dirty)}


# --------------------------------------------------------------------------- summaries


def _ratio(value: float, anchor: float | None) -> float | None:
    return value / anchor if anchor else None


def generate_rows(doc: dict[str, Any]) -> list[Row]:
    rows = []
    for r in doc["results"]:
        world = f"{r['size']} world ({r['rows']:,} rows, {r['appointments']:,} appointments)"
        rows.append(
            Row(
                "generator",
                f"{world}: generation time",
                r["seconds"],
                "s",
                "writing the finished tables to Parquet (s)",
                r["write_seconds"],
                r["ratio_to_write"],
                r.get("target", ""),
                r.get("meets_target"),
            )
        )
        rows.append(Row("generator", f"{world}: throughput", r["rows_per_second"], "rows/s"))
        rows.append(Row("generator", f"{world}: peak RSS", r["peak_rss_gb"], "GB"))
    return rows


def no_show_rows(doc: dict[str, Any]) -> list[Row]:
    n = doc["trained_rows"]
    train = doc["train_pipeline_seconds"]
    fit = doc.get("train_stages_seconds", {}).get("lightgbm_train")
    early = doc.get("bare_lightgbm_early_stopping_seconds")
    ratio_early = doc.get("train_ratio_to_bare_early_stopping")
    label = (
        f"pipeline on {doc['rows_total']:,} appointments ({n:,} training rows, "
        f"{doc['trees']} trees kept)"
    )
    rows = [
        Row(
            "no-show training",
            label,
            train,
            "s",
            "bare lightgbm.train, prepared matrix, early stopping on the same fold (s)",
            early,
            ratio_early,
            "<= 1.5x",
            ratio_early <= 1.5 if ratio_early is not None else None,
        ),
        Row(
            "no-show training",
            label,
            train,
            "s",
            "bare lightgbm.train, prepared matrix, the final trees only (s)",
            doc["bare_lightgbm_train_seconds"],
            doc["train_ratio_to_bare"],
        ),
    ]
    if fit is not None:
        rows.append(
            Row(
                "no-show training",
                "... of which inside lightgbm.train (early stopping included)",
                fit,
                "s",
                "",
            )
        )
    rows += [
        Row("no-show training", "peak RSS", doc["peak_rss_gb"], "GB", target="< 8 GB"),
        Row(
            "no-show scoring",
            f"batch scoring, features included ({doc['score_rows']:,} rows)",
            doc["score_rows_per_second"],
            "rows/s",
            "bare Booster.predict on the prepared matrix (rows/s)",
            doc["bare_predict_rows_per_second"],
            doc["bare_predict_rows_per_second"] / doc["score_rows_per_second"],
            ">= 100,000 rows/s",
            doc["score_rows_per_second"] >= 100_000,
        ),
    ]
    return rows


def ranker_rows(doc: dict[str, Any]) -> list[Row]:
    rows = []
    tr = doc["training"]
    if not tr.get("skipped"):
        lgb_s = sum(tr["train_stages_seconds"]["lightgbm_train_calls"])
        rows.append(
            Row(
                "ranker training",
                f"completion + LambdaRank + evaluation, {tr['pairs']:,} pairs",
                tr["train_seconds"],
                "s",
                "inside lightgbm.train (s)",
                lgb_s,
                tr["train_ratio_to_lightgbm"],
            )
        )
        rows.append(Row("ranker training", "peak RSS", tr["peak_rss_gb"], "GB"))
    for rk in doc.get("rankings", [doc["ranking"]]):
        n, ms = rk["candidates"], rk["ms"]
        target = "<= 3x" if n == 2000 else ""
        ratio = rk["ratio_to_bare_predict"]
        rows.append(
            Row(
                "ranking in process",
                f"rank {n:,} candidates, features included, p50",
                ms["rank"]["p50"],
                "ms",
                "bare Booster.predict on the same rows, p50 (ms)",
                ms["bare_predict"]["p50"],
                ratio,
                target,
                ratio <= 3.0 if target else None,
            )
        )
        rows.append(
            Row(
                "ranking in process",
                f"top-{rk['k']} reasons on top of ranking {n:,}, p50",
                rk["reasons_extra_ms_p50"],
                "ms",
                f"bare pred_contrib on {rk['k']} rows, p50 (ms)",
                ms["bare_contrib_top10"]["p50"],
                _ratio(rk["reasons_extra_ms_p50"], ms["bare_contrib_top10"]["p50"]),
            )
        )
    rc = doc["recommend"]
    rows.append(
        Row(
            "ranking in process",
            f"recommend end to end ({rc['requests']} requests, {rc['candidates']['p50']:.0f} "
            "candidates p50), p50",
            rc["ms"]["p50"],
            "ms",
        )
    )
    return rows


def trees_rows(doc: dict[str, Any]) -> list[Row]:
    rows = []
    for m in doc.get("models", []):
        for size in m["sizes"]:
            base = size["ms"]["lightgbm_1_thread"]["p50"]
            for backend in ("lleaves", "tl2cgen"):
                if backend not in size["ms"]:
                    continue
                ms = size["ms"][backend]["p50"]
                diff = m.get("max_abs_diff", {}).get(backend)
                adopted = backend == doc.get("adopted")
                rows.append(
                    Row(
                        "model compute",
                        f"{m['model']}, {size['rows']:,} rows: {backend} (max |diff| {diff:.1e})",
                        ms,
                        "ms",
                        "plain LightGBM predict, 1 thread (ms)",
                        base,
                        ms / base,
                        ">= 3x faster, |diff| <= 1e-6" if adopted else "",
                        (base / ms >= 3 and (diff or 0) <= 1e-6) if adopted else None,
                    )
                )
    return rows


def service_rows(doc: dict[str, Any]) -> list[Row]:
    http = doc["http"]
    rows = []
    for key, r in http.items():
        if key.startswith("floor"):
            continue
        clients = r["settings"]["clients"]
        risk = key.startswith("no_show_risk")
        # the trivial endpoint answered the way the service answers these routes: in the
        # gateway (results from before the gateway answered them have only the BentoML API)
        if risk:
            floor = http.get(f"floor_risk_{clients}")
        else:
            floor = http.get(f"floor_gateway_{clients}") or http.get(f"floor_{clients}")
        anchor = "trivial endpoint" + (
            " in the gateway" if "gateway" in (floor or {}).get("label", "") else ""
        )
        target = ""
        met = None
        if key == "recommend_1":
            target, met = "p50 <= 5 ms", r["latency_ms"]["p50"] <= 5.0
        rows.append(
            Row(
                "HTTP",
                f"{r['label']}, {clients} client(s): p50 (p99 {r['latency_ms']['p99']:.1f} ms)",
                r["latency_ms"]["p50"],
                "ms",
                f"{anchor}, same server config, p50 (ms)",
                floor["latency_ms"]["p50"] if floor else None,
                _ratio(r["latency_ms"]["p50"], floor["latency_ms"]["p50"] if floor else None),
                target,
                met,
            )
        )
        target, met = "", None
        if key == "recommend_4":
            target, met = ">= 300 req/s", r["throughput_rps"] >= 300
        rows.append(
            Row(
                "HTTP",
                f"{r['label']}, {clients} client(s): throughput",
                r["throughput_rps"],
                "req/s",
                f"{anchor} (req/s)",
                floor["throughput_rps"] if floor else None,
                _ratio(r["throughput_rps"], floor["throughput_rps"] if floor else None),
                target,
                met,
            )
        )
    for name, seconds in doc.get("cold_start_seconds", {}).items():
        floor_s = doc.get("cold_start_seconds", {}).get("floor")
        if name != "floor":
            rows.append(
                Row(
                    "HTTP",
                    f"cold start to ready: {name}",
                    seconds,
                    "s",
                    "trivial endpoint (s)",
                    floor_s,
                    _ratio(seconds, floor_s),
                )
            )
    return rows


def directory_rows(doc: dict[str, Any]) -> list[Row]:
    rows = []
    runs = {r["label"]: r for r in doc.get("runs", [])}
    base = runs.get("base", {}).get("service", {})
    for label, run in runs.items():
        svc = run.get("service", {})
        if svc.get("error") or "memory_ready" not in svc:
            continue
        who = (
            "trivial endpoint" if label == "floor" else f"{run.get('specialists', 0):,} specialists"
        )
        pss = svc["memory_ready"]["pss"] / 1e9
        rows.append(
            Row(
                "service memory",
                f"{who}: PSS of supervisor + 2 workers, ready (startup peak RSS "
                f"{svc.get('startup_peak_rss', 0) / 1e9:.1f} GB)",
                pss,
                "GB",
                "3,000-specialist directory (GB)" if label != "base" else "",
                base["memory_ready"]["pss"] / 1e9 if label != "base" and base else None,
                svc.get("ratios", {}).get("pss_to_base") if label != "base" else None,
            )
        )
        rows.append(
            Row(
                "service memory",
                f"{who}: cold start to ready",
                svc["cold_start_s"],
                "s",
                "3,000-specialist directory (s)" if label != "base" else "",
                base.get("cold_start_s") if label != "base" else None,
                svc.get("ratios", {}).get("cold_start_to_base") if label != "base" else None,
            )
        )
        if "burst" in svc:
            rows.append(
                Row(
                    "service memory",
                    f"{who}: /recommend p50 (p99 {svc['burst']['latency_ms']['p99']:.0f} ms)",
                    svc["burst"]["latency_ms"]["p50"],
                    "ms",
                )
            )
    return rows


# --------------------------------------------------------------------------- the steps


@dataclass
class Step:
    name: str
    command: Callable[[Path, argparse.Namespace], list[str]]
    result: str  # the JSON file the step writes, relative to its results folder
    rows: Callable[[dict[str, Any]], list[Row]]
    needs: str = ""  # "large" / "medium": a world to generate first when missing


def _generate(out: Path, a: argparse.Namespace) -> list[str]:
    cmd = [PY, str(BENCH / "bench_generate.py"), "--results", str(out)]
    if a.quick:
        cmd += ["--sizes", "small", "--overrides", json.dumps({"patients": 300, "referrals": 400})]
    return cmd


def _no_show(out: Path, a: argparse.Namespace) -> list[str]:
    data = a.tiny if a.quick else a.large
    return [PY, str(BENCH / "bench_no_show.py"), "--data", str(data), "--results", str(out)]


def _ranker(out: Path, a: argparse.Namespace) -> list[str]:
    data = a.tiny if a.quick else a.medium
    cmd = [
        PY,
        str(BENCH / "bench_ranker.py"),
        "--data",
        str(data),
        "--out",
        str(out / "ranker.json"),
    ]
    if a.quick:
        cmd += ["--skip-training", "--quick-referrals", "300", "--repeats", "5", "--requests", "20"]
        cmd += ["--rank-candidates", "20,100"]
    return cmd


def _trees(out: Path, a: argparse.Namespace) -> list[str]:
    return [PY, str(BENCH / "bench_trees.py"), "--results", str(out)] + (
        ["--quick"] if a.quick else []
    )


def _service(out: Path, a: argparse.Namespace) -> list[str]:
    cmd = [PY, str(BENCH / "bench_service.py"), "--data", str(a.medium)]
    return cmd + ["--out", str(out / "service.json")] + (["--quick"] if a.quick else [])


def _directory(out: Path, a: argparse.Namespace) -> list[str]:
    cmd = [PY, str(BENCH / "bench_directory.py"), "--results", str(out)]
    return cmd + (["--quick"] if a.quick else [])


STEPS: Final = [
    Step("generate", _generate, "generate-*.json", generate_rows),
    Step("no_show", _no_show, "no-show-*.json", no_show_rows, needs="large"),
    Step("ranker", _ranker, "ranker.json", ranker_rows, needs="medium"),
    Step("trees", _trees, "trees-*.json", trees_rows),
    Step("service", _service, "service.json", service_rows, needs="medium"),
    Step("directory", _directory, "directory-*.json", directory_rows),
]


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        f"Benchmarks of {meta['date']} (commit {meta['code']['commit']}"
        f"{', uncommitted changes' if meta['code']['dirty'] else ''}) on {m['cpus']} CPUs, "
        f"{m['memory_gb']} GB, Python {m['python']}, {m['platform']}; "
        f"{'QUICK smoke run: not figures' if meta['quick'] else 'full run'}.",
        "",
        "| area | figure | value | anchor (same run) | anchor value | ratio | target | met |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]

    def num(x: float | None) -> str:
        if x is None:
            return ""
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}" if abs(x) >= 1 else f"{x:.3g}"

    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        lines.append(
            f"| {r.area} | {r.figure} | {num(r.value)} {r.unit} | {r.anchor} | "
            f"{num(r.anchor_value)} | {ratio} | {r.target} | {met} |"
        )
    reused = [
        (s, v.get("commit") or "?", v.get("date") or meta["date"])
        for s, v in meta["steps"].items()
        if v.get("reused")
    ]
    if reused:
        steps = ", ".join(
            f"{s} (commit {c}{'' if d == meta['date'] else f', {d}'})" for s, c, d in reused
        )
        when = "the same day" if all(d == meta["date"] for _, _, d in reused) else "an earlier day"
        lines += ["", f"Not re-run: the rows of {steps} are from an earlier run of {when}."]
    failed = [s for s, v in meta["steps"].items() if v["returncode"] != 0]
    if failed:
        lines += ["", f"Steps that failed (see their logs): {', '.join(failed)}"]
    return "\n".join(lines)


def ensure_world(path: Path, size: str, quick: bool) -> None:
    if (path / "manifest.json").exists():
        return
    print(f"generating the {size} world into {path} (it is missing) ...", flush=True)
    cmd = [PY, "-m", "training.cli", "generate", "--size", size, "--seed", "7"]
    cmd += ["--out", str(path), "--quiet"]
    if quick:
        cmd += ["--patients", "600", "--referrals", "1200"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated step names")
    parser.add_argument("--quick", action="store_true", help="tiny inputs: a smoke run")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument("--large", type=Path, default=ROOT / "data" / "world-large")
    parser.add_argument("--medium", type=Path, default=ROOT / "data" / "world-medium")
    parser.add_argument("--tiny", type=Path, default=None, help="the --quick world")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --only: the other steps' rows from their results of an earlier run today "
        "(the table names them and that run's commit)",
    )
    parser.add_argument(
        "--reuse-from",
        metavar="DATE",
        default=None,
        help="with --only: as --reuse, from the run of that date (YYYY-MM-DD) instead of today's",
    )
    args = parser.parse_args(argv)
    names = [s.name for s in STEPS]
    only = [n for n in args.only.split(",") if n] or names
    unknown = sorted(set(only) - set(names))
    if unknown:
        parser.error(f"unknown steps {unknown}; the steps are {names}")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    today = date.today().isoformat()
    raw_dir = args.results / today
    raw_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.tiny = args.tiny or raw_dir / "world-tiny"
        args.medium = args.tiny
    meta: dict[str, Any] = {
        "date": today,
        "quick": args.quick,
        "machine": machine(),
        "code": code_version(),
        "steps": {},
    }
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    # The commit each step of the earlier table was measured at (for the reused rows)
    reuse_date = args.reuse_from or today
    if args.reuse_from:
        args.reuse = True
        if not (args.results / reuse_date).is_dir():
            parser.error(f"--reuse-from: no results of {reuse_date} in {args.results}")
    earlier_table = args.results / f"{reuse_date}.json"
    measured_at: dict[str, str] = {}
    measured_on: dict[str, str] = {}  # and the date it was measured on
    if args.reuse and earlier_table.exists():
        previous = json.loads(earlier_table.read_text())
        for name, v in previous.get("steps", {}).items():
            measured_on[name] = str(v.get("date") or previous.get("date") or reuse_date)
            commit = v.get("commit") or (None if v.get("reused") else previous["code"]["commit"])
            if commit:
                measured_at[name] = str(commit)
    for step in STEPS:
        if step.name not in only:
            if args.reuse and not args.quick:
                earlier = sorted((args.results / reuse_date / step.name).glob(step.result))
                if earlier:  # as measured by an earlier run (today's, or --reuse-from's)
                    doc = json.loads(earlier[-1].read_text())
                    raw[step.name] = doc
                    rows += step.rows(doc)
                    meta["steps"][step.name] = {
                        "returncode": 0,
                        "reused": str(earlier[-1]),
                        "commit": measured_at.get(step.name),
                        "date": measured_on.get(step.name, reuse_date),
                    }
            continue
        if step.needs:
            world = args.tiny if args.quick else getattr(args, step.needs)
            ensure_world(world, "small" if args.quick else step.needs, args.quick)
        out = raw_dir / step.name
        out.mkdir(parents=True, exist_ok=True)
        cmd = step.command(out, args)
        print(f"== {step.name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        with (out / "log.txt").open("w") as log:
            run = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        meta["steps"][step.name] = {
            "returncode": run.returncode,
            "seconds": round(seconds, 1),
            "commit": meta["code"]["commit"],
        }
        found = sorted(out.glob(step.result))
        if run.returncode != 0 or not found:
            print(f"   FAILED ({run.returncode}); log: {out / 'log.txt'}", flush=True)
            meta["steps"][step.name]["returncode"] = run.returncode or 1
            continue
        doc = json.loads(found[-1].read_text())
        raw[step.name] = doc
        rows += step.rows(doc)
        print(f"   done in {seconds:.0f} s", flush=True)
    meta["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    table = markdown(rows, meta)
    stem = f"{today}-quick" if args.quick else today
    (args.results / f"{stem}.json").write_text(
        json.dumps({**meta, "rows": [asdict(r) for r in rows], "raw": raw}, indent=2, default=str)
        + "\n"
    )
    (args.results / f"{stem}.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten {args.results / (stem + '.json')} and {args.results / (stem + '.md')}")
    return 1 if any(v["returncode"] for v in meta["steps"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
