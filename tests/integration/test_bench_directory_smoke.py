"""The directory benchmark harness (bench_directory.py --quick) runs end to end, so it cannot rot:
a 2,000-specialist directory built from the small test world, served by real `bentoml serve`
processes beside the base world and the floor service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.codes import is_valid_specialist_id
from features.validation import validate_directory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
QUICK_SIZE = 2_000


def test_directory_benchmark_smoke(
    small_world: Path, bundles: dict[str, Path], tmp_path: Path
) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFERRAL_ML_", "BENTOML_"))}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_directory.py"),
            "--quick",
            "--base",
            str(small_world),
            "--ranker-dir",
            str(bundles["ranker"]),
            "--no-show-dir",
            str(bundles["no_show"]),
            "--results",
            str(results),
            "--work",
            str(work),
            "--seconds",
            "20",
            "--start-timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "| floor (trivial endpoint) |" in run.stdout and f"| {QUICK_SIZE:,} |" in run.stdout

    (written,) = results.glob("directory-*.json")
    out = json.loads(written.read_text())
    assert out["sizes"] == [QUICK_SIZE] and out["quick"] is True
    assert {"cpus", "python", "platform"} <= set(out["machine"])
    assert [r["label"] for r in out["runs"]] == ["base", f"{QUICK_SIZE:,}"]
    for name, service in [("floor", out["floor"])] + [
        (r["label"], r["service"]) for r in out["runs"]
    ]:
        assert service["error"] is None, (name, service["error"])
        assert service["cold_start_s"] > 0 and service["all_workers_ready_s"] > 0, name
        assert service["startup_peak_rss"] > 0, name
        for when in ("memory_ready", "memory_after_burst"):
            memory = service[when]
            assert memory["rss"] > 0 and memory["pss"] > 0 and memory["uss"] > 0, (name, when)
            assert len(memory["processes"]) == 1 + out["service_config"]["workers"], (name, when)
        burst = service["burst"]
        assert burst["count"] == out["burst_requests"] and burst["error_count"] == 0, name
        assert service["ratios"]["pss_to_floor"] > 0, name
    base, built = out["runs"]
    assert base["specialists"] == 300 and built["specialists"] == QUICK_SIZE
    assert built["validate"]["ok"] is True and built["store"]["seconds"] > 0
    assert built["service"]["burst"]["latency_ms"]["p50"] > 0
    assert built["service"]["candidates"]["mean"] > 0

    # The directory it built: the requested number of valid, unique specialist ids, the base
    # world's among them, the contract kept, new specialists with a bounded calendar.
    dataset = work / f"n-{QUICK_SIZE}" / "dataset"
    specialists = pd.read_parquet(dataset / "specialists.parquet")
    ids = specialists["specialist_id"].astype(str)
    assert len(ids) == QUICK_SIZE and ids.is_unique
    assert ids.map(is_valid_specialist_id).all()
    base_ids = set(pd.read_parquet(small_world / "specialists.parquet")["specialist_id"])
    assert base_ids <= set(ids)
    assert validate_directory(dataset).ok
    slots = pd.read_parquet(dataset / "availability.parquet")
    new = slots[~slots["specialist_id"].isin(base_ids)]
    assert (new["status"] == "free").all()
    assert new.groupby("specialist_id").size().max() <= out["free_slots"]
