"""The BentoML 1.4 HTTP service: ``bentoml serve serving.service:ReferralService``.

Configuration (environment variables, read once when a worker starts):

    REFERRAL_ML_STORE        SQLAlchemy URL of the service database (default sqlite:///referral.db)
    REFERRAL_ML_RANKER_DIR   folder of the specialist-ranker bundle (default: the newest
                             `specialist-ranker` in the BentoML model store, see
                             `referral-ml export`; else models/ranker)
    REFERRAL_ML_NO_SHOW_DIR  folder of the no-show bundle (default: the newest `no-show` in the
                             BentoML model store; else models/no_show)
    REFERRAL_ML_NOW          optional ISO date-time used as "now" (a synthetic world's as_of);
                             default: the wall clock
    REFERRAL_ML_AUDIT_SALT   optional key of the audit hashes (see serving.store)

Endpoints:

    POST /recommend      roles referral_ui, admin    RecommendRequest -> RecommendResponse
    POST /no_show_risk   roles outreach, admin       NoShowRiskRequest -> NoShowRiskResponse
    GET  /model_info     role admin                  ModelInfoResponse
    POST /outreach/worklist  roles outreach, admin   WorklistRequest -> WorklistResponse
                             (format "csv": the same rows as text/csv, one line per row)
    POST /outreach/contact   roles outreach, admin   ContactRequest -> ContactResponse
                             (404 {"error": "no such appointment"} for an unknown id)
    POST /admin/reload       role admin              -> {"reloaded": true, "versions": ...};
                             409 (old models keep serving) or 503 (not ready) with the reason
    GET  /livez, /readyz (BentoML's own; /readyz is 503 until the models and store are loaded)

Every request carries ``Authorization: Bearer <secret>`` (or ``X-API-Key: <secret>``): 401 without
a valid key, 403 when the key's role may not call the endpoint. The JSON body is validated here
with the pydantic models of `serving.schemas` (not by BentoML), so a bad request is a 422 with
``{"errors": [{"field": ..., "problem": ...}]}`` that never echoes submitted values. A POST body
that is not valid JSON is a 422 ``{"errors": [{"field": "body", "problem": "not valid JSON"}]}``
(after the key and role checks): `InvalidJsonMiddleware` answers it before BentoML's own parsing,
which would otherwise fail with a 500. Each
request gets a request id (uuid4 hex), returned in the body and in ``X-Request-ID``, and writes
one audit row (key id, role, endpoint, hashed patient id, model versions, status). Logs carry the
request id only. 503 while not ready.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import bentoml
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.keys import Role, verify
from serving.runtime import NotReadyError, RequestError, Runtime
from serving.schemas import (
    ContactRequest,
    NoShowRiskRequest,
    RecommendRequest,
    WorklistFormat,
    WorklistRequest,
    WorklistResponse,
    error_details,
    worklist_csv,
)
from serving.store import DEFAULT_URL

log = logging.getLogger(__name__)

ENV_STORE: Final = "REFERRAL_ML_STORE"
ENV_RANKER_DIR: Final = "REFERRAL_ML_RANKER_DIR"
ENV_NO_SHOW_DIR: Final = "REFERRAL_ML_NO_SHOW_DIR"
ENV_NOW: Final = "REFERRAL_ML_NOW"
DEFAULT_RANKER_DIR: Final = "models/ranker"
DEFAULT_NO_SHOW_DIR: Final = "models/no_show"
REQUEST_ID_HEADER: Final = "X-Request-ID"

RECOMMEND_ROLES: Final = frozenset({Role.REFERRAL_UI, Role.ADMIN})
NO_SHOW_ROLES: Final = frozenset({Role.OUTREACH, Role.ADMIN})
ADMIN_ROLES: Final = frozenset({Role.ADMIN})
OUTREACH_ROLES: Final = NO_SHOW_ROLES
INVALID_JSON: Final = object()  # the body of a request that is not valid JSON
INVALID_JSON_ERRORS: Final = [{"field": "body", "problem": "not valid JSON"}]
# POST endpoints with a JSON body -> their roles (for the invalid-JSON answer)
JSON_ENDPOINTS: Final[dict[str, frozenset[Role]]] = {
    "/recommend": RECOMMEND_ROLES,
    "/no_show_risk": NO_SHOW_ROLES,
    "/outreach/worklist": OUTREACH_ROLES,
    "/outreach/contact": OUTREACH_ROLES,
}


def runtime_from_env(env: dict[str, str] | None = None) -> Runtime:
    """A (not yet loaded) Runtime configured by the REFERRAL_ML_* variables."""
    env = dict(os.environ) if env is None else env
    now_text = env.get(ENV_NOW, "").strip()
    return Runtime(
        env.get(ENV_STORE, DEFAULT_URL),
        _bundle_dir(env.get(ENV_RANKER_DIR), "specialist-ranker", DEFAULT_RANKER_DIR),
        _bundle_dir(env.get(ENV_NO_SHOW_DIR), "no-show", DEFAULT_NO_SHOW_DIR),
        now=datetime.fromisoformat(now_text) if now_text else None,
    )


def _bundle_dir(configured: str | None, bento_name: str, default: str) -> Path:
    """The configured folder, else the newest export in the BentoML model store
    (`referral-ml export`), else `default` (which then fails readiness with its reason)."""
    if configured:
        return Path(configured)
    try:
        return Path(bentoml.models.get(f"{bento_name}:latest").path)
    except Exception:  # not exported yet: readiness reports the missing bundle
        return Path(default)


@dataclass
class Outcome:
    """What a handled request answers: status, JSON body and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _secret(headers: Any) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = str(auth).partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    key = headers.get("x-api-key")
    return str(key).strip() if key else None


def handle(
    runtime: Runtime,
    endpoint: str,
    roles: Collection[Role],
    headers: Any,
    body: Any,
    model: type[BaseModel] | None,
    run: Callable[..., BaseModel],
    *,
    with_key: bool = False,
    require_ready: bool = True,
) -> Outcome:
    """Authenticate, authorise, validate, run and audit one request (framework-free).

    `body` is the parsed JSON (or INVALID_JSON: a 422 after the key and role checks). `run` is
    called as ``run(req, request_id)``, with ``key_id=`` too when `with_key`; a RequestError it
    raises becomes its status with ``{"error": message}``. `require_ready=False` runs it even
    when not ready (a reload)."""
    request_id = uuid.uuid4().hex
    out_headers = {REQUEST_ID_HEADER: request_id}
    key_id: str | None = None
    role: Role | None = None
    patient_id: str | None = None
    versions: dict[str, str] = {}

    def done(status: int, payload: dict[str, Any]) -> Outcome:
        try:
            runtime.store.write_audit(
                request_id=request_id,
                endpoint=endpoint,
                status=status,
                key_id=key_id,
                role=role.value if role is not None else None,
                patient_id=patient_id,
                model_versions=versions or None,
            )
        except Exception as exc:  # the answer still goes out; the failure is logged
            log.error("request %s: audit write failed (%s)", request_id, type(exc).__name__)
        log.info("request %s %s -> %s", request_id, endpoint, status)
        if status == 200:
            _count(endpoint, payload)
        return Outcome(status, {**payload, "request_id": request_id}, out_headers)

    try:
        verified = verify(runtime.store, _secret(headers))
    except Exception as exc:
        log.error("request %s: key check failed (%s)", request_id, type(exc).__name__)
        return done(503, {"error": "the key store is unavailable"})
    if verified is None:
        out_headers["WWW-Authenticate"] = "Bearer"
        return done(401, {"error": "a valid API key is required"})
    key_id, role = verified
    if role not in roles:
        return done(403, {"error": f"the key's role may not call {endpoint}"})
    req: Any = None
    if body is INVALID_JSON:
        return done(422, {"errors": INVALID_JSON_ERRORS})
    if model is not None:
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            return done(422, {"errors": error_details(exc)})
        patient_id = _patient_id(req)
    if require_ready and not runtime.ready:
        return done(503, {"error": "the service is not ready"})
    versions = runtime.versions()
    try:
        result = run(req, request_id, key_id=key_id) if with_key else run(req, request_id)
    except NotReadyError:
        return done(503, {"error": "the service is not ready"})
    except RequestError as exc:
        versions = runtime.versions()
        return done(exc.status, {"error": exc.message})
    except Exception as exc:
        log.error("request %s: %s failed (%s)", request_id, endpoint, type(exc).__name__)
        return done(500, {"error": "internal error; quote the request_id"})
    versions = runtime.versions()
    return done(200, result.model_dump(mode="json"))


# Product counters beside BentoML's own request counts and latencies on /metrics.
RISK_TIERS = Counter(
    name="referral_ml_risk_tier_total",
    documentation="Appointments scored, by endpoint and risk tier",
    labelnames=["endpoint", "tier"],
)
EMPTY_RECOMMENDATIONS = Counter(
    name="referral_ml_empty_recommendations_total",
    documentation="Recommendations that found no candidate, by the filter that removed the last",
    labelnames=["filter"],
)


# Phrases of features.retrieval's empty_reason, most specific first -> the filter's name.
_EMPTY_PHRASES: Final = (
    ("speaks", "language"),
    ("of sex", "sex"),
    ("in-network", "network"),
    ("is accepting new patients", "accepting_new_patients"),
    ("practises", "specialty"),
    ("within", "distance"),
)


def empty_filter(reason: str | None) -> str:
    """The filter named by an empty recommendation's reason ('other' when none matches)."""
    text = reason or ""
    return next((name for phrase, name in _EMPTY_PHRASES if phrase in text), "other")


def _count(endpoint: str, payload: dict[str, Any]) -> None:
    """Tiers scored and empty recommendations, for /metrics (labels carry no patient data)."""
    if endpoint == "/recommend" and not payload.get("specialists"):
        EMPTY_RECOMMENDATIONS.labels(filter=empty_filter(payload.get("empty_reason"))).inc()
    rows = payload.get("predictions") or payload.get("rows") or []
    for row in rows:
        tier = row.get("tier") if isinstance(row, dict) else None
        if tier in ("low", "medium", "high"):
            RISK_TIERS.labels(endpoint=endpoint, tier=tier).inc()


def _patient_id(req: Any) -> str | None:
    """The patient a request is about (for the audit hash): one patient or none."""
    if isinstance(req, RecommendRequest):
        return req.referral.patient.patient_id
    if isinstance(req, NoShowRiskRequest):
        ids = {a.patient_id for a in req.appointments if a.patient_id}
        return ids.pop() if len(ids) == 1 else None
    return None


# The worker's service instance, for the plain Starlette route below (one instance per worker).
_instance: ReferralService | None = None


def _model_info_endpoint(request: Request) -> JSONResponse:
    if _instance is None:
        return JSONResponse({"error": "the service is not ready"}, status_code=503)
    runtime = _instance.runtime
    outcome = handle(
        runtime,
        "/model_info",
        ADMIN_ROLES,
        request.headers,
        None,
        None,
        lambda _req, _rid: runtime.model_info(),
    )
    return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)


async def _json_body(request: Request) -> Any:
    """The parsed JSON body, or INVALID_JSON."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return INVALID_JSON


def _respond(outcome: Outcome) -> JSONResponse:
    return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)


async def _worklist_endpoint(request: Request) -> Response:
    if _instance is None:
        return JSONResponse({"error": "the service is not ready"}, status_code=503)
    runtime = _instance.runtime
    body = await _json_body(request)
    outcome = await run_in_threadpool(
        handle,
        runtime,
        "/outreach/worklist",
        OUTREACH_ROLES,
        request.headers,
        body,
        WorklistRequest,
        runtime.worklist,
    )
    wants_csv = isinstance(body, dict) and body.get("format") == WorklistFormat.CSV.value
    if outcome.status == 200 and wants_csv:
        payload = {k: v for k, v in outcome.body.items() if k != "request_id"}
        rows = WorklistResponse.model_validate({**payload, "request_id": ""}).rows
        return Response(
            worklist_csv(rows), media_type="text/csv; charset=utf-8", headers=outcome.headers
        )
    return _respond(outcome)


async def _contact_endpoint(request: Request) -> JSONResponse:
    if _instance is None:
        return JSONResponse({"error": "the service is not ready"}, status_code=503)
    runtime = _instance.runtime
    body = await _json_body(request)

    def run() -> Outcome:
        return handle(
            runtime,
            "/outreach/contact",
            OUTREACH_ROLES,
            request.headers,
            body,
            ContactRequest,
            runtime.record_contact,
            with_key=True,
        )

    return _respond(await run_in_threadpool(run))


async def _reload_endpoint(request: Request) -> JSONResponse:
    if _instance is None:
        return JSONResponse({"error": "the service is not ready"}, status_code=503)
    runtime = _instance.runtime

    def run() -> Outcome:
        return handle(
            runtime,
            "/admin/reload",
            ADMIN_ROLES,
            request.headers,
            None,
            None,
            runtime.reload,
            require_ready=False,
        )

    return _respond(await run_in_threadpool(run))


admin_app = Starlette(
    routes=[
        Route("/model_info", _model_info_endpoint, methods=["GET"]),
        Route("/outreach/worklist", _worklist_endpoint, methods=["POST"]),
        Route("/outreach/contact", _contact_endpoint, methods=["POST"]),
        Route("/admin/reload", _reload_endpoint, methods=["POST"]),
    ]
)


class InvalidJsonMiddleware:
    """Answers a POST to a JSON endpoint whose body is not valid JSON with the usual 422
    (through `handle`: key and role checked, audited) instead of BentoML's 500. Other requests
    pass through with their body replayed unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in JSON_ENDPOINTS:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            if raw.strip():
                json.loads(raw)
            valid = True
        except ValueError:
            valid = False
        if not valid and _instance is not None:
            outcome = await run_in_threadpool(
                handle,
                _instance.runtime,
                path,
                JSON_ENDPOINTS[path],
                Headers(scope=scope),
                INVALID_JSON,
                None,
                _never,
            )
            await _respond(outcome)(scope, receive, send)
            return
        if not valid:
            response = JSONResponse({"errors": INVALID_JSON_ERRORS}, status_code=422)
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _never(_req: Any, _request_id: str) -> BaseModel:
    raise AssertionError("an invalid JSON body is answered before running")


@bentoml.asgi_app(admin_app, path="/")
@bentoml.service(name="referral_ml", traffic={"timeout": 60})
class ReferralService:
    """Specialist recommendations and no-show risk over HTTP (see the module docstring)."""

    def __init__(self) -> None:
        global _instance
        self.runtime = runtime_from_env()
        if not self.runtime.load():
            log.error("not ready: %s", self.runtime.not_ready_reason)
        _instance = self

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    def _answer(self, ctx: bentoml.Context, outcome: Outcome) -> dict[str, Any]:
        ctx.response.status_code = outcome.status
        for name, value in outcome.headers.items():
            ctx.response.metadata[name] = value
        return outcome.body

    @bentoml.api(route="/recommend")
    def recommend(self, body: Any, /, ctx: bentoml.Context) -> dict[str, Any]:
        runtime = self.runtime
        outcome = handle(
            runtime,
            "/recommend",
            RECOMMEND_ROLES,
            ctx.request.headers,
            body,
            RecommendRequest,
            runtime.recommend,  # type: ignore[arg-type]
        )
        return self._answer(ctx, outcome)

    @bentoml.api(route="/no_show_risk")
    def no_show_risk(self, body: Any, /, ctx: bentoml.Context) -> dict[str, Any]:
        runtime = self.runtime
        outcome = handle(
            runtime,
            "/no_show_risk",
            NO_SHOW_ROLES,
            ctx.request.headers,
            body,
            NoShowRiskRequest,
            runtime.no_show_risk,  # type: ignore[arg-type]
        )
        return self._answer(ctx, outcome)


ReferralService.add_asgi_middleware(InvalidJsonMiddleware)  # type: ignore[attr-defined]
