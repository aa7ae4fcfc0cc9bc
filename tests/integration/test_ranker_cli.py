"""train -> promote -> recommend for the specialist ranker through the real CLI and MLflow store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "referral-ml")
BASELINES = {"nearest", "highest_rating", "soonest_available", "weighted_rule", "historical_choice"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def _shuffled_outcomes(src: Path, dst: Path) -> Path:
    """A copy of a world whose referral outcomes are shuffled before its test window.

    Its completion labels are noise, so a ranker trained on it has learned nothing about which
    specialist completes; the test window (and the truth) stay real, so the gates can tell.
    """
    shutil.copytree(src, dst)
    rf = pd.read_parquet(dst / "referrals.parquet")
    early = rf["created_at"] < rf["created_at"].quantile(0.75)
    rf.loc[early, "status"] = np.random.default_rng(0).permutation(
        rf.loc[early, "status"].to_numpy()
    )
    rf.to_parquet(dst / "referrals.parquet", index=False)
    return dst


@pytest.mark.slow
def test_train_promote_refuse_and_recommend(model_world: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "ranker.json"
    # Given a world, when the ranker is trained with a metrics file
    run = cli(
        "train",
        "ranker",
        "--data",
        str(model_world),
        "--tracking-uri",
        store,
        "--metrics-out",
        str(out),
        cwd=tmp_path,
    )
    # Then it prints every ranking, registers version 1 and writes the documented keys
    assert run.returncode == 0, run.stderr
    assert "registered specialist-ranker version 1" in run.stdout
    for name in ("ranker", *BASELINES):
        assert name in run.stdout
    doc = json.loads(out.read_text())
    assert 0 < doc["test"]["ndcg@5"] <= 1 and 0 < doc["test"]["mrr"] <= 1
    assert 0 < doc["oracle"]["ndcg@5"] <= 1 and doc["oracle"]["regret@1"] >= 0
    lo, hi = doc["ci95"]["oracle.ndcg@5"]
    assert lo <= doc["oracle"]["ndcg@5"] <= hi
    assert set(doc["baselines"]) == BASELINES
    for name in BASELINES:
        assert doc["baselines"][name]["oracle"]["ndcg@5"] < doc["oracle"]["ndcg@5"], name
    # The historical choice is the logged choice, so it ranks it first by construction.
    assert doc["baselines"]["historical_choice"]["test"]["hit@5"] == 1.0

    # And the run holds the plots, the card and the evaluation rows the gates need
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    run_id = client.get_model_version("specialist-ranker", "1").run_id
    assert run_id is not None
    reports = {Path(a.path).name for a in client.list_artifacts(run_id, "reports")}
    assert {
        "gain_by_position.png",
        "ndcg_by_specialty.png",
        "ndcg_by_urgency.png",
        "model_card.md",
    } <= reports
    assert client.list_artifacts(run_id, "evaluation")
    # And the registered pyfunc model scores pair-feature rows (closer scores no lower)
    from training.ranker import MODEL_FEATURES

    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    pyfunc = mlflow.pyfunc.load_model("models:/specialist-ranker/1")
    rows = pd.DataFrame([dict.fromkeys(MODEL_FEATURES, 1.0)] * 2).assign(distance_km=[40.0, 2.0])
    scores = pyfunc.predict(rows)["score"].to_numpy()
    assert len(scores) == 2 and np.isfinite(scores).all() and scores[1] >= scores[0]

    # When version 1 asks for promotion, it passes every gate
    first = cli("promote", "ranker", "--tracking-uri", store, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "promoted" in first.stdout and "PASS  beats_baselines" in first.stdout

    # When a version trained on shuffled outcomes asks, it is refused with the failing gate named
    bad = _shuffled_outcomes(model_world, tmp_path / "shuffled")
    assert (
        cli("train", "ranker", "--data", str(bad), "--tracking-uri", store, cwd=tmp_path).returncode
        == 0
    )
    refused = cli("promote", "ranker", "--version", "2", "--tracking-uri", store, cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused" in refused.stdout and "FAIL  vs_champion" in refused.stdout
    champion = client.get_model_version_by_alias("specialist-ranker", "champion")
    assert str(champion.version) == "1"

    # And the champion answers a referral of the dataset with ranked, explained specialists
    referrals = pd.read_parquet(model_world / "referrals.parquet")
    referral_id = str(referrals["referral_id"].iloc[-1])
    answer = cli(
        "recommend",
        "--data",
        str(model_world),
        "--referral-id",
        referral_id,
        "--tracking-uri",
        store,
        cwd=tmp_path,
    )
    assert answer.returncode == 0, answer.stderr
    ranks = [line for line in answer.stdout.splitlines() if line[:2] in {"1.", "2.", "3."}]
    assert len(ranks) == 3
    assert "km away" in answer.stdout or "next opening" in answer.stdout
    # No patient identifiers in what a coordinator reads back
    patient = str(referrals["patient_id"].iloc[-1])
    assert patient not in answer.stdout


def test_train_ranker_needs_a_dataset_folder(tmp_path: Path) -> None:
    run = cli("train", "ranker", "--data", str(tmp_path), cwd=tmp_path)
    assert (
        run.returncode == 2
        and "no referrals.parquet" in run.stderr
        and "Traceback" not in run.stderr
    )


def test_bad_dates_and_unknown_referrals_are_named(small_world: Path, tmp_path: Path) -> None:
    bad_date = cli(
        "train", "ranker", "--data", str(small_world), "--test-from", "soon", cwd=tmp_path
    )
    assert bad_date.returncode == 2 and "--test-from" in bad_date.stderr
    late = cli(
        "train", "ranker", "--data", str(small_world), "--test-from", "2031-01-01", cwd=tmp_path
    )
    assert late.returncode == 2 and "leaves no referrals" in late.stderr
    assert "Traceback" not in late.stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    nothing = cli("promote", "ranker", "--tracking-uri", store, cwd=tmp_path)
    assert nothing.returncode == 2 and "train one first" in nothing.stderr
    unknown = cli(
        "recommend",
        "--data",
        str(small_world),
        "--referral-id",
        "RF-NOPE",
        "--tracking-uri",
        store,
        cwd=tmp_path,
    )
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
