"""training.registry against a real local SQLite store and a real MLflow server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest

from features.drift import FeatureReference
from features.no_show import build_features
from features.predictor import NoShowPredictor
from training import registry

pytestmark = pytest.mark.integration

NAME = "no-show-test"
TIERS = {"medium": 0.25, "high": 0.5}


def _flat(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Flat appointment rows and a no-show label that rises with lead time and distance."""
    rng = np.random.default_rng(seed)
    booked = pd.Timestamp("2025-01-06 08:00") + pd.to_timedelta(
        rng.integers(0, 90 * 24 * 60, n), unit="min"
    )
    lead = rng.integers(0, 60, n)
    flat = pd.DataFrame(
        {
            "appointment_id": [f"A{seed}-{i:04d}" for i in range(n)],
            "booked_at": booked,
            "appointment_at": booked + pd.to_timedelta(lead * 24 + rng.integers(1, 9, n), unit="h"),
            "age": rng.integers(18, 90, n).astype(float),
            "sex": rng.choice(["F", "M"], n),
            "distance_km": rng.gamma(2.0, 10.0, n).round(2),
        }
    )
    logit = -2.5 + 0.05 * lead + 0.03 * flat["distance_km"].to_numpy()
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return flat, y


def _bundle(directory: Path, seed: int) -> NoShowPredictor:
    """A real LightGBM bundle trained on 300 seeded rows, saved to `directory`."""
    flat, y = _flat(300, seed)
    X, spec = build_features(flat, None)
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 10,
        "learning_rate": 0.1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
    }
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=25)
    reference = FeatureReference.from_matrix(X, list(spec.categorical))  # as training saves it
    meta = {"tiers": TIERS, "seed": seed}
    predictor = NoShowPredictor(booster, (1.0, 0.0), spec, meta, reference)
    predictor.save(directory)
    return predictor


def _examples(predictor: NoShowPredictor, flat: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    example = flat.head(5)
    risk = predictor.predict(example, None)
    output = pd.DataFrame(
        {
            "appointment_id": example["appointment_id"].to_numpy(),
            "risk": risk,
            "tier": predictor.tier(risk),
        }
    )
    return example, output


def _log_version(directory: Path, seed: int) -> tuple[registry.ModelVersionInfo, NoShowPredictor]:
    predictor = _bundle(directory / f"bundle-{seed}", seed)
    example, output = _examples(predictor, _flat(20, seed + 100)[0])
    with mlflow.start_run(experiment_id=registry.experiment("no-show-tests")):
        info = registry.log_bundle(directory / f"bundle-{seed}", NAME, example, output)
    return info, predictor


@pytest.fixture
def use_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Lets a test point MLflow anywhere through registry.configure; restores it afterwards."""
    # mlflow.set_tracking_uri/set_registry_uri export these variables: start clean, and let
    # monkeypatch put the originals back after the globals below are restored.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_uri: None) -> str:
    """A fresh SQLite store in tmp_path, which is also the working directory (for mlruns/)."""
    monkeypatch.chdir(tmp_path)
    return registry.configure(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_default_uri_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_uri: None
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = f"sqlite:///{tmp_path}/mlflow.db"
    assert expected == registry.DEFAULT_TRACKING_URI == registry.default_tracking_uri()
    assert registry.configure() == expected
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == registry.DEFAULT_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert registry.configure() == "sqlite:///elsewhere.db"
    assert registry.configure("sqlite:///given.db") == "sqlite:///given.db"


def test_local_store_log_register_promote_download_and_pyfunc(
    tmp_path: Path, local_store: str
) -> None:
    # Given an experiment in a local store, its artifacts live in <cwd>/mlruns/<name>
    exp_id = registry.experiment("no-show-tests")
    assert registry.experiment("no-show-tests") == exp_id
    location = mlflow.get_experiment(exp_id).artifact_location
    assert location == (tmp_path / "mlruns" / "no-show-tests").as_uri()

    # Before anything is registered there is no champion and no latest version
    assert registry.champion(NAME) is None
    assert registry.latest_version(NAME) is None
    with pytest.raises(LookupError, match=f"no registered model named '{NAME}'"):
        registry.download_bundle(NAME)

    # When two bundles are logged and registered
    v1, p1 = _log_version(tmp_path, seed=1)
    v2, p2 = _log_version(tmp_path, seed=2)
    assert (v1.name, v1.version, v1.model_uri) == (NAME, "1", f"models:/{NAME}/1")
    assert (v2.version, v2.model_uri) == ("2", f"models:/{NAME}/2")
    assert v1.run_id != v2.run_id
    assert registry.version(NAME, "1").run_id == v1.run_id
    latest = registry.latest_version(NAME)
    assert latest is not None and str(latest.version) == "2"  # int from SQLite, str over REST
    assert (tmp_path / "mlruns" / "no-show-tests" / v1.run_id / "artifacts" / "bundle").is_dir()

    # Then there is still no champion, and asking for its bundle says what is missing
    assert registry.champion(NAME) is None
    with pytest.raises(LookupError, match="has no version with alias '@champion'"):
        registry.download_bundle(NAME)
    with pytest.raises(LookupError, match="no version 7"):
        registry.version(NAME, "7")
    with pytest.raises(LookupError, match="'seven' is not a version number"):
        registry.download_bundle(NAME, "seven")

    # When version 1 is promoted, the alias points at it and the version records the promotion
    gates = [{"name": "auc", "passed": True, "value": 0.71, "threshold": float("nan")}]
    registry.set_champion(NAME, "1", forced=False, gates=gates)
    champ = registry.champion(NAME)
    assert champ is not None and str(champ.version) == "1"
    assert champ.tags["promotion_forced"] == "false"
    assert json.loads(champ.tags["promotion_gates"]) == [
        {"name": "auc", "passed": True, "value": 0.71, "threshold": None}
    ]
    assert datetime.fromisoformat(champ.tags["promoted_at"]).utcoffset() is not None

    # And a forced promotion of version 2 moves the alias and is recorded as forced
    registry.set_champion(NAME, 2, forced=True, gates=[])
    champ = registry.champion(NAME)
    assert champ is not None and str(champ.version) == "2" and champ.aliases == ["champion"]
    assert champ.tags["promotion_forced"] == "true"
    assert "champion" not in registry.version(NAME, "1").aliases

    # The downloaded bundles load and predict exactly as the originals
    rows, _ = _flat(50, seed=9)
    by_alias = registry.download_bundle(NAME, dst=tmp_path / "dl-champion")
    by_version = registry.download_bundle(NAME, "1", dst=tmp_path / "dl-v1")
    assert sorted(p.name for p in by_alias.iterdir()) == sorted(registry.BUNDLE_FILES)
    downloaded = NoShowPredictor.load(by_alias).reference
    assert downloaded is not None and p2.reference is not None
    assert downloaded.to_dict() == p2.reference.to_dict()
    np.testing.assert_allclose(
        NoShowPredictor.load(by_alias).predict(rows, None), p2.predict(rows, None), atol=1e-9
    )
    np.testing.assert_allclose(
        NoShowPredictor.load(by_version).predict(rows, None), p1.predict(rows, None), atol=1e-9
    )
    with pytest.raises(FileExistsError):
        registry.download_bundle(NAME, dst=tmp_path / "dl-champion")

    # And the pyfunc model behind @champion scores flat rows
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    scored = model.predict(rows)
    assert list(scored.columns) == ["appointment_id", "risk", "tier"]
    assert scored["appointment_id"].tolist() == rows["appointment_id"].tolist()
    np.testing.assert_allclose(scored["risk"].to_numpy(), p2.predict(rows, None), atol=1e-9)
    assert scored["tier"].tolist() == p2.tier(p2.predict(rows, None)).tolist()


def test_a_version_without_bundle_artifacts_is_refused_clearly(
    tmp_path: Path, local_store: str
) -> None:
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    with mlflow.start_run(experiment_id=registry.experiment("no-show-tests")) as run:
        mlflow.log_text("not a bundle", "notes.txt")
    client.create_model_version(NAME, f"runs:/{run.info.run_id}/notes.txt", run.info.run_id)
    with pytest.raises(LookupError, match=r"version 1 has no 'bundle/' artifacts"):
        registry.download_bundle(NAME, "1", dst=tmp_path / "dl")
    assert not (tmp_path / "dl").exists()


def test_log_bundle_needs_an_active_run(tmp_path: Path, local_store: str) -> None:
    predictor = _bundle(tmp_path / "b", seed=3)
    example, output = _examples(predictor, _flat(5, seed=4)[0])
    with pytest.raises(RuntimeError, match="inside an active run"):
        registry.log_bundle(tmp_path / "b", NAME, example, output)


@pytest.mark.slow
def test_server_log_register_promote_download_and_pyfunc(
    tmp_path: Path, mlflow_server: str, use_uri: None
) -> None:
    # Given a real tracking server, when a bundle is logged, registered and promoted over HTTP
    assert registry.configure(mlflow_server) == mlflow_server
    info, predictor = _log_version(tmp_path, seed=5)
    assert registry.champion(NAME) is None
    latest = registry.latest_version(NAME)
    assert latest is not None and str(latest.version) == info.version == "1"
    assert registry.version(NAME, 1).run_id == info.run_id
    registry.set_champion(NAME, info.version, forced=False, gates=[{"name": "g", "passed": True}])

    # Then the server chose the artifact store, and the champion round-trips through it
    champ = registry.champion(NAME)
    assert champ is not None and str(champ.version) == info.version
    assert champ.tags["promotion_forced"] == "false"
    exp = mlflow.get_experiment_by_name("no-show-tests")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    rows, _ = _flat(40, seed=8)
    bundle = registry.download_bundle(NAME, dst=tmp_path / "dl")
    np.testing.assert_allclose(
        NoShowPredictor.load(bundle).predict(rows, None), predictor.predict(rows, None), atol=1e-9
    )
    scored = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(rows)
    np.testing.assert_allclose(scored["risk"].to_numpy(), predictor.predict(rows, None), atol=1e-9)
    with pytest.raises(LookupError, match="no registered model named 'missing'"):
        registry.download_bundle("missing")
