"""The generator benchmark harness runs on a tiny size, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_generate_benchmark_smoke(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_generate.py"),
            "--sizes",
            "small",
            "--results",
            str(tmp_path),
            "--overrides",
            json.dumps({"patients": 300, "referrals": 400}),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "| small |" in run.stdout
    (written,) = tmp_path.glob("generate-*.json")
    result = json.loads(written.read_text())["results"][0]
    assert result["rows"] > 0 and result["peak_rss_gb"] > 0 and result["ratio_to_write"] > 1


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world (400 referrals) for the ranker benchmark harness."""
    from synthetic_data.config import WorldConfig
    from synthetic_data.world import write_world

    out = tmp_path_factory.mktemp("world") / "tiny"
    write_world(WorldConfig.for_size("small", seed=11, patients=300, referrals=400), out)
    return out


def _run_ranker_bench(world: Path, out: Path, *extra: str) -> dict[str, object]:
    # LightGBM's OpenMP threads spin while they wait; on a busy 2-core runner (xdist workers,
    # other jobs) that turns this ~5 s run into minutes. Passive waiting keeps it short; no
    # figure is asserted here.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_ranker.py"),
            "--data",
            str(world),
            "--candidates",
            "10",
            "--repeats",
            "5",
            "--warmup",
            "2",
            "--requests",
            "20",
            "--rank-candidates",
            "100,2000",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "| rank " in run.stdout and "| recommend end to end" in run.stdout
    result: dict[str, object] = json.loads(out.read_text())
    return result


def _assert_latency(result: dict[str, object]) -> None:
    ranking, recommend = result["ranking"], result["recommend"]
    assert isinstance(ranking, dict) and isinstance(recommend, dict)
    assert ranking["candidates"] > 0 and ranking["repeats"] == 5
    for name in (
        "rank",
        "rank_with_reasons",
        "bare_predict",
        "bare_predict_numpy",
        "bare_predict_numpy_1_thread",
        "bare_contrib_top10",
    ):
        assert ranking["ms"][name]["p50"] > 0 and ranking["ms"][name]["p95"] > 0, name
    assert ranking["ratio_to_bare_predict"] > 0
    assert set(ranking["stage_ms_p50"]) >= {"rank.features", "rank.scoring", "rank.reasons"}
    assert isinstance(ranking["meets_goal"], bool)
    assert recommend["requests"] == 20 and recommend["ms"]["p50"] > 0
    assert recommend["ms"]["p95"] >= recommend["ms"]["p50"]
    assert {"machine", "load_average_1_5_15", "peak_rss_gb"} <= set(result)


def test_ranker_benchmark_smoke(tiny_world: Path, tmp_path: Path) -> None:
    result = _run_ranker_bench(tiny_world, tmp_path / "ranker.json")
    training = result["training"]
    assert isinstance(training, dict) and training["skipped"] is False
    assert training["referrals"] > 0 and training["pairs"] > training["referrals"]
    assert training["mean_candidates_per_referral"] > 1
    assert training["load_and_features_seconds"] > 0 and training["train_seconds"] > 0
    assert training["peak_rss_gb"] > 0 and 0 < training["oracle_ndcg@5"] <= 1
    _assert_latency(result)


def test_ranker_benchmark_skip_training_smoke(tiny_world: Path, tmp_path: Path) -> None:
    result = _run_ranker_bench(
        tiny_world, tmp_path / "ranker.json", "--skip-training", "--quick-referrals", "300"
    )
    training = result["training"]
    assert isinstance(training, dict) and training["skipped"] is True
    _assert_latency(result)


@pytest.mark.slow
def test_service_benchmark_smoke(small_world: Path, tmp_path: Path) -> None:
    """bench_service.py --quick on the small world: three measurements, every field, no error."""
    from training.no_show import load_world, train_no_show
    from training.ranker import load_ranker_data, train_ranker

    ranker = train_ranker(load_ranker_data(small_world)).bundle().save(tmp_path / "ranker")
    no_show = train_no_show(load_world(small_world)).predictor.save(tmp_path / "no_show")
    out = tmp_path / "service.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFERRAL_ML_", "BENTOML_"))}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_service.py"),
            "--quick",
            "--data",
            str(small_world),
            "--ranker-dir",
            str(ranker),
            "--no-show-dir",
            str(no_show),
            "--appointments",
            "50",
            "--seconds",
            "20",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "| HTTP /recommend | 4 |" in run.stdout and "| target |" in run.stdout
    result = json.loads(out.read_text())
    assert set(result["in_process"]) == {"recommend", "no_show_risk"}
    # 1, 4 and 16 clients; the trivial endpoint, as an API and in the gateway, sent both bodies
    assert set(result["http"]) == {
        f"{name}_{clients}"
        for name in ("floor", "floor_gateway", "floor_risk", "recommend", "no_show_risk")
        for clients in (1, 4, 16)
    }
    cold = result["cold_start_seconds"]
    assert cold["service"] > 0 and cold["floor"] > 0
    for name, r in {**result["in_process"], **result["http"]}.items():
        assert r["count"] > 0 and r["error_count"] == 0, (name, r["errors"])
        ms = r["latency_ms"]
        assert 0 < ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"], name
    assert all(r["throughput_rps"] > 0 for r in result["http"].values())
    assert len(result["overhead_ms"]) >= 4
    assert [t["pass"] for t in result["targets"]][-1] is True  # no HTTP errors
    assert all(isinstance(t["pass"], bool) for t in result["targets"])


@pytest.mark.slow
def test_run_all_quick_writes_one_table_with_anchors(tmp_path: Path) -> None:
    """`make bench`'s runner on tiny inputs: every step it ran succeeded, and the results file
    and the Markdown table hold each figure with its same-run anchor and ratio."""
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_all.py"),
            "--quick",
            "--only",
            "generate,no_show,ranker",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (written,) = tmp_path.glob("*-quick.json")
    doc = json.loads(written.read_text())
    assert set(doc["steps"]) == {"generate", "no_show", "ranker"}
    assert all(step["returncode"] == 0 for step in doc["steps"].values())
    assert {"cpus", "memory_gb", "python", "platform"} <= set(doc["machine"])
    areas = {row["area"] for row in doc["rows"]}
    assert {"generator", "no-show training", "no-show scoring", "ranking in process"} <= areas
    # (the reasons' extra cost is a difference of two timings: on tiny inputs it can be < 0)
    anchored = [
        r for r in doc["rows"] if r["anchor_value"] is not None and "reasons" not in r["figure"]
    ]
    assert anchored and all(r["value"] > 0 and r["anchor_value"] > 0 for r in anchored)
    for r in anchored:
        if r["ratio"] is not None:
            assert r["ratio"] == pytest.approx(r["value"] / r["anchor_value"], rel=0.05) or (
                r["unit"] == "rows/s"  # a throughput row gives the anchor's speed-up
            )
    sizes = [r["figure"] for r in doc["rows"] if r["figure"].startswith("rank ")]
    assert any("20 candidates" in f for f in sizes) and any("100 candidates" in f for f in sizes)
    table = written.with_suffix(".md").read_text()
    assert "| area | figure | value | anchor (same run)" in table and "QUICK" in table
