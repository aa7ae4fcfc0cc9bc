"""train uplift -> promote -> export for the outreach-uplift model through the real CLI, a real
MLflow store and a real BentoML model store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from features.uplift import UpliftPredictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXE = str(Path(sys.executable).parent / "referral-ml")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_train_promote_export_uplift(model_world: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Without a no-show champion there is no risk to rank against: a one-line error.
    early = cli(
        "train", "uplift", "--data", str(model_world), "--tracking-uri", store, cwd=tmp_path
    )
    assert early.returncode == 2
    assert "no-show" in early.stderr and "Traceback" not in early.stderr
    for step in (("train", "no-show"), ("promote", "no-show", "--force")):
        run = cli(
            *step,
            *(("--data", str(model_world)) if step[0] == "train" else ()),
            "--tracking-uri",
            store,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
    # Given the no-show champion, when the uplift model is trained
    run = cli(
        "train",
        "uplift",
        "--data",
        str(model_world),
        "--tracking-uri",
        store,
        "--metrics-out",
        str(tmp_path / "u.json"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "no-shows prevented per 100 calls" in run.stdout
    assert "registered outreach-uplift version 1" in run.stdout
    doc = json.loads((tmp_path / "u.json").read_text())
    policies = {p["policy"]: p for p in doc["policies"]}
    assert {"oracle", "uplift", "risk", "random"} <= set(policies)
    for p in policies.values():  # intervals surround every figure
        assert p["true_low"] <= p["true_per_100"] <= p["true_high"]
        assert p["estimated_low"] <= p["estimated_per_100"] <= p["estimated_high"]
    assert policies["oracle"]["true_per_100"] >= policies["uplift"]["true_per_100"]
    assert policies["uplift"]["true_per_100"] > policies["random"]["true_per_100"]
    assert doc["capacity_per_day"] >= 1 and doc["rows"]["test_called"] > 0

    # The run holds the reports and the evaluation rows
    import mlflow

    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    run_id = doc["run_id"]
    reports = {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "reports")}
    assert {"qini.png", "policies.png", "benefit_calibration.png", "model_card.md"} <= reports
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {
        "evaluation/test_rows.parquet",
        "evaluation/events.parquet",
    }

    # Promotion goes through the uplift gates (forced if a small world fails one)
    promoted = cli("promote", "uplift", "--tracking-uri", store, cwd=tmp_path)
    out = promoted.stdout + promoted.stderr
    for gate in ("beats_random", "not_worse_than_risk", "vs_champion", "average_benefit"):
        assert gate in out, out
    if promoted.returncode != 0:
        forced = cli("promote", "uplift", "--force", "--tracking-uri", store, cwd=tmp_path)
        assert forced.returncode == 0, forced.stdout + forced.stderr

    # Export puts the models into the BentoML store (the ranker is not trained here)
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    wrong = cli("export", "--only", "no-show,nope", "--tracking-uri", store, cwd=tmp_path, env=env)
    assert wrong.returncode == 2 and "unknown model nope" in wrong.stderr
    exported = cli(
        "export",
        "--only",
        "no-show,outreach-uplift",
        "--tracking-uri",
        store,
        cwd=tmp_path,
        env=env,
    )
    assert exported.returncode == 0, exported.stderr
    assert "outreach-uplift v1" in exported.stdout
    folders = list((tmp_path / "bentoml" / "models" / "outreach-uplift").iterdir())
    bundle = next(p for p in folders if (p / "uplift.json").exists())
    model = UpliftPredictor.load(bundle)
    assert model.kind == "logit-interaction" and model.terms is not None
