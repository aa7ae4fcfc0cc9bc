"""The prediction log: one row per scored appointment (no-show, and outreach-uplift when
estimated) and per returned specialist of a referral; one bulk write; never a patient id; a
failed write never fails the request."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from serving.keys import Role, create_key
from serving.runtime import Runtime
from serving.schemas import NoShowRiskRequest, RecommendRequest, WorklistRequest
from serving.service import JSON_ENDPOINTS, dispatch
from tests.unit.runtime_fixtures import loaded_runtime
from tests.unit.test_runtime import _referral

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory,
    small_world: Path,
    bundles: dict[str, Path],
    as_of: datetime,
) -> Runtime:
    return loaded_runtime(tmp_path_factory.mktemp("plog"), small_world, bundles, as_of)


def _appointments(runtime: Runtime, as_of: datetime, n: int) -> list[dict[str, object]]:
    flat = runtime.store.upcoming_appointments(as_of, as_of + timedelta(days=30)).head(n)
    return [
        {
            "appointment_id": str(r.appointment_id),
            "patient_id": str(r.patient_id),
            "age": int(r.age),
            "sex": str(r.sex),
            "language": str(r.language),
            "payer_type": str(r.payer_type),
            "specialty": str(r.specialty),
            "booked_at": r.booked_at.isoformat(),
            "appointment_at": r.appointment_at.isoformat(),
            "urgency": str(r.urgency),
            "referral_type": str(r.referral_type),
        }
        for r in flat.itertuples()
    ]


def test_the_table_is_created_and_counted(runtime: Runtime) -> None:
    assert {"predictions", "feedback"} <= set(inspect(runtime.store.engine).get_table_names())
    assert "predictions" in runtime.store.counts()


def test_no_show_risk_logs_one_row_per_appointment(runtime: Runtime, as_of: datetime) -> None:
    appointments = _appointments(runtime, as_of, 4)
    before = len(runtime.store.predictions())
    res = runtime.no_show_risk(
        NoShowRiskRequest.model_validate({"appointments": appointments}), "rid-ns"
    )
    log = runtime.store.predictions("no-show")
    rows = log[log["request_id"] == "rid-ns"]
    assert len(runtime.store.predictions()) == before + 4  # no uplift model: no benefit rows
    assert rows["subject"].tolist() == [a["appointment_id"] for a in appointments]
    assert rows["score"].tolist() == pytest.approx([p.risk for p in res.predictions])
    assert set(rows["model_version"]) == {res.model_version}
    assert rows["item"].isna().all() and rows["rank"].isna().all()
    assert (rows["as_of"] == as_of).all()  # the service's clock, compared with the visit
    # never a patient id in the log
    patients = {a["patient_id"] for a in appointments}
    cells = {str(v) for v in runtime.store.predictions().astype(str).to_numpy().ravel()}
    assert not patients & cells


def test_the_worklist_logs_every_scored_appointment(runtime: Runtime, as_of: datetime) -> None:
    day = as_of.date()
    req = WorklistRequest.model_validate(
        {"start": day.isoformat(), "end": (day + timedelta(days=6)).isoformat(), "capacity": 1}
    )
    res = runtime.worklist(req, "rid-wl")
    log = runtime.store.predictions("no-show")
    rows = log[log["request_id"] == "rid-wl"]
    upcoming = runtime.store.upcoming_appointments(
        as_of.replace(hour=0, minute=0, second=0, microsecond=0),
        as_of.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=7),
    )
    assert len(rows) == len(upcoming) > len(res.rows)  # scored, not only the kept ones
    kept = {r.appointment_id: r.risk for r in res.rows}
    logged = dict(zip(rows["subject"], rows["score"], strict=True))
    assert all(logged[a] == pytest.approx(risk) for a, risk in kept.items())


def test_recommend_logs_the_top_k_only_with_a_referral_id(runtime: Runtime) -> None:
    body = _referral(runtime.store)
    before = len(runtime.store.predictions("specialist-ranker"))
    runtime.recommend(RecommendRequest.model_validate(body), "rid-no-ref")
    assert len(runtime.store.predictions("specialist-ranker")) == before
    referral_id = str(runtime.store.read_tables(["referrals"])["referrals"]["referral_id"].iloc[0])
    body["referral"]["referral_id"] = referral_id  # type: ignore[index]
    res = runtime.recommend(RecommendRequest.model_validate(body), "rid-ref")
    log = runtime.store.predictions("specialist-ranker")
    rows = log[log["request_id"] == "rid-ref"]
    assert rows["item"].tolist() == [s.specialist_id for s in res.specialists]
    assert rows["rank"].tolist() == list(range(1, len(res.specialists) + 1))
    assert rows["score"].tolist() == pytest.approx([s.score for s in res.specialists])
    assert set(rows["subject"]) == {referral_id}


def test_a_failed_log_write_does_not_fail_the_request(
    runtime: Runtime,
    as_of: datetime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(rows: object) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(runtime.store, "log_predictions", broken)
    appointments = _appointments(runtime, as_of, 2)
    key = {"authorization": f"Bearer {create_key(runtime.store, Role.OUTREACH)[1]}"}
    with caplog.at_level(logging.WARNING):
        out = dispatch(
            runtime, JSON_ENDPOINTS[("POST", "/no_show_risk")], key, {"appointments": appointments}
        )
    assert out.status == 200 and len(out.body["predictions"]) == 2
    warnings = [r.getMessage() for r in caplog.records if "prediction log" in r.getMessage()]
    assert warnings
    assert not any(
        str(a["appointment_id"]) in w or str(a["patient_id"]) in w
        for w in warnings
        for a in appointments
    )


def test_one_bulk_insert_per_request(
    runtime: Runtime, as_of: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = runtime.store.log_predictions

    def counting(rows: list[dict[str, object]]) -> int:
        calls.append(len(rows))
        return original(rows)

    monkeypatch.setattr(runtime.store, "log_predictions", counting)
    runtime.no_show_risk(
        NoShowRiskRequest.model_validate({"appointments": _appointments(runtime, as_of, 5)}),
        "rid-bulk",
    )
    assert calls == [5]
