"""The compiled-trees benchmark harness runs on tiny models and a tiny world, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TREES = 8  # a few trees keep both compilers' builds well under a second


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny world and both bundles trained on it, cut to their first few trees."""
    from features.matcher import SpecialistRanker
    from features.predictor import NoShowPredictor
    from synthetic_data.config import WorldConfig
    from synthetic_data.world import write_world
    from training.no_show import load_world, train_no_show
    from training.ranker import load_ranker_data, train_ranker

    root = tmp_path_factory.mktemp("bench_trees")
    world = root / "world"
    write_world(WorldConfig.for_size("small", seed=11, patients=600, referrals=1500), world)

    def cut(booster: lgb.Booster) -> lgb.Booster:
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=TREES))

    ns = train_no_show(load_world(world)).predictor
    no_show = NoShowPredictor(cut(ns.booster), ns.calibration, ns.spec, ns.metadata)
    rk = train_ranker(load_ranker_data(world)).bundle()
    ranker = SpecialistRanker(cut(rk.booster), rk.features, rk.metadata)
    return {
        "world": world,
        "no_show": no_show.save(root / "no_show"),
        "ranker": ranker.save(root / "ranker"),
    }


def test_trees_benchmark_quick_smoke(tiny: dict[str, Path], tmp_path: Path) -> None:
    # Given tiny bundles, a private library cache and LightGBM's passive waiting
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFERRAL_ML_", "BENTOML_"))}
    env |= {"OMP_WAIT_POLICY": "PASSIVE", "REFERRAL_ML_TREES_CACHE": str(tmp_path / "cache")}
    # When the benchmark runs in its quick mode
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_trees.py"),
            "--quick",
            "--data",
            str(tiny["world"]),
            "--no-show",
            str(tiny["no_show"]),
            "--ranker",
            str(tiny["ranker"]),
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    # Then it prints its tables and writes every figure, each compiler matching LightGBM
    assert run.returncode == 0, run.stderr[-4000:]
    assert "| no-show | 1 |" in run.stdout and "| specialist-ranker | 50 |" in run.stdout
    assert "| model | compiler | least speed-up" in run.stdout
    (written,) = tmp_path.glob("trees-*.json")
    result = json.loads(written.read_text())
    assert result["quick"] is True
    assert [m["model"] for m in result["models"]] == ["no-show", "specialist-ranker"]
    for model in result["models"]:
        assert model["trees"] == TREES
        for backend in ("lleaves", "tl2cgen"):
            info = model["compile"][backend]
            assert "error" not in info, (model["model"], backend, info)
            assert info["compile_seconds"] > 0 and info["library_bytes"] > 0
            assert 0 <= model["max_abs_diff"][backend] <= 1e-6
        for size in model["sizes"]:
            names = (
                "lightgbm_default",
                "lightgbm_1_thread",
                "lightgbm_encoded",
                "lleaves",
                "encode",
            )
            for name in (*names, "tl2cgen"):
                assert size["ms"][name]["p50"] > 0, (model["model"], size["rows"], name)
            assert size["speedup_vs_lightgbm"]["lleaves"] > 0
        assert {v["meets_goal"] for v in model["verdict"].values()} <= {True, False}
    assert result["models"][0]["pandas_categorical_columns"] > 0
    assert result["serving_backend"] == {"no-show": "lleaves", "specialist-ranker": "lleaves"}
    assert result["adopted"] in (None, "lleaves", "tl2cgen")
