"""The OpenAPI document served at /docs.json: complete, valid, and its examples are true."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware

from serving.openapi import RESPONSE_EXAMPLES, openapi_document
from serving.service import ENDPOINTS, Endpoint, cors_options, service_config

pytestmark = pytest.mark.unit

INFRA_PATHS = {"/livez", "/readyz", "/metrics"}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    return openapi_document()["paths"][endpoint.path][endpoint.method.lower()]


def _resolve(ref: str) -> dict[str, Any]:
    name = ref.rsplit("/", 1)[1]
    return openapi_document()["components"]["schemas"][name]


def test_every_endpoint_is_documented_and_nothing_else() -> None:
    doc = openapi_document()
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        if path not in INFRA_PATHS
        for method in item
    }
    assert documented == {(e.method, e.path) for e in ENDPOINTS}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_operation_states_roles_statuses_and_security(endpoint: Endpoint) -> None:
    op = _operation(endpoint)
    roles = re.search(r"Roles: ([a-z_, ]+)\.", op["description"])
    assert roles is not None
    assert set(roles.group(1).split(", ")) == {r.value for r in endpoint.roles}
    statuses = set(op["responses"])
    assert {str(endpoint.success), "401", "403", "500"} <= statuses
    if endpoint.model is not None:
        assert "422" in statuses
    if endpoint.body == "json":
        assert {"413", "422"} <= statuses
        assert op["requestBody"]["required"] is True
    if endpoint.require_ready or endpoint.action == "reload":  # a failed first load: 503
        assert "503" in statuses
    else:  # keys are managed whether or not the models are loaded
        assert "503" not in statuses
    assert op["security"] == [{"bearer": []}, {"apiKey": []}]


@pytest.mark.parametrize(
    "endpoint", [e for e in ENDPOINTS if e.body == "json"], ids=lambda e: e.path
)
def test_request_examples_validate_against_the_model_the_service_uses(endpoint: Endpoint) -> None:
    media = _operation(endpoint)["requestBody"]["content"]["application/json"]
    assert media["schema"]["$ref"].endswith(f"/{endpoint.model.__name__}")  # type: ignore[union-attr]
    examples = [e["value"] for e in media.get("examples", {}).values()] or [media["example"]]
    assert examples
    for example in examples:
        endpoint.model.model_validate(example)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("model", "example"), RESPONSE_EXAMPLES, ids=[m.__name__ for m, _ in RESPONSE_EXAMPLES]
)
def test_response_examples_validate(model: type[BaseModel], example: dict[str, Any]) -> None:
    model.model_validate(example)


def test_every_2xx_json_response_has_an_example() -> None:
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    assert "example" in media or "examples" in media, (path, method, status)
                    if status.startswith("2") and media_type == "application/json":
                        assert "$ref" in media["schema"] or path in INFRA_PATHS


def test_date_times_are_described_without_the_rfc3339_offset_rule() -> None:
    # The service speaks clinic-local date-times; "format: date-time" would demand an offset
    appointment = _resolve("#/components/schemas/Appointment")["properties"]["appointment_at"]
    assert "format" not in appointment
    assert re.match(appointment["pattern"], "2025-07-01T08:00:00")
    assert not re.match(appointment["pattern"], "2025-07-01T08:00:00Z")


def test_the_worklist_order_and_the_expected_benefit_are_documented() -> None:
    request = _resolve("#/components/schemas/WorklistRequest")
    order = request["properties"]["order"]
    assert order["default"] == "risk" and "409" in order["description"]
    assert _resolve(order["$ref"])["enum"] == ["risk", "expected_benefit"]
    assert "order" not in request.get("required", [])
    examples = request["examples"]
    assert any(e.get("order") == "expected_benefit" for e in examples)
    for name in ("RiskRow", "WorklistRow"):
        benefit = _resolve(f"#/components/schemas/{name}")["properties"]["expected_benefit"]
        kinds = {b.get("type") for b in benefit["anyOf"]}
        assert kinds == {"number", "null"}, name
        number = next(b for b in benefit["anyOf"] if b.get("type") == "number")
        assert (number["minimum"], number["maximum"]) == (0, 1)
        assert "denying care" in benefit["description"]
    response = _resolve("#/components/schemas/WorklistResponse")
    assert {"order", "uplift_model_version"} <= set(response["required"])
    worklist = openapi_document()["paths"]["/outreach/worklist"]["post"]
    conflict = worklist["responses"]["409"]["content"]["application/json"]["example"]
    assert "outreach-uplift" in conflict["error"] and "order" in conflict["error"]
    assert "never for denying" in worklist["description"]
    csv = worklist["responses"]["200"]["content"]["text/csv"]["example"]
    assert csv.splitlines()[0].split(",")[3:5] == ["risk", "expected_benefit"]
    plots = openapi_document()["paths"]["/model_info/{model}/plots/{name}"]["get"]
    assert "outreach-uplift" in plots["parameters"][0]["schema"]["enum"]


def test_schemathesis_accepts_the_document() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert {f"{e.method} {e.path}" for e in ENDPOINTS} <= labels


def test_cors_is_off_unless_origins_are_configured() -> None:
    assert "http" not in service_config({})
    assert "http" not in service_config({"REFERRAL_ML_CORS_ORIGINS": " , "})
    cors = service_config({"REFERRAL_ML_CORS_ORIGINS": "https://a.example, https://b.example"})[
        "http"
    ]["cors"]
    assert cors["enabled"] is True
    assert cors["access_control_allow_origins"] == ["https://a.example", "https://b.example"]
    assert "X-Request-ID" in cors["access_control_expose_headers"]


def test_the_gateways_cors_options_are_the_configured_ones() -> None:
    # The gateway answers some routes itself, outside BentoML's CORS middleware: it must apply
    # the same settings, under Starlette's names
    assert cors_options(service_config({})) is None
    config = service_config({"REFERRAL_ML_CORS_ORIGINS": "https://a.example"})
    options = cors_options(config)
    assert options is not None
    assert options["allow_origins"] == ["https://a.example"]
    assert options["expose_headers"] == ["X-Request-ID"]
    assert options["max_age"] == 600
    assert len(options) == len(config["http"]["cors"]) - 1  # every setting but "enabled"
    assert cors_options({"http": {"cors": {"enabled": False, "access_control_max_age": 1}}}) is None
    CORSMiddleware(app=None, **options)  # type: ignore[arg-type]  # Starlette takes them all


def test_the_example_files_are_the_documents_examples() -> None:
    # examples/*.json (used by the README's curl session) must not drift from /docs.json
    import json
    from pathlib import Path

    documented = []
    for item in openapi_document()["paths"].values():
        for op in item.values():
            for media in op.get("requestBody", {}).get("content", {}).values():
                documented += [e["value"] for e in media.get("examples", {}).values()]
                documented += [media["example"]] if "example" in media else []
    files = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.json"))
    assert len(files) >= 7
    for path in files:
        assert json.loads(path.read_text()) in documented, path.name
