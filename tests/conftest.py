"""Shared fixtures: a small generated world, built once per test session."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from synthetic_data.config import WorldConfig
from synthetic_data.world import write_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world written to a temporary folder (about one second)."""
    out = tmp_path_factory.mktemp("world") / "small"
    write_world(WorldConfig.for_size("small", seed=11), out)
    return out


@pytest.fixture(scope="session")
def small_tables(small_world: Path) -> dict[str, pd.DataFrame]:
    """The small world's public tables, read back from Parquet."""
    from features.contract import TABLES

    return {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="session")
def small_truth(small_world: Path) -> dict[str, pd.DataFrame]:
    """The small world's truth tables."""
    from features.contract import TRUTH_TABLES

    return {
        name: pd.read_parquet(small_world / "truth" / f"{name}.parquet") for name in TRUTH_TABLES
    }


@pytest.fixture(scope="session")
def model_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A denser small world (about 27k appointments) so model metrics are not dominated by noise."""
    out = tmp_path_factory.mktemp("world") / "model"
    cfg = WorldConfig.for_size("small", seed=5, patients=10_000, referrals=25_000, specialists=600)
    write_world(cfg, out)
    return out


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> dict[str, Path]:
    """A specialist-ranker bundle (VERSION 7) and a no-show bundle trained on the small world,
    shared by the service's tests (trained once per session)."""
    from training.no_show import load_world, train_no_show
    from training.ranker import load_ranker_data, train_ranker

    root = tmp_path_factory.mktemp("bundles")
    ranker = train_ranker(load_ranker_data(small_world)).bundle().save(root / "ranker")
    (ranker / "VERSION").write_text("7\n")
    no_show = train_no_show(load_world(small_world)).predictor.save(root / "no_show")
    return {"ranker": ranker, "no_show": no_show}


@pytest.fixture(scope="session")
def as_of(small_world: Path) -> datetime:
    """The small world's snapshot time."""
    import json

    manifest = json.loads((small_world / "manifest.json").read_text())
    return pd.Timestamp(manifest["as_of"]).to_pydatetime()
