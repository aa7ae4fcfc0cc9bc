"""A medium world reproduces the published figures it is calibrated against (FACTS.md)."""

from __future__ import annotations

import pytest

from synthetic_data.calibration import calibration_table
from synthetic_data.config import WorldConfig
from synthetic_data.world import build_world

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.mark.parametrize("seed", [7, 21])
def test_medium_world_lands_inside_every_published_range(seed: int) -> None:
    # Given a medium world (the size the README's main command builds)
    tables, _ = build_world(WorldConfig.for_size("medium", seed=seed))
    # When the generator measures itself against the published figures
    rows = calibration_table(tables)
    # Then every figure is inside its target range
    missed = [f"{r['metric']}: {r['value']} (target {r['target']})" for r in rows if not r["ok"]]
    assert not missed, "\n".join(missed)
    assert len(rows) >= 10
