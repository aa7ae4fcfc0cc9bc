"""The no-show jobs behind the CLI: train (and register), promote through the gates, score."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.no_show import FLAT_OPTIONAL, FLAT_REQUIRED, history_events
from features.predictor import NoShowPredictor
from training.no_show import LGB_PARAMS, NoShowData, NoShowTraining, load_world, train_no_show
from training.promotion import GateResult, no_show_gates, promote_version, subgroup_columns

MODEL_NAME = "no-show"
EXPERIMENT = "no-show"
EVALUATION_DIR = "evaluation"


@dataclass(frozen=True)
class DataSummary:
    """What the model card says about the training data."""

    source: str
    synthetic: bool
    rows: int  # attended/no-show appointments
    date_range: str
    no_show_rate: float

    @classmethod
    def of(cls, labelled: pd.DataFrame, source: str, synthetic: bool) -> DataSummary:
        """From the attended/no-show rows (columns outcome, appointment_at)."""
        at = labelled["appointment_at"]
        return cls(
            source=source,
            synthetic=synthetic,
            rows=len(labelled),
            date_range=f"{at.min():%Y-%m-%d} .. {at.max():%Y-%m-%d}",
            no_show_rate=float((labelled["outcome"] == "no_show").mean()),
        )


@dataclass
class TrainOutcome:
    """What the train command reports."""

    training: NoShowTraining
    run_id: str
    version: str
    metrics_document: dict[str, Any]


def load_no_show_data(
    data_dir: Path | None,
    appointments: Path | None,
    mapping: Path | None,
    rejected_out: Path | None,
    say: Any = print,
    fhir_appointments: Path | None = None,
) -> NoShowData:
    """A generated/contract dataset folder, or a data scientist's own appointments file.
    `fhir_appointments` (with `data_dir`): the appointments come from FHIR Appointment ndjson
    instead of the folder's appointments table; unreadable resources are reported by line (and
    written to `rejected_out`, default `<file>.rejected.txt`), the rest are used."""
    if (data_dir is None) == (appointments is None):
        raise ValueError("give exactly one of --data DIR or --appointments FILE")
    if fhir_appointments is not None:
        if data_dir is None:
            raise ValueError("--fhir-appointments needs --data DIR (patients, specialists, ...)")
        frame = _read_fhir_appointments(data_dir, fhir_appointments, rejected_out, say)
        data = load_world(data_dir, appointments=frame)
        data.source = f"{data.source} with FHIR appointments {fhir_appointments.name}"
        return data
    if data_dir is not None:
        if not (data_dir / "appointments.parquet").exists():
            raise ValueError(
                f"--data {data_dir}: no appointments.parquet there (is it a dataset folder?)"
            )
        return load_world(data_dir)
    from training.own_data import describe_rejections, load_mapping, load_own_appointments

    assert appointments is not None
    own = load_own_appointments(appointments, load_mapping(mapping) if mapping else None)
    if len(own.rejected):
        out = rejected_out or appointments.with_name(appointments.stem + ".rejected.csv")
        say(describe_rejections(own, out))
    return NoShowData(
        flat=own.flat,
        source=f"own data {appointments.name}",
        extra_numeric=own.extra_numeric,
        extra_categorical=own.extra_categorical,
    )


def _read_fhir_appointments(
    data_dir: Path, path: Path, rejected_out: Path | None, say: Any
) -> pd.DataFrame:
    """FHIR Appointment ndjson as the contract's appointments table; resources that cannot be
    read, or that name a patient or specialist the dataset lacks, are reported by line."""
    from features.fhir_inbound import read_appointments_ndjson

    if not path.is_file():
        raise FileNotFoundError(f"--fhir-appointments {path}: no such file")
    frame, problems = read_appointments_ndjson(path)
    messages = [str(p) for p in problems]
    for table, column in (("patients", "patient_id"), ("specialists", "specialist_id")):
        known = set(pd.read_parquet(data_dir / f"{table}.parquet", columns=[column])[column])
        unknown = ~frame[column].isin(known)
        messages += [
            f"Appointment/{a}: {column} is not in {table}.parquet"
            for a in frame.loc[unknown, "appointment_id"]
        ]
        frame = frame[~unknown]
    if messages:
        out = rejected_out or path.with_name(path.stem + ".rejected.txt")
        out.write_text("\n".join(messages) + "\n")
        shown = "\n".join(f"  {m}" for m in messages[:10])
        say(
            f"{len(messages)} FHIR Appointment resource(s) not used; all listed in {out}:\n" + shown
        )
    if frame.empty:
        raise ValueError(f"--fhir-appointments {path}: no usable Appointment resources")
    say(f"{len(frame):,} appointments read from {path.name}")
    return frame.reset_index(drop=True)


def metrics_document(training: NoShowTraining, version: str, run_id: str) -> dict[str, Any]:
    """The --metrics-out JSON: test, baselines, oracle (when truth exists), windows, version."""
    doc: dict[str, Any] = {
        "model": MODEL_NAME,
        "version": version,
        "run_id": run_id,
        "windows": training.windows,
        "test": training.metrics["test"],
        "calibration_fold": training.metrics["calibration_fold"],
        "baselines": training.metrics["baselines"],
        "subgroups": training.subgroups.replace({np.nan: None}).to_dict(orient="records"),
    }
    for key in ("oracle", "model_share_of_ceiling", "gap_to_ceiling"):
        if key in training.metrics:
            doc[key] = training.metrics[key]
    return doc


def _write_reports(training: NoShowTraining, data: DataSummary, out: Path) -> dict[str, Path]:
    """Plots, model card and evaluation tables for one run, into `out`."""
    from training.model_card import render_no_show_card
    from training.plots import (
        calibration_plot,
        gain_by_threshold_plot,
        roc_pr_plot,
        shap_summary_plot,
        subgroup_calibration_plot,
    )

    test = training.test
    y = test["label"].to_numpy()
    scores = {
        c.removeprefix("score_"): test[c].to_numpy() for c in test.columns if c.startswith("score_")
    }
    oracle = test["true_probability"].to_numpy() if "true_probability" in test else None
    if oracle is not None:
        scores["ground-truth ceiling"] = oracle
    files = {
        "roc_pr": roc_pr_plot(y, scores, out / "roc_pr.png"),
        "calibration": calibration_plot(y, scores["model"], out / "calibration.png", oracle=oracle),
        "subgroup_calibration": subgroup_calibration_plot(
            training.subgroups, out / "subgroup_calibration.png"
        ),
        "shap_summary": shap_summary_plot(
            training.contributions, training.sample_features, out / "shap_summary.png"
        ),
        "gain": gain_by_threshold_plot(y, scores["model"], out / "outreach_gain.png"),
    }
    card = {
        "name": MODEL_NAME,
        "version": training.predictor.metadata.get("version", "unregistered"),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "source": data.source,
            "synthetic": data.synthetic,
            "rows": data.rows,
            "date_range": data.date_range,
            "no_show_rate": data.no_show_rate,
            "windows": training.windows,
        },
        "features": training.predictor.spec.columns,
        "metrics": {
            "model": training.metrics["test"],
            "baselines": training.metrics["baselines"],
            "ceiling": training.metrics.get("oracle"),
        },
        "subgroups": training.subgroups,
        "calibration": "Platt scaling of LightGBM log-odds, fitted on the calibration window",
        "tiers": training.predictor.tiers,
    }
    (out / "model_card.md").write_text(render_no_show_card(card))
    files["model_card"] = out / "model_card.md"
    training.subgroups.to_csv(out / "subgroups.csv", index=False)
    files["subgroups"] = out / "subgroups.csv"
    return files


def train_and_register(
    data: NoShowData,
    *,
    test_from: pd.Timestamp | None,
    offset_days: float | None,
    tracking_uri: str | None,
    metrics_out: Path | None,
    seed: int = 7,
) -> TrainOutcome:
    """Train, evaluate, log the run with plots and card, register a version of `no-show`."""
    training = train_no_show(data, test_from=test_from, offset_days=offset_days, seed=seed)
    labelled = data.flat[data.flat["outcome"].isin(["attended", "no_show"])]
    summary = DataSummary.of(labelled, data.source, data.truth is not None)
    return register(
        training,
        summary,
        history_events(data.flat),
        test_from=test_from,
        offset_days=offset_days,
        tracking_uri=tracking_uri,
        metrics_out=metrics_out,
    )


def train_and_register_dask(
    data_dir: Path,
    *,
    test_from: pd.Timestamp | None,
    offset_days: float | None,
    tracking_uri: str | None,
    metrics_out: Path | None,
    scheduler: str | None = None,
    workers: int = 2,
    seed: int = 7,
) -> TrainOutcome:
    """`train_and_register` with the Dask engine: features built on the partitions of a dataset
    folder and LightGBM trained on the cluster at `scheduler` (default: a local cluster of
    `workers`); the run, its reports and the registered bundle are as with the local engine."""
    from training.dask_engine import dask_client, train_no_show_dask

    if not (data_dir / "appointments.parquet").exists():
        raise ValueError(
            f"--data {data_dir}: no appointments.parquet there (is it a dataset folder?)"
        )
    with dask_client(scheduler, workers) as cluster:
        run = train_no_show_dask(
            cluster, data_dir, test_from=test_from, offset_days=offset_days, seed=seed
        )
    summary = DataSummary.of(run.labelled, run.source, run.synthetic)
    return register(
        run.training,
        summary,
        run.events,
        test_from=test_from,
        offset_days=offset_days,
        tracking_uri=tracking_uri,
        metrics_out=metrics_out,
        engine=run.engine,
    )


def register(
    training: NoShowTraining,
    data: DataSummary,
    events: pd.DataFrame,
    *,
    test_from: pd.Timestamp | None,
    offset_days: float | None,
    tracking_uri: str | None,
    metrics_out: Path | None,
    engine: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Log a trained model's run (params, metrics, reports, evaluation rows and the history
    `events` the gates rebuild features from) and register its bundle as a version of no-show.
    `engine` (Dask runs only) is logged as params and kept in the metrics document."""
    import mlflow

    from training import registry

    registry.configure(tracking_uri)
    experiment_id = registry.experiment(EXPERIMENT)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id) as run:
        tmpdir = Path(tmp)
        reports = _write_reports(training, data, tmpdir / "reports")
        mlflow.log_params(
            {
                "source": data.source,
                "test_from": str(test_from.date()) if test_from is not None else "auto (last 20%)",
                "prediction_time": "booking"
                if offset_days is None
                else f"{offset_days} days before the visit",
                "features": len(training.predictor.spec.columns),
                "best_iteration": training.predictor.metadata.get("best_iteration"),
                **{f"lgb_{k}": v for k, v in LGB_PARAMS.items()},
                **{f"window_{k}": v for k, v in training.windows.items()},
                **(engine or {}),
            }
        )
        mlflow.log_metrics(_flat_metrics(training.metrics))
        for path in reports.values():
            mlflow.log_artifact(str(path), artifact_path="reports")
        evaluation = tmpdir / EVALUATION_DIR
        evaluation.mkdir()
        training.test.to_parquet(evaluation / "test_rows.parquet", index=False)
        events.to_parquet(evaluation / "events.parquet", index=False)
        mlflow.log_artifacts(str(evaluation), artifact_path=EVALUATION_DIR)
        training.predictor.metadata.update(registry.run_metadata(MODEL_NAME, run.info.run_id))
        bundle = training.predictor.save(tmpdir / "bundle")
        example = training.test[
            [c for c in (*FLAT_REQUIRED, *FLAT_OPTIONAL) if c in training.test]
        ].head(5)
        output = pd.DataFrame(
            {
                "appointment_id": example["appointment_id"],
                "risk": training.test["score_model"].head(5).to_numpy(),
                "tier": training.predictor.tier(training.test["score_model"].head(5).to_numpy()),
            }
        )
        info = registry.log_bundle(bundle, MODEL_NAME, example, output)
        doc = metrics_document(training, str(info.version), run.info.run_id)
        if engine:
            doc["engine"] = engine
        mlflow.log_dict(doc, "metrics.json")
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return TrainOutcome(training, run.info.run_id, str(info.version), doc)


def _flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as MLflow keys (test_roc_auc, baselines_logistic_regression_roc_auc ...)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_metrics(value, name + "_"))
        elif isinstance(value, int | float) and np.isfinite(value):
            out[name.replace("@", "_at_")] = float(value)
    return out


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value)


def _gates(evaluation: Path, candidate: Path, champion: Path | None) -> list[GateResult]:
    rows = pd.read_parquet(evaluation / "test_rows.parquet")
    events = pd.read_parquet(evaluation / "events.parquet")
    champ_risk = NoShowPredictor.load(champion).predict(rows, events) if champion else None
    return no_show_gates(
        rows["label"].to_numpy(),
        NoShowPredictor.load(candidate).predict(rows, events),
        champ_risk,
        subgroup_columns(rows),
    )


def promote(
    version: str | None, *, force: bool, tracking_uri: str | None
) -> tuple[bool, list[GateResult], str]:
    """Move @champion to `version` (default: the latest) if it passes the gates, or when forced."""
    return promote_version(
        MODEL_NAME,
        version,
        force=force,
        tracking_uri=tracking_uri,
        evaluation_dir=EVALUATION_DIR,
        gates=_gates,
    )


def load_predictor(model: str | None, tracking_uri: str | None, workdir: Path) -> NoShowPredictor:
    """A bundle directory, 'models:/no-show@alias', 'models:/no-show/VERSION', or the champion."""
    from training import registry

    return NoShowPredictor.load(registry.resolve_bundle(model, MODEL_NAME, tracking_uri, workdir))


def score(predictor: NoShowPredictor, flat: pd.DataFrame, upcoming_only: bool) -> pd.DataFrame:
    """appointment_id, risk, tier and the top three factors raising it, for flat rows."""
    events = history_events(flat)
    rows = flat[flat["outcome"].isna()] if upcoming_only and "outcome" in flat else flat
    X = predictor.features(rows, events)
    risk = predictor.predict_matrix(X)
    factors = predictor.top_factors(X)
    out = pd.DataFrame(
        {
            "appointment_id": rows["appointment_id"].to_numpy(),
            "risk": risk.round(4),
            "tier": predictor.tier(risk),
            "top_factors": ["; ".join(f) for f in factors],
        }
    )
    return out
