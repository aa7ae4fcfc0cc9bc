"""Generator speed and memory per size, each size in its own process (so peak RSS is its own).

Anchor, measured in the same run: writing the finished tables to Parquet (the I/O floor). The
ratio total/write says what the simulation costs on top of merely storing its output.

    python benchmarks/bench_generate.py [--sizes small,medium,large] [--seed 7]

Writes benchmarks/results/generate-<date>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from synthetic_data.config import WorldConfig
from synthetic_data.world import write_world
size, seed, out, overrides = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
stages = {}
t0 = time.perf_counter()
manifest = write_world(WorldConfig.for_size(size, seed=seed, **overrides), out, lambda n, s: stages.__setitem__(n, s))
total = time.perf_counter() - t0
rows = sum(manifest["counts"].values()) + sum(manifest["truth_counts"].values())
print(json.dumps({
    "size": size, "seconds": total, "stages": stages, "rows": rows,
    "appointments": manifest["counts"]["appointments"],
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    "calibration_ok": all(r["ok"] for r in manifest["calibration"]),
}))
"""

LIMITS = {"small": (5, None), "medium": (30, None), "large": (180, 6.0)}


def run_size(size: str, seed: int, overrides: dict[str, int]) -> dict[str, object]:
    """Generate one world in a child process and return its measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                size,
                str(seed),
                str(Path(tmp) / size),
                json.dumps(overrides),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    stages = result["stages"]
    assert isinstance(stages, dict)
    write = float(stages.get("writing Parquet", 0.0))
    seconds = float(result["seconds"])  # type: ignore[arg-type]
    result["write_seconds"] = write
    result["ratio_to_write"] = seconds / write if write else None
    result["rows_per_second"] = float(result["rows"]) / seconds  # type: ignore[arg-type]
    limit_s, limit_gb = LIMITS.get(size, (None, None))
    result["target"] = f"< {limit_s} s" + (f", < {limit_gb} GB" if limit_gb else "")
    result["meets_target"] = (limit_s is None or seconds < limit_s) and (
        limit_gb is None or float(result["peak_rss_gb"]) < limit_gb  # type: ignore[arg-type]
    )
    return result


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def markdown(results: list[dict[str, object]]) -> str:
    """The results as the README's table."""
    lines = [
        "| size | appointments | rows written | time (s) | rows/s | peak RSS (GB) | Parquet write (s) | time / write | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['appointments']:,} | {r['rows']:,} | {r['seconds']:.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['peak_rss_gb']:.2f} | {r['write_seconds']:.1f} | "
            f"{r['ratio_to_write']:.1f}x | {r['target']} | {'yes' if r['meets_target'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--overrides", default="{}", help="JSON counts, e.g. for a smoke run")
    args = parser.parse_args(argv)
    results = [run_size(s, args.seed, json.loads(args.overrides)) for s in args.sizes.split(",")]
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"generate-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    print(markdown(results))
    print(f"\nmachine: {machine()}\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
