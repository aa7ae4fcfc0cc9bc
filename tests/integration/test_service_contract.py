"""The service's contract over real HTTP: its OpenAPI document, the worked examples, schemathesis
against /docs.json, key management, the body limit, CORS and readiness with a corrupt model."""

from __future__ import annotations

import http.client
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from serving.keys import Role
from serving.openapi import openapi_document
from serving.service import MAX_BODY_BYTES
from tests.integration.servers import CORS_ORIGIN, Server, call, referral_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_docs_json_is_the_services_own_document(server: Server) -> None:
    status, headers, body = call(server, "/docs.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == json.loads(json.dumps(openapi_document()))


@pytest.mark.parametrize(
    ("name", "path", "role", "expected"),
    [
        ("recommend.json", "/recommend", Role.REFERRAL_UI, {200}),
        ("recommend_empty.json", "/recommend", Role.REFERRAL_UI, {200}),
        ("no_show_risk.json", "/no_show_risk", Role.OUTREACH, {200}),
        ("worklist.json", "/outreach/worklist", Role.OUTREACH, {200}),
        ("worklist_csv.json", "/outreach/worklist", Role.OUTREACH, {200}),
        # the example's appointment is the demo world's; this test world may not have it
        ("contact.json", "/outreach/contact", Role.OUTREACH, {200, 404}),
        ("create_key.json", "/admin/keys", Role.ADMIN, {201}),
    ],
)
def test_the_worked_examples_are_accepted(
    server: Server, name: str, path: str, role: Role, expected: set[int]
) -> None:
    body = json.loads((EXAMPLES / name).read_text())
    status, _, text_ = call(server, path, body, server.keys[role])
    assert status in expected, text_


def test_the_empty_recommendation_example_names_the_filter(server: Server) -> None:
    body = json.loads((EXAMPLES / "recommend_empty.json").read_text())
    status, _, text_ = call(server, "/recommend", body, server.keys[Role.REFERRAL_UI])
    out = json.loads(text_)
    assert status == 200 and out["specialists"] == [] and "within" in out["empty_reason"]


# ---------------------------------------------------------------- schemathesis against /docs.json

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 20  # per operation and generation mode: bounded, a few seconds per operation
SKIPPED = {"POST /admin/reload"}  # reloads the models each call; tested on its own


def _exercise(
    strategy: Any, label: str, url: str, headers: dict[str, str], failures: dict[str, list[str]]
) -> int:
    """Run up to MAX_EXAMPLES cases of one operation; failed checks go to `failures`."""
    count = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal count
        count += 1
        try:
            case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)
        except (AssertionError, ExceptionGroup) as exc:  # one check failed, or several
            failures.setdefault(label, []).append(str(exc)[:800])

    run()
    return count


def test_schemathesis_finds_no_5xx_and_no_response_off_the_schema(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    headers = {"Authorization": f"Bearer {server.keys[Role.ADMIN]}"}
    failures: dict[str, list[str]] = {}
    calls: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIPPED:
            continue
        has_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
        for mode in ["positive", "negative"] if has_input else ["positive"]:
            strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
            calls[operation.label] += _exercise(
                strategy, operation.label, server.url, headers, failures
            )
    assert len(calls) >= 10, calls
    assert sum(calls.values()) >= 200, calls
    assert not failures, json.dumps({k: v[:2] for k, v in failures.items()}, indent=1)


# ---------------------------------------------------------------- keys over HTTP


def test_an_admin_creates_lists_and_revokes_keys(server: Server) -> None:
    admin = server.keys[Role.ADMIN]
    status, _, text_ = call(server, "/admin/keys", {"role": "outreach"}, admin)
    assert status == 201, text_
    created = json.loads(text_)
    assert created["role"] == "outreach" and created["secret"].startswith("rml_")
    # The new key works at once for its role, and only for its role
    risk = json.loads((EXAMPLES / "no_show_risk.json").read_text())
    assert call(server, "/no_show_risk", risk, created["secret"])[0] == 200
    assert call(server, "/recommend", {}, created["secret"])[0] == 403
    # Listing shows it without any secret or hash
    status, _, text_ = call(server, "/admin/keys", key=admin)
    listed = json.loads(text_)["keys"]
    assert status == 200 and created["key_id"] in {k["key_id"] for k in listed}
    assert created["secret"] not in text_ and "scrypt" not in text_
    # Revoked, it stops working at once; revoking again is a 404
    status, _, text_ = call(server, f"/admin/keys/{created['key_id']}", key=admin, method="DELETE")
    assert status == 200 and json.loads(text_)["revoked"] is True
    assert call(server, "/no_show_risk", risk, created["secret"])[0] == 401
    assert call(server, f"/admin/keys/{created['key_id']}", key=admin, method="DELETE")[0] == 404


def test_keys_are_admin_only_and_the_last_admin_key_stays(server: Server) -> None:
    for role in (Role.REFERRAL_UI, Role.OUTREACH):
        assert call(server, "/admin/keys", key=server.keys[role])[0] == 403
        assert call(server, "/admin/keys", {"role": "admin"}, server.keys[role])[0] == 403
    admin = server.keys[Role.ADMIN]
    status, _, text_ = call(server, "/admin/keys", {"role": "superuser"}, admin)
    assert status == 422 and json.loads(text_)["errors"][0]["field"] == "role"
    assert "superuser" not in text_
    # Revoke every other admin key, then the last one is refused with 409
    admin_id = admin.split("_")[1]
    keys = json.loads(call(server, "/admin/keys", key=admin)[2])["keys"]
    for k in keys:
        if k["role"] == "admin" and k["revoked_at"] is None and k["key_id"] != admin_id:
            call(server, f"/admin/keys/{k['key_id']}", key=admin, method="DELETE")
    status, _, text_ = call(server, f"/admin/keys/{admin_id}", key=admin, method="DELETE")
    assert status == 409 and "last active admin key" in json.loads(text_)["error"]
    assert call(server, "/admin/keys", key=admin)[0] == 200


# ---------------------------------------------------------------- body limit


def test_an_oversized_body_is_413_after_the_key_check(server: Server) -> None:
    big = b'{"appointments": [' + b" " * MAX_BODY_BYTES + b"]}"
    key = server.keys[Role.OUTREACH]
    status, headers, text_ = call(server, "/no_show_risk", key=key, raw=big)
    assert status == 413, text_
    assert "over the limit" in json.loads(text_)["error"]
    assert call(server, "/no_show_risk", raw=big)[0] == 401  # no key: 401 first
    with server.store.engine.connect() as conn:
        audited = conn.execute(
            text("SELECT status FROM audit WHERE request_id = :r"), {"r": headers["x-request-id"]}
        ).scalar_one()
    assert audited == 413


def test_a_chunked_body_is_cut_off_at_the_limit(server: Server) -> None:
    # Without a Content-Length the body is counted as it arrives and refused past the limit
    def chunks() -> Iterator[bytes]:
        yield b'{"appointments": ['
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536
        yield b"]}"

    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {
        "Authorization": f"Bearer {server.keys[Role.OUTREACH]}",
        "Content-Type": "application/json",
    }
    try:
        conn.request("POST", "/no_show_risk", body=chunks(), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        assert "over the limit" in json.loads(response.read())["error"]
    finally:
        conn.close()


# ---------------------------------------------------------------- CORS


def test_cors_allows_the_configured_origin_only(server: Server) -> None:
    preflight = {
        "Origin": CORS_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    status, headers, _ = call(server, "/recommend", method="OPTIONS", headers=preflight)
    assert status == 200 and headers["access-control-allow-origin"] == CORS_ORIGIN
    other = {**preflight, "Origin": "http://elsewhere.example"}
    status, headers, _ = call(server, "/recommend", method="OPTIONS", headers=other)
    assert status == 400 and "access-control-allow-origin" not in headers
    # A real request from the allowed origin may read the request id header
    status, headers, _ = call(server, "/livez", headers={"Origin": CORS_ORIGIN})
    assert headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "x-request-id" in headers.get("access-control-expose-headers", "").lower()


@pytest.mark.parametrize(
    ("name", "path", "role"),
    [
        ("recommend.json", "/recommend", Role.REFERRAL_UI),
        ("no_show_risk.json", "/no_show_risk", Role.OUTREACH),
        ("worklist.json", "/outreach/worklist", Role.OUTREACH),
    ],
)
def test_cors_headers_on_every_answer_to_the_allowed_origin(
    server: Server, name: str, path: str, role: Role
) -> None:
    # The gateway answers /recommend and /no_show_risk itself, and rejects bad bodies itself:
    # a browser must be able to read those answers too, and only from the allowed origin
    body = json.loads((EXAMPLES / name).read_text())
    origin = {"Origin": CORS_ORIGIN}
    for key, raw, expected in [
        (server.keys[role], json.dumps(body).encode(), 200),
        (server.keys[role], b'{"truncated": ', 422),
        (None, json.dumps(body).encode(), 401),
    ]:
        status, headers, text_ = call(server, path, key=key, raw=raw, headers=origin)
        assert status == expected, text_
        assert headers.get("access-control-allow-origin") == CORS_ORIGIN, (status, headers)
        assert "x-request-id" in headers.get("access-control-expose-headers", "").lower()
        assert json.loads(text_)["request_id"] == headers["x-request-id"]
    foreign = {"Origin": "http://elsewhere.example"}
    status, headers, _ = call(server, path, key=server.keys[role], raw=raw, headers=foreign)
    assert "access-control-allow-origin" not in headers


# ---------------------------------------------------------------- readiness with a corrupt model


def test_a_corrupt_model_keeps_the_service_not_ready_with_the_reason(
    server: Server, tmp_path: Path
) -> None:
    broken = Path(shutil.copytree(server.ranker, tmp_path / "ranker"))
    model = broken / "model.txt"
    model.write_text(model.read_text()[: model.stat().st_size // 3])
    with referral_service(
        tmp_path,
        store_url=server.store.url,
        ranker=broken,
        no_show=server.no_show,
        as_of=server.as_of,
        wait_ready=False,
    ) as url:
        fault = Server(url, server.store, server.keys, server.tables, broken, server.no_show, "")
        status, _, text_ = call(fault, "/readyz")
        out = json.loads(text_)
        assert status == 503 and out["ready"] is False
        assert "ranker bundle" in out["reason"] and str(broken) in out["reason"]
        # Never a made-up score: the API answers 503, while keys can still be managed
        referral = json.loads((EXAMPLES / "recommend.json").read_text())
        status, _, text_ = call(fault, "/recommend", referral, server.keys[Role.REFERRAL_UI])
        assert status == 503 and "not ready" in json.loads(text_)["error"]
        status, _, text_ = call(fault, "/admin/reload", raw=b"", key=server.keys[Role.ADMIN])
        assert status == 503 and "ranker bundle" in json.loads(text_)["error"]
        assert call(fault, "/admin/keys", key=server.keys[Role.ADMIN])[0] == 200
