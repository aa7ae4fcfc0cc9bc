"""Model bundles refuse a truncated LightGBM file with an error instead of crashing the process."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from features.lgb_io import load_booster
from features.matcher import SpecialistRanker
from features.ranking import PAIR_FEATURES

pytestmark = pytest.mark.unit


def _ranker(tmp_path: Path) -> Path:
    X = np.random.default_rng(0).random((300, len(PAIR_FEATURES)))
    y = np.random.default_rng(1).integers(0, 3, 300)
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1}, lgb.Dataset(X, y, group=[30] * 10), 5
    )
    return SpecialistRanker(booster, PAIR_FEATURES).save(tmp_path / "bundle")


def test_a_complete_bundle_loads_and_scores_the_same(tmp_path: Path) -> None:
    bundle = _ranker(tmp_path)
    again = SpecialistRanker.load(bundle)
    assert again.booster.num_trees() == 5
    assert load_booster(bundle / "model.txt").num_trees() == 5


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95, 0.99, 0.999])
def test_a_truncated_model_is_refused_with_its_name(tmp_path: Path, keep: float) -> None:
    # Given a bundle whose model.txt was cut short (a partial copy)
    bundle = _ranker(tmp_path)
    text = (bundle / "model.txt").read_bytes()
    (bundle / "model.txt").write_bytes(text[: int(len(text) * keep)])
    # Then loading raises a ValueError naming the bundle, and the process survives
    with pytest.raises(ValueError, match="ranker bundle"):
        SpecialistRanker.load(bundle)
