"""`referral-ml train ranker` end to end: evaluation against baselines and the truth, metrics JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "referral-ml")


def test_train_ranker_writes_the_documented_metrics(small_world: Path, tmp_path: Path) -> None:
    # Given a small world, when the ranker is trained with a metrics file
    out = tmp_path / "ranker.json"
    run = subprocess.run(
        [EXE, "train", "ranker", "--data", str(small_world), "--metrics-out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then it prints every ranking with its oracle interval and writes the documented keys
    assert run.returncode == 0, run.stderr
    for name in (
        "ranker",
        "nearest",
        "highest_rating",
        "soonest_available",
        "weighted_rule",
        "historical_choice",
    ):
        assert name in run.stdout
    doc = json.loads(out.read_text())
    assert 0 < doc["test"]["ndcg@5"] <= 1 and 0 < doc["test"]["mrr"] <= 1
    assert 0 < doc["oracle"]["ndcg@5"] <= 1 and doc["oracle"]["regret@1"] >= 0
    lo, hi = doc["ci95"]["oracle.ndcg@5"]
    assert lo <= doc["oracle"]["ndcg@5"] <= hi
    assert set(doc["baselines"]) == {
        "nearest",
        "highest_rating",
        "soonest_available",
        "weighted_rule",
        "historical_choice",
    }
    # The historical choice is the logged choice, so it ranks it first by construction.
    assert doc["baselines"]["historical_choice"]["test"]["hit@5"] == 1.0
    # And the learned ranker beats ranking by distance alone against the truth.
    assert doc["oracle"]["ndcg@5"] > doc["baselines"]["nearest"]["oracle"]["ndcg@5"]


def test_train_ranker_needs_a_dataset_folder(tmp_path: Path) -> None:
    run = subprocess.run(
        [EXE, "train", "ranker", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        run.returncode == 2
        and "no referrals.parquet" in run.stderr
        and "Traceback" not in run.stderr
    )
