"""MLflow tracking and model registry for model bundles (MLflow 3: aliases, never stages).

A trained model is a bundle directory (`features.predictor` for no-show, `features.matcher` for
the specialist ranker). Each registered version is logged twice inside its training run:

    <run>/bundle/...        the plain bundle files: `download_bundle` fetches these, so batch
                            scoring and the service load a version without importing pyfunc
    logged model "model"    a pyfunc wrapper (`BundleModel`, `RankerBundleModel`) around the
                            same bundle, registered
                            under the model name, so `mlflow.pyfunc.load_model("models:/...")`
                            works. BundleModel is pickled by reference to this package, which
                            the model's inferred requirements do not list: load it where
                            referral-ml is installed (e.g. `mlflow models serve --env-manager
                            local` from this project's environment)

Promotion moves the alias `champion` and records when, whether it was forced, and the gate
results as tags on the version.

`champion`, `version` and `latest_version` return MLflow's ModelVersion; compare its `version`
as `str(mv.version)` (the SQL store gives an int, the REST client a str).

By default the store is local: `sqlite:///<cwd>/mlflow.db` with artifacts under `<cwd>/mlruns`
(both resolved when called, not at import). A server URI (`http://...`) works the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    NOT_FOUND,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.pyfunc import PythonModel, PythonModelContext

from features.matcher import SpecialistRanker
from features.no_show import as_text
from features.predictor import NoShowPredictor

CHAMPION: Final = "champion"
BUNDLE_ARTIFACT: Final = "bundle"  # run artifact folder holding the plain bundle files
MODEL_ARTIFACT: Final = "model"  # name of the logged pyfunc model
# The files of a freshly trained bundle (reference.json: the drift reference of its training
# inputs, `features.drift`; bundles trained before it lack that one and still load).
BUNDLE_FILES: Final = (
    "model.txt",
    "calibration.json",
    "feature_spec.json",
    "metadata.json",
    "reference.json",
)
RANKER_BUNDLE_FILES: Final = ("model.txt", "feature_spec.json", "metadata.json", "reference.json")

_NOT_FOUND_CODES: Final = {
    ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
    ErrorCode.Name(NOT_FOUND),
}

if TYPE_CHECKING:
    # At runtime this name is computed on access by the module __getattr__ below.
    DEFAULT_TRACKING_URI: str


def default_tracking_uri() -> str:
    """`sqlite:///<cwd>/mlflow.db`: the local store in the current working directory."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """`<cwd>/mlruns`: where local experiments keep their artifacts."""
    return Path.cwd() / "mlruns"


if not TYPE_CHECKING:

    def __getattr__(name: str) -> str:
        # `DEFAULT_TRACKING_URI` follows the working directory at the time it is read.
        if name == "DEFAULT_TRACKING_URI":
            return default_tracking_uri()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered version as returned by `log_bundle`."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow's tracking and registry at `tracking_uri`, $MLFLOW_TRACKING_URI or the default.

    Also quiets MLflow: INFO logs, a few known-harmless warnings, its deprecation and future
    warnings, artifact progress bars and the run-URL line printed to stdout after each run
    against a server (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR / MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
    set in the environment win). Note that MLflow itself exports the URI as
    $MLFLOW_TRACKING_URI / $MLFLOW_REGISTRY_URI for subprocesses. Returns the URI used.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    _quiet()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


class _DropMessages(logging.Filter):
    """Drops MLflow log lines that are noise for this project (matched by their start)."""

    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


# Logger -> messages dropped. CloudPickle: BundleModel is a class of this package, pickled by
# reference. pip: uv-made environments have no pip, so MLflow cannot pin its version. uv: the
# project's private uv is not on PATH, so MLflow infers requirements from imports instead.
_NOISE: Final = {
    "mlflow.pyfunc": ("Passing a Python object as `python_model`",),
    "mlflow.utils.environment": (
        "Failed to resolve installed pip version",
        "uv export failed",
    ),
    "mlflow.utils.uv_utils": ("uv is not available",),
}


def _quiet() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    for name, starts in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(*starts))
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"mlflow(\.|$)")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def experiment(name: str) -> str:
    """Get or create the experiment `name` and return its id.

    In a local SQLite store a new experiment keeps its artifacts in `<cwd>/mlruns/<name>`; on a
    server, the server chooses. A deleted experiment of that name is restored.
    """
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if _is_local_sqlite(mlflow.get_tracking_uri()):
            location = (default_artifact_root() / name).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:  # created meanwhile by another process
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


class _BundlePyfunc(PythonModel):
    """pyfunc wrapper that loads a bundle from the model's artifacts (`_load`) and answers with
    `_answer(model, input)`."""

    def __init__(self) -> None:
        self._model: Any = None

    @staticmethod
    def _load(directory: Path) -> Any:
        raise NotImplementedError

    def _answer(self, model: Any, model_input: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def load_context(self, context: PythonModelContext) -> None:
        self._model = self._load(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        if self._model is None:
            raise RuntimeError(f"{type(self).__name__} used before load_context")
        return self._answer(self._model, model_input)


class BundleModel(_BundlePyfunc):
    """pyfunc wrapper of a no-show bundle: flat appointment rows in, appointment_id/risk/tier out.

    Only the flat columns are available through pyfunc, so history features take their
    no-history defaults (events=None).
    """

    _load = staticmethod(NoShowPredictor.load)

    def _answer(self, model: NoShowPredictor, model_input: pd.DataFrame) -> pd.DataFrame:
        risk = model.predict(model_input, None)
        return pd.DataFrame(
            {
                "appointment_id": model_input["appointment_id"].to_numpy(),
                "risk": risk,
                "tier": model.tier(risk),
            }
        )


class RankerBundleModel(_BundlePyfunc):
    """pyfunc wrapper of a ranker bundle: pair-feature rows in, one `score` per row out
    (higher ranks first within a referral)."""

    _load = staticmethod(SpecialistRanker.load)

    def _answer(self, model: SpecialistRanker, model_input: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"score": model.score(model_input)})


class UpliftBundleModel(_BundlePyfunc):
    """pyfunc wrapper of an outreach-uplift bundle: flat appointment rows with the no-show
    `risk` (without a call) in, appointment_id/expected_benefit out (NaN where the effect is not
    estimated). History features take their no-history defaults, as in `BundleModel`."""

    @staticmethod
    def _load(directory: Path) -> Any:
        from features.uplift import UpliftPredictor

        return UpliftPredictor.load(directory)

    def _answer(self, model: Any, model_input: pd.DataFrame) -> pd.DataFrame:
        X = model.features(model_input, None)
        benefit = model.expected_benefit(X, model_input["risk"].to_numpy(dtype=float))
        return pd.DataFrame(
            {
                "appointment_id": model_input["appointment_id"].to_numpy(),
                "expected_benefit": benefit,
            }
        )


def run_metadata(name: str, run_id: str) -> dict[str, str]:
    """What every bundle records of the run that trained it (the service's /model_info)."""
    return {
        "name": name,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
    }


def log_bundle(
    bundle_dir: Path,
    registered_name: str,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    *,
    python_model: PythonModel | None = None,
    check: Callable[[Path], object] = NoShowPredictor.load,
) -> ModelVersionInfo:
    """Log `bundle_dir` into the active run and register it as a new version of `registered_name`.

    `check` loads the bundle first (a broken bundle fails before anything is logged);
    `python_model` is the pyfunc wrapper (default: the no-show `BundleModel`). The plain files
    go to the run's `bundle/` artifacts first, then the pyfunc model is logged and registered,
    so a registered version always has its bundle to download.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_bundle must be called inside an active run (mlflow.start_run())")
    bundle_dir = Path(bundle_dir)
    check(bundle_dir)  # a broken bundle fails here, before anything is logged
    # The signature describes what callers send: text, not flatten_world's categoricals.
    input_example, output_example = as_text(input_example), as_text(output_example)
    mlflow.log_artifacts(str(bundle_dir), artifact_path=BUNDLE_ARTIFACT)
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=python_model if python_model is not None else BundleModel(),
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        signature=infer_signature(input_example, output_example),
        input_example=input_example,
        registered_model_name=registered_name,
    )
    if info.registered_model_version is None:
        raise RuntimeError(f"MLflow did not register a version of '{registered_name}'")
    number = str(info.registered_model_version)
    return ModelVersionInfo(
        name=registered_name,
        version=number,
        run_id=run.info.run_id,
        model_uri=f"models:/{registered_name}/{number}",
    )


def _missing(exc: MlflowException) -> bool:
    """Whether MLflow said "not found" (the SQL store reports an unknown alias as invalid)."""
    if exc.error_code in _NOT_FOUND_CODES:
        return True
    message = str(exc.message).lower()
    return (
        exc.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
        and "alias" in message
        and "not found" in message
    )


def _by_alias(name: str, alias: str) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def champion(name: str) -> ModelVersion | None:
    """The version behind `name@champion`, or None when the model or the alias does not exist."""
    return _by_alias(name, CHAMPION)


def version(name: str, version: str | int) -> ModelVersion:
    """One version of `name`; LookupError when the model or the version does not exist."""
    return _version(name, version)


def _version(name: str, number: str | int) -> ModelVersion:
    if not str(number).isdigit():
        raise LookupError(f"'{number}' is not a version number of '{name}' (1, 2, ...)")
    try:
        return MlflowClient().get_model_version(name, str(number))
    except MlflowException as exc:
        if _missing(exc):
            raise LookupError(f"registered model '{name}' has no version {number}") from None
        raise


def latest_version(name: str) -> ModelVersion | None:
    """The highest version number of `name`, or None when it has no versions."""
    quote = '"' if "'" in name else "'"
    found = MlflowClient().search_model_versions(
        filter_string=f"name = {quote}{name}{quote}",
        order_by=["version_number DESC"],
        max_results=1,
    )
    # Fetched again: search results may lack aliases, and some stores give `version` as an int.
    return _version(name, found[0].version) if found else None


def set_champion(name: str, version: str | int, *, forced: bool, gates: list[dict]) -> None:
    """Point `name@champion` at `version`, recording promoted_at, promotion_forced and the gates.

    The tags are written before the alias moves, so a champion always carries its record.
    """
    number = str(_version(name, version).version)  # LookupError if missing
    client = MlflowClient()
    tags = {
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promotion_forced": "true" if forced else "false",
        "promotion_gates": json.dumps(_json_safe(gates), sort_keys=True),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, number, key, value)
    client.set_registered_model_alias(name, CHAMPION, number)


def _json_safe(value: Any) -> Any:
    """Plain JSON (no NaN/Infinity): non-finite numbers become null, unknown types strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def run_artifact_dir(run_id: str, artifact_path: str, dst: Path | None = None) -> Path:
    """Download the run's artifact folder `artifact_path` into `dst` (default: a new temp dir).

    Returns `dst/<artifact_path>`; LookupError when the run has no such artifacts.
    """
    if dst is not None and (target := Path(dst) / artifact_path).exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} already exists and is not empty")
    client = MlflowClient()
    if not client.list_artifacts(run_id, artifact_path):
        raise LookupError(f"run {run_id} has no artifacts under '{artifact_path}/'")
    dst = Path(tempfile.mkdtemp(prefix="referral-ml-")) if dst is None else Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(run_id, artifact_path, str(dst))
    return Path(local)


def run_artifact_file(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one file artifact of the run into `dst`; LookupError when the run has none."""
    client = MlflowClient()
    parent = artifact_path.rpartition("/")[0] or None
    names = {f.path for f in client.list_artifacts(run_id, parent) if not f.is_dir}
    if artifact_path not in names:
        raise LookupError(f"run {run_id} has no artifact '{artifact_path}'")
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, artifact_path, str(dst)))


def download_bundle(
    name: str,
    version: str | int | None = None,
    alias: str = CHAMPION,
    dst: Path | None = None,
) -> Path:
    """Download the bundle of `name` at `version` (or, without a version, at `@alias`).

    Returns the bundle directory, ready for `NoShowPredictor.load`. LookupError names what is
    missing: the model, the version, the alias or the bundle artifacts.
    """
    if version is not None:
        found = _version(name, version)
        what = f"'{name}' version {found.version}"
    else:
        alias_version = _by_alias(name, alias)
        if alias_version is None:
            raise LookupError(_no_alias_message(name, alias))
        found = alias_version
        what = f"'{name}@{alias}' (version {found.version})"
    run_id = found.run_id or _source_run_id(found)
    if not run_id:
        raise LookupError(f"{what} is not linked to a run, so it has no bundle to download")
    try:
        path = run_artifact_dir(run_id, BUNDLE_ARTIFACT, dst)
    except LookupError:
        raise LookupError(
            f"{what} has no '{BUNDLE_ARTIFACT}/' artifacts in run {run_id}; "
            "was it logged with training.registry.log_bundle?"
        ) from None
    return path


def _source_run_id(found: ModelVersion) -> str | None:
    if not found.model_id:
        return None
    return MlflowClient().get_logged_model(found.model_id).source_run_id


def _no_alias_message(name: str, alias: str) -> str:
    try:
        MlflowClient().get_registered_model(name)
    except MlflowException as exc:
        if _missing(exc):
            return f"no registered model named '{name}': train and register one first"
        raise
    hint = " (promote a version first)" if alias == CHAMPION else ""
    return f"registered model '{name}' has no version with alias '@{alias}'{hint}"


def resolve_bundle(
    model: str | None, default_name: str, tracking_uri: str | None, workdir: Path
) -> Path:
    """A bundle directory for `model`: a local directory, 'models:/NAME@alias',
    'models:/NAME/VERSION' (VERSION may be 'latest'), 'NAME', or (None) `default_name@champion`."""
    if model and Path(model).is_dir():
        return Path(model)
    configure(tracking_uri)
    ref = (model or f"models:/{default_name}@{CHAMPION}").removeprefix("models:/")
    version: str | None = None
    alias = CHAMPION
    if "@" in ref:
        name, alias = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    else:
        name = ref
    if version == "latest":
        newest = latest_version(name)
        if newest is None:
            raise LookupError(f"no registered versions of '{name}': train one first")
        version = str(newest.version)
    return download_bundle(name, version, alias=alias, dst=workdir)
