"""The BentoML service over real HTTP: a `bentoml serve` subprocess on a free local port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text

from serving.keys import Role
from tests.integration.servers import Server, call

pytestmark = pytest.mark.integration


def _referral(server: Server, latitude: float | None = None) -> dict[str, Any]:
    p, sp = server.tables["patients"].iloc[0], server.tables["specialists"].iloc[0]
    return {
        "referral": {
            "patient": {
                "age": 60,
                "sex": str(p["sex"]),
                "language": str(p["preferred_language"]),
                "latitude": float(sp["latitude"]) + 0.01 if latitude is None else latitude,
                "longitude": float(sp["longitude"]),
                "insurance_plan_id": str(p["insurance_plan_id"]),
                "patient_id": str(p["patient_id"]),
            },
            "specialty": str(sp["specialty"]),
            "reason_code": "I50.9",
        },
        "k": 3,
    }


def test_without_a_key_is_401(server: Server) -> None:
    status, headers, body = call(server, "/recommend", _referral(server))
    assert status == 401
    assert json.loads(body)["request_id"] == headers["x-request-id"]


def test_wrong_role_is_403(server: Server) -> None:
    status, _, _ = call(server, "/recommend", _referral(server), server.keys[Role.OUTREACH])
    assert status == 403


def test_bad_request_is_422_without_the_value(server: Server) -> None:
    body = _referral(server, latitude=123.456)
    status, _, text_ = call(server, "/recommend", body, server.keys[Role.REFERRAL_UI])
    assert status == 422
    fields = [e["field"] for e in json.loads(text_)["errors"]]
    assert "referral.patient.latitude" in fields
    assert "123.456" not in text_


def test_recommend_ranks_specialists(server: Server) -> None:
    status, headers, text_ = call(
        server, "/recommend", _referral(server), server.keys[Role.REFERRAL_UI]
    )
    assert status == 200, text_
    out = json.loads(text_)
    assert out["request_id"] == headers["x-request-id"]
    assert [s["rank"] for s in out["specialists"]] == list(range(1, len(out["specialists"]) + 1))
    assert out["specialists"]
    assert all(s["reasons"] for s in out["specialists"])
    assert out["model_version"] == (server.ranker / "VERSION").read_text().strip()  # type: ignore[operator]


def test_no_show_risk(server: Server) -> None:
    sp = server.tables["specialists"].iloc[0]
    appointment = {
        "appointment_id": "A-1",
        "patient_id": str(server.tables["patients"].iloc[0]["patient_id"]),
        "age": 44,
        "sex": "F",
        "language": "en",
        "payer_type": "medicaid",
        "specialty": str(sp["specialty"]),
        "booked_at": "2025-01-02T09:00:00",
        "appointment_at": "2025-01-20T10:00:00",
        "urgency": "routine",
        "referral_type": "provider",
    }
    status, _, text_ = call(
        server, "/no_show_risk", {"appointments": [appointment]}, server.keys[Role.OUTREACH]
    )
    assert status == 200, text_
    (row,) = json.loads(text_)["predictions"]
    assert 0.0 <= row["risk"] <= 1.0 and row["tier"] in {"low", "medium", "high"}


def test_model_info_is_admin_only(server: Server) -> None:
    status, _, text_ = call(server, "/model_info", key=server.keys[Role.ADMIN])
    assert status == 200, text_
    assert {m["name"] for m in json.loads(text_)["models"]} == {"specialist-ranker", "no-show"}
    status, _, _ = call(server, "/model_info", key=server.keys[Role.REFERRAL_UI])
    assert status == 403


def test_audit_rows_hash_patient_ids(server: Server) -> None:
    # Given one accepted, one unauthenticated, one wrong-role and one invalid request
    sent = [
        call(server, "/recommend", _referral(server), server.keys[Role.REFERRAL_UI]),
        call(server, "/recommend", _referral(server)),
        call(server, "/recommend", _referral(server), server.keys[Role.OUTREACH]),
        call(
            server, "/recommend", _referral(server, latitude=123.456), server.keys[Role.REFERRAL_UI]
        ),
    ]
    ids = [headers["x-request-id"] for _, headers, _ in sent]
    # Then each left an audit row with its status, the patient id hashed, never in the clear
    patient_id = str(server.tables["patients"].iloc[0]["patient_id"])
    with server.store.engine.connect() as conn:
        every = conn.execute(text("SELECT * FROM audit")).mappings().all()
    rows = {r["request_id"]: r for r in every if r["request_id"] in ids}
    assert [rows[i]["status"] for i in ids] == [200, 401, 403, 422]
    assert len(rows[ids[0]]["patient_hash"]) == 64
    assert patient_id not in "\n".join(str(dict(r)) for r in every)


def _window(server: Server, days: int = 7) -> tuple[str, str]:
    upcoming = server.store.upcoming_appointments(
        pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01")
    )
    assert len(upcoming), "the small world has no upcoming appointments"
    first = pd.Timestamp(upcoming["appointment_at"].min()).normalize()
    return first.date().isoformat(), (first + pd.Timedelta(days=days - 1)).date().isoformat()


def test_worklist_is_sorted_by_risk_and_capped_per_day(server: Server) -> None:
    start, end = _window(server)
    body = {"start": start, "end": end, "capacity": 2}
    status, headers, text_ = call(server, "/outreach/worklist", body, server.keys[Role.OUTREACH])
    assert status == 200, text_
    out = json.loads(text_)
    assert out["request_id"] == headers["x-request-id"]
    rows = out["rows"]
    assert rows
    risks = [r["risk"] for r in rows]
    assert risks == sorted(risks, reverse=True)
    per_day = pd.Series([r["appointment_at"][:10] for r in rows]).value_counts()
    assert per_day.max() <= 2
    assert all(start <= day <= end for day in per_day.index)
    assert all(r["tier"] in {"low", "medium", "high"} and r["recommended_action"] for r in rows)
    status, _, _ = call(server, "/outreach/worklist", body, server.keys[Role.REFERRAL_UI])
    assert status == 403


def test_worklist_as_csv(server: Server) -> None:
    start, end = _window(server, days=2)
    body = {"start": start, "end": end, "format": "csv"}
    status, headers, text_ = call(server, "/outreach/worklist", body, server.keys[Role.ADMIN])
    assert status == 200, text_
    assert headers["content-type"].startswith("text/csv")
    lines = text_.splitlines()
    assert lines[0].startswith("appointment_id,appointment_at")
    assert len(lines) >= 2


def test_contact_is_recorded_and_an_unknown_appointment_is_404(server: Server) -> None:
    upcoming = server.store.upcoming_appointments(
        pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01")
    )
    appointment_id = str(upcoming["appointment_id"].iloc[0])
    body = {
        "appointment_id": appointment_id,
        "channel": "call",
        "outcome": "transport_arranged",
        "note": "ride at 8:15",
    }
    status, _, text_ = call(server, "/outreach/contact", body, server.keys[Role.OUTREACH])
    assert status == 200, text_
    assert json.loads(text_)["appointment_id"] == appointment_id
    log = server.store.contacts([appointment_id])
    assert len(log) >= 1 and log["note"].iloc[-1] == "ride at 8:15"
    # The worklist then shows the attempt, so the team does not call twice
    day = str(pd.Timestamp(upcoming["appointment_at"].iloc[0]).date())
    worklist = {"start": day, "end": day, "capacity": 500}
    status, _, text_ = call(server, "/outreach/worklist", worklist, server.keys[Role.OUTREACH])
    row = next(r for r in json.loads(text_)["rows"] if r["appointment_id"] == appointment_id)
    assert row["contact_attempts"] == len(log)
    assert row["last_contact_outcome"] == "transport_arranged" and row["last_contact_at"]
    missing = {"appointment_id": "A-NOPE-404", "channel": "text", "outcome": "no_answer"}
    status, _, text_ = call(server, "/outreach/contact", missing, server.keys[Role.OUTREACH])
    assert status == 404, text_
    assert json.loads(text_)["error"] == "no such appointment"
    assert "A-NOPE-404" not in text_


def test_reload_is_admin_only(server: Server) -> None:
    status, _, text_ = call(server, "/admin/reload", raw=b"", key=server.keys[Role.ADMIN])
    assert status == 200, text_
    out = json.loads(text_)
    assert out["reloaded"] is True
    assert set(out["versions"]) == {"ranker", "no_show"}
    status, _, _ = call(server, "/admin/reload", raw=b"", key=server.keys[Role.OUTREACH])
    assert status == 403


@pytest.mark.parametrize(
    ("path", "role", "raw", "content_type"),
    [
        ("/recommend", Role.REFERRAL_UI, b'{"referral": ', "application/json"),
        ("/no_show_risk", Role.OUTREACH, b"not json at all", "text/plain"),
        ("/outreach/worklist", Role.OUTREACH, b'{"start": "2025-', "application/json"),
        ("/outreach/contact", Role.OUTREACH, b"\xff\xfe", "application/json"),
    ],
)
def test_malformed_json_is_422(
    server: Server, path: str, role: Role, raw: bytes, content_type: str
) -> None:
    status, headers, text_ = call(
        server, path, key=server.keys[role], raw=raw, content_type=content_type
    )
    assert status == 422, text_
    out = json.loads(text_)
    assert out["errors"] == [{"field": "body", "problem": "not valid JSON"}]
    assert out["request_id"] == headers["x-request-id"]
    assert "Traceback" not in text_
    status, _, _ = call(server, path, raw=raw, content_type=content_type)  # no key: 401 first
    assert status == 401


def test_metrics_count_empty_recommendations_by_filter(server: Server) -> None:
    # Given a referral no specialist can serve within 10 m
    body = _referral(server)
    body["referral"]["preferences"] = {"max_distance_km": 0.01}
    status, _, text_ = call(server, "/recommend", body, server.keys[Role.REFERRAL_UI])
    assert status == 200 and json.loads(text_)["specialists"] == []
    # Then /metrics counts it under the filter that emptied the list, with no patient data
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('referral_ml_empty_recommendations_total{filter="distance"}')
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert str(server.tables["patients"].iloc[0]["patient_id"]) not in metrics


@pytest.mark.parametrize("content_type", ["application/fhir+json", "application/json"])
def test_recommend_takes_a_fhir_service_request(server: Server, content_type: str) -> None:
    from tests.unit.test_service_inprocess import _fhir_referral

    body = _referral(server)
    body.pop("k")
    body["referral"]["patient"].pop("patient_id")
    key = server.keys[Role.REFERRAL_UI]
    status, _, plain = call(server, "/recommend", body, key)
    assert status == 200, plain
    request = _fhir_referral(body, contained=True)
    status, _, fhir = call(server, "/recommend", request, key, content_type=content_type)
    assert status == 200, fhir
    ids = [s["specialist_id"] for s in json.loads(plain)["specialists"]]
    assert ids and [s["specialist_id"] for s in json.loads(fhir)["specialists"]] == ids
    request["performerType"]["coding"][0]["code"] = "not-a-code"
    status, _, bad = call(server, "/recommend", request, key, content_type=content_type)
    assert status == 422 and json.loads(bad)["errors"][0]["field"] == "ServiceRequest.performerType"
