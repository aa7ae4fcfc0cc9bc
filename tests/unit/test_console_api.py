"""What the console reads: /whoami, /catalog, the models' reports and plots, specialists'
positions and worklist names, and the console's static files (in-process, no HTTP server)."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from features.no_show import FEATURE_LABELS
from serving.console_api import PAGES, build_catalog, headline_metrics, read_reports
from serving.keys import Role
from serving.runtime import Runtime
from serving.service import CONSOLE_FILES, ENDPOINTS, Endpoint, admin_app, dispatch
from serving.store import Store
from tests.unit.test_runtime import _referral
from tests.unit.test_service_inprocess import role_headers

pytestmark = pytest.mark.unit

# A 1x1 PNG, as the plots' stand-in.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
NO_SHOW_METRICS = {
    "model": "no-show",
    "test": {"roc_auc": 0.74, "brier": 0.14, "ece": float("nan")},
    "baselines": {"logistic_regression": {"roc_auc": 0.70}, "prior_rate": {"roc_auc": 0.61}},
    "oracle": {"roc_auc": 0.80},
    "subgroups": [{"group": "age"}],
}
RANKER_METRICS = {
    "test": {"ndcg@5": 0.61, "mrr": 0.5},
    "oracle": {"ndcg@5": 0.96},
    "baselines": {"weighted_rule": {"test": {"ndcg@5": 0.6}, "oracle": {"ndcg@5": 0.955}}},
    "ci95": {"ndcg@5": [0.6, 0.62]},
}


def _with_reports(bundle: Path, dst: Path, metrics: dict[str, Any], plots: list[str]) -> Path:
    """A copy of `bundle` with a reports/ folder as `referral-ml export` writes it."""
    shutil.copytree(bundle, dst)
    reports = dst / "reports"
    reports.mkdir()
    (reports / "metrics.json").write_text(json.dumps(metrics))
    (reports / "model_card.md").write_text(
        "# Model card: test\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    for name in plots:
        (reports / f"{name}.png").write_bytes(PNG)
    (reports / "Not A Plot.png").write_bytes(PNG)  # a name the API could not address: left out
    return dst


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory,
    small_world: Path,
    bundles: dict[str, Path],
    as_of: datetime,
) -> Runtime:
    root = tmp_path_factory.mktemp("console")
    ranker = _with_reports(bundles["ranker"], root / "ranker", RANKER_METRICS, ["ndcg_by_urgency"])
    no_show = _with_reports(
        bundles["no_show"], root / "no_show", NO_SHOW_METRICS, ["calibration", "roc_pr"]
    )
    store = Store(f"sqlite:///{root / 'referral.db'}")
    store.create()
    store.load_dataset(small_world)
    rt = Runtime(store.url, ranker, no_show, now=as_of, store=store)
    assert rt.load(), rt.not_ready_reason
    return rt


@pytest.fixture(scope="module")
def keys(runtime: Runtime) -> dict[Role, dict[str, str]]:
    return role_headers(runtime.store)


def _call(runtime: Runtime, method: str, path: str, headers: Any, body: Any = None) -> Any:
    endpoint: Endpoint = next(e for e in ENDPOINTS if e.method == method and e.path == path)
    return dispatch(runtime, endpoint, headers, body)


def test_whoami_names_the_role_and_only_its_pages(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    for role in Role:
        out = _call(runtime, "GET", "/whoami", keys[role])
        assert out.status == 200
        assert out.body["role"] == role.value
        assert out.body["pages"] == list(PAGES[role])
    assert "models" not in PAGES[Role.OUTREACH] and "worklist" not in PAGES[Role.REFERRAL_UI]
    assert _call(runtime, "GET", "/whoami", {}).status == 401


def test_catalog_offers_what_the_directory_holds(
    runtime: Runtime, keys: dict[Role, dict[str, str]], as_of: datetime
) -> None:
    out = _call(runtime, "GET", "/catalog", keys[Role.REFERRAL_UI])
    assert out.status == 200
    cat = out.body
    tables = runtime.store.read_tables(["specialists", "plans", "organizations"])
    sp = tables["specialists"]
    assert {s["code"] for s in cat["specialties"]} == set(sp["specialty"].astype(str))
    accepting = sp[sp["accepting_new_patients"].astype(bool)]
    for s in cat["specialties"]:
        assert s["specialists"] == int((accepting["specialty"] == s["code"]).sum())
    assert {p["insurance_plan_id"] for p in cat["plans"]} == set(
        tables["plans"]["insurance_plan_id"]
    )
    offered = {s["code"] for s in cat["specialties"]}
    assert cat["reasons"] and all(r["specialty"] in offered for r in cat["reasons"])
    orgs = {o["organization_id"] for o in cat["organizations"]}
    assert orgs == set(sp["organization_id"].astype(str)) & set(
        tables["organizations"]["organization_id"]
    )
    assert cat["as_of"].startswith(as_of.date().isoformat())
    assert 0 < cat["tiers"]["medium"] < cat["tiers"]["high"] < 1
    assert sp["latitude"].min() <= cat["center"]["latitude"] <= sp["latitude"].max()


def test_every_no_show_input_has_words_for_the_worklist(runtime: Runtime) -> None:
    # Top factors are model inputs: the worklist shows each in words, never its column name
    features = runtime.state.predictor.spec.columns
    assert features and set(features) <= set(FEATURE_LABELS)
    assert set(FEATURE_LABELS) <= set(runtime.state.catalog["factor_labels"])


def test_model_info_carries_metrics_card_and_plot_names(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    out = _call(runtime, "GET", "/model_info", keys[Role.ADMIN])
    assert out.status == 200
    models = {m["name"]: m for m in out.body["models"]}
    no_show, ranker = models["no-show"], models["specialist-ranker"]
    assert no_show["plots"] == ["calibration", "roc_pr"]
    assert no_show["metrics"]["model"] == {"roc_auc": 0.74, "brier": 0.14}  # NaN left out
    assert no_show["metrics"]["ceiling"] == {"roc_auc": 0.8}
    assert list(no_show["metrics"]) == ["model", "logistic_regression", "prior_rate", "ceiling"]
    assert ranker["metrics"]["weighted_rule"] == {"ndcg@5": 0.6, "true ndcg@5": 0.955}
    assert ranker["metrics"]["model"]["true ndcg@5"] == 0.96
    assert "ceiling" not in ranker["metrics"]  # the ranker's oracle scores are not a ceiling
    assert no_show["card_markdown"].startswith("# Model card")


def test_a_plot_is_served_as_base64_png_and_unknown_ones_are_404(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    path = "/model_info/{model}/plots/{name}"
    admin = keys[Role.ADMIN]
    out = _call(runtime, "GET", path, admin, {"model": "no-show", "name": "calibration"})
    assert out.status == 200 and out.body["media_type"] == "image/png"
    assert base64.b64decode(out.body["data_base64"]) == PNG
    missing = _call(runtime, "GET", path, admin, {"model": "specialist-ranker", "name": "roc_pr"})
    assert missing.status == 404 and missing.body["error"] == "no such plot for this model"
    bad = _call(runtime, "GET", path, admin, {"model": "no-show", "name": "..%2Fmodel"})
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "name"
    unknown = _call(runtime, "GET", path, admin, {"model": "nope", "name": "calibration"})
    assert unknown.status == 422 and unknown.body["errors"][0]["field"] == "model"
    outreach = _call(runtime, "GET", path, keys[Role.OUTREACH], {"model": "no-show", "name": "x"})
    assert outreach.status == 403


def test_recommendations_carry_the_practice_position(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    out = _call(runtime, "POST", "/recommend", keys[Role.REFERRAL_UI], _referral(runtime.store))
    assert out.status == 200 and out.body["specialists"]
    sp = runtime.store.read_tables(["specialists"])["specialists"].set_index("specialist_id")
    for s in out.body["specialists"]:
        row = sp.loc[s["specialist_id"]]
        assert s["latitude"] == pytest.approx(float(row["latitude"]), abs=1e-5)
        assert s["longitude"] == pytest.approx(float(row["longitude"]), abs=1e-5)


def test_worklist_rows_name_the_specialist(
    runtime: Runtime, keys: dict[Role, dict[str, str]], as_of: datetime
) -> None:
    day = as_of.date().isoformat()
    body = {"start": day, "end": day, "capacity": 50}
    out = _call(runtime, "POST", "/outreach/worklist", keys[Role.OUTREACH], body)
    rows = out.body["rows"]
    assert out.status == 200 and rows
    sp = runtime.store.read_tables(["specialists"])["specialists"].set_index("specialist_id")
    for r in rows:
        row = sp.loc[r["specialist_id"]]
        assert r["specialist_name"] == f"{row['first_name']} {row['last_name']}"
        assert r["specialty"] == row["specialty"]


def test_reports_of_a_bundle_without_them_are_empty(bundles: dict[str, Path]) -> None:
    reports = read_reports(bundles["no_show"])
    assert reports.metrics == {} and reports.card_markdown is None and not reports.plots


def test_headline_metrics_of_a_document_without_baselines() -> None:
    assert headline_metrics({"test": {"roc_auc": 0.7, "note": "x"}}) == {"model": {"roc_auc": 0.7}}
    assert headline_metrics({}) == {}


def test_catalog_of_an_empty_directory_is_empty(small_tables: dict[str, Any]) -> None:
    tables = {name: frame.iloc[0:0] for name, frame in small_tables.items()}
    cat = build_catalog(tables, as_of=datetime(2025, 7, 1), tiers={"medium": 0.2, "high": 0.4})
    assert cat["specialties"] == [] and cat["reasons"] == [] and cat["organizations"] == []


def test_console_files_are_served_with_a_strict_policy_and_nothing_else() -> None:
    client = TestClient(admin_app)
    page = client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    # Only this origin's files: no script, style or font from anywhere else
    html = page.text
    assert "http://" not in html and "https://" not in html
    for name in CONSOLE_FILES:
        served = client.get(f"/console/{name}")
        assert served.status_code == 200, name
        assert served.headers["x-content-type-options"] == "nosniff"
    js = client.get("/console/console.js").text
    assert "innerHTML" not in js  # API text is always set as text
    assert client.get("/console/../service.py").status_code == 404
    assert client.get("/console/secret.txt").status_code == 404
    redirect = client.get("/console", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"] == "/console/"
