"""The outreach-uplift model in the service: `expected_benefit` on /no_show_risk and the
worklist, the worklist ordered by it, and the optional third bundle (loaded, absent, broken)."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import logging
import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text

import serving.service as service
from features.no_show import NoShowFeatureSpec
from features.uplift import EffectTerms, UpliftPredictor
from serving.keys import Role
from serving.runtime import UPLIFT, Runtime, order_worklist
from serving.schemas import (
    WORKLIST_CSV_COLUMNS,
    NoShowRiskRequest,
    RiskTier,
    WorklistOrder,
    WorklistRequest,
    WorklistRow,
)
from serving.service import JSON_ENDPOINTS, _csv_response, dispatch, runtime_from_env
from serving.store import Store
from tests.unit.test_runtime import _window
from tests.unit.test_service_inprocess import role_headers

pytestmark = pytest.mark.unit

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
# constant, distance_km (standardised), payer_type = medicaid, age >= 75: a call helps
# medicaid patients much more, so ordering by benefit differs from ordering by risk.
COEF = [-0.3, -0.1, -1.5, -0.1]
NO_SHOW_RISK = JSON_ENDPOINTS[("POST", "/no_show_risk")]
WORKLIST = JSON_ENDPOINTS[("POST", "/outreach/worklist")]


def _spec(bundles: dict[str, Path]) -> NoShowFeatureSpec:
    return NoShowFeatureSpec.from_dict(
        json.loads((bundles["no_show"] / "feature_spec.json").read_text())
    )


def _terms() -> EffectTerms:
    return EffectTerms(
        numeric=["distance_km"],
        center=[10.0],
        scale=[5.0],
        fill=[10.0],
        indicators=[("payer_type", "medicaid")],
        thresholds=[("age", 75.0)],
        coef=list(COEF),
    )


def _save_uplift(directory: Path, spec: NoShowFeatureSpec) -> Path:
    uplift = UpliftPredictor(
        "logit-interaction",
        spec,
        _terms(),
        metadata={"name": "outreach-uplift", "version": "3", "run_id": "run-uplift"},
    )
    uplift.save(directory)
    reports = directory / "reports"
    reports.mkdir()
    (reports / "metrics.json").write_text(json.dumps({"test": {"qini": 0.012}}))
    (reports / "model_card.md").write_text("# Model card: outreach-uplift\n")
    (reports / "qini_curve.png").write_bytes(PNG)
    return directory


def _expected(risk: float, distance: float | None, medicaid: bool, age: float) -> float:
    """The benefit the hand-built effect terms give, computed here independently."""
    d = 10.0 if distance is None else distance
    shift = COEF[0] + COEF[1] * (d - 10.0) / 5.0 + COEF[2] * medicaid + COEF[3] * (age >= 75)
    p = min(max(risk, 1e-6), 1 - 1e-6)
    return p - 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) + shift)))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('uplift-db') / 'referral.db'}")
    s.create()
    s.load_dataset(small_world)
    return s


@pytest.fixture(scope="module")
def uplift_dir(tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Path]) -> Path:
    return _save_uplift(tmp_path_factory.mktemp("uplift") / "outreach_uplift", _spec(bundles))


@pytest.fixture(scope="module")
def with_uplift(
    store: Store, bundles: dict[str, Path], uplift_dir: Path, as_of: datetime
) -> Runtime:
    rt = Runtime(
        store.url,
        bundles["ranker"],
        bundles["no_show"],
        now=as_of,
        store=store,
        uplift_dir=uplift_dir,
    )
    assert rt.load(), rt.not_ready_reason
    return rt


@pytest.fixture(scope="module")
def without_uplift(store: Store, bundles: dict[str, Path], as_of: datetime) -> Runtime:
    rt = Runtime(store.url, bundles["ranker"], bundles["no_show"], now=as_of, store=store)
    assert rt.load(), rt.not_ready_reason
    return rt


@pytest.fixture(scope="module")
def keys(store: Store) -> dict[Role, dict[str, str]]:
    return role_headers(store)


def _appointments(store: Store) -> list[dict[str, Any]]:
    """Eligible and ineligible appointments: booked 10 days ahead (medicaid near, commercial
    far, an 80-year-old, one whose call is unknown), 1 day ahead, and already called."""
    sp = store.read_tables(["specialists"])["specialists"].iloc[0]
    visit = datetime(2025, 7, 14, 10)

    def row(i: str, *, lead: float, **kw: Any) -> dict[str, Any]:
        body = {
            "appointment_id": i,
            "age": 50,
            "sex": "F",
            "language": "en",
            "payer_type": "commercial",
            "specialty": str(sp["specialty"]),
            "specialist_id": str(sp["specialist_id"]),
            "booked_at": (visit - timedelta(days=lead)).isoformat(),
            "appointment_at": visit.isoformat(),
            "urgency": "routine",
            "referral_type": "provider",
            "outreach_call": False,
        }
        body.update(kw)
        return {k: v for k, v in body.items() if v is not None}

    return [
        row("A-medicaid", lead=10, payer_type="medicaid", distance_km=2.0),
        row("A-far", lead=10, distance_km=30.0),
        row("A-old", lead=10, age=80),
        row("A-two-days", lead=2, outreach_call=None),
        row("A-short", lead=1, payer_type="medicaid"),
        row("A-called", lead=10, payer_type="medicaid", outreach_call=True),
    ]


def test_no_show_risk_rows_get_the_benefit_of_a_call_where_it_is_estimated(
    with_uplift: Runtime, store: Store
) -> None:
    body = {"appointments": _appointments(store)}
    res = with_uplift.no_show_risk(NoShowRiskRequest.model_validate(body), "r")
    rows = {r.appointment_id: r for r in res.predictions}
    assert list(rows) == [a["appointment_id"] for a in body["appointments"]]
    # Booked 2+ days ahead and not called: estimated, between 0 and the risk itself
    given = {a["appointment_id"]: a for a in body["appointments"]}
    for i in ("A-medicaid", "A-far", "A-old", "A-two-days"):
        r, a = rows[i], given[i]
        assert r.expected_benefit is not None, i
        assert 0.0 < r.expected_benefit <= r.risk, i
        expected = _expected(
            r.risk, a.get("distance_km"), a["payer_type"] == "medicaid", float(a["age"])
        )
        assert r.expected_benefit == pytest.approx(expected, rel=1e-9, abs=1e-12), i
    # Booked the day before, or already called: not estimated
    assert rows["A-short"].expected_benefit is None
    assert rows["A-called"].expected_benefit is None
    # The medicaid term makes a call worth most to that patient
    assert rows["A-medicaid"].expected_benefit == max(
        r.expected_benefit for r in rows.values() if r.expected_benefit is not None
    )


def test_without_the_bundle_every_benefit_is_null_and_the_service_is_ready(
    store: Store, bundles: dict[str, Path], as_of: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = Runtime(store.url, bundles["ranker"], bundles["no_show"], now=as_of, store=store)
    with caplog.at_level(logging.INFO, logger="serving.runtime"):
        assert rt.load(), rt.not_ready_reason
    said = [r.getMessage() for r in caplog.records]
    assert said.count("no outreach-uplift model: expected_benefit is null") == 1
    assert rt.state.uplift is None
    assert UPLIFT not in rt.versions()
    assert [m.name for m in rt.model_info(None, "r").models] == ["specialist-ranker", "no-show"]
    res = rt.no_show_risk(
        NoShowRiskRequest.model_validate({"appointments": _appointments(store)}), "r"
    )
    assert res.predictions and all(r.expected_benefit is None for r in res.predictions)
    start, end = _window(store, days=3)
    wl = rt.worklist(WorklistRequest(start=start.date(), end=end.date(), capacity=500), "w")
    assert wl.rows and all(r.expected_benefit is None for r in wl.rows)
    assert wl.order == WorklistOrder.RISK and wl.uplift_model_version is None


def test_a_loaded_bundle_is_versioned_described_and_its_plots_served(
    with_uplift: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    assert with_uplift.versions()[UPLIFT] == "3"
    models = {m.name: m for m in with_uplift.model_info(None, "r").models}
    assert list(models) == ["specialist-ranker", "no-show", "outreach-uplift"]
    uplift = models["outreach-uplift"]
    assert uplift.version == "3" and uplift.run_id == "run-uplift"
    assert uplift.features == ["distance_km", "payer_type = medicaid", "age >= 75"]
    assert uplift.metrics == {"model": {"qini": 0.012}} and uplift.plots == ["qini_curve"]
    assert (uplift.card_markdown or "").startswith("# Model card: outreach-uplift")
    plot = next(e for e in service.ENDPOINTS if e.path == "/model_info/{model}/plots/{name}")
    out = dispatch(
        with_uplift, plot, keys[Role.ADMIN], {"model": "outreach-uplift", "name": "qini_curve"}
    )
    assert out.status == 200 and base64.b64decode(out.body["data_base64"]) == PNG


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_configured_bundle_that_does_not_load_keeps_the_runtime_not_ready(
    tmp_path: Path,
    store: Store,
    bundles: dict[str, Path],
    uplift_dir: Path,
    as_of: datetime,
    damage: str,
) -> None:
    broken = tmp_path / "outreach_uplift"
    if damage == "corrupt":
        shutil.copytree(uplift_dir, broken)
        (broken / "uplift.json").write_text('{"kind": "logit-interaction", "terms": {"coef"')
    rt = Runtime(
        store.url,
        bundles["ranker"],
        bundles["no_show"],
        now=as_of,
        store=store,
        uplift_dir=broken,
    )
    assert not rt.load()
    assert not rt.ready
    reason = rt.not_ready_reason or ""
    assert "outreach-uplift bundle" in reason and str(broken) in reason


def test_a_store_bundle_counts_as_none_only_when_it_is_gone(
    tmp_path: Path, store: Store, bundles: dict[str, Path], uplift_dir: Path, as_of: datetime
) -> None:
    def runtime(directory: Path) -> Runtime:
        return Runtime(
            store.url,
            bundles["ranker"],
            bundles["no_show"],
            now=as_of,
            store=store,
            uplift_dir=directory,
            uplift_if_present=True,
        )

    gone = runtime(tmp_path / "not-there")
    assert gone.load(), gone.not_ready_reason
    assert gone.state.uplift is None and UPLIFT not in gone.versions()
    broken = Path(shutil.copytree(uplift_dir, tmp_path / "broken"))
    (broken / "feature_spec.json").write_text("not json")
    corrupt = runtime(broken)
    assert not corrupt.load()
    assert str(broken) in (corrupt.not_ready_reason or "")


def test_runtime_from_env_takes_the_configured_folder_else_the_model_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = tmp_path / "models" / "outreach-uplift" / "abc"
    stored: dict[str, Path] = {}

    def get(tag: str) -> Any:
        name = tag.split(":")[0]
        if name not in stored:
            raise LookupError(tag)
        return SimpleNamespace(path=str(stored[name]))

    # bentoml.models is a lazy module: patch the real one and point bentoml at it
    models = importlib.import_module("bentoml.models")
    monkeypatch.setattr(models, "get", get)
    monkeypatch.setattr(service.bentoml, "models", models)
    env = {"REFERRAL_ML_STORE": f"sqlite:///{tmp_path / 'x.db'}"}
    # Nothing configured, nothing exported: no uplift model
    rt = runtime_from_env(env)
    assert rt.uplift_dir is None
    # Exported to the model store: its newest, used when it is there
    stored["outreach-uplift"] = exported
    rt = runtime_from_env(env)
    assert rt.uplift_dir == exported and rt.uplift_if_present
    # Configured: that folder, which must load
    rt = runtime_from_env({**env, "REFERRAL_ML_UPLIFT_DIR": str(tmp_path / "mine")})
    assert rt.uplift_dir == tmp_path / "mine" and not rt.uplift_if_present


def _sort_key(r: WorklistRow) -> tuple[Any, ...]:
    return (
        r.expected_benefit is None,
        -(r.expected_benefit or 0.0),
        -r.risk,
        r.appointment_at,
        r.appointment_id,
    )


def test_the_worklist_by_expected_benefit_is_sorted_by_it_nulls_last_and_capped_per_day(
    with_uplift: Runtime, store: Store
) -> None:
    start, end = _window(store)
    base = {"start": start.date(), "end": end.date(), "capacity": 500}
    by_risk = with_uplift.worklist(WorklistRequest(**base), "w1")
    by_benefit = with_uplift.worklist(WorklistRequest(**base, order="expected_benefit"), "w2")
    assert by_benefit.order == WorklistOrder.EXPECTED_BENEFIT and by_risk.order == "risk"
    assert by_benefit.uplift_model_version == "3"
    rows = by_benefit.rows
    # The same appointments, in another order (the medicaid term outweighs risk for some)
    assert {r.appointment_id for r in rows} == {r.appointment_id for r in by_risk.rows}
    assert [r.appointment_id for r in rows] != [r.appointment_id for r in by_risk.rows]
    # Estimated ones first, largest benefit first; then the others (called, or booked late)
    nulls = [r.expected_benefit is None for r in rows]
    assert any(nulls) and not all(nulls), "the window needs both kinds of appointment"
    assert nulls == sorted(nulls)
    assert rows == sorted(rows, key=_sort_key)
    benefits = [r.expected_benefit for r in rows if r.expected_benefit is not None]
    assert benefits == sorted(benefits, reverse=True)
    assert all(0.0 <= r.expected_benefit <= r.risk for r in rows if r.expected_benefit is not None)
    risks_of_nulls = [r.risk for r in rows if r.expected_benefit is None]
    assert risks_of_nulls == sorted(risks_of_nulls, reverse=True)
    # With one call a day, each day keeps the appointment a call helps most
    capped = with_uplift.worklist(
        WorklistRequest(**{**base, "capacity": 1}, order="expected_benefit"), "w3"
    )
    days = [r.appointment_at.date() for r in capped.rows]
    assert len(days) == len(set(days)) == len({r.appointment_at.date() for r in rows})
    for row in capped.rows:
        first_of_day = next(r for r in rows if r.appointment_at.date() == row.appointment_at.date())
        assert row.appointment_id == first_of_day.appointment_id


def test_order_worklist_breaks_ties_by_risk_then_time_and_puts_nulls_last() -> None:
    at = datetime(2025, 7, 2, 9)

    def row(i: str, risk: float, benefit: float | None, hours: int = 0) -> WorklistRow:
        return WorklistRow(
            appointment_id=i,
            risk=risk,
            tier=RiskTier.LOW,
            top_factors=[],
            recommended_action="standard reminder",
            expected_benefit=benefit,
            appointment_at=at + timedelta(hours=hours),
            specialist_id=None,
        )

    rows = [
        row("null-riskiest", 0.9, None),
        row("tie-low-risk", 0.2, 0.05),
        row("tie-high-risk-late", 0.4, 0.05, hours=2),
        row("tie-high-risk-early", 0.4, 0.05, hours=1),
        row("best", 0.1, 0.08),
        row("null-low", 0.3, None),
    ]
    by_benefit = order_worklist(rows, WorklistOrder.EXPECTED_BENEFIT)
    assert [r.appointment_id for r in by_benefit] == [
        "best",
        "tie-high-risk-early",
        "tie-high-risk-late",
        "tie-low-risk",
        "null-riskiest",
        "null-low",
    ]
    by_risk = order_worklist(rows, WorklistOrder.RISK)
    assert [r.appointment_id for r in by_risk][:2] == ["null-riskiest", "tie-high-risk-early"]


def _audit(store: Store, request_id: str) -> dict[str, Any]:
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT status, model_versions FROM audit WHERE request_id = :r"),
                {"r": request_id},
            )
            .mappings()
            .one()
        )
    return dict(row)


def test_order_by_benefit_without_the_model_is_a_409_naming_order(
    without_uplift: Runtime, keys: dict[Role, dict[str, str]], store: Store
) -> None:
    start, end = _window(store, days=2)
    body = {"start": str(start.date()), "end": str(end.date()), "order": "expected_benefit"}
    out = dispatch(without_uplift, WORKLIST, keys[Role.OUTREACH], body)
    assert out.status == 409, out.body
    assert "order" in out.body["error"] and "outreach-uplift model" in out.body["error"]
    assert "not loaded" in out.body["error"]
    assert _audit(store, out.body["request_id"])["status"] == 409
    # The default order still answers
    ok = dispatch(without_uplift, WORKLIST, keys[Role.OUTREACH], {**body, "order": "risk"})
    assert ok.status == 200 and ok.body["order"] == "risk"
    assert ok.body["uplift_model_version"] is None


@pytest.mark.parametrize("bad", ["soonest", 3, None, "RISK"])
def test_a_bad_order_is_a_422_naming_the_field(
    without_uplift: Runtime, keys: dict[Role, dict[str, str]], bad: Any
) -> None:
    body = {"start": "2025-07-01", "end": "2025-07-02", "order": bad}
    out = dispatch(without_uplift, WORKLIST, keys[Role.OUTREACH], body)
    assert out.status == 422, out.body
    assert [e["field"] for e in out.body["errors"]] == ["order"]
    problem = out.body["errors"][0]["problem"]
    assert "'risk'" in problem and "'expected_benefit'" in problem
    assert "soonest" not in json.dumps(out.body)


def test_the_endpoints_carry_the_benefit_and_the_csv_has_its_column(
    with_uplift: Runtime,
    keys: dict[Role, dict[str, str]],
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    appointments = _appointments(store)
    with caplog.at_level(logging.DEBUG):
        risk = dispatch(
            with_uplift, NO_SHOW_RISK, keys[Role.OUTREACH], {"appointments": appointments}
        )
        start, end = _window(store, days=3)
        body = {"start": str(start.date()), "end": str(end.date()), "capacity": 500}
        wl = dispatch(
            with_uplift, WORKLIST, keys[Role.OUTREACH], {**body, "order": "expected_benefit"}
        )
    assert risk.status == 200 and wl.status == 200
    assert all("expected_benefit" in p for p in risk.body["predictions"])
    assert "outreach_uplift" in str(_audit(store, risk.body["request_id"])["model_versions"])
    assert wl.body["order"] == "expected_benefit" and wl.body["uplift_model_version"] == "3"
    # The logs name no patient or appointment
    upcoming = store.upcoming_appointments(start, end + timedelta(days=1))
    logged = caplog.text
    for value in [
        *upcoming["patient_id"].dropna().astype(str),
        *(a["appointment_id"] for a in appointments),
    ]:
        assert value not in logged
    # CSV: expected_benefit right after risk, 4 decimals, empty when null
    csv = _csv_response(wl).body.decode()
    header, *lines = csv.strip().splitlines()
    columns = header.split(",")
    assert columns == list(WORKLIST_CSV_COLUMNS)
    assert columns.index("expected_benefit") == columns.index("risk") + 1
    at = columns.index("expected_benefit")
    assert len(lines) == len(wl.body["rows"])
    for line, row in zip(lines, wl.body["rows"], strict=True):
        cells = line.split(",")
        assert cells[0] == row["appointment_id"]
        b = row["expected_benefit"]
        assert cells[at] == ("" if b is None else f"{b:.4f}")
    assert any(row["expected_benefit"] is None for row in wl.body["rows"])
    assert any(row["expected_benefit"] is not None for row in wl.body["rows"])


def test_a_bundle_with_other_features_builds_its_own_matrix(
    tmp_path: Path,
    store: Store,
    bundles: dict[str, Path],
    with_uplift: Runtime,
    as_of: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a bundle whose feature spec differs from the no-show model's (a prior rate its
    # effect terms do not use), it cannot reuse the no-show matrix
    spec = dataclasses.replace(_spec(bundles), base_rate=_spec(bundles).base_rate / 2)
    other = _save_uplift(tmp_path / "other", spec)
    rt = Runtime(
        store.url,
        bundles["ranker"],
        bundles["no_show"],
        now=as_of,
        store=store,
        uplift_dir=other,
    )
    assert rt.load(), rt.not_ready_reason
    assert rt.state.uplift is not None
    assert not rt.state.uplift.same_features(rt.state.predictor.spec)
    built: list[int] = []
    features = UpliftPredictor.features

    def spy(self: UpliftPredictor, flat: pd.DataFrame, events: Any) -> pd.DataFrame:
        built.append(len(flat))
        return features(self, flat, events)

    monkeypatch.setattr(UpliftPredictor, "features", spy)
    req = NoShowRiskRequest.model_validate({"appointments": _appointments(store)})
    mine = rt.no_show_risk(req, "r").predictions
    shared = with_uplift.no_show_risk(req, "r").predictions
    # Then it builds its own, once per request, and the benefits are the same
    assert built == [len(req.appointments)]
    assert with_uplift.state.uplift is not None
    assert with_uplift.state.uplift.same_features(with_uplift.state.predictor.spec)
    assert [r.risk for r in mine] == [r.risk for r in shared]
    assert [r.expected_benefit is None for r in mine] == [
        r.expected_benefit is None for r in shared
    ]
    assert [r.expected_benefit or 0.0 for r in mine] == pytest.approx(
        [r.expected_benefit or 0.0 for r in shared], rel=1e-12
    )
    assert any(r.expected_benefit for r in mine)
