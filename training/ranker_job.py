"""The specialist-ranker jobs behind the CLI: train (and register), promote through the gates,
and answer one referral with a registered ranker."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.matcher import Matcher, MatchRequest, MatchResult, SpecialistRanker
from features.ranking import PAIR_FEATURES
from training.no_show_job import _flat_metrics, _json_default
from training.promotion import GateResult, promote_version, ranker_gates
from training.ranker import (
    BASELINES,
    CANDIDATES,
    COMPLETION_PARAMS,
    LGB_RANK_PARAMS,
    MODEL_FEATURES,
    RADIUS_KM,
    TARGET_LEVELS,
    RankerData,
    RankerTraining,
    baseline_scores,
    evaluate,
    load_ranker_data,
    metrics_document,
    train_ranker,
)

MODEL_NAME = "specialist-ranker"
EXPERIMENT = "specialist-ranker"
EVALUATION_DIR = "evaluation"
LABEL_DESIGN = (
    "Evaluation uses the logged grades (3 chosen and completed, 2 chosen and booked, 1 chosen "
    "only, 0 not chosen). Training uses counterfactual completion labels on 0.."
    f"{TARGET_LEVELS}: the chosen specialist's observed outcome (completed = {TARGET_LEVELS}, "
    "else 0), every other candidate's completion probability from a LightGBM completion model "
    "fitted on the chosen pairs of the training window."
)
EVALUATION_COLUMNS = (
    "referral_id",
    "created_at",
    "specialist_id",
    "specialty",
    "urgency",
    "label",
    "chosen",
    *PAIR_FEATURES,
    "score_ranker",
    "utility",
)


@dataclass(frozen=True)
class DataSummary:
    """What the model card says about the training pairs."""

    source: str
    synthetic: bool
    referrals: int
    pairs: int
    date_range: str

    @classmethod
    def of(cls, data: RankerData, source: str) -> DataSummary:
        """From all candidate pairs of a dataset."""
        pairs = data.pairs
        return cls(
            source=source,
            synthetic=data.truth is not None,
            referrals=int(pairs["referral_id"].nunique()),
            pairs=len(pairs),
            date_range=f"{pairs['created_at'].min():%Y-%m-%d} .. {pairs['created_at'].max():%Y-%m-%d}",
        )


@dataclass
class TrainOutcome:
    """What the train command reports."""

    training: RankerTraining
    run_id: str
    version: str
    metrics_document: dict[str, Any]


def _write_reports(training: RankerTraining, data: DataSummary, out: Path) -> dict[str, Path]:
    """Plots, model card and per-group tables for one run, into `out`."""
    from training.model_card import render_ranker_card
    from training.plots_ranker import gain_by_position_plot, metric_by_group, metric_by_group_plot

    out.mkdir(parents=True, exist_ok=True)
    test = training.test
    files = {"gain_by_position": gain_by_position_plot(test, out / "gain_by_position.png")}
    for column in ("specialty", "urgency"):
        table = metric_by_group(test, column)
        table.to_csv(out / f"ndcg_by_{column}.csv", index=False)
        files[f"ndcg_by_{column}_table"] = out / f"ndcg_by_{column}.csv"
        files[f"ndcg_by_{column}"] = metric_by_group_plot(
            table, column, out / f"ndcg_by_{column}.png"
        )
    caveats = []
    if not data.synthetic:
        caveats.append(
            "no ground truth: only logged-outcome metrics, which favour the historical choice"
        )
    card = {
        "name": MODEL_NAME,
        "version": "see the registry",
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "source": data.source,
            "synthetic": data.synthetic,
            "referrals": data.referrals,
            "pairs": data.pairs,
            "date_range": data.date_range,
            "windows": training.windows,
        },
        "labels": LABEL_DESIGN,
        "features": list(MODEL_FEATURES),
        "metrics": {k: v for k, v in training.metrics.items() if not k.startswith("_")},
        "caveats": caveats,
    }
    (out / "model_card.md").write_text(render_ranker_card(card))
    files["model_card"] = out / "model_card.md"
    return files


def train_and_register(
    data_dir: Path,
    *,
    test_from: pd.Timestamp | None,
    tracking_uri: str | None,
    metrics_out: Path | None,
    seed: int = 7,
) -> TrainOutcome:
    """Train, evaluate, log the run with plots and card, register a version of the ranker."""
    data = load_ranker_data(data_dir)
    training = train_ranker(data, test_from=test_from, seed=seed)
    summary = DataSummary.of(data, f"dataset {data_dir.name}")
    return register(
        training, summary, test_from=test_from, tracking_uri=tracking_uri, metrics_out=metrics_out
    )


def train_and_register_dask(
    data_dir: Path,
    *,
    test_from: pd.Timestamp | None,
    tracking_uri: str | None,
    metrics_out: Path | None,
    scheduler: str | None = None,
    workers: int = 2,
    seed: int = 7,
) -> TrainOutcome:
    """`train_and_register` with the Dask engine: candidate pairs and their features built on
    partitions of the referrals, both LightGBM models trained on the cluster at `scheduler`
    (default: a local cluster of `workers`); the run and the registered bundle are as with the
    local engine."""
    from training.dask_engine import dask_client, train_ranker_dask

    with dask_client(scheduler, workers) as cluster:
        run = train_ranker_dask(cluster, data_dir, test_from=test_from, seed=seed)
    summary = DataSummary(
        source=f"dataset {data_dir.name}",
        synthetic=run.synthetic,
        referrals=run.referrals,
        pairs=run.pairs,
        date_range=run.date_range,
    )
    return register(
        run.training,
        summary,
        test_from=test_from,
        tracking_uri=tracking_uri,
        metrics_out=metrics_out,
        engine=run.engine,
    )


def register(
    training: RankerTraining,
    data: DataSummary,
    *,
    test_from: pd.Timestamp | None,
    tracking_uri: str | None,
    metrics_out: Path | None,
    engine: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Log a trained ranker's run (params, metrics, reports, evaluation rows) and register its
    bundle as a version of specialist-ranker. `engine` (Dask runs only) is logged as params and
    kept in the metrics document."""
    import mlflow

    from training import registry

    source = data.source
    registry.configure(tracking_uri)
    experiment_id = registry.experiment(EXPERIMENT)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id) as run:
        tmpdir = Path(tmp)
        reports = _write_reports(training, data, tmpdir / "reports")
        mlflow.log_params(
            {
                "source": source,
                "test_from": str(test_from.date()) if test_from is not None else "auto (last 20%)",
                "candidates": CANDIDATES,
                "candidate_radius_km": RADIUS_KM,
                "labels": "counterfactual completion (0..30) for training; logged grades 0..3 for evaluation",
                "features": len(MODEL_FEATURES),
                **{f"lgb_{k}": v for k, v in LGB_RANK_PARAMS.items()},
                **{f"completion_{k}": v for k, v in COMPLETION_PARAMS.items()},
                **{f"window_{k}": v for k, v in training.windows.items()},
                **(engine or {}),
            }
        )
        doc = metrics_document(training.metrics)
        mlflow.log_metrics(_flat_metrics({k: v for k, v in doc.items() if k != "ci95"}))
        for path in reports.values():
            mlflow.log_artifact(str(path), artifact_path="reports")
        evaluation = tmpdir / EVALUATION_DIR
        evaluation.mkdir()
        test = training.test
        test[[c for c in EVALUATION_COLUMNS if c in test]].to_parquet(
            evaluation / "test_rows.parquet", index=False
        )
        mlflow.log_artifacts(str(evaluation), artifact_path=EVALUATION_DIR)
        metadata = {
            **registry.run_metadata(MODEL_NAME, run.info.run_id),
            "source": source,
            "labels": LABEL_DESIGN,
            "windows": training.windows,
        }
        bundle = training.bundle(metadata).save(tmpdir / "bundle")
        example = test[list(MODEL_FEATURES)].head(5)
        output = pd.DataFrame({"score": test["score_ranker"].head(5).to_numpy()})
        info = registry.log_bundle(
            bundle,
            MODEL_NAME,
            example,
            output,
            python_model=registry.RankerBundleModel(),
            check=SpecialistRanker.load,
        )
        doc = {"model": MODEL_NAME, "version": str(info.version), "run_id": run.info.run_id} | doc
        if engine:
            doc["engine"] = engine
        mlflow.log_dict(doc, "metrics.json")
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return TrainOutcome(training, run.info.run_id, str(info.version), doc)


def gate_results(
    rows: pd.DataFrame, candidate: SpecialistRanker, champion: SpecialistRanker | None
) -> list[GateResult]:
    """The ranker gates on evaluation rows (test pairs with features, labels, maybe utility)."""
    truth = rows[["referral_id", "specialist_id", "utility"]] if "utility" in rows else None
    metric = "oracle.ndcg@5" if truth is not None else "ndcg@5"
    scores = {"candidate": candidate.score(rows)}
    scores |= baseline_scores(rows, rows["chosen"].to_numpy())
    if champion is not None:
        scores["champion"] = champion.score(rows)
    result = evaluate(rows, scores, truth)
    by_urgency: dict[str, tuple[int, float, float]] = {}
    for urgency, sub in rows.groupby("urgency", sort=True):
        idx = sub.index.to_numpy()
        r = evaluate(
            sub.reset_index(drop=True),
            {"candidate": scores["candidate"][idx], "rule": scores["weighted_rule"][idx]},
            truth,
            n_boot=1,
        )
        by_urgency[str(urgency)] = (
            int(sub["referral_id"].nunique()),
            float(r["candidate"][metric]["mean"]),
            float(r["rule"][metric]["mean"]),
        )
    return ranker_gates(
        metric,
        result["candidate"],
        {name: result[name] for name in BASELINES},
        result.get("champion"),
        by_urgency,
    )


def _gates(evaluation: Path, candidate: Path, champion: Path | None) -> list[GateResult]:
    rows = pd.read_parquet(evaluation / "test_rows.parquet")
    champ = SpecialistRanker.load(champion) if champion else None
    return gate_results(rows, SpecialistRanker.load(candidate), champ)


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


def load_ranker(model: str | None, tracking_uri: str | None, workdir: Path) -> SpecialistRanker:
    """A bundle directory, 'models:/specialist-ranker@alias' or '/VERSION', or the champion."""
    from training import registry

    return SpecialistRanker.load(registry.resolve_bundle(model, MODEL_NAME, tracking_uri, workdir))


def request_for_referral(tables: dict[str, pd.DataFrame], referral_id: str | None) -> MatchRequest:
    """The match request a referral UI would send for a referral of the dataset."""
    rf = tables["referrals"]
    if referral_id is None:
        raise ValueError("the dataset has no referrals")
    found = rf[rf["referral_id"] == referral_id]
    if found.empty:
        raise ValueError(f"--referral-id {referral_id}: no such referral in the dataset")
    r = found.iloc[0]
    patients = tables["patients"].set_index("patient_id")
    if r["patient_id"] not in patients.index:
        raise ValueError(f"--referral-id {referral_id}: its patient is not in patients.parquet")
    p = patients.loc[r["patient_id"]]
    system = None
    if pd.notna(r["referring_provider_id"]):
        pcp = tables["referring_providers"].set_index("provider_id")
        org = pcp["organization_id"].get(r["referring_provider_id"])
        systems = tables["organizations"].set_index("organization_id")["system_id"]
        value = systems.get(org) if org is not None else None
        system = str(value) if value is not None and pd.notna(value) else None
    return MatchRequest(
        latitude=float(p["latitude"]),
        longitude=float(p["longitude"]),
        specialty=str(r["specialty"]),
        reason_code=str(r["reason_code"]),
        urgency=str(r["urgency"]),
        insurance_plan_id=None if pd.isna(p["insurance_plan_id"]) else str(p["insurance_plan_id"]),
        language=str(p["preferred_language"]),
        sex=str(p["sex"]),
        patient_id=str(r["patient_id"]),
        referring_system=system,
    )


def snapshot_time(data_dir: Path) -> pd.Timestamp | None:
    """The dataset's snapshot time (manifest as_of) when it has one."""
    manifest = data_dir / "manifest.json"
    if not manifest.exists():
        return None
    as_of = json.loads(manifest.read_text()).get("as_of")
    return pd.Timestamp(as_of) if as_of else None


def format_matches(result: MatchResult, names: dict[str, str] | None = None) -> str:
    """The top k as a coordinator reads them (specialist, score, reasons)."""
    if not result.matches:
        return f"no candidates: {result.empty_reason}"
    lines = [
        f"{result.candidates} candidates within {result.radius_km:.0f} km"
        + (" (plan not recognised)" if result.unknown_plan else "")
    ]
    for m in result.matches:
        flag = " [out of network]" if m.out_of_network else ""
        who = f"{names[m.specialist_id]} ({m.specialist_id})" if names else m.specialist_id
        lines.append(f"{m.rank}. {who}{flag}  score {m.score:.3f}")
        lines.extend(f"     - {text}" for text in m.reasons)
    return "\n".join(lines)


def tables_for_matching(data_dir: Path) -> dict[str, pd.DataFrame]:
    """The contract tables the matcher needs from a dataset folder."""
    names = (
        "specialists",
        "plans",
        "organizations",
        "availability",
        "appointments",
        "referrals",
        "patients",
        "referring_providers",
    )
    missing = [n for n in names if not (data_dir / f"{n}.parquet").exists()]
    if missing:
        raise ValueError(f"--data {data_dir}: missing {', '.join(n + '.parquet' for n in missing)}")
    return {n: pd.read_parquet(data_dir / f"{n}.parquet") for n in names}


def recommend_for_referral(
    data_dir: Path, referral_id: str | None, ranker: SpecialistRanker, k: int, allow_oon: bool
) -> tuple[str, str]:
    """Rank specialists for one referral of a dataset, as of the dataset's snapshot time.
    Returns a one-line description of the referral (no patient details) and the ranked list."""
    from features.codes import reasons, specialties

    tables = tables_for_matching(data_dir)
    if referral_id is None:
        rf = tables["referrals"]
        referral_id = str(rf.loc[rf["created_at"].idxmax(), "referral_id"]) if len(rf) else None
    req = request_for_referral(tables, referral_id)
    if allow_oon:
        req = dataclasses.replace(req, allow_out_of_network=True)
    matcher = Matcher.from_tables(ranker, tables, now=snapshot_time(data_dir))
    spec = specialties().get(req.specialty)
    reason = reasons().get(req.reason_code)
    about = (
        f"referral {referral_id}: {spec.name if spec else req.specialty} for "
        f"{reason.label if reason else req.reason_code} ({req.reason_code}), {req.urgency}"
    )
    result = matcher.recommend(req, k=k)
    return about, format_matches(result, specialist_names(tables, result))


def specialist_names(tables: dict[str, pd.DataFrame], result: MatchResult) -> dict[str, str]:
    """'Dr First Last, Specialty name' for the matched specialists (providers, not patients)."""
    from features.codes import specialties

    sp = tables["specialists"].set_index("specialist_id")
    out = {}
    for m in result.matches:
        row = sp.loc[m.specialist_id]
        spec = specialties().get(str(row["specialty"]))
        out[m.specialist_id] = (
            f"Dr {row['first_name']} {row['last_name']}, {spec.name if spec else row['specialty']}"
        )
    return out
