"""train -> promote -> score for the no-show model through the real CLI and a real MLflow store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXE = str(Path(sys.executable).parent / "referral-ml")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def _shuffled_world(src: Path, dst: Path) -> Path:
    """A copy of a world whose outcomes are shuffled before its validation window.

    A model trained on it learns noise, while its test window (the shared window on which the
    champion is compared) keeps the real outcomes, so the comparison is decisive.
    """
    shutil.copytree(src, dst)
    ap = pd.read_parquet(dst / "appointments.parquet")
    done = ap["outcome"].isin(["attended", "no_show"])
    early = done & (ap["appointment_at"] < ap.loc[done, "appointment_at"].quantile(0.6))
    values = ap.loc[early, "outcome"].to_numpy()
    ap.loc[early, "outcome"] = np.random.default_rng(0).permutation(values)
    ap.to_parquet(dst / "appointments.parquet", index=False)
    return dst


def test_train_promote_refuse_force_and_score(model_world: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Given a small world, when the model is trained with a metrics file
    run = cli(
        "train",
        "no-show",
        "--data",
        str(model_world),
        "--tracking-uri",
        store,
        "--metrics-out",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "ground-truth ceiling" in run.stdout and "registered no-show version 1" in run.stdout
    doc = json.loads((tmp_path / "m.json").read_text())
    for path in ("test.roc_auc", "test.pr_auc", "test.brier", "test.ece", "oracle.roc_auc"):
        section, key = path.split(".")
        assert 0 <= doc[section][key] <= 1, path
    assert {"base_rate", "logistic_regression", "prior_no_show_and_lead_rule"} <= set(
        doc["baselines"]
    )
    assert doc["test"]["roc_auc"] > doc["baselines"]["base_rate"]["roc_auc"]

    # Then the first version is promoted through the gates
    first = cli("promote", "no-show", "--tracking-uri", store, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "promoted" in first.stdout and "PASS  ece" in first.stdout

    # When a version trained on shuffled outcomes asks for promotion, it is refused with reasons
    bad = _shuffled_world(model_world, tmp_path / "shuffled")
    assert (
        cli(
            "train", "no-show", "--data", str(bad), "--tracking-uri", store, cwd=tmp_path
        ).returncode
        == 0
    )
    refused = cli("promote", "no-show", "--version", "2", "--tracking-uri", store, cwd=tmp_path)
    assert refused.returncode == 1
    assert (
        "refused" in refused.stdout
        and "FAIL  auc" in refused.stdout
        and "vs champion" in refused.stdout
    )

    # And --force promotes it anyway, recorded on the version
    forced = cli(
        "promote", "no-show", "--version", "2", "--force", "--tracking-uri", store, cwd=tmp_path
    )
    assert forced.returncode == 0 and "--force" in forced.stdout
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    v2 = client.get_model_version("no-show", "2")
    assert v2.tags["promotion_forced"] == "true"
    assert str(client.get_model_version_by_alias("no-show", "champion").version) == "2"
    # The bundle records its run and training time (the service's /model_info reports them)
    from training import registry

    registry.configure(store)
    bundle = registry.download_bundle("no-show", "2", dst=tmp_path / "v2")
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["run_id"] == v2.run_id and meta["name"] == "no-show" and meta["trained_at"]

    # Scoring with an explicit version writes one row per appointment with tier and factors
    out = tmp_path / "scores.csv"
    scored = cli(
        "score",
        "no-show",
        "--data",
        str(model_world),
        "--model",
        "models:/no-show/1",
        "--tracking-uri",
        store,
        "--out",
        str(out),
        "--upcoming-only",
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    table = pd.read_csv(out)
    upcoming = pd.read_parquet(model_world / "appointments.parquet")["outcome"].isna().sum()
    assert len(table) == upcoming > 0
    assert list(table.columns) == ["appointment_id", "risk", "tier", "top_factors"]
    assert table["risk"].between(0, 1).all() and set(table["tier"]) <= {"low", "medium", "high"}


def test_train_errors_are_clear(tmp_path: Path) -> None:
    both = cli("train", "no-show", "--data", "x", "--appointments", "y.csv", cwd=tmp_path)
    assert both.returncode == 2 and "exactly one of --data" in both.stderr
    missing = cli("train", "no-show", "--data", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "no appointments.parquet" in missing.stderr
    bad_date = cli("train", "no-show", "--data", str(tmp_path), "--test-from", "soon", cwd=tmp_path)
    assert bad_date.returncode == 2 and "--test-from" in bad_date.stderr
    for r in (both, missing, bad_date):
        assert "Traceback" not in r.stderr


def test_train_and_score_through_a_real_mlflow_server(
    mlflow_server: str, model_world: Path, tmp_path: Path
) -> None:
    # Given a real MLflow tracking server on 127.0.0.1
    # When a model is trained against it and scored by version through it
    run = cli(
        "train",
        "no-show",
        "--data",
        str(model_world),
        "--tracking-uri",
        mlflow_server,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    version = run.stdout.split("registered no-show version ")[1].split()[0]
    out = tmp_path / "s.parquet"
    scored = cli(
        "score",
        "no-show",
        "--data",
        str(model_world),
        "--model",
        f"models:/no-show/{version}",
        "--tracking-uri",
        mlflow_server,
        "--out",
        str(out),
        cwd=tmp_path,
    )
    # Then the scores come from the model that was registered on the server
    assert scored.returncode == 0, scored.stderr
    table = pd.read_parquet(out)
    assert len(table) == len(pd.read_parquet(model_world / "appointments.parquet"))
    assert 0.1 < table["risk"].mean() < 0.3
    # and nothing was written to a local store
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
