"""The `referral-ml` command line. Heavy imports stay inside the commands so `--help` is instant."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    import serving.store

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Specialist matching and no-show risk for healthcare referrals.",
)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the world into.")] = Path(
        "data/world"
    ),
    size: Annotated[
        Literal["small", "medium", "large"], typer.Option(help="Preset counts.")
    ] = "small",
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same tables.")
    ] = 7,
    patients: Annotated[int | None, typer.Option(help="Override the number of patients.")] = None,
    specialists: Annotated[
        int | None, typer.Option(help="Override the number of specialists.")
    ] = None,
    referrals: Annotated[int | None, typer.Option(help="Override the number of referrals.")] = None,
    months: Annotated[int | None, typer.Option(help="Override the months of history.")] = None,
    later_months: Annotated[
        int | None,
        typer.Option(
            "--later-months",
            help="Also simulate this many months after the base period, with the --shift-* "
            "changes, into <out>/later/.",
        ),
    ] = None,
    shift_start: Annotated[
        str | None,
        typer.Option(
            "--shift-start",
            help="Date the later period starts (YYYY-MM-DD; default: the end of the base months).",
        ),
    ] = None,
    shift_lead_time: Annotated[
        float | None,
        typer.Option(
            "--shift-lead-time", help="Later bookings wait this many times longer (e.g. 1.6)."
        ),
    ] = None,
    shift_no_show_logit: Annotated[
        float | None,
        typer.Option(
            "--shift-no-show-logit",
            help="Added to the no-show log-odds of later visits (e.g. 0.4).",
        ),
    ] = None,
    shift_new_network: Annotated[
        bool,
        typer.Option(
            "--shift-new-network",
            help="A new plan and network appear; some commercially insured patients move to it.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Generate a synthetic referral world (tables, truth/, manifest.json) and print its calibration.

    With --later-months, the same world also runs on for a later period in which the --shift-*
    changes hold, written to <out>/later/ (new rows, updates/, truth/, manifest.json)."""
    from pydantic import ValidationError

    from synthetic_data.calibration import format_table
    from synthetic_data.config import NewNetwork, Shift, WorldConfig
    from synthetic_data.world import write_world

    def fail(field: str, message: str) -> typer.Exit:
        message = message.removeprefix("Value error, ")
        typer.echo(f"error: {field}: {message}" if field else f"error: {message}", err=True)
        return typer.Exit(2)

    shift_flags = {
        "start": "--shift-start",
        "months": "--later-months",
        "lead_time_scale": "--shift-lead-time",
        "no_show_logit": "--shift-no-show-logit",
    }
    shift = None
    shift_given = {
        "--shift-start": shift_start is not None,
        "--shift-lead-time": shift_lead_time is not None,
        "--shift-no-show-logit": shift_no_show_logit is not None,
        "--shift-new-network": shift_new_network,
    }
    if later_months is None:
        given = [flag for flag, on in shift_given.items() if on]
        if given:
            raise fail(given[0], "needs --later-months (the length of the later period)")
    else:
        values: dict[str, object] = {"months": later_months}
        if shift_start is not None:
            values["start"] = shift_start
        if shift_lead_time is not None:
            values["lead_time_scale"] = shift_lead_time
        if shift_no_show_logit is not None:
            values["no_show_logit"] = shift_no_show_logit
        if shift_new_network:
            values["new_network"] = NewNetwork()
        try:
            shift = Shift.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise fail(shift_flags.get(str(err["loc"][0]), "--later-months"), err["msg"]) from None
    try:
        cfg = WorldConfig.for_size(
            size,
            seed=seed,
            shift=shift,
            patients=patients,
            specialists=specialists,
            referrals=referrals,
            months=months,
        )
    except ValidationError as exc:
        for err in exc.errors():
            if not err["loc"]:  # a check across fields: today only the shift start's range
                fail("--shift-start", err["msg"])
                continue
            field = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
            fail(field, err["msg"])
        raise typer.Exit(2) from None

    def report(stage: str, seconds: float) -> None:
        if not quiet:
            typer.echo(f"  done  {stage:<48} {seconds:6.1f} s", err=True)

    def echo_later(out: Path) -> None:
        """The later period's counts and its figures beside the base period's."""
        import json

        from synthetic_data.later import LATER_FOLDER

        later = json.loads((out / LATER_FOLDER / "manifest.json").read_text())
        period, s, figures = later["period"], later["shift"], later["figures"]
        changes = [f"lead time x{s['lead_time_scale']:g}", f"no-show logit {s['no_show_logit']:+g}"]
        if s["new_network"]:
            changes.append("a new plan and network")
        typer.echo(
            f"\nLater period {period['start'][:10]} to {period['end'][:10]} ({', '.join(changes)}) "
            f"in {out / LATER_FOLDER}:"
        )
        typer.echo(
            "new rows: "
            + ", ".join(f"{name} {n:,}" for name, n in later["counts"].items())
            + "; updated base rows: "
            + ", ".join(f"{name} {n:,}" for name, n in later["update_counts"].items())
        )
        labels = {
            "no_show_rate": "no-show rate (visits with an outcome)",
            "median_lead_days": "median lead time, days",
            "mean_true_no_show_probability": "mean true no-show probability",
            "referrals_in_network": "referrals to an in-network specialist",
        }
        typer.echo(f"{'figure':40} {'base':>9} {'later':>9}")
        for key, label in labels.items():
            base, new = figures["base"][key], figures["later"][key]
            show = [f"{v:9.3f}" if v is not None else f"{'-':>9}" for v in (base, new)]
            typer.echo(f"{label:40} {show[0]} {show[1]}")

    t0 = time.perf_counter()
    typer.echo(f"Generating a {size} world (seed {seed}) into {out} ...", err=True)
    manifest = write_world(cfg, out, report)
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    typer.echo(
        ", ".join(f"{name} {n:,}" for name, n in counts.items())
        + f"  ({time.perf_counter() - t0:.1f} s)"
    )
    typer.echo("\nCalibration against published figures (shared/reference/FACTS.md):")
    calibration = manifest["calibration"]
    assert isinstance(calibration, list)
    typer.echo(format_table(calibration))
    missed = [r["metric"] for r in calibration if not r["ok"]]
    if missed:
        typer.echo(f"\n{len(missed)} figure(s) outside the target range.", err=True)
    if shift is not None:
        echo_later(out)


@app.command()
def validate(
    directory: Annotated[Path, typer.Argument(help="A dataset folder: one Parquet/CSV per table.")],
) -> None:
    """Check a dataset against the data contract; list every violation, exit 1 if any."""
    from features.validation import main_validate

    raise typer.Exit(main_validate(directory))


train_app = typer.Typer(
    no_args_is_help=True, help="Train a model, log it to MLflow, register a version."
)
promote_app = typer.Typer(
    no_args_is_help=True, help="Move @champion to a version that passes the gates."
)
score_app = typer.Typer(no_args_is_help=True, help="Score appointments with a registered model.")
app.add_typer(train_app, name="train")
app.add_typer(promote_app, name="promote")
app.add_typer(score_app, name="score")

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="A dataset folder (generated or your own, in the contract)."),
]
AppointmentsOpt = Annotated[
    Path | None,
    typer.Option("--appointments", help="Your own appointments file (.csv or .parquet)."),
]
MappingOpt = Annotated[
    Path | None, typer.Option("--mapping", help="mapping.yaml for --appointments.")
]
TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: ./mlflow.db, SQLite)."),
]


class Engine(StrEnum):
    local = "local"
    dask = "dask"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local: this machine. dask: features on dask.dataframe partitions and LightGBM's "
        "Dask estimators, on --scheduler or a local cluster.",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786) for --engine dask (default: start a "
        "local cluster).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, help="Workers (1 thread each) of the local Dask cluster (default 2)."
    ),
]


def _check_engine(engine: Engine, scheduler: str | None, workers: int | None) -> int:
    """The worker count of a local Dask cluster; a one-line error for options that do not fit."""
    if engine is Engine.local and (scheduler is not None or workers is not None):
        raise _fail("--scheduler and --workers need --engine dask")
    if scheduler is not None and workers is not None:
        raise _fail("--workers sizes the local cluster; the cluster at --scheduler has its own")
    return workers or 2


VersionOpt = Annotated[
    str | None, typer.Option("--version", help="Version to promote (default: latest).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Promote even if a gate fails (recorded).")]


def _promote(promote: Any, version: str | None, force: bool, tracking_uri: str | None) -> None:
    """Run a promotion, print the gate verdicts, exit 0 when promoted and 1 when refused."""
    try:
        promoted, _, message = promote(version, force=force, tracking_uri=tracking_uri)
    except (ValueError, LookupError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(message)
    raise typer.Exit(0 if promoted else 1)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@train_app.command("no-show")
def train_no_show_cmd(
    data: DataOpt = None,
    appointments: AppointmentsOpt = None,
    mapping: MappingOpt = None,
    test_from: Annotated[
        str | None,
        typer.Option("--test-from", help="First appointment date of the test window (YYYY-MM-DD)."),
    ] = None,
    offset_days: Annotated[
        float | None,
        typer.Option(
            "--prediction-offset-days",
            help="Predict this many days before the visit (default: at booking).",
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the metrics JSON here.")
    ] = None,
    rejected_out: Annotated[
        Path | None,
        typer.Option("--rejected-out", help="Where to write rejected rows of --appointments."),
    ] = None,
    fhir_appointments: Annotated[
        Path | None,
        typer.Option(
            "--fhir-appointments",
            help="FHIR R4 Appointment ndjson replacing the --data folder's appointments.",
        ),
    ] = None,
    engine: EngineOpt = Engine.local,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Train the calibrated no-show model, evaluate it against baselines, register a version."""
    import pandas as pd

    from training.no_show_job import load_no_show_data, train_and_register

    n_workers = _check_engine(engine, scheduler, workers)
    if engine is Engine.dask and (data is None or appointments or fhir_appointments):
        raise _fail(
            "--engine dask reads a --data folder; --appointments and --fhir-appointments "
            "need --engine local"
        )
    try:
        start = pd.Timestamp(test_from) if test_from else None
    except ValueError:
        raise _fail(f"--test-from: '{test_from}' is not a date (YYYY-MM-DD)") from None
    try:
        if engine is Engine.dask:
            from training.no_show_job import train_and_register_dask

            assert data is not None
            outcome = train_and_register_dask(
                data,
                test_from=start,
                offset_days=offset_days,
                tracking_uri=tracking_uri,
                metrics_out=metrics_out,
                scheduler=scheduler,
                workers=n_workers,
            )
        else:
            dataset = load_no_show_data(
                data,
                appointments,
                mapping,
                rejected_out,
                say=typer.echo,
                fhir_appointments=fhir_appointments,
            )
            outcome = train_and_register(
                dataset,
                test_from=start,
                offset_days=offset_days,
                tracking_uri=tracking_uri,
                metrics_out=metrics_out,
            )
    except (ValueError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(_metrics_table(outcome.metrics_document))
    typer.echo(f"\nregistered no-show version {outcome.version} (run {outcome.run_id})")
    if metrics_out:
        typer.echo(f"metrics written to {metrics_out}")


def _metrics_table(doc: dict) -> str:
    rows = [("model", doc["test"])] + [(f"baseline: {k}", v) for k, v in doc["baselines"].items()]
    if "oracle" in doc:
        rows.append(("ground-truth ceiling", doc["oracle"]))
    head = f"{'':34} {'ROC-AUC':>8} {'PR-AUC':>8} {'Brier':>8} {'logloss':>8} {'ECE':>8} {'recall@20%':>10}"
    lines = [f"test window {doc['windows']['test']}", head]
    for name, m in rows:
        lines.append(
            f"{name:34} {m['roc_auc']:8.4f} {m['pr_auc']:8.4f} {m['brier']:8.4f} {m['log_loss']:8.4f} "
            f"{m['ece']:8.4f} {m.get('recall_at_20pct_daily', float('nan')):10.3f}"
        )
    if "gap_to_ceiling" in doc:
        lines.append(
            f"gap to ceiling {doc['gap_to_ceiling']:.4f} AUC; share of achievable lift {doc['model_share_of_ceiling']:.3f}"
        )
    return "\n".join(lines)


class Learner(StrEnum):
    logit_interaction = "logit-interaction"
    t_learner = "t-learner"
    dr_learner = "dr-learner"


class Propensity(StrEnum):
    randomised = "randomised"
    estimated = "estimated"


@train_app.command("uplift")
def train_uplift_cmd(
    data: DataOpt = None,
    appointments: AppointmentsOpt = None,
    mapping: MappingOpt = None,
    learner: Annotated[
        Learner, typer.Option("--learner", help="The uplift learner to register.")
    ] = Learner.logit_interaction,
    propensity: Annotated[
        Propensity,
        typer.Option(
            "--propensity",
            help="randomised: calls were a randomised trial (the world's); estimated: "
            "observational calls, weighted by a fitted propensity.",
        ),
    ] = Propensity.randomised,
    risk_model: Annotated[
        str | None,
        typer.Option(
            "--risk-model",
            help="The no-show model ranked against (a bundle folder or models:/no-show@alias; "
            "default: the no-show champion).",
        ),
    ] = None,
    call_share: Annotated[
        float,
        typer.Option(
            "--call-share",
            min=0.001,
            max=1.0,
            help="Daily call capacity as a share of an average day's eligible appointments.",
        ),
    ] = 0.10,
    test_from: Annotated[
        str | None,
        typer.Option("--test-from", help="First appointment date of the test window (YYYY-MM-DD)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the metrics JSON here.")
    ] = None,
    rejected_out: Annotated[
        Path | None,
        typer.Option("--rejected-out", help="Where to write rejected rows of --appointments."),
    ] = None,
) -> None:
    """Train the outreach uplift model (who a call helps), evaluate four policies, register it."""
    import tempfile

    import pandas as pd

    from training.no_show_job import load_no_show_data
    from training.uplift_job import load_risk_model, train_and_register

    try:
        start = pd.Timestamp(test_from) if test_from else None
    except ValueError:
        raise _fail(f"--test-from: '{test_from}' is not a date (YYYY-MM-DD)") from None
    try:
        dataset = load_no_show_data(data, appointments, mapping, rejected_out, say=typer.echo)
        with tempfile.TemporaryDirectory() as tmp:
            risk = load_risk_model(risk_model, tracking_uri, Path(tmp))
        outcome = train_and_register(
            dataset,
            risk,
            learner=learner.value,
            propensity=propensity.value,
            call_share=call_share,
            test_from=start,
            tracking_uri=tracking_uri,
            metrics_out=metrics_out,
        )
    except (ValueError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(_uplift_table(outcome.metrics_document))
    typer.echo(f"\nregistered outreach-uplift version {outcome.version} (run {outcome.run_id})")
    if metrics_out:
        typer.echo(f"metrics written to {metrics_out}")


def _uplift_table(doc: dict) -> str:
    rows = doc["policies"]
    has_true = any(r.get("true_per_100") is not None for r in rows)
    lines = [
        f"no-shows prevented per 100 calls, {doc['capacity_per_day']} calls a day "
        f"(test window, {doc['rows']['test']:,} eligible appointments, "
        f"{doc['rows']['test_called']:,} called at random)",
        f"{'policy':24} {'true':>22} {'estimated from outcomes':>26}"
        if has_true
        else f"{'policy':24} {'estimated from outcomes':>26}",
    ]
    for r in rows:
        est = (
            f"{r['estimated_per_100']:6.2f} [{r['estimated_low']:6.2f}, {r['estimated_high']:6.2f}]"
        )
        if has_true:
            true = (
                f"{r['true_per_100']:6.2f} [{r['true_low']:6.2f}, {r['true_high']:6.2f}]"
                if r.get("true_per_100") is not None
                else ""
            )
            lines.append(f"{r['policy']:24} {true:>22} {est:>26}")
        else:
            lines.append(f"{r['policy']:24} {est:>26}")
    return "\n".join(lines)


@train_app.command("ranker")
def train_ranker_cmd(
    data: Annotated[
        Path, typer.Option("--data", help="A dataset folder (generated or in the contract).")
    ],
    test_from: Annotated[
        str | None,
        typer.Option("--test-from", help="First referral date of the test window (YYYY-MM-DD)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the metrics JSON here.")
    ] = None,
    engine: EngineOpt = Engine.local,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Train the specialist ranker (LambdaRank), compare it with the baselines, register a
    version of specialist-ranker."""
    import pandas as pd

    from training.ranker import format_table
    from training.ranker_job import train_and_register

    n_workers = _check_engine(engine, scheduler, workers)
    if not (data / "referrals.parquet").exists():
        raise _fail(f"--data {data}: no referrals.parquet there (is it a dataset folder?)")
    try:
        start = pd.Timestamp(test_from) if test_from else None
    except ValueError:
        raise _fail(f"--test-from: '{test_from}' is not a date (YYYY-MM-DD)") from None
    try:
        if engine is Engine.dask:
            from training.ranker_job import train_and_register_dask

            outcome = train_and_register_dask(
                data,
                test_from=start,
                tracking_uri=tracking_uri,
                metrics_out=metrics_out,
                scheduler=scheduler,
                workers=n_workers,
            )
        else:
            outcome = train_and_register(
                data, test_from=start, tracking_uri=tracking_uri, metrics_out=metrics_out
            )
    except (ValueError, KeyError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    w = outcome.training.windows
    typer.echo(
        f"test window from {w['test_from']}: {w['test_referrals']:,} referrals "
        f"(trained on {w['train_referrals']:,}, early-stopped on {w['valid_referrals']:,})"
    )
    typer.echo(format_table(outcome.training.metrics))
    typer.echo(f"\nregistered specialist-ranker version {outcome.version} (run {outcome.run_id})")
    if metrics_out:
        typer.echo(f"metrics written to {metrics_out}")


@promote_app.command("ranker")
def promote_ranker_cmd(
    version: VersionOpt = None, force: ForceOpt = False, tracking_uri: TrackingOpt = None
) -> None:
    """Set specialist-ranker@champion when the version passes the gates."""
    from training.ranker_job import promote

    _promote(promote, version, force, tracking_uri)


@app.command()
def recommend(
    data: Annotated[Path, typer.Option("--data", help="A dataset folder (the directory).")],
    referral_id: Annotated[
        str | None,
        typer.Option("--referral-id", help="A referral of the dataset (default: the latest)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=50, help="How many specialists.")] = 5,
    allow_out_of_network: Annotated[
        bool, typer.Option("--allow-out-of-network", help="Keep (and flag) out-of-network.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Bundle folder or models:/specialist-ranker@alias (default: @champion).",
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Rank specialists for one referral of a dataset, as of its snapshot, with reasons."""
    import tempfile

    from training.ranker_job import load_ranker, recommend_for_referral

    try:
        with tempfile.TemporaryDirectory() as tmp:
            ranker = load_ranker(model, tracking_uri, Path(tmp))
        about, text = recommend_for_referral(data, referral_id, ranker, k, allow_out_of_network)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(about)
    typer.echo(text)


class RetrainModel(StrEnum):
    no_show = "no-show"
    ranker = "ranker"


@app.command("retrain")
def retrain_cmd(
    model: Annotated[RetrainModel, typer.Argument(help="no-show or ranker.")],
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Start of the recent window (YYYY-MM-DD): the challenger is tested, and "
            "compared with the champion, on the appointments/referrals from this date.",
        ),
    ],
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="REFERRAL_ML_STORE", help="SQLAlchemy URL of the service store."
        ),
    ] = "sqlite:///referral.db",
    tracking_uri: TrackingOpt = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the challenger's metrics JSON here.")
    ] = None,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Register the challenger without the gates.")
    ] = False,
) -> None:
    """Train a challenger on the store (original data + feedback), gate it against the champion
    on the recent window; exit 0 when promoted, 1 when refused. Schedule it (cron)."""
    import pandas as pd

    from training.retrain import retrain

    try:
        start = pd.Timestamp(since)
    except ValueError:
        raise _fail(f"--since: '{since}' is not a date (YYYY-MM-DD)") from None
    try:
        outcome = retrain(
            model.value,
            start,
            store_url=db,
            tracking_uri=tracking_uri,
            metrics_out=metrics_out,
            promote=not no_promote,
        )
    except (ValueError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"store snapshot: {outcome.rows.get('appointments', 0):,} appointments, "
        f"{outcome.rows.get('referrals', 0):,} referrals"
    )
    typer.echo(
        f"registered {model.value} challenger version {outcome.version} (run {outcome.run_id})"
    )
    typer.echo(outcome.message)
    raise typer.Exit(0 if outcome.promoted or no_promote else 1)


feedback_app = typer.Typer(
    no_args_is_help=True, help="New bookings and outcomes into the service store, in bulk."
)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("bookings")
def feedback_bookings_cmd(
    data: Annotated[Path, typer.Option("--data", help="A later-period folder (<out>/later).")],
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="REFERRAL_ML_STORE", help="SQLAlchemy URL of the service store."
        ),
    ] = "sqlite:///referral.db",
) -> None:
    """Append a later period's new referrals, appointments, slots and plans, without outcomes."""
    from training.feedback_job import append_bookings

    try:
        counts = append_bookings(db, data)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc).splitlines()[0]) from None
    except Exception as exc:  # e.g. a duplicate key: the rows were appended before
        raise _fail(
            f"{data}: not appended ({type(exc).__name__}); were they loaded already?"
        ) from None
    typer.echo("appended " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@feedback_app.command("load")
def feedback_load_cmd(
    source: Annotated[
        Path, typer.Argument(help="A feedback file (CSV/Parquet) or a later-period folder.")
    ],
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="REFERRAL_ML_STORE", help="SQLAlchemy URL of the service store."
        ),
    ] = "sqlite:///referral.db",
) -> None:
    """Apply outcomes idempotently (as POST /feedback does); bad lines are reported, the rest
    applied. Exit 1 when any line was rejected or named an unknown id."""
    from training.feedback_job import load_feedback

    if not source.exists():
        raise _fail(f"{source}: no such file or folder")
    try:
        result = load_feedback(db, source)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"recorded {result.recorded:,}, duplicates {result.duplicates:,}, "
        f"unknown {len(result.unknown):,}, rejected {len(result.rejected):,}"
    )
    for line in (result.rejected + result.unknown)[:20]:
        typer.echo(f"  {line}")
    raise typer.Exit(1 if result.rejected or result.unknown else 0)


@app.command("drift")
def drift_cmd(
    model: Annotated[str, typer.Argument(help="no-show (the ranker's reference is saved too).")],
    start: Annotated[str, typer.Option("--start", help="First visit date of the window.")],
    end: Annotated[str, typer.Option("--end", help="Day after the window's last visit date.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for drift.json and drift.png.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="A dataset folder (default: the --db store).")
    ] = None,
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="REFERRAL_ML_STORE", help="SQLAlchemy URL of the service store."
        ),
    ] = "sqlite:///referral.db",
    bundle: Annotated[
        str | None,
        typer.Option(
            "--model", help="A bundle folder or models:/no-show@alias (default: the champion)."
        ),
    ] = None,
    moderate: Annotated[float, typer.Option("--moderate", help="PSI of a moderate shift.")] = 0.1,
    significant: Annotated[
        float, typer.Option("--significant", help="PSI of a significant shift.")
    ] = 0.2,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Population stability of the model's inputs: a window of visits against the training
    reference saved with the model; drift.json and drift.png."""
    import tempfile

    import pandas as pd

    from training.drift_job import no_show_drift, write_drift_report

    if model != "no-show":
        raise _fail("drift: only no-show reports a window of visits so far")
    if not 0 < moderate < significant:
        raise _fail("--moderate must be positive and below --significant")
    try:
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError:
        raise _fail("--start/--end: dates as YYYY-MM-DD") from None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            from training import registry
            from training.no_show import load_world

            if data is None:
                from training.retrain import snapshot_store

                data = Path(tmp) / "snapshot"
                snapshot_store(db, data)
            flat = load_world(data).flat
            bundle_dir = registry.resolve_bundle(bundle, "no-show", tracking_uri, Path(tmp) / "b")
            report = no_show_drift(
                bundle_dir, flat, None, start=lo, end=hi, thresholds=(moderate, significant)
            )
            files = write_drift_report(report, out)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    summary = report["summary"]
    typer.echo(
        f"{report['window']['rows']:,} visits: {summary['status']}; worst {summary['worst_feature']} "
        f"PSI {summary['worst_psi']:.3f}; "
        + ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    )
    for name in summary["drifted"][:8]:
        f = report["features"][name]
        typer.echo(f"  {name:28} PSI {f['psi']:.3f}  {f['status']}")
    typer.echo(f"written {files['report']} and {files['plot']}")


@promote_app.command("uplift")
def promote_uplift_cmd(
    version: VersionOpt = None, force: ForceOpt = False, tracking_uri: TrackingOpt = None
) -> None:
    """Set outreach-uplift @champion when the version passes the gates."""
    from training.uplift_job import promote

    _promote(promote, version, force, tracking_uri)


@promote_app.command("no-show")
def promote_no_show_cmd(
    version: VersionOpt = None, force: ForceOpt = False, tracking_uri: TrackingOpt = None
) -> None:
    """Set @champion when the version passes the gates; say which gate failed and by how much."""
    from training.no_show_job import promote

    _promote(promote, version, force, tracking_uri)


@score_app.command("no-show")
def score_no_show_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output file (.csv or .parquet).")],
    data: DataOpt = None,
    appointments: AppointmentsOpt = None,
    mapping: MappingOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Bundle folder or models:/no-show@alias (default: @champion)."
        ),
    ] = None,
    upcoming_only: Annotated[
        bool, typer.Option("--upcoming-only", help="Only appointments without an outcome.")
    ] = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write appointment_id, risk, tier and top factors for each appointment."""
    import tempfile

    from training.no_show_job import load_no_show_data, load_predictor, score

    try:
        dataset = load_no_show_data(data, appointments, mapping, None, say=typer.echo)
        with tempfile.TemporaryDirectory() as tmp:
            predictor = load_predictor(model, tracking_uri, Path(tmp))
        scored = score(predictor, dataset.flat, upcoming_only)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        scored.to_parquet(out, index=False)
    else:
        scored.to_csv(out, index=False)
    counts = scored["tier"].value_counts().to_dict()
    typer.echo(f"scored {len(scored):,} appointments -> {out}  (tiers: {counts})")


@app.command()
def export(
    tracking_uri: TrackingOpt = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated registered names to export (default: all; outreach-uplift "
            "only when it has a champion).",
        ),
    ] = None,
) -> None:
    """Copy the @champion models from the MLflow registry into the BentoML model store."""
    from training.export import EXPORTS, export_champions

    names = tuple(EXPORTS)
    if only:
        names = tuple(n.strip() for n in only.split(",") if n.strip())
        unknown = [n for n in names if n not in EXPORTS]
        if unknown or not names:
            raise _fail(f"--only: unknown model {', '.join(unknown)}; one of {', '.join(EXPORTS)}")
    try:
        exported = export_champions(tracking_uri, names)
    except (ValueError, LookupError) as exc:
        raise _fail(str(exc)) from None
    for e in exported:
        note = "  (already there)" if e.reused else ""
        typer.echo(f"{e.registered_name} v{e.version} -> BentoML {e.tag}  ({e.path}){note}")


store_app = typer.Typer(no_args_is_help=True, help="The service's database (SQLite or PostgreSQL).")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service (stored hashed).")
app.add_typer(store_app, name="store")
app.add_typer(keys_app, name="keys")
DbOpt = Annotated[
    str,
    typer.Option("--db", envvar="REFERRAL_ML_STORE", help="SQLAlchemy URL of the service store."),
]


def _open_store(db: str) -> serving.store.Store:
    """The store at `db`, its tables created; a bad URL or an unreachable server is a one-line
    error (exit 2), not a traceback."""
    from serving.store import Store, StoreError

    try:
        store = Store(db)
        store.create()
    except StoreError as exc:
        raise _fail(str(exc)) from None
    return store


@store_app.command("load")
def store_load(
    data: Annotated[Path, typer.Option("--data", help="A dataset folder (generated or yours).")],
    db: DbOpt = "sqlite:///referral.db",
) -> None:
    """Load a dataset folder into the service store (replacing the data tables; keys, contacts
    and the audit trail are kept)."""
    store = _open_store(db)
    t0 = time.perf_counter()
    try:
        counts = store.load_dataset(data, replace=True)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f"  ({time.perf_counter() - t0:.1f} s)"
    )


class DirectorySource(StrEnum):
    fhir = "fhir"
    cms = "cms"


@app.command("import-directory")
def import_directory(
    source: Annotated[
        DirectorySource,
        typer.Argument(help="fhir: FHIR R4 Plan-Net resources; cms: the CMS clinicians file."),
    ],
    path: Annotated[
        Path,
        typer.Argument(help="A Bundle/resource .json, an .ndjson, a folder of them, or the CSV."),
    ],
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="REFERRAL_ML_STORE", help="Load into this store (SQLAlchemy URL)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write a dataset folder (Parquet + report).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the import report JSON here.")
    ] = None,
) -> None:
    """Import specialists into the directory: counts imported and skipped (and why), every
    problem with its line or resource. Loading into a store replaces its data tables (keys,
    contacts and the audit trail are kept); fields the source lacks get neutral values."""
    import json

    from features.validation import validate_tables

    if db is None and out is None:
        raise _fail("give --db URL and/or --out DIR: where should the directory go?")
    if not path.exists():
        raise _fail(f"{path}: no such file or folder")
    t0 = time.perf_counter()
    try:
        if source is DirectorySource.cms:
            from features.cms import import_cms

            result = import_cms(path)
        else:
            from features.fhir_directory import import_fhir

            result = import_fhir(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{path}: {exc}") from None
    seconds = time.perf_counter() - t0
    summary = result.report()
    skipped = ", ".join(f"{k} {v:,}" for k, v in summary["skipped"].items()) or "none"
    typer.echo(
        f"read {result.read:,} {'rows' if source is DirectorySource.cms else 'resources'}; "
        f"imported {result.imported:,} specialists ({seconds:.1f} s); skipped: {skipped}"
    )
    typer.echo("tables: " + ", ".join(f"{k} {v:,}" for k, v in result.counts.items()))
    if result.missing:
        typer.echo("not in the source (neutral values used): " + ", ".join(result.missing))
    for problem in result.problems[:10]:
        typer.echo(f"  {problem}")
    if len(result.problems) > 10:
        typer.echo(f"  ... {len(result.problems) - 10:,} more in the report")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=2, default=str))
    if result.imported == 0:
        raise _fail(f"{path}: no specialist could be imported")
    checked = validate_tables(result.dataset())
    if not checked.ok:
        typer.echo("\n".join(checked.lines()[:20]), err=True)
        raise _fail("the imported directory breaks the data contract (a bug: please report it)")
    if out is not None:
        result.write_dataset(out)
        typer.echo(f"dataset written to {out}")
    if db is not None:
        store = _open_store(db)
        counts = store.load_frames(result.dataset(), replace=True)
        typer.echo(
            f"loaded into the store: specialists {counts['specialists']:,}, "
            f"organizations {counts['organizations']:,}, plans {counts['plans']:,}"
        )


@app.command("export-fhir")
def export_fhir_cmd(
    directory: Annotated[Path, typer.Argument(help="A dataset folder (generated or yours).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write ndjson/ and bundles/.")],
    bundle_size: Annotated[
        int, typer.Option("--bundle-size", min=1, help="Entries per Bundle file.")
    ] = 5000,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip validating each resource (faster).")
    ] = False,
) -> None:
    """Write a dataset as FHIR R4 resources: bulk ndjson per type and collection Bundles."""
    from features.fhir_export import export_fhir
    from features.validation import load_dataset

    if not directory.is_dir():
        raise _fail(f"{directory}: not a dataset folder")
    try:
        tables = load_dataset(directory)
        summary = export_fhir(
            tables, out, validate=not no_validate, bundle_size=bundle_size, source=directory
        )
    except (ValueError, KeyError, OSError) as exc:
        raise _fail(f"{directory}: {exc}") from None
    typer.echo(
        ", ".join(f"{k} {v:,}" for k, v in summary.counts.items() if v)
        + f"\n{summary.total:,} resources ({summary.validated:,} validated with the R4B models), "
        f"{summary.bytes_written / 1e6:.0f} MB in {summary.seconds:.1f} s: "
        f"{out / 'ndjson'} (bulk ndjson), {out / 'bundles'} (Bundles), {summary.manifest}"
    )


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="referral_ui, outreach or admin.")],
    db: DbOpt = "sqlite:///referral.db",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from serving.keys import create_key

    store = _open_store(db)
    try:
        key_id, secret = create_key(store, role)
    except ValueError as exc:
        raise _fail(f"--role: {exc}") from None
    typer.echo(f"key {key_id} ({role}); keep this secret, it is not shown again:\n{secret}")


@keys_app.command("list")
def keys_list(db: DbOpt = "sqlite:///referral.db") -> None:
    """Key ids, roles and dates (never secrets), oldest first."""
    from serving.keys import list_keys

    for k in list_keys(_open_store(db)):
        revoked = k["revoked_at"]
        state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked is not None else "active"
        typer.echo(
            f"{k['key_id']}  {k['role']:<11}  created {k['created_at']:%Y-%m-%d %H:%M}  {state}"
        )


@keys_app.command("demo")
def keys_demo(
    env_file: Annotated[
        Path, typer.Option("--env-file", help="Where the demo's secrets are kept (mode 600).")
    ] = Path("demo-keys.env"),
    db: DbOpt = "sqlite:///referral.db",
) -> None:
    """One key per role for a local demo, kept in an env file (REFERRAL_UI_KEY, OUTREACH_KEY,
    ADMIN_KEY): secrets in the file that still verify are kept; the others are created anew."""
    from serving.keys import Role, create_key, verify

    store = _open_store(db)
    known: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            known[name.strip()] = value.strip()
    lines = []
    for role in Role:
        name = f"{role.value.upper()}_KEY"
        secret = known.get(name, "")
        verified = verify(store, secret)
        if verified is None or verified[1] != role:
            secret = create_key(store, role)[1]
            typer.echo(f"created a new key for the {role.value} role")
        lines.append(f"{name}={secret}")
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)
    typer.echo(
        f"demo keys in {env_file}: `source {env_file}` gives {', '.join(n.split('=')[0] for n in lines)}"
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id printed at creation.")],
    db: DbOpt = "sqlite:///referral.db",
) -> None:
    """Revoke a key at once (it stays in the audit trail)."""
    from serving.keys import revoke

    if not revoke(_open_store(db), key_id):
        raise _fail(f"no active key {key_id}")
    typer.echo(f"revoked {key_id}")


def main() -> None:
    """Entry point for the console script."""
    app(prog_name="referral-ml")


if __name__ == "__main__":
    main()
