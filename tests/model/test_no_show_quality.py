"""On a medium world the no-show model comes within 0.02 AUC of the ground-truth ceiling."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic_data.config import WorldConfig
from synthetic_data.world import write_world
from training.no_show import load_world, train_no_show

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_medium_world_model_is_near_the_ceiling_calibrated_and_ahead_of_baselines(
    tmp_path: Path,
) -> None:
    # Given a medium world (seed 7, as the README's main command builds)
    write_world(WorldConfig.for_size("medium", seed=7), tmp_path / "w")
    # When the no-show model is trained with the default time split
    result = train_no_show(load_world(tmp_path / "w"))
    m = result.metrics
    # Then it is within 0.02 AUC of the truth's AUC, calibrated, and beats every baseline
    assert m["test"]["roc_auc"] >= m["oracle"]["roc_auc"] - 0.02, m
    assert m["test"]["ece"] <= 0.02
    for name, baseline in m["baselines"].items():
        assert m["test"]["roc_auc"] > baseline["roc_auc"], name
        assert m["test"]["brier"] < baseline["brier"], name
