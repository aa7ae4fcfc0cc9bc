"""The Dask engine of `referral-ml train no-show|ranker --engine dask`.

Features are built on dask.dataframe partitions by the same functions as on one machine
(`features.no_show.build_features`, `training.ranker.candidate_rows`) and LightGBM trains with
its Dask estimators. What is small comes back to this process and goes through the
single-machine code: calibration, baselines, evaluation, reports and the registered bundle
(a plain `lgb.Booster`), which is why `promote`, `export` and serving need no change.

No-show history features need every earlier outcome of a patient, and the specialist and clinic
rates every earlier outcome there. So the flat rows are shuffled twice: by organization (a
specialist's rows sit with its clinic's) for the two rates, then by patient for the rest. The
feature spec (category levels, base rate) is fitted once, before either pass. The ranker's
referrals are dealt round-robin into partitions (each partition spans the whole time range), so
a referral's candidate pairs sit in one partition, sorted, and LightGBM's query groups are per
partition.

LightGBM's Dask interface cannot stop early (lightgbm#3712): validation metrics are computed
per worker, on whatever validation rows a worker holds, so workers would stop at different
rounds and wait for each other. Here every worker is handed the whole validation window (it is
small), computes the same metric on the same rows and stops on the same round, as
`lgb.early_stopping` does on one machine. That needs equal thread counts on every worker, which
is checked.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import lightgbm as lgb
import numpy as np
import pandas as pd
from dask.utils import parse_timedelta
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin
from distributed.comm.core import CommClosedError

from features.contract import TABLES
from features.drift import REFERENCE_SAMPLE
from features.no_show import NoShowFeatureSpec, build_features, flatten_world, history_events
from training.no_show import (
    EARLY_STOPPING_ROUNDS,
    LABELLED,
    MAX_ROUNDS,
    NoShowTraining,
    baseline_sample,
    evaluate_no_show,
    labelled_rows,
    lgb_params,
    split_bounds,
    true_probability,
    window_texts,
)
from training.ranker import (
    CANDIDATES,
    COMPLETION_PARAMS,
    COMPLETION_ROUNDS,
    LGB_RANK_PARAMS,
    MODEL_FEATURES,
    RANKER_ROUNDS,
    RankerTraining,
    _groups,
    candidate_rows,
    counterfactual_targets,
    evaluate_ranker,
    match_truth,
    rank_params,
    ranking_inputs,
    training_reference,
    window_counts,
    window_cuts,
)

PARTITION_ROWS = 250_000  # rows per partition to aim for (at least one partition per worker)
ROW = "_row"  # position of an appointment in appointments.parquet: restores the file's order
WINDOW = "_window"  # no-show: 0 train, 1 valid, 2 calibration, 3 test; ranker: 0, 1, 2 (test)
LABEL = "_label"
TARGET = "_target"
X_PREFIX = "x:"
ENTITY_RATES = ("specialist_no_show_rate", "clinic_no_show_rate")
# The tables `flatten_world` joins to each appointment (read here, sent once to the workers).
FLAT_DIMENSIONS = ("patients", "plans", "specialists", "referrals")


class DaskEngineError(ValueError):
    """A cluster problem, said in one line (the CLI prints it and exits 2)."""


# -- the cluster ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """A connected Dask client and what the run records about it."""

    client: Client
    scheduler: str
    local: bool

    @property
    def workers(self) -> int:
        """Workers connected now."""
        return len(self.client.nthreads())

    def params(self) -> dict[str, Any]:
        """MLflow params (and the metrics document's `engine`) of a run on this cluster."""
        threads = sorted(set(self.client.nthreads().values()))
        return {
            "engine": "dask",
            "dask_scheduler": "local cluster" if self.local else self.scheduler,
            "dask_workers": self.workers,
            "dask_threads_per_worker": threads[0] if len(threads) == 1 else str(threads),
        }

    def share(self, obj: Any) -> Any:
        """`obj` held once on the cluster (a Future) for tasks that take it as an argument."""
        return self.client.scatter([obj], hash=False)[0]


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, workers: int = 2, connect_timeout: float | None = None
) -> Iterator[Cluster]:
    """A client of the scheduler at `scheduler` (tcp://host:8786), or of a local cluster of
    `workers` processes with one thread each; closed (the local cluster stopped) on exit.
    `connect_timeout` defaults to Dask's distributed.comm.timeouts.connect (30 s; the
    DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT variable sets it)."""
    with _redacted_logs():
        cluster: LocalCluster | None = None
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # No dashboard; the scheduler's health/metrics server on a free local port
                # (by default it takes 8787, on every interface, or warns that it is taken)
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.CRITICAL,  # failures reach the client as exceptions
            )
            client = Client(cluster)
        else:
            configured = dask.config.get("distributed.comm.timeouts.connect")
            timeout = connect_timeout or parse_timedelta(configured, default="seconds")
            client = _connect(scheduler, timeout)
        try:
            client.register_plugin(_QuietWorkers(silence_stdout=cluster is not None))
            yield Cluster(client, client.scheduler.address, local=cluster is not None)
        except (KilledWorker, CommClosedError) as exc:
            where = "the local Dask cluster" if cluster else f"the Dask cluster at {scheduler}"
            raise DaskEngineError(
                f"{where} failed during training ({type(exc).__name__}: a "
                "worker died or the connection dropped)"
            ) from None
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _connect(scheduler: str, timeout: float) -> Client:
    """A client of a running scheduler that has at least one worker, or a DaskEngineError."""
    reason = None
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if reason is not None:
        # The half-made client closes itself when collected: now, while its loop still runs,
        # rather than at exit with a traceback.
        gc.collect()
        raise DaskEngineError(
            f"--scheduler {scheduler}: no Dask scheduler answered there ({reason})"
        )
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise DaskEngineError(
            f"--scheduler {scheduler}: the scheduler has no workers (waited {timeout:.0f} s)"
        ) from None
    return client


class _RedactingFilter(logging.Filter):
    """Dask's log records cut to the first line of their message template, without arguments
    or traceback: a failed task's record quotes its arguments (patient rows) and exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("distributed", "dask")):
            return True
        template = str(record.msg).split("\n", 1)[0]
        record.msg = re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]", "…", template)[:200]
        record.args = None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _redact_process_logs() -> list[logging.Handler]:
    """Put the redacting filter on the handlers of Dask's loggers in this process."""
    touched = []
    for name in ("distributed", ""):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
                handler.addFilter(_RedactingFilter())
                touched.append(handler)
    return touched


def _ignore_known_warnings() -> None:
    """Warnings raised inside dask and lightgbm that a user can do nothing about."""
    warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame.reset_index")
    warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")


@contextlib.contextmanager
def _redacted_logs() -> Iterator[None]:
    """Redacted Dask logs and known warnings ignored in this process (the scheduler of a local
    cluster runs here), until the block ends."""
    touched = _redact_process_logs()
    try:
        with warnings.catch_warnings():
            _ignore_known_warnings()
            yield
    finally:
        for handler in touched:
            for f in [f for f in handler.filters if isinstance(f, _RedactingFilter)]:
                handler.removeFilter(f)


class _QuietWorkers(WorkerPlugin):
    """On every worker: redacted Dask logs, LightGBM's Python-side info lines dropped. The
    workers of a local cluster also stop printing (LightGBM's C++ network set-up lines, which
    bypass its logger, would fill the terminal)."""

    name = "referral-ml-quiet-workers"
    idempotent = True

    def __init__(self, silence_stdout: bool = False) -> None:
        self.silence_stdout = silence_stdout

    def setup(self, worker: Any) -> None:
        _redact_process_logs()
        _ignore_known_warnings()
        quiet = logging.getLogger("referral_ml.lightgbm")
        quiet.setLevel(logging.WARNING)
        lgb.register_logger(quiet)
        if self.silence_stdout:
            sys.stdout.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)


# -- reading --------------------------------------------------------------------------------


def read_partitions(path: Path) -> dd.DataFrame:
    """A Parquet file (one partition per row group) or a folder of part files, with the dtypes
    pandas.read_parquet gives (no conversion to Arrow strings)."""
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.read_parquet(str(path), split_row_groups=True)


def _numbered(part: pd.DataFrame, offsets: np.ndarray, partition_info: Any = None) -> pd.DataFrame:
    first = int(offsets[partition_info["number"]]) if partition_info else 0
    return part.assign(**{ROW: np.arange(first, first + len(part), dtype=np.int64)})


def _partitions(rows: int, cluster: Cluster | None) -> int:
    workers = cluster.workers if cluster else 1
    return max(workers, math.ceil(rows / PARTITION_ROWS))


def _shared(cluster: Cluster | None, obj: Any) -> Any:
    return cluster.share(obj) if cluster else obj


# -- no-show features -----------------------------------------------------------------------


@dataclass
class NoShowFrames:
    """The no-show data as dask frames, and the little that was gathered to build them."""

    flat: dd.DataFrame  # every appointment as a flat row, in the file's order, with ROW
    labelled: pd.DataFrame  # appointment_at, outcome, ROW of attended/no-show rows, visit order
    spec: NoShowFeatureSpec
    bounds: tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]  # valid, calib, test begin
    features: dd.DataFrame  # labelled flat rows + ROW, LABEL, WINDOW and X_PREFIX model inputs


def no_show_frames(
    directory: Path,
    *,
    test_from: pd.Timestamp | None,
    offset_days: float | None,
    cluster: Cluster | None = None,
    npartitions: int | None = None,
) -> NoShowFrames:
    """Flat rows and model inputs of a dataset folder, built partition by partition. Without a
    cluster the default dask scheduler runs it (tests use the synchronous one)."""
    with dask.config.set({"dataframe.convert-string": False}):
        ap = read_partitions(directory / "appointments.parquet")
        lengths = ap.map_partitions(len).compute().to_numpy()
        offsets = np.r_[0, np.cumsum(lengths)[:-1]]
        ap = ap.map_partitions(_numbered, offsets, meta=_numbered(ap._meta, offsets))
        dims = {n: pd.read_parquet(directory / f"{n}.parquet") for n in FLAT_DIMENSIONS}
        flat = ap.map_partitions(_flatten, _shared(cluster, dims), meta=_flatten(ap._meta, dims))
        flat = flat.persist()  # read and flattened once, used by every step below

        keys = flat[flat["outcome"].isin(LABELLED)][["appointment_at", "outcome", ROW]]
        labelled = labelled_rows(keys.compute().sort_values(ROW).reset_index(drop=True))
        bounds = split_bounds(labelled["appointment_at"], test_from)
        specs = dask.compute(*[_partial_spec(p, offset_days) for p in flat.to_delayed()])
        spec = merge_specs([s for s in specs if s is not None], labelled["outcome"], offset_days)

        n = npartitions or _partitions(int(lengths.sum()), cluster)
        shared_spec = _shared(cluster, spec)
        by_clinic = "organization_id" if "organization_id" in flat.columns else "specialist_id"
        rated = flat.shuffle(on=by_clinic, npartitions=n).map_partitions(
            _entity_rates, shared_spec, meta=_entity_rates(flat._meta, spec)
        )
        features = rated.shuffle(on="patient_id", npartitions=n).map_partitions(
            _features, shared_spec, bounds, meta=_features(rated._meta, spec, bounds)
        )
    return NoShowFrames(flat, labelled, spec, bounds, features)


def _flatten(ap: pd.DataFrame, dims: dict[str, pd.DataFrame]) -> pd.DataFrame:
    flat = flatten_world({**dims, "appointments": ap.reset_index(drop=True)})
    flat[ROW] = ap[ROW].to_numpy()
    return flat


@dask.delayed
def _partial_spec(flat: pd.DataFrame, offset_days: float | None) -> NoShowFeatureSpec | None:
    """The feature spec of one partition's labelled rows (history is not needed for it)."""
    labelled = flat[flat["outcome"].isin(LABELLED)]
    if labelled.empty:
        return None
    return build_features(labelled, None, offset_days=offset_days)[1]


def merge_specs(
    specs: list[NoShowFeatureSpec], outcomes: pd.Series, offset_days: float | None
) -> NoShowFeatureSpec:
    """The spec `build_features` derives from all labelled rows, from the partitions' specs:
    numeric inputs present in any partition (in the builder's order), every category level,
    the no-show rate of all `outcomes` as the smoothing prior."""
    numeric: list[str] = []
    pending = [list(s.numeric) for s in specs]
    while any(pending):
        # Each list keeps the builder's column order: take a head that no list has later on.
        heads = [p[0] for p in pending if p]
        head = next(h for h in heads if not any(h in p[1:] for p in pending))
        numeric.append(head)
        pending = [p[1:] if p and p[0] == head else p for p in pending]
    categorical = {
        column: sorted({level for s in specs for level in s.categorical.get(column, [])})
        for column in specs[0].categorical
    }
    return NoShowFeatureSpec(
        numeric=numeric,
        categorical=categorical,
        offset_days=offset_days,
        base_rate=float((outcomes == "no_show").mean()),
    )


def _entity_rates(flat: pd.DataFrame, spec: NoShowFeatureSpec) -> pd.DataFrame:
    """Flat rows with the specialist and clinic rates of the labelled ones (`_<name>` columns):
    the partition holds every outcome at their clinics."""
    flat = flat.reset_index(drop=True)
    labelled = flat["outcome"].isin(LABELLED).to_numpy(dtype=bool)
    X, _ = build_features(flat[labelled], history_events(flat), spec)
    out = flat.copy()
    for column in ENTITY_RATES:
        out[f"_{column}"] = np.nan
        if column in X:
            out.loc[labelled, f"_{column}"] = X[column].to_numpy()
    return out.sort_values(ROW, kind="stable").reset_index(drop=True)


def _features(
    flat: pd.DataFrame,
    spec: NoShowFeatureSpec,
    bounds: tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp],
) -> pd.DataFrame:
    """Labelled rows with label, time window and model inputs: the partition holds every
    outcome of its patients; the entity rates come from the clinic pass."""
    flat = flat.reset_index(drop=True)
    carried = [f"_{c}" for c in ENTITY_RATES]
    labelled = flat[flat["outcome"].isin(LABELLED)].reset_index(drop=True)
    X, _ = build_features(labelled, history_events(flat), spec)
    for column in ENTITY_RATES:
        if column in X:
            X[column] = labelled[f"_{column}"].to_numpy()
    out = labelled.drop(columns=carried)
    t = out["appointment_at"]
    out[LABEL] = (out["outcome"] == "no_show").to_numpy(dtype=np.int64)
    out[WINDOW] = _window_of(t, bounds)
    out = pd.concat([out, X.add_prefix(X_PREFIX)], axis=1)
    return out.sort_values(ROW, kind="stable").reset_index(drop=True)


def model_inputs(frame: pd.DataFrame | dd.DataFrame, spec: NoShowFeatureSpec) -> Any:
    """The model matrix (spec.columns) of `features` rows."""
    return frame[[X_PREFIX + c for c in spec.columns]].rename(
        columns={X_PREFIX + c: c for c in spec.columns}
    )


# -- no-show training -----------------------------------------------------------------------


@dataclass
class NoShowRun:
    """A no-show model trained on a cluster, and what its run logs beside it."""

    training: NoShowTraining
    labelled: pd.DataFrame  # appointment_at, outcome of every attended/no-show row (the card)
    events: pd.DataFrame  # history_events of all appointments (the gates rebuild features)
    source: str
    synthetic: bool
    engine: dict[str, Any]


def train_no_show_dask(
    cluster: Cluster,
    directory: Path,
    *,
    test_from: pd.Timestamp | None = None,
    offset_days: float | None = None,
    seed: int = 7,
) -> NoShowRun:
    """`train_no_show` on a cluster: features on partitions, LightGBM on the training window
    there; validation, calibration and test windows (and the baseline's sample of the
    training window) are gathered and evaluated as on one machine."""
    frames = no_show_frames(
        directory, test_from=test_from, offset_days=offset_days, cluster=cluster
    )
    spec, labelled = frames.spec, frames.labelled
    all_windows = _masks(_window_of(labelled["appointment_at"], frames.bounds))
    train_rows = labelled.loc[all_windows[0], ROW].to_numpy()

    features = cluster.client.persist(frames.features)
    sample = baseline_sample(train_rows, seed)
    baseline = None if len(sample) == len(train_rows) else sample
    # All the rows but those of the training window the baselines are not fitted on
    wanted = features
    if baseline is not None:
        wanted = features[(features[WINDOW] > 0) | features[ROW].isin(baseline)]
    gathered = wanted.compute()
    gathered = gathered.sort_values(["appointment_at", ROW], kind="stable").reset_index(drop=True)
    X = model_inputs(gathered, spec)
    y = gathered[LABEL].to_numpy()
    masks = _masks(gathered[WINDOW].to_numpy())
    rows_in_order = gathered[[c for c in frames.flat.columns if c != ROW]]

    train = features[features[WINDOW] == 0]
    booster = fit_booster(
        cluster,
        lgb.DaskLGBMClassifier,
        lgb_params(spec, seed),
        model_inputs(train, spec),
        train[LABEL],
        (X[masks[1]], y[masks[1]], None),
        (MAX_ROUNDS, EARLY_STOPPING_ROUNDS),
        categorical_feature=list(spec.categorical) or "auto",
    )
    truth_path = directory / "truth" / "appointments.parquet"
    truth = None
    if truth_path.exists():
        truth = true_probability(rows_in_order, pd.read_parquet(truth_path))
    source = f"synthetic world {directory}"
    training = evaluate_no_show(
        rows_in_order,
        X,
        y,
        masks,
        booster,
        spec,
        truth=truth,
        source=source,
        seed=seed,
        windows=window_texts(labelled["appointment_at"], all_windows),
        trained_rows=len(train_rows),
    )
    events = frames.flat.map_partitions(history_events).compute().reset_index(drop=True)
    engine = cluster.params() | {"dask_partitions": features.npartitions}
    return NoShowRun(training, labelled, events, source, truth is not None, engine)


def _window_of(t: pd.Series, bounds: tuple[pd.Timestamp, ...]) -> np.ndarray:
    """0 train, 1 valid, 2 calibration, 3 test: how many window starts `t` is at or after."""
    return sum(((t >= b).to_numpy(dtype=np.int64) for b in bounds), np.zeros(len(t), np.int64))


def _masks(window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return window == 0, window == 1, window == 2, window == 3


# -- LightGBM on the cluster ----------------------------------------------------------------


class _WholeValidation:
    """A before-iteration callback that gives the booster on a worker the whole validation
    window: every worker then computes the same metric and stops on the same round."""

    order = 0
    before_iteration = True

    def __init__(self, X: pd.DataFrame, y: np.ndarray, group: np.ndarray | None) -> None:
        self.X, self.y, self.group = X, y, group

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if env.iteration != env.begin_iteration:
            return
        train = env.model.train_set
        assert isinstance(train, lgb.Dataset)
        valid = lgb.Dataset(self.X, self.y, group=self.group, params=train.get_params())
        env.model.add_valid(valid.set_reference(train), "valid")


def fit_booster(
    cluster: Cluster,
    estimator: type[lgb.DaskLGBMClassifier] | type[lgb.DaskLGBMRanker],
    params: dict[str, Any],
    X: dd.DataFrame,
    y: dd.Series,
    valid: tuple[pd.DataFrame, np.ndarray, np.ndarray | None],
    rounds: tuple[int, int],
    **fit_kwargs: Any,
) -> lgb.Booster:
    """A LightGBM Dask estimator fitted with early stopping on `valid` (X, y, query groups);
    `rounds` is (most rounds, patience). Returns the plain booster."""
    threads = set(cluster.client.nthreads().values())
    if len(threads) > 1:
        raise DaskEngineError(
            f"the Dask workers have different thread counts ({sorted(threads)}); early stopping "
            "needs every worker to compute the validation metric the same way"
        )
    params = {k: v for k, v in params.items() if k != "num_threads"}  # set per worker by Dask
    model = estimator(client=cluster.client, n_estimators=rounds[0], **params)
    everywhere = cluster.share(_WholeValidation(*valid))
    stop = lgb.early_stopping(rounds[1], verbose=False)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        _ignore_known_warnings()
        model.fit(X, y, callbacks=[everywhere, stop], **fit_kwargs)
    return model.booster_


# -- ranker ---------------------------------------------------------------------------------


@dataclass
class RankerRun:
    """A ranker trained on a cluster, and what its model card says about the data."""

    training: RankerTraining
    referrals: int
    pairs: int
    date_range: str
    synthetic: bool
    engine: dict[str, Any]


def ranker_pairs(
    directory: Path,
    *,
    cluster: Cluster | None = None,
    npartitions: int | None = None,
    candidates: int = CANDIDATES,
) -> dd.DataFrame:
    """`load_ranker_data`'s pairs as a dask frame: referrals dealt round-robin into partitions,
    each partition's pairs sorted by referral time (a referral's pairs together)."""
    t = {name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES}
    ctx, refs = ranking_inputs(t)
    n = max(1, min(len(refs), npartitions or _partitions(len(refs) * candidates, cluster)))
    chunks = [refs.iloc[i::n] for i in range(n)]
    meta = _pairs_of(refs.head(50), ctx, candidates).iloc[:0]
    with dask.config.set({"dataframe.convert-string": False}):
        parts = [cluster.share(c) if cluster else dask.delayed(c) for c in chunks]
        frame = dd.from_delayed(parts, meta=refs.iloc[:0], verify_meta=False)
        return frame.map_partitions(_pairs_of, _shared(cluster, ctx), candidates, meta=meta)


def _pairs_of(refs: pd.DataFrame, ctx: Any, candidates: int) -> pd.DataFrame:
    out = candidate_rows(ctx, refs.reset_index(drop=True), candidates)
    return out.sort_values(["created_at", "referral_id"], kind="stable").reset_index(drop=True)


def _first_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs.drop_duplicates("referral_id")


def _in_windows(pairs: pd.DataFrame, cut_valid: pd.Timestamp, cut_test: pd.Timestamp) -> Any:
    t = pairs["created_at"]
    return pairs.assign(**{WINDOW: (t >= cut_valid).astype(np.int64) + (t >= cut_test)})


def _with_targets(pairs: pd.DataFrame, completion: lgb.Booster) -> pd.DataFrame:
    """Training labels (counterfactual completion) of train and validation pairs."""
    fit = pairs[WINDOW].to_numpy() < 2
    p_complete = np.zeros(len(pairs))
    if fit.any():
        X = pairs.loc[fit, list(MODEL_FEATURES)]
        p_complete[fit] = completion.predict(X, num_iteration=completion.best_iteration)
    return pairs.assign(**{TARGET: counterfactual_targets(pairs, p_complete)})


def _group_sizes(pairs: pd.DataFrame) -> pd.Series:
    return pd.Series(_groups(pairs["referral_id"].to_numpy()), dtype=np.int64)


def _at_most(frame: dd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """About `rows` rows of a cluster frame drawn at random (all of them when it is smaller),
    gathered: the training pairs a drift reference summarises."""
    total = int(frame.map_partitions(len).sum().compute())
    if total > rows:
        frame = frame.sample(frac=rows / total, random_state=seed)
    return frame.compute()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["created_at", "referral_id"], kind="stable").reset_index(drop=True)


def train_ranker_dask(
    cluster: Cluster, directory: Path, *, test_from: pd.Timestamp | None = None, seed: int = 7
) -> RankerRun:
    """`train_ranker` on a cluster: candidate pairs and features on partitions, the completion
    model and LambdaRank trained there; the test window is gathered and evaluated as on one
    machine."""
    client = cluster.client
    pairs = client.persist(ranker_pairs(directory, cluster=cluster))
    first = pairs[["referral_id", "created_at"]].map_partitions(_first_pairs).compute()
    first = first["created_at"]
    completed = pairs[pairs["chosen"] & (pairs["label"] == 3)]["created_at"].compute()
    cut_valid, cut_test = window_cuts(first, test_from)
    windows = window_counts(first, completed, cut_valid, cut_test)
    meta = _in_windows(pairs._meta, cut_valid, cut_test)
    pairs = client.persist(pairs.map_partitions(_in_windows, cut_valid, cut_test, meta=meta))

    features = list(MODEL_FEATURES)
    chosen = pairs[pairs["chosen"] & (pairs[WINDOW] < 2)]
    chosen = chosen[[*features, "label", WINDOW]]
    valid_chosen = chosen[chosen[WINDOW] == 1].compute()
    train_chosen = chosen[chosen[WINDOW] == 0]
    completion = fit_booster(
        cluster,
        lgb.DaskLGBMClassifier,
        dict(COMPLETION_PARAMS, seed=seed),
        train_chosen[features],
        (train_chosen["label"] == 3).astype(np.int64),
        (valid_chosen[features], (valid_chosen["label"] == 3).to_numpy(dtype=np.int64), None),
        COMPLETION_ROUNDS,
    )
    meta = pairs._meta.assign(**{TARGET: np.int64(0)})
    targeted = pairs.map_partitions(_with_targets, cluster.share(completion), meta=meta)
    targeted = client.persist(targeted[targeted[WINDOW] < 2])
    valid = _sorted(targeted[targeted[WINDOW] == 1].compute())
    train = targeted[targeted[WINDOW] == 0]
    params = {k: v for k, v in rank_params(seed).items() if k != "eval_at"}
    ranker = fit_booster(
        cluster,
        lgb.DaskLGBMRanker,
        params,
        train[features],
        train[TARGET],
        (valid[features], valid[TARGET].to_numpy(), _groups(valid["referral_id"].to_numpy())),
        RANKER_ROUNDS,
        group=train.map_partitions(_group_sizes, meta=pd.Series(dtype=np.int64)),
        eval_at=LGB_RANK_PARAMS["eval_at"],
    )
    test = _sorted(pairs[pairs[WINDOW] == 2].drop(columns=[WINDOW]).compute())
    truth = match_truth(directory)
    reference = training_reference(_at_most(train[features], REFERENCE_SAMPLE, seed), seed)
    training = evaluate_ranker(test, ranker, completion, truth, windows, reference)
    return RankerRun(
        training=training,
        referrals=len(first),
        pairs=int(pairs.map_partitions(len).sum().compute()),
        date_range=f"{first.min():%Y-%m-%d} .. {first.max():%Y-%m-%d}",
        synthetic=truth is not None,
        engine=cluster.params() | {"dask_partitions": pairs.npartitions},
    )
