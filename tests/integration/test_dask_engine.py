"""`referral-ml train ... --engine dask`: both models trained on a 2-worker local Dask cluster
match the single-machine run on the same world, register the usual bundles, and a scheduler
that is not there is a one-line error.

The world is a mid-sized small one (4,000 patients, 10,000 referrals): on the 2,000-patient
world the ranker's early stopping on about 400 validation referrals is noisy enough to stop
after 2 trees on either engine. Measured here, Dask minus local: test ROC-AUC +0.002 and
-0.003 (two runs), NDCG@5 -0.001 and +0.001, oracle NDCG@5 +0.001. Bagging and the workers'
share of the rows differ between the engines, so the models are not identical; 0.02 is
several times that spread and well below any model-vs-baseline gap the reports rely on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.matcher import SpecialistRanker
from synthetic_data.config import WorldConfig
from synthetic_data.world import write_world
from tests.integration.servers import free_port
from training.cli import app
from training.dask_engine import Cluster, dask_client, train_ranker_dask
from training.no_show import NoShowTraining, load_world, train_no_show
from training.no_show_job import load_predictor
from training.ranker import load_ranker_data, metrics_document, train_ranker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

AUC_TOLERANCE = 0.02
NDCG_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dask-world") / "world"
    write_world(WorldConfig.for_size("small", seed=21, patients=4_000, referrals=10_000), out)
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One local cluster of 2 single-threaded workers for the module."""
    with dask_client(None, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def local_no_show(world: Path) -> NoShowTraining:
    return train_no_show(load_world(world))


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_no_show_through_the_cli_on_dask_matches_local_and_registers_a_usual_bundle(
    world: Path, cluster: Cluster, local_no_show: NoShowTraining, tmp_path: Path
) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    metrics = tmp_path / "metrics.json"
    # Given a cluster, when the no-show model is trained on it through the CLI
    code, output = _cli(
        "train",
        "no-show",
        "--engine",
        "dask",
        "--scheduler",
        cluster.scheduler,
        "--data",
        str(world),
        "--tracking-uri",
        store,
        "--metrics-out",
        str(metrics),
    )
    assert code == 0, output
    assert "registered no-show version 1" in output
    doc = json.loads(metrics.read_text())
    local = local_no_show.metrics
    # Then the run records the engine, as a param and in the metrics document
    assert doc["engine"]["engine"] == "dask" and doc["engine"]["dask_workers"] == 2
    run = mlflow.MlflowClient(store).get_run(doc["run_id"])
    assert run.data.params["engine"] == "dask"
    assert run.data.params["dask_scheduler"] == cluster.scheduler
    # And the model is as good as the single-machine one on the same windows
    assert doc["windows"] == local_no_show.windows
    assert abs(doc["test"]["roc_auc"] - local["test"]["roc_auc"]) <= AUC_TOLERANCE
    assert abs(doc["test"]["brier"] - local["test"]["brier"]) <= 0.01
    # And the baselines and the ceiling, fitted and scored by the single-machine code on the
    # same rows, are identical
    assert doc["baselines"] == json.loads(json.dumps(local["baselines"]))
    assert doc["oracle"] == json.loads(json.dumps(local["oracle"]))

    # When the registered version is loaded as `score` and the gates load it
    predictor = load_predictor("models:/no-show/1", store, tmp_path / "bundle")
    evaluation = Path(
        mlflow.artifacts.download_artifacts(
            run_id=doc["run_id"], artifact_path="evaluation", dst_path=str(tmp_path)
        )
    )
    rows = pd.read_parquet(evaluation / "test_rows.parquet")
    events = pd.read_parquet(evaluation / "events.parquet")
    # Then it rebuilds the features from the run's evaluation artifacts and reproduces the run's
    # test scores: what `promote`'s gates do with every candidate
    np.testing.assert_allclose(predictor.predict(rows, events), rows["score_model"], atol=1e-9)


def test_ranker_on_dask_matches_local_and_its_bundle_scores_the_same(
    world: Path, cluster: Cluster, tmp_path: Path
) -> None:
    # Given the same world, when the ranker is trained on the cluster and on one machine
    run = train_ranker_dask(cluster, world)
    data = load_ranker_data(world)
    local = train_ranker(data)
    dask_doc, local_doc = metrics_document(run.training.metrics), metrics_document(local.metrics)
    # Then the windows are the same and the rankers equally good
    for key in ("train_until", "test_from", "train_referrals", "valid_referrals"):
        assert run.training.windows[key] == local.windows[key]
    assert abs(dask_doc["test"]["ndcg@5"] - local_doc["test"]["ndcg@5"]) <= NDCG_TOLERANCE
    oracle = dask_doc["oracle"]["ndcg@5"] - local_doc["oracle"]["ndcg@5"]
    assert abs(oracle) <= NDCG_TOLERANCE
    # And the baselines, scored on the same test pairs by the same code, are identical
    assert dask_doc["baselines"] == local_doc["baselines"]
    assert (run.pairs, run.referrals) == (len(data.pairs), data.pairs["referral_id"].nunique())
    assert run.engine["engine"] == "dask"

    # When its bundle is saved and loaded as the service loads it
    ranker = SpecialistRanker.load(run.training.bundle({"name": "t"}).save(tmp_path / "bundle"))
    # Then it scores the test pairs as the run did
    test = run.training.test
    np.testing.assert_allclose(ranker.score(test), test["score_ranker"], rtol=1e-9)


def test_a_scheduler_that_is_not_there_is_a_one_line_error(world: Path) -> None:
    # Given an address where nothing listens, when training is asked to use it
    address = f"tcp://127.0.0.1:{free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = CliRunner().invoke(
            app,
            ["train", "ranker", "--engine", "dask", "--scheduler", address, "--data", str(world)],
        )
    # Then it exits 2 with one line naming the option, and no traceback
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: --scheduler {address}: no Dask scheduler answered")
    assert "Traceback" not in result.output
