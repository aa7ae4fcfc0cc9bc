"""The service's request handling in-process (no HTTP): `dispatch` over every endpoint of the
table, with keys, roles, validation, body sentinels, audit rows and tier thresholds."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from serving.keys import Role, create_key
from serving.runtime import Runtime, parse_tiers
from serving.service import ENDPOINTS, INVALID_JSON, JSON_ENDPOINTS, TOO_LARGE, Endpoint, dispatch
from serving.store import Store
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
    return loaded_runtime(tmp_path_factory.mktemp("svc"), small_world, bundles, as_of)


def role_headers(store: Store) -> dict[Role, dict[str, str]]:
    """A new key per role in `store`, as request headers."""
    return {role: {"authorization": f"Bearer {create_key(store, role)[1]}"} for role in Role}


@pytest.fixture(scope="module")
def keys(runtime: Runtime) -> dict[Role, dict[str, str]]:
    return role_headers(runtime.store)


def _endpoint(method: str, path: str) -> Endpoint:
    return next(e for e in ENDPOINTS if e.method == method and e.path == path)


def _audit_status(runtime: Runtime, request_id: str) -> int:
    with runtime.store.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT status FROM audit WHERE request_id = :r"), {"r": request_id}
            ).scalar_one()
        )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_every_endpoint_needs_a_key_and_the_right_role(
    runtime: Runtime, keys: dict[Role, dict[str, str]], endpoint: Endpoint
) -> None:
    body: Any = {} if endpoint.body == "json" else None
    out = dispatch(runtime, endpoint, {}, body)
    assert out.status == 401 and out.headers["WWW-Authenticate"] == "Bearer"
    assert _audit_status(runtime, out.body["request_id"]) == 401
    for role in Role:
        out = dispatch(runtime, endpoint, keys[role], body)
        if role in endpoint.roles:
            assert out.status not in (401, 403)
        else:
            assert out.status == 403, role


def test_sentinels_answer_413_and_422_after_the_key_check(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    for endpoint in JSON_ENDPOINTS.values():
        ok = keys[next(iter(endpoint.roles))]
        assert dispatch(runtime, endpoint, {}, TOO_LARGE).status == 401
        assert dispatch(runtime, endpoint, ok, TOO_LARGE).status == 413
        out = dispatch(runtime, endpoint, ok, INVALID_JSON)
        assert out.status == 422 and out.body["errors"] == [
            {"field": "body", "problem": "not valid JSON"}
        ]


def test_a_valid_recommendation_is_200_with_versions_audited(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    body = _referral(runtime.store)
    out = dispatch(runtime, _endpoint("POST", "/recommend"), keys[Role.REFERRAL_UI], body)
    assert out.status == 200 and out.body["specialists"]
    assert out.body["request_id"] == out.headers["X-Request-ID"]
    with runtime.store.engine.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT status, role, patient_hash, model_versions FROM audit WHERE request_id = :r"
                ),
                {"r": out.body["request_id"]},
            )
            .mappings()
            .one()
        )
    assert row["status"] == 200 and row["role"] == "referral_ui"
    patient = body["referral"]["patient"]["patient_id"]
    assert row["patient_hash"] and patient not in str(row["patient_hash"])
    assert "ranker" in str(row["model_versions"])


def test_the_key_path_parameter_is_validated(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    revoke = _endpoint("DELETE", "/admin/keys/{key_id}")
    out = dispatch(runtime, revoke, keys[Role.ADMIN], {"key_id": "NOT-HEX"})
    assert out.status == 422 and out.body["errors"][0]["field"] == "key_id"
    assert "NOT-HEX" not in str(out.body)
    out = dispatch(runtime, revoke, keys[Role.ADMIN], {"key_id": "0123456789abcdef"})
    assert out.status == 404


def test_create_key_is_201_and_the_key_works(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    out = dispatch(
        runtime, _endpoint("POST", "/admin/keys"), keys[Role.ADMIN], {"role": "outreach"}
    )
    assert out.status == 201
    new = {"authorization": f"Bearer {out.body['secret']}"}
    assert dispatch(runtime, _endpoint("GET", "/admin/keys"), new, None).status == 403
    assert dispatch(runtime, _endpoint("GET", "/admin/keys"), keys[Role.ADMIN], None).status == 200


def test_tier_thresholds_can_be_set_at_serving_time(
    runtime: Runtime, bundles: dict[str, Path], as_of: datetime
) -> None:
    assert parse_tiers("medium=0.1, high=0.5") == {"medium": 0.1, "high": 0.5}
    for bad in ("medium=0.5,high=0.1", "high=0.4", "medium=x,high=0.4", "low=0.1,high=0.2"):
        with pytest.raises(ValueError):
            parse_tiers(bad)
    # Everything at or above 1e-6 is "high" with these thresholds
    rt = Runtime(
        runtime.store.url,
        bundles["ranker"],
        bundles["no_show"],
        now=as_of,
        store=runtime.store,
        tiers="medium=0.000001,high=0.000002",
    )
    assert rt.load()
    assert rt.state.predictor.tiers == {"medium": 0.000001, "high": 0.000002}
    broken = Runtime(
        runtime.store.url, bundles["ranker"], bundles["no_show"], store=runtime.store, tiers="x"
    )
    assert not broken.load()
    assert "tier thresholds" in (broken.not_ready_reason or "")


def _fhir_referral(body: dict[str, Any], *, contained: bool) -> dict[str, Any]:
    """The FHIR ServiceRequest saying what the /recommend body `body` says."""
    ref, p = body["referral"], body["referral"]["patient"]
    patient = {
        "resourceType": "Patient",
        "id": "pt",
        "birthDate": str(2025 - int(p["age"])),  # the small world's clock is in 2025
        "gender": {"F": "female", "M": "male"}[p["sex"]],
        "communication": [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": p["language"]}]}}
        ],
        "address": [
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                        "extension": [
                            {"url": "latitude", "valueDecimal": p["latitude"]},
                            {"url": "longitude", "valueDecimal": p["longitude"]},
                        ],
                    }
                ]
            }
        ],
    }
    coverage = {
        "resourceType": "Coverage",
        "id": "cov",
        "status": "active",
        "beneficiary": {"reference": "#pt"},
        "payor": [{"display": "payer"}],
        "class": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                            "code": "plan",
                        }
                    ]
                },
                "value": p["insurance_plan_id"],
            }
        ],
    }
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": "routine",
        "performerType": {
            "coding": [{"system": "http://nucc.org/provider-taxonomy", "code": ref["specialty"]}]
        },
        "reasonCode": [
            {
                "coding": [
                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": ref["reason_code"]}
                ]
            }
        ],
    }
    if contained:
        request |= {
            "contained": [patient, coverage],
            "subject": {"reference": "#pt"},
            "insurance": [{"reference": "#cov"}],
        }
    else:
        request["subject"] = {"reference": f"Patient/{p['patient_id']}"}
    return request


def test_a_fhir_service_request_gets_the_same_ranked_list_as_its_json_body(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    recommend = _endpoint("POST", "/recommend")
    body = _referral(runtime.store)
    body.pop("k")
    body["referral"]["patient"].pop("patient_id")
    plain = dispatch(runtime, recommend, keys[Role.REFERRAL_UI], body)
    fhir = dispatch(
        runtime, recommend, keys[Role.REFERRAL_UI], _fhir_referral(body, contained=True)
    )
    assert plain.status == fhir.status == 200
    ids = [s["specialist_id"] for s in plain.body["specialists"]]
    assert ids and [s["specialist_id"] for s in fhir.body["specialists"]] == ids
    assert [s["reasons"] for s in fhir.body["specialists"]] == [
        s["reasons"] for s in plain.body["specialists"]
    ]


def test_a_fhir_service_request_can_reference_a_stored_patient(
    runtime: Runtime, keys: dict[Role, dict[str, str]]
) -> None:
    recommend = _endpoint("POST", "/recommend")
    stored = runtime.store.read_tables(["patients"])["patients"].iloc[3]
    body = _referral(runtime.store)
    body["referral"]["patient"] |= {
        "patient_id": str(stored["patient_id"]),
        "latitude": float(stored["latitude"]),
        "longitude": float(stored["longitude"]),
        "insurance_plan_id": str(stored["insurance_plan_id"]),
        "sex": str(stored["sex"]),
        "language": str(stored["preferred_language"]),
        "age": 2025 - int(stored["birth_year"]),
    }
    body.pop("k")
    fhir = dispatch(
        runtime, recommend, keys[Role.REFERRAL_UI], _fhir_referral(body, contained=False)
    )
    plain = dispatch(runtime, recommend, keys[Role.REFERRAL_UI], body)
    assert fhir.status == 200, fhir.body
    assert [s["specialist_id"] for s in fhir.body["specialists"]] == [
        s["specialist_id"] for s in plain.body["specialists"]
    ]
    # the audit row hashes the referenced patient's id, as for a JSON body
    with runtime.store.engine.connect() as conn:
        hashed = conn.execute(
            text("SELECT patient_hash FROM audit WHERE request_id = :r"),
            {"r": fhir.body["request_id"]},
        ).scalar_one()
    assert hashed and str(stored["patient_id"]) not in str(hashed)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("performerType"), "ServiceRequest.performerType"),
        (
            lambda r: r.update(subject={"reference": "Patient/PT-NOT-STORED"}),
            "ServiceRequest.subject",
        ),
        (lambda r: r.update(priority="whenever"), "ServiceRequest.priority"),
        (lambda r: r["contained"][0].update(gender="unknown"), "Patient.gender"),
    ],
    ids=["no specialty", "unknown patient", "bad priority", "bad gender"],
)
def test_a_bad_fhir_service_request_is_a_422_naming_the_element(
    runtime: Runtime, keys: dict[Role, dict[str, str]], change: Any, field: str
) -> None:
    body = _referral(runtime.store)
    request = _fhir_referral(body, contained=True)
    change(request)
    out = dispatch(runtime, _endpoint("POST", "/recommend"), keys[Role.REFERRAL_UI], request)
    assert out.status == 422, out.body
    assert out.body["errors"][0]["field"].startswith(field), out.body
    assert _audit_status(runtime, out.body["request_id"]) == 422


def test_scored_tiers_are_counted_per_row_for_metrics() -> None:
    from prometheus_client import REGISTRY

    from serving.service import _count

    def value(tier: str) -> float:
        labels = {"endpoint": "/no_show_risk", "tier": tier}
        return REGISTRY.get_sample_value("referral_ml_risk_tier_total", labels) or 0.0

    before = {t: value(t) for t in ("low", "medium", "high")}
    rows: list[Any] = [{"tier": "high"}, {"tier": "high"}, {"tier": "low"}, {"tier": None}, "x"]
    _count("/no_show_risk", {"predictions": rows})
    assert {t: value(t) - before[t] for t in before} == {"low": 1.0, "medium": 0.0, "high": 2.0}
