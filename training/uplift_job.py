"""The outreach-uplift jobs behind the CLI: train (and register), promote through the gates.

    referral-ml train uplift --data DIR [--learner ...] [--propensity ...] [--risk-model ...]
    referral-ml promote uplift [--version N] [--force]

A run logs the policy table, Qini curves, benefit calibration, plots and the model card, the
evaluation rows the gates re-score (test rows with the no-show risk without a call, the doubly
robust pseudo-outcome and, on synthetic worlds, the true effect) and registers the bundle
(`features.uplift`) as a version of `outreach-uplift`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from features.predictor import NoShowPredictor
from features.uplift import TREATMENT, UpliftPredictor
from training.no_show import NoShowData
from training.promotion import GateResult, promote_version, uplift_gates
from training.uplift import (
    DEFAULT_CALL_SHARE,
    DEFAULT_LEARNER,
    UpliftTraining,
    train_uplift,
)

MODEL_NAME: Final = "outreach-uplift"
EXPERIMENT: Final = "outreach-uplift"
EVALUATION_DIR: Final = "evaluation"
RISK_MODEL: Final = "models:/no-show@champion"


@dataclass(frozen=True)
class UpliftOutcome:
    """What the train command reports."""

    training: UpliftTraining
    run_id: str
    version: str
    metrics_document: dict[str, Any]


def metrics_document(training: UpliftTraining, version: str, run_id: str) -> dict[str, Any]:
    """The --metrics-out JSON: the policy table, differences, AUUC, calibration, rows."""
    return {
        "model": MODEL_NAME,
        "version": version,
        "run_id": run_id,
        "learner": training.learner,
        "propensity": training.propensity,
        "capacity_per_day": training.capacity,
        "policies": _records(training.policies),
        "calibration": _records(training.calibration),
        **{k: v for k, v in training.metrics.items() if k not in ("policies", "capacity_per_day")},
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.replace({np.nan: None}).to_dict(orient="records")


def _write_reports(
    training: UpliftTraining, data: NoShowData, out: Path, version: str
) -> dict[str, Path]:
    """Plots, model card and tables for one run, into `out`."""
    from training.model_card import render_uplift_card
    from training.plots_uplift import benefit_calibration_plot, policy_plot, qini_plot

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "qini": qini_plot(training.qini, out / "qini.png"),
        "policies": policy_plot(training.policies, training.capacity, out / "policies.png"),
        "benefit_calibration": benefit_calibration_plot(
            training.calibration, out / "benefit_calibration.png"
        ),
    }
    terms = training.predictor.terms
    card = {
        "name": MODEL_NAME,
        "version": version,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "learner": training.learner,
        "propensity": training.propensity,
        "data": {
            "source": data.source,
            "synthetic": data.truth_effect is not None,
            "rows": training.metrics["rows"],
            "windows": training.predictor.metadata.get("windows", {}),
        },
        "capacity_per_day": training.capacity,
        "call_share": training.predictor.metadata.get("call_share"),
        "policies": _records(training.policies),
        "differences": training.metrics["differences"],
        "auuc": training.metrics["auuc"],
        "average_benefit": training.metrics["average_benefit"],
        "rank_correlation_with_true_effect": training.metrics.get(
            "rank_correlation_with_true_effect"
        ),
        "terms": None
        if terms is None
        else [{"term": n, "coefficient": c} for n, c in zip(terms.names, terms.coef, strict=True)],
    }
    (out / "model_card.md").write_text(render_uplift_card(card))
    files["model_card"] = out / "model_card.md"
    for name, frame in (
        ("policies", training.policies),
        ("qini", training.qini),
        ("benefit_calibration", training.calibration),
    ):
        frame.to_csv(out / f"{name}.csv", index=False)
        files[f"{name}_csv"] = out / f"{name}.csv"
    return files


def load_risk_model(model: str | None, tracking_uri: str | None, workdir: Path) -> NoShowPredictor:
    """The no-show model whose risk the worklist ranks by: a bundle folder or a registry URI
    (default: the no-show champion)."""
    from training.no_show_job import load_predictor

    return load_predictor(model or RISK_MODEL, tracking_uri, workdir)


def train_and_register(
    data: NoShowData,
    risk_model: NoShowPredictor,
    *,
    learner: str = DEFAULT_LEARNER,
    propensity: str = "randomised",
    call_share: float = DEFAULT_CALL_SHARE,
    test_from: pd.Timestamp | None = None,
    tracking_uri: str | None = None,
    metrics_out: Path | None = None,
    seed: int = 7,
) -> UpliftOutcome:
    """Train every learner, evaluate the policies, log the run, register `learner`'s bundle."""
    import mlflow

    from training import registry

    training = train_uplift(
        data,
        risk_model,
        learner=learner,
        propensity=propensity,
        call_share=call_share,
        test_from=test_from,
        seed=seed,
    )
    registry.configure(tracking_uri)
    experiment_id = registry.experiment(EXPERIMENT)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id) as run:
        tmpdir = Path(tmp)
        mlflow.log_params(
            {
                "source": data.source,
                "learner": learner,
                "propensity": propensity,
                "call_share": call_share,
                "capacity_per_day": training.capacity,
                "risk_model_version": training.predictor.metadata.get("risk_model"),
                "test_from": str(test_from.date()) if test_from is not None else "auto (last 20%)",
                **{f"window_{k}": v for k, v in training.predictor.metadata["windows"].items()},
            }
        )
        mlflow.log_metrics(_flat(training))
        evaluation = tmpdir / EVALUATION_DIR
        evaluation.mkdir()
        training.test.to_parquet(evaluation / "test_rows.parquet", index=False)
        training.events.to_parquet(evaluation / "events.parquet", index=False)
        mlflow.log_artifacts(str(evaluation), artifact_path=EVALUATION_DIR)
        training.predictor.metadata.update(registry.run_metadata(MODEL_NAME, run.info.run_id))
        bundle = training.predictor.save(tmpdir / "bundle")
        example = training.test.head(5)
        example_in = example[
            [c for c in example.columns if not c.startswith(("benefit_", "true_", "pseudo_"))]
        ].drop(columns=["label", "outcome", "outcome_at"], errors="ignore")
        example_in = example_in.rename(columns={"risk_no_call": "risk"})
        example_out = pd.DataFrame(
            {
                "appointment_id": example["appointment_id"],
                "expected_benefit": example[f"benefit_{learner}"].to_numpy(),
            }
        )
        info = registry.log_bundle(
            bundle,
            MODEL_NAME,
            example_in,
            example_out,
            python_model=registry.UpliftBundleModel(),
            check=UpliftPredictor.load,
        )
        reports = _write_reports(training, data, tmpdir / "reports", str(info.version))
        for path in reports.values():
            mlflow.log_artifact(str(path), artifact_path="reports")
        doc = metrics_document(training, str(info.version), run.info.run_id)
        mlflow.log_dict(json.loads(json.dumps(doc, default=_json_default)), "metrics.json")
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return UpliftOutcome(training, run.info.run_id, str(info.version), doc)


def _flat(training: UpliftTraining) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in training.policies.itertuples(index=False):
        name = str(row.policy).replace(" ", "_").replace("(", "").replace(")", "")
        for col in ("estimated_per_100", "true_per_100"):
            value = getattr(row, col, None)
            if value is not None and np.isfinite(value):
                out[f"{name}_{col}"] = float(value)
    for key, d in training.metrics["differences"].items():
        out[key] = float(d["value"])
        out[f"{key}_low"] = float(d["low"])
    out.update({f"auuc_{k}": float(v) for k, v in training.metrics["auuc"].items()})
    out.update(
        {f"average_benefit_{k}": float(v) for k, v in training.metrics["average_benefit"].items()}
    )
    return out


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value)


def benefit_of(bundle: UpliftPredictor, rows: pd.DataFrame, events: pd.DataFrame) -> np.ndarray:
    """A bundle's expected benefit for evaluation rows (scored as if not called yet), on the
    no-show risk without a call stored beside them."""
    X = bundle.features(rows.assign(**{TREATMENT: False}), events)
    return bundle.expected_benefit(X, rows["risk_no_call"].to_numpy(dtype=float))


def _gates(evaluation: Path, candidate: Path, champion: Path | None) -> list[GateResult]:
    rows = pd.read_parquet(evaluation / "test_rows.parquet")
    events = pd.read_parquet(evaluation / "events.parquet")
    cand = UpliftPredictor.load(candidate)
    champ = UpliftPredictor.load(champion) if champion else None
    day = pd.to_datetime(rows["appointment_at"]).dt.normalize().to_numpy().astype("datetime64[D]")
    truth = rows["true_effect"].to_numpy(dtype=float) if "true_effect" in rows else None
    return uplift_gates(
        day,
        benefit_of(cand, rows, events),
        None if champ is None else benefit_of(champ, rows, events),
        rows["risk_no_call"].to_numpy(dtype=float),
        rows["pseudo_outcome"].to_numpy(dtype=float),
        truth,
        capacity=int(cand.metadata.get("capacity_per_day") or 1),
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
