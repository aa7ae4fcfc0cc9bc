"""Export the @champion bundles from the MLflow registry into the BentoML model store.

The service loads models from the BentoML store (`bentoml.models.get("<name>:latest")`), never
from MLflow on the request path. Each exported model keeps the bundle files unchanged plus a
VERSION file with the registry version, and records the version and run as BentoML labels.
Beside the bundle, `reports/` holds what the run logged for people to read (the model card, the
plots, `metrics.json`): the console's models page shows them without the service touching MLflow.
Each exported model also holds its trees compiled for this machine (`features.compiled`), so the
service's first load does not compile them; when that fails the bundle is exported without them
and LightGBM serves it (`REFERRAL_ML_TREES=lightgbm` skips the compile).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.compiled import BACKEND_ENV, build_library
from features.matcher import SpecialistRanker
from features.predictor import NoShowPredictor
from features.uplift import UpliftPredictor

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"  # in an exported model: the run's card, plots and metrics.json
# Bumped when an export's layout changes, so that a rerun replaces older exports
# (3: the compiled trees beside the bundle).
EXPORT_LAYOUT = "3"

# registered model name -> (BentoML model name, bundle check)
EXPORTS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "specialist-ranker": ("specialist-ranker", SpecialistRanker.load),
    "no-show": ("no-show", NoShowPredictor.load),
    "outreach-uplift": ("outreach-uplift", UpliftPredictor.load),
}
# Exported when it has a champion, skipped otherwise: the service serves without it (the
# expected benefit is then null).
OPTIONAL = frozenset({"outreach-uplift"})


@dataclass(frozen=True)
class Exported:
    """One model written to the BentoML store."""

    registered_name: str
    version: str
    tag: str
    path: Path
    reused: bool = False  # the newest BentoML model already was this champion
    compiled_trees: str | None = None  # the compiled library's file name, when it was built


def export_champions(
    tracking_uri: str | None, names: tuple[str, ...] = tuple(EXPORTS)
) -> list[Exported]:
    """Copy each model's @champion bundle into the BentoML model store (a new BentoML version),
    unless the store's newest model of that name already is this champion (same registry
    version and run): a rerun adds nothing."""
    import bentoml

    from training import registry

    registry.configure(tracking_uri)
    champions = {name: registry.champion(name) for name in names}
    names = tuple(n for n in names if champions[n] is not None or n not in OPTIONAL)
    missing = [name for name in names if champions[name] is None]
    if missing:  # checked first, so a failed export writes nothing
        raise LookupError(
            f"no @champion for {', '.join(repr(m) for m in missing)}: train and promote a "
            "version first (referral-ml promote no-show | ranker)"
        )
    out = []
    for name in names:
        bento_name, check = EXPORTS[name]
        champion = champions[name]
        assert champion is not None
        labels = {
            "registry_version": str(champion.version),
            "run_id": champion.run_id or "",
            "layout": EXPORT_LAYOUT,
        }
        current = _newest(bentoml, bento_name)
        if current is not None and dict(current.info.labels) == labels:
            out.append(
                Exported(name, str(champion.version), str(current.tag), Path(current.path), True)
            )
            continue
        with tempfile.TemporaryDirectory() as tmp:
            bundle = registry.download_bundle(name, str(champion.version), dst=Path(tmp))
            check(bundle)  # a broken bundle is refused before it reaches the store
            with bentoml.models.create(bento_name, labels=labels) as model:
                target = Path(model.path)
                for item in bundle.iterdir():
                    shutil.copy2(item, target / item.name)
                (target / "VERSION").write_text(f"{champion.version}\n")
                if champion.run_id:
                    _copy_reports(registry, champion.run_id, Path(tmp) / "run", target)
                trees = compile_trees(target) if (target / "model.txt").exists() else None
            stored = Path(bentoml.models.get(model.tag).path)
            out.append(
                Exported(name, str(champion.version), str(model.tag), stored, compiled_trees=trees)
            )
    return out


def compile_trees(bundle: Path) -> str | None:
    """The bundle's trees compiled into it for this machine; None (with a log line) when the
    compiler is unavailable or fails, or REFERRAL_ML_TREES=lightgbm: LightGBM then serves it."""
    if os.environ.get(BACKEND_ENV, "").strip().lower() == "lightgbm":
        return None
    try:
        return build_library(bundle / "model.txt", bundle, lock=False).name
    except Exception as exc:  # the export stands without them: the service falls back
        log.warning("%s: trees not compiled (%s); LightGBM will serve it", bundle.name, exc)
        return None


def _newest(bentoml: Any, name: str) -> Any:
    """The store's newest model of this name, or None."""
    try:
        return bentoml.models.get(f"{name}:latest")
    except Exception:  # bentoml.exceptions.NotFound: nothing exported yet
        return None


def _copy_reports(registry: Any, run_id: str, workdir: Path, target: Path) -> None:
    """The run's `reports/` artifacts (card, plots, tables) and its `metrics.json` into
    `target/reports/`; a run without them exports the bundle alone."""
    reports = target / REPORTS_DIR
    reports.mkdir()
    try:
        logged = registry.run_artifact_dir(run_id, REPORTS_DIR, dst=workdir)
    except LookupError:
        logged = None
    if logged is not None:
        for item in Path(logged).iterdir():
            if item.is_file():
                shutil.copy2(item, reports / item.name)
    try:
        metrics = registry.run_artifact_file(run_id, "metrics.json", dst=workdir)
    except LookupError:
        return
    shutil.copy2(metrics, reports / "metrics.json")
