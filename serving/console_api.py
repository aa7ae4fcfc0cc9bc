"""What the browser console (`serving/console/`) needs beyond the prediction endpoints.

* ``GET /whoami``: the calling key's id, role and the console pages that role may open.
* ``GET /catalog``: the choices the forms offer (specialties, reasons, plans, organizations,
  languages), the words for the no-show model's factors, the tier thresholds and the service's
  clock, built once per load from the store's tables and the bundles.
* The served models' reports: `read_reports` reads what `referral-ml export` put beside each
  bundle (``reports/``: the model card, the plots and ``metrics.json``); ``/model_info`` carries
  the headline metrics and the card, ``GET /model_info/{model}/plots/{name}`` one plot as base64
  PNG (a JSON answer, so it is authenticated and audited like every other call).

A role sees only its pages: `PAGES`. The console is a convenience over the API, never a way
around it: every figure on a page comes from an endpoint that checks the key's role itself.

Import rule: pydantic, pandas and `features` code sets only.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import pandas as pd
from pydantic import AfterValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

from features import contract
from features.codes import reasons, specialties
from features.no_show import FEATURE_LABELS
from serving.schemas import ReportedDatetime, Role, _Model

REPORTS_DIR: Final = "reports"  # in an exported model (training.export.REPORTS_DIR)
PLOT_NAME_PATTERN: Final = r"^[a-z0-9_]{1,64}$"
_PLOT_NAME_RE: Final = re.compile(PLOT_NAME_PATTERN)
MAX_CARD_CHARS: Final = 200_000

# The console's pages and the roles that may open them (admin: everything).
PAGES: Final[Mapping[Role, tuple[str, ...]]] = {
    Role.REFERRAL_UI: ("referral",),
    Role.OUTREACH: ("worklist",),
    Role.ADMIN: ("worklist", "referral", "models"),
    Role.INTEGRATION: (),  # pushes outcomes (POST /feedback): no console page
}


# --------------------------------------------------------------------------- /whoami


class WhoAmIResponse(_Model):
    """GET /whoami: who the key is and which console pages it opens."""

    key_id: str
    role: Role
    pages: list[str]
    request_id: str


# --------------------------------------------------------------------------- /catalog


class CatalogSpecialty(_Model):
    code: str
    name: str
    specialists: int  # accepting new patients, in the loaded directory


class CatalogReason(_Model):
    code: str
    label: str
    specialty: str


class CatalogPlan(_Model):
    insurance_plan_id: str
    plan_name: str
    payer_type: str
    plan_type: str


class CatalogOrganization(_Model):
    organization_id: str
    name: str
    city: str


class MapPoint(_Model):
    latitude: float
    longitude: float


class CatalogResponse(_Model):
    """GET /catalog: the values the console's forms offer (none of them about a patient)."""

    as_of: ReportedDatetime
    specialties: list[CatalogSpecialty]
    reasons: list[CatalogReason]
    plans: list[CatalogPlan]
    organizations: list[CatalogOrganization]
    languages: list[str]
    factor_labels: dict[str, str]
    tiers: dict[str, float]
    center: MapPoint
    request_id: str


def build_catalog(
    tables: Mapping[str, pd.DataFrame], *, as_of: datetime, tiers: Mapping[str, float]
) -> dict[str, Any]:
    """The /catalog body (without request_id) from the directory tables: specialties that have
    specialists, every known reason of those specialties, plans, organizations that employ
    specialists, and the directory's centre (where the referral form's map starts)."""
    sp = tables["specialists"]
    accepting = sp[sp["accepting_new_patients"].astype(bool)] if len(sp) else sp
    counts = accepting["specialty"].astype(str).value_counts()
    modelled = specialties()
    present = sorted((c for c in sp["specialty"].astype(str).unique() if c in modelled), key=str)
    spec_rows = [
        {"code": c, "name": modelled[c].name, "specialists": int(counts.get(c, 0))}
        for c in sorted(present, key=lambda c: modelled[c].name)
    ]
    present_set = set(present)
    reason_rows = [
        {"code": r.code, "label": r.label, "specialty": r.specialty}
        for r in sorted(reasons().values(), key=lambda r: (r.specialty, r.label))
        if r.specialty in present_set
    ]
    plans = tables["plans"].sort_values("insurance_plan_id")
    plan_rows = [
        {
            "insurance_plan_id": str(p.insurance_plan_id),
            "plan_name": str(p.plan_name),
            "payer_type": str(p.payer_type),
            "plan_type": str(p.plan_type),
        }
        for p in plans.itertuples(index=False)
    ]
    orgs = tables["organizations"]
    employing = set(sp["organization_id"].astype(str)) if "organization_id" in sp else set()
    orgs = orgs[orgs["organization_id"].astype(str).isin(employing)].sort_values("name")
    org_rows = [
        {"organization_id": str(o.organization_id), "name": str(o.name), "city": str(o.city)}
        for o in orgs.itertuples(index=False)
    ]
    lat = float(sp["latitude"].median()) if len(sp) else 0.0
    lon = float(sp["longitude"].median()) if len(sp) else 0.0
    return {
        "as_of": as_of,
        "specialties": spec_rows,
        "reasons": reason_rows,
        "plans": plan_rows,
        "organizations": org_rows,
        "languages": list(contract.LANGUAGES),
        "factor_labels": dict(FEATURE_LABELS),
        "tiers": {k: float(v) for k, v in tiers.items()},
        "center": {"latitude": round(lat, 4), "longitude": round(lon, 4)},
    }


# --------------------------------------------------------------------------- model reports


@dataclass(frozen=True)
class Reports:
    """What an exported model carries for people: headline metrics, its card, its plots."""

    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    card_markdown: str | None = None
    plots: Mapping[str, Path] = field(default_factory=dict)  # name (file stem) -> PNG


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) or math.isinf(value) else round(float(value), 4)


def _scalars(values: Any) -> dict[str, float | None]:
    """The numbers of a mapping (NaN, infinities and non-numbers left out)."""
    if not isinstance(values, Mapping):
        return {}
    numbers = {str(k): _number(v) for k, v in values.items()}
    return {k: v for k, v in numbers.items() if v is not None}


def _ranking(values: Any) -> dict[str, float | None]:
    """A ranking's metrics: the logged ones as they are, those measured against the true match
    utility (synthetic worlds) prefixed "true "."""
    if not isinstance(values, Mapping):
        return {}
    out = _scalars(values.get("test"))
    out.update({f"true {k}": v for k, v in _scalars(values.get("oracle")).items()})
    return out


def headline_metrics(doc: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """A metrics.json as columns of metric -> value (numbers only): "model" (the test window),
    then each baseline; for the no-show model also "ceiling" (the true probabilities' own score,
    synthetic worlds only). The ranker's columns carry its metrics against the true utility as
    "true ndcg@5" and so on."""
    out: dict[str, dict[str, float | None]] = {}
    baselines = doc.get("baselines")
    baselines = baselines if isinstance(baselines, Mapping) else {}
    ranker_style = any(isinstance(v, Mapping) and "test" in v for v in baselines.values())
    if ranker_style:
        out["model"] = _ranking(doc)
        for name, values in baselines.items():
            out[str(name)] = _ranking(values)
        return {k: v for k, v in out.items() if v}
    out["model"] = _scalars(doc.get("test"))
    for name, values in baselines.items():
        out[str(name)] = _scalars(values)
    out["ceiling"] = _scalars(doc.get("oracle"))
    return {k: v for k, v in out.items() if v}


def read_reports(bundle_dir: Path) -> Reports:
    """The `reports/` folder of an exported model (empty Reports when it has none: a bundle
    used straight from disk, or exported before reports were)."""
    folder = Path(bundle_dir) / REPORTS_DIR
    if not folder.is_dir():
        return Reports()
    metrics: dict[str, dict[str, float | None]] = {}
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        try:
            doc = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            doc = {}
        if isinstance(doc, Mapping):
            metrics = headline_metrics(doc)
    card_path = folder / "model_card.md"
    card = card_path.read_text(errors="replace")[:MAX_CARD_CHARS] if card_path.is_file() else None
    plots = {
        p.stem: p
        for p in sorted(folder.glob("*.png"))
        if _PLOT_NAME_RE.match(p.stem) and p.is_file()
    }
    return Reports(metrics=metrics, card_markdown=card, plots=plots)


def _check_plot_name(v: str) -> str:
    if not _PLOT_NAME_RE.match(v):
        raise PydanticCustomError(
            "bad_plot_name", "must be 1-64 characters: lower-case letters, digits or '_'"
        )
    return v


PlotName = Annotated[
    str,
    AfterValidator(_check_plot_name),
    WithJsonSchema({"type": "string", "pattern": PLOT_NAME_PATTERN}),
]


class ModelPlotRequest(_Model):
    """GET /model_info/{model}/plots/{name} (the path parameters, validated like a body)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "no-show", "name": "calibration"}]}
    )

    model: Literal["specialist-ranker", "no-show", "outreach-uplift"]
    name: PlotName


class ModelPlot(_Model):
    """One plot of a served model's training run, as base64-encoded PNG."""

    model: str
    name: str
    media_type: Literal["image/png"]
    data_base64: str
    request_id: str


def plot_payload(reports: Reports, name: str) -> str | None:
    """The plot's PNG as base64, or None when the model has no such plot."""
    path = reports.plots.get(name)
    if path is None:
        return None
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None
