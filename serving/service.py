"""The BentoML 1.4 HTTP service: ``bentoml serve serving.service:ReferralService``.

Configuration (environment variables, read once when a worker starts):

    REFERRAL_ML_STORE        SQLAlchemy URL of the service database (default sqlite:///referral.db)
    REFERRAL_ML_RANKER_DIR   folder of the specialist-ranker bundle (default: the newest
                             `specialist-ranker` in the BentoML model store, see
                             `referral-ml export`; else models/ranker)
    REFERRAL_ML_NO_SHOW_DIR  folder of the no-show bundle (default: the newest `no-show` in the
                             BentoML model store; else models/no_show)
    REFERRAL_ML_UPLIFT_DIR   folder of the outreach-uplift bundle, the expected benefit of a call
                             (default: the newest `outreach-uplift` in the BentoML model store;
                             else none: expected_benefit is null, the service is still ready)
    REFERRAL_ML_NOW          optional ISO date-time used as "now" (a synthetic world's as_of);
                             default: the wall clock
    REFERRAL_ML_AUDIT_SALT   optional key of the audit hashes (see serving.store)
    REFERRAL_ML_CORS_ORIGINS optional comma-separated origins allowed by CORS (default: CORS off)
    REFERRAL_ML_MAX_BODY_BYTES  request body limit (default 4 MiB; over it: 413)
    REFERRAL_ML_WORKERS      worker processes (default 2); a reload reaches one, the others
                             follow within 2 s (Runtime.follow_reloads)
    REFERRAL_ML_TIERS        optional "medium=0.2,high=0.4": the no-show tier thresholds
                             (default: those chosen at training, in the bundle)
    REFERRAL_ML_MONITOR_CALIBRATION_GAP / _ECE / _AUC_DROP  monitoring flag thresholds
                             (default 0.03 / 0.05 / 0.03, serving.monitoring)
    REFERRAL_ML_MONITOR_INTERVAL_MINUTES  recompute the monitoring report (and gauges) every N
                             minutes in each worker (default 0: only when /monitoring is called)

Endpoints (`ENDPOINTS`; the OpenAPI document at GET /docs.json, `serving.openapi`):

    POST   /recommend            referral_ui, admin   RecommendRequest -> RecommendResponse
    POST   /no_show_risk         outreach, admin      NoShowRiskRequest -> NoShowRiskResponse
    POST   /outreach/worklist    outreach, admin      WorklistRequest -> WorklistResponse
                                                      (format "csv": the same rows as text/csv;
                                                      order "expected_benefit": 409 without the
                                                      outreach-uplift model)
    POST   /outreach/contact     outreach, admin      ContactRequest -> ContactResponse (404)
    POST   /feedback             integration, outreach, admin
                                                      FeedbackRequest -> FeedbackResponse
                                                      (idempotent; unknown ids per event)
    GET    /monitoring           admin                ?weeks=&start=&end= -> MonitoringResponse
                                                      (live AUC, calibration, drift; sets the
                                                      referral_ml_* gauges on /metrics)
    GET    /model_info           admin                ModelInfoResponse (metrics, card, plot names)
    GET    /model_info/{model}/plots/{name}  admin    ModelPlot (base64 PNG); 404
    GET    /whoami               every role           WhoAmIResponse (role, console pages)
    GET    /catalog              every role           CatalogResponse (the console's choices)
    POST   /admin/reload         admin                ReloadResponse; 409 (old models keep
                                                      serving) or 503 (not ready) with the reason
    GET    /admin/keys           admin                KeyListResponse (no secrets, no hashes)
    POST   /admin/keys           admin                CreateKeyRequest -> 201 CreatedKey (secret
                                                      shown once)
    DELETE /admin/keys/{key_id}  admin                RevokedKey; 404; 409 for the last admin key
    GET    /livez, /readyz (503 with the reason until the models and the store are loaded),
           /metrics (Prometheus), /docs.json
    GET    /console/             the browser console (`serving/console/`: static files, no key
                                 to load them; every figure on them comes from the API above)

Every API request carries ``Authorization: Bearer <secret>`` (or ``X-API-Key: <secret>``): 401
without a valid key, 403 when the key's role may not call the endpoint. Bodies are validated here
with the pydantic models of `serving.schemas` (not by BentoML), so a bad request is a 422 with
``{"errors": [{"field": ..., "problem": ...}]}`` that never echoes submitted values; a body that
is not valid JSON is a 422 on field "body" and a body over the limit a 413, both answered by
`GatewayMiddleware` after the key and role checks. POST /recommend and /no_show_risk, BentoML
APIs of the service, are answered by `GatewayMiddleware` too (the same `dispatch`, without
BentoML's router and API wrapper: see its docstring). Each request gets a request id (uuid4 hex),
returned in the body and in ``X-Request-ID``, and writes one audit row (key id, role, endpoint,
hashed patient id, model versions, status). Logs carry the request id only. 503 while not ready.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast

import bentoml
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.fhir_inbound import FhirInputError
from serving.bentoml_patches import (
    cache_root_schemas,
    cancel_request_timers,
    skip_send_receive_spans,
)
from serving.console_api import ModelPlotRequest
from serving.keys import Caller, Role, verify
from serving.openapi import openapi_document
from serving.runtime import (
    UPLIFT_MODEL,
    NotReadyError,
    RequestError,
    Runtime,
    freeze_new_objects,
)
from serving.schemas import (
    ContactRequest,
    CreateKeyRequest,
    FeedbackRequest,
    MonitoringRequest,
    NoShowRiskRequest,
    RecommendRequest,
    RevokeKeyRequest,
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
ENV_UPLIFT_DIR: Final = "REFERRAL_ML_UPLIFT_DIR"
ENV_NOW: Final = "REFERRAL_ML_NOW"
ENV_CORS_ORIGINS: Final = "REFERRAL_ML_CORS_ORIGINS"
ENV_WORKERS: Final = "REFERRAL_ML_WORKERS"
ENV_TIERS: Final = "REFERRAL_ML_TIERS"
ENV_MONITOR_INTERVAL: Final = "REFERRAL_ML_MONITOR_INTERVAL_MINUTES"
DEFAULT_RANKER_DIR: Final = "models/ranker"
DEFAULT_NO_SHOW_DIR: Final = "models/no_show"
REQUEST_ID_HEADER: Final = "X-Request-ID"
# A SQLite store's write-ahead log is copied into the database by a background thread this
# often, never inside a request's commit (serving.store.Store)
CHECKPOINT_SECONDS: Final = 1.0

RECOMMEND_ROLES: Final = frozenset({Role.REFERRAL_UI, Role.ADMIN})
NO_SHOW_ROLES: Final = frozenset({Role.OUTREACH, Role.ADMIN})
ADMIN_ROLES: Final = frozenset({Role.ADMIN})
EVERY_ROLE: Final = frozenset(Role)
OUTREACH_ROLES: Final = NO_SHOW_ROLES
FEEDBACK_ROLES: Final = frozenset({Role.INTEGRATION, Role.OUTREACH, Role.ADMIN})
INVALID_JSON: Final = object()  # the body of a request that is not valid JSON
INVALID_JSON_ERRORS: Final = [{"field": "body", "problem": "not valid JSON"}]
TOO_LARGE: Final = object()  # the body of a request over MAX_BODY_BYTES
# 5,000 appointments (the most /no_show_risk takes) are about 2.3 MB of JSON.
MAX_BODY_BYTES: Final = int(os.environ.get("REFERRAL_ML_MAX_BODY_BYTES", 4 * 1024 * 1024))
DRAIN_BYTES: Final = 8 * MAX_BODY_BYTES  # an oversized body up to this is read and dropped
REQUESTS_PER_CONNECTION: Final = 100  # then Connection: close (see GatewayMiddleware._recycled)


def runtime_from_env(env: dict[str, str] | None = None) -> Runtime:
    """A (not yet loaded) Runtime configured by the REFERRAL_ML_* variables."""
    env = dict(os.environ) if env is None else env
    now_text = env.get(ENV_NOW, "").strip()
    uplift_configured = env.get(ENV_UPLIFT_DIR, "").strip()
    # Configured: it must load. Else the store's newest export, when there is one (optional).
    uplift_dir = Path(uplift_configured) if uplift_configured else _stored_model(UPLIFT_MODEL)
    return Runtime(
        env.get(ENV_STORE, DEFAULT_URL),
        _bundle_dir(env.get(ENV_RANKER_DIR), "specialist-ranker", DEFAULT_RANKER_DIR),
        _bundle_dir(env.get(ENV_NO_SHOW_DIR), "no-show", DEFAULT_NO_SHOW_DIR),
        now=datetime.fromisoformat(now_text) if now_text else None,
        settle_heap=True,
        checkpoint_seconds=CHECKPOINT_SECONDS,
        tiers=env.get(ENV_TIERS) or None,
        uplift_dir=uplift_dir,
        uplift_if_present=not uplift_configured,
    )


def _bundle_dir(configured: str | None, bento_name: str, default: str) -> Path:
    """The configured folder, else the newest export in the BentoML model store
    (`referral-ml export`), else `default` (which then fails readiness with its reason)."""
    if configured:
        return Path(configured)
    # not exported yet: readiness reports the missing bundle
    return _stored_model(bento_name) or Path(default)


def _stored_model(bento_name: str) -> Path | None:
    """The folder of the newest `bento_name` in the BentoML model store, or None."""
    try:
        return Path(bentoml.models.get(f"{bento_name}:latest").path)
    except Exception:  # not in the store
        return None


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
    success: int = 200,
    adapt: Callable[[dict[str, Any]], Any] | None = None,
) -> Outcome:
    """Authenticate, authorise, validate, run and audit one request (framework-free).

    `body` is the parsed JSON (or INVALID_JSON: a 422 after the key and role checks). `run` is
    called as ``run(req, request_id)``, with ``caller=`` (key id and role) too when `with_key`; a RequestError it
    raises becomes its status with ``{"error": message}``. `require_ready=False` runs it even
    when not ready (a reload). `adapt` turns a FHIR resource body (one with a ``resourceType``)
    into the endpoint's own body first; its FhirInputError is a 422 naming the FHIR element."""
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
        if status == success:
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
    if body is TOO_LARGE:
        return done(413, {"error": _too_large_message()})
    if body is INVALID_JSON:
        return done(422, {"errors": INVALID_JSON_ERRORS})
    if adapt is not None and isinstance(body, dict) and "resourceType" in body:
        try:
            body = adapt(body)
        except NotReadyError:
            return done(503, {"error": "the service is not ready"})
        except FhirInputError as exc:  # names the element, never a value
            return done(422, {"errors": [{"field": exc.field, "problem": exc.message}]})
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
        caller = Caller(key_id, role)
        result = run(req, request_id, caller=caller) if with_key else run(req, request_id)
    except NotReadyError:
        return done(503, {"error": "the service is not ready"})
    except RequestError as exc:
        versions = runtime.versions()
        return done(exc.status, {"error": exc.message})
    except Exception as exc:
        log.error("request %s: %s failed (%s)", request_id, endpoint, type(exc).__name__)
        return done(500, {"error": "internal error; quote the request_id"})
    versions = runtime.versions()
    return done(success, result.model_dump(mode="json"))


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
    tiers = collections.Counter(row.get("tier") for row in rows if isinstance(row, dict))
    for tier in ("low", "medium", "high"):  # one labelled child per tier, not one per row
        if tiers[tier]:
            RISK_TIERS.labels(endpoint=endpoint, tier=tier).inc(tiers[tier])


def _patient_id(req: Any) -> str | None:
    """The patient a request is about (for the audit hash): one patient or none."""
    if isinstance(req, RecommendRequest):
        return req.referral.patient.patient_id
    if isinstance(req, NoShowRiskRequest):
        ids = {a.patient_id for a in req.appointments if a.patient_id}
        return ids.pop() if len(ids) == 1 else None
    return None


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: who may call it, what its request is, which Runtime method answers it."""

    method: str
    path: str  # Starlette syntax for a path parameter: /admin/keys/{key_id}
    roles: frozenset[Role]
    model: type[BaseModel] | None  # validates the JSON body (or the path parameters)
    action: str  # the Runtime method, called as (req, request_id[, caller=])
    body: str = "none"  # "json", "path" / "query" (those parameters are the request), "none"
    with_key: bool = False
    require_ready: bool = True
    success: int = 200
    adapt: str | None = None  # a Runtime method turning a FHIR resource into this body

    def run(self, runtime: Runtime) -> Callable[..., BaseModel]:
        return cast(Callable[..., BaseModel], getattr(runtime, self.action))


ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/recommend",
        RECOMMEND_ROLES,
        RecommendRequest,
        "recommend",
        "json",
        adapt="recommend_body_from_fhir",
    ),
    Endpoint("POST", "/no_show_risk", NO_SHOW_ROLES, NoShowRiskRequest, "no_show_risk", "json"),
    Endpoint("POST", "/outreach/worklist", OUTREACH_ROLES, WorklistRequest, "worklist", "json"),
    Endpoint(
        "POST",
        "/outreach/contact",
        OUTREACH_ROLES,
        ContactRequest,
        "record_contact",
        "json",
        with_key=True,
    ),
    Endpoint(
        "POST",
        "/feedback",
        FEEDBACK_ROLES,
        FeedbackRequest,
        "feedback",
        "json",
        require_ready=False,  # the store alone records outcomes
    ),
    Endpoint("GET", "/monitoring", ADMIN_ROLES, MonitoringRequest, "monitoring", "query"),
    Endpoint("GET", "/model_info", ADMIN_ROLES, None, "model_info"),
    Endpoint(
        "GET",
        "/model_info/{model}/plots/{name}",
        ADMIN_ROLES,
        ModelPlotRequest,
        "model_plot",
        "path",
    ),
    Endpoint("GET", "/whoami", EVERY_ROLE, None, "whoami", with_key=True, require_ready=False),
    Endpoint("GET", "/catalog", EVERY_ROLE, None, "catalog"),
    Endpoint("POST", "/admin/reload", ADMIN_ROLES, None, "reload", require_ready=False),
    Endpoint("GET", "/admin/keys", ADMIN_ROLES, None, "list_keys", require_ready=False),
    Endpoint(
        "POST",
        "/admin/keys",
        ADMIN_ROLES,
        CreateKeyRequest,
        "create_key",
        "json",
        require_ready=False,
        success=201,
    ),
    Endpoint(
        "DELETE",
        "/admin/keys/{key_id}",
        ADMIN_ROLES,
        RevokeKeyRequest,
        "revoke_key",
        "path",
        require_ready=False,
    ),
)
# (method, path) -> endpoint, for the endpoints whose body is JSON (the body guard's checks)
JSON_ENDPOINTS: Final = {(e.method, e.path): e for e in ENDPOINTS if e.body == "json"}


def dispatch(runtime: Runtime, endpoint: Endpoint, headers: Any, body: Any) -> Outcome:
    """`handle` for one of ENDPOINTS."""
    return handle(
        runtime,
        endpoint.path,
        endpoint.roles,
        headers,
        body,
        endpoint.model,
        endpoint.run(runtime),
        with_key=endpoint.with_key,
        require_ready=endpoint.require_ready,
        success=endpoint.success,
        adapt=getattr(runtime, endpoint.adapt) if endpoint.adapt else None,
    )


# The worker's service instance, for the plain Starlette routes below (one instance per worker).
_instance: ReferralService | None = None


def _not_ready() -> JSONResponse:
    return JSONResponse({"error": "the service is not ready"}, status_code=503)


def parse_json(raw: bytes) -> Any:
    """The parsed JSON body ({} when empty), or INVALID_JSON."""
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return INVALID_JSON


PARSED_BODY: Final = "referral_ml.json"  # the scope key of a body GatewayMiddleware has parsed


async def _json_body(request: Request) -> Any:
    """The parsed JSON body, or INVALID_JSON (parsed once: by GatewayMiddleware when it ran)."""
    if PARSED_BODY in request.scope:
        return request.scope[PARSED_BODY]
    return parse_json(await request.body())


class FastJSONResponse(JSONResponse):
    """JSON encoded by pydantic-core's serializer (Rust; about 4x faster than the json module
    on a /recommend answer, more on a 1,000-row /no_show_risk one). NaN and infinities, which
    strict JSON lacks, become null (Starlette's JSONResponse would raise instead)."""

    def render(self, content: Any) -> bytes:
        return to_json(content, inf_nan_mode="null")


def _respond(outcome: Outcome) -> Response:
    return FastJSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)


def _csv_response(outcome: Outcome) -> Response:
    """A 200 worklist as text/csv (same rows, same headers)."""
    payload = {k: v for k, v in outcome.body.items() if k != "request_id"}
    rows = WorklistResponse.model_validate({**payload, "request_id": ""}).rows
    return Response(
        worklist_csv(rows), media_type="text/csv; charset=utf-8", headers=outcome.headers
    )


def _starlette_route(endpoint: Endpoint) -> Route:
    async def answer(request: Request) -> Response:
        if _instance is None:
            return _not_ready()
        body: Any = None
        if endpoint.body == "json":
            body = await _json_body(request)
        elif endpoint.body == "path":
            body = dict(request.path_params)
        elif endpoint.body == "query":
            body = dict(request.query_params)
        outcome = await run_in_threadpool(
            dispatch, _instance.runtime, endpoint, request.headers, body
        )
        wants_csv = isinstance(body, dict) and body.get("format") == WorklistFormat.CSV.value
        if endpoint.action == "worklist" and outcome.status == 200 and wants_csv:
            return _csv_response(outcome)
        return _respond(outcome)

    return Route(endpoint.path, answer, methods=[endpoint.method])


# ------------------------------------------------------------------------------ the console

CONSOLE_DIR: Final = Path(__file__).with_name("console")
# The console's files (nothing else under /console/ is served) and their media types.
CONSOLE_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
# Scripts, styles and data from this origin only (no CDN: nothing outside the machine is
# fetched); plots arrive as data: URLs; the page may not be framed.
CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _console_file(request: Request) -> Response:
    name = request.path_params.get("name") or "index.html"
    media = CONSOLE_FILES.get(name)
    if media is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(CONSOLE_DIR / name, media_type=media, headers=CONSOLE_HEADERS)


async def _to_console(_request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


CONSOLE_ROUTES: Final = [
    Route("/console", _to_console, methods=["GET"]),
    Route("/console/", _console_file, methods=["GET"]),
    Route("/console/{name}", _console_file, methods=["GET"]),
]

# /recommend and /no_show_risk are BentoML APIs (below); the others are plain Starlette routes.
_BENTO_APIS: Final = frozenset({"/recommend", "/no_show_risk"})
admin_app = Starlette(
    routes=[_starlette_route(e) for e in ENDPOINTS if e.path not in _BENTO_APIS] + CONSOLE_ROUTES
)


class GatewayMiddleware:
    """In front of every route (BentoML's included):

    * a body over MAX_BODY_BYTES is a 413 (by its Content-Length, else counted as it arrives;
      never buffered beyond the limit);
    * the body of a POST to a JSON endpoint is parsed here, once; one that is not valid JSON
      is the usual 422 (instead of BentoML's 500 for its APIs);
    * both answers go through `handle` (key and role checked first, audited) for a known
      endpoint; the body is replayed unchanged to the route otherwise;
    * POST /recommend and /no_show_risk, BentoML APIs of the service, are answered here
      (`dispatch`, as the API methods do) instead of through BentoML's router and API wrapper,
      which would parse the body a second time, wrap it in a model and bind a context for a
      method that takes the JSON as it is: about a quarter of a worker's time per /recommend
      request (benchmarks/bench_service.py). They still run inside BentoML's server and its
      middleware (metrics, tracing, access log, request timeout), and CORS applies to them;
    * GET /docs.json is this service's own OpenAPI document (`serving.openapi`): the request
      models it describes are the ones `handle` validates (BentoML's would describe ``Any``);
    * GET /readyz is a 503 with the reason while the models or the store are not loaded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._served: dict[Any, int] = {}  # (client host, port) -> requests on that connection
        # BentoML adds its CORS middleware inside this one: answers given here get their own,
        # built once around an app that sends the response the scope carries
        options = cors_options(SERVICE_CONFIG)
        self._cors: ASGIApp | None = (
            None if options is None else CORSMiddleware(_send_scope_response, **options)
        )

    def _recycled(self, scope: Scope, send: Send) -> Send:
        """`send`, adding ``Connection: close`` to every REQUESTS_PER_CONNECTION-th answer on a
        keep-alive connection. The workers share one listening socket and a connection stays
        with the worker that accepted it: a client pool whose connections all landed on one
        worker would use half the machine for good (measured: 136 instead of 210 req/s at 4
        clients). Reconnecting now and then lets the idle worker, the one waiting in accept,
        take the new connection."""
        client = scope.get("client")
        if client is None:
            return send
        key = tuple(client)
        count = self._served.get(key, 0) + 1
        if count < REQUESTS_PER_CONNECTION:
            if len(self._served) > 10_000:  # connections closed by their clients linger here
                self._served.clear()
            self._served[key] = count
            return send
        self._served.pop(key, None)

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._recycled(scope, send)
        method, path = scope.get("method", ""), scope.get("path", "")
        if method == "GET" and path == "/docs.json":
            await JSONResponse(openapi_document())(scope, receive, send)
            return
        if method == "GET" and path == "/readyz" and _instance is not None:
            runtime = _instance.runtime
            if not runtime.ready:
                reason = runtime.not_ready_reason or "not loaded"
                response = JSONResponse({"ready": False, "reason": reason}, status_code=503)
                await response(scope, receive, send)
                return
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        endpoint = JSON_ENDPOINTS.get((method, path))
        headers = Headers(scope=scope)
        raw = await _read_bounded(headers, receive, MAX_BODY_BYTES)
        if raw is None:  # the client went away
            return
        if raw is TOO_LARGE:
            await self._reject(endpoint, headers, TOO_LARGE, scope, receive, send)
            return
        assert isinstance(raw, bytes)
        body: Any = None
        if endpoint is not None:
            body = parse_json(raw)
            if body is INVALID_JSON:
                await self._reject(endpoint, headers, INVALID_JSON, scope, receive, send)
                return
            if endpoint.path in _BENTO_APIS and _instance is not None:
                runtime = _instance.runtime
                if endpoint.path == "/recommend":  # on the loop: see ReferralService.recommend
                    outcome = dispatch(runtime, endpoint, headers, body)
                else:
                    outcome = await run_in_threadpool(dispatch, runtime, endpoint, headers, body)
                await self._answer(_respond(outcome), scope, receive, send)
                return
            scope = {**scope, PARSED_BODY: body}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _answer(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        """Send an answer given here, with the CORS headers BentoML's middleware would add."""
        if self._cors is None:
            await response(scope, receive, send)
        else:
            await self._cors({**scope, _RESPONSE: response}, receive, send)

    async def _reject(
        self,
        endpoint: Endpoint | None,
        headers: Headers,
        body: object,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if endpoint is not None and _instance is not None:
            outcome = await run_in_threadpool(dispatch, _instance.runtime, endpoint, headers, body)
            await self._answer(_respond(outcome), scope, receive, send)
            return
        too_large = body is TOO_LARGE
        response = JSONResponse(
            {"error": _too_large_message()} if too_large else {"errors": INVALID_JSON_ERRORS},
            status_code=413 if too_large else 422,
        )
        await self._answer(response, scope, receive, send)


_RESPONSE: Final = "referral_ml.response"  # the scope key of an answer given by the gateway


async def _send_scope_response(scope: Scope, receive: Receive, send: Send) -> None:
    await scope[_RESPONSE](scope, receive, send)


async def _read_bounded(headers: Headers, receive: Receive, limit: int) -> bytes | object | None:
    """The whole body; TOO_LARGE when it exceeds `limit` bytes; None when the client went away.

    An oversized body is read to its end and dropped (never kept) while it stays under
    DRAIN_BYTES, so that the client, still sending, gets the 413 rather than a reset
    connection; a bigger one (declared or counted) is answered at once."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_BYTES:
        return TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size > limit:
            chunks.clear()
            if not more or size > DRAIN_BYTES:
                return TOO_LARGE
            continue
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def _too_large_message() -> str:
    return f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes"


def service_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The BentoML configuration: REFERRAL_ML_WORKERS worker processes (default 2: one per core
    of the reference machine; each holds its own copy of the models and directory, ~0.5 GB on
    the medium world), a 60 s request timeout; CORS only when REFERRAL_ML_CORS_ORIGINS lists
    origins (comma-separated), then for those origins alone, with the methods and headers the
    API uses."""
    env = os.environ if env is None else env
    config: dict[str, Any] = {
        "name": "referral_ml",
        "workers": int(env.get(ENV_WORKERS, "2")),
        "traffic": {"timeout": 60},
    }
    origins = [o.strip() for o in env.get(ENV_CORS_ORIGINS, "").split(",") if o.strip()]
    if origins:
        config["http"] = {
            "cors": {
                "enabled": True,
                "access_control_allow_origins": origins,
                "access_control_allow_methods": ["GET", "POST", "DELETE"],
                "access_control_allow_headers": ["Authorization", "X-API-Key", "Content-Type"],
                "access_control_expose_headers": [REQUEST_ID_HEADER],
                "access_control_max_age": 600,
            }
        }
    return config


def cors_options(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Starlette CORSMiddleware options for the CORS settings of a BentoML configuration, as
    BentoML passes them to its own; None when CORS is off."""
    cors = config.get("http", {}).get("cors", {})
    if not cors.get("enabled"):
        return None
    names = {
        "access_control_allow_origins": "allow_origins",
        "access_control_allow_origin_regex": "allow_origin_regex",
        "access_control_allow_credentials": "allow_credentials",
        "access_control_allow_methods": "allow_methods",
        "access_control_allow_headers": "allow_headers",
        "access_control_expose_headers": "expose_headers",
        "access_control_max_age": "max_age",
    }
    return {names[k]: v for k, v in cors.items() if k in names}


def _warm_fhir() -> None:
    """FHIR ServiceRequests on /recommend: load their models off the request path; then freeze
    them, with what the server built since the models' load, out of the collector's way."""
    try:
        from features.fhir_inbound import warm

        warm()
    except Exception as exc:  # the first FHIR request pays instead
        log.warning("FHIR models not preloaded (%s)", type(exc).__name__)
    freeze_new_objects()


def _watch_monitoring(runtime: Runtime, env: Mapping[str, str] | None = None) -> bool:
    """Recompute the monitoring report (and so the gauges) every
    REFERRAL_ML_MONITOR_INTERVAL_MINUTES in a daemon thread (default 0: off). True if started."""
    env = os.environ if env is None else env
    try:
        minutes = float(env.get(ENV_MONITOR_INTERVAL, "0") or 0)
    except ValueError:
        log.error("%s is not a number: monitoring refresh off", ENV_MONITOR_INTERVAL)
        return False
    if not minutes > 0:
        return False

    def watch() -> None:
        while True:
            time.sleep(minutes * 60)
            if not runtime.ready:
                continue
            try:
                runtime.monitoring(MonitoringRequest(), uuid.uuid4().hex)
            except Exception as exc:
                log.error("monitoring refresh failed (%s)", type(exc).__name__)

    threading.Thread(target=watch, name="monitoring", daemon=True).start()
    return True


cancel_request_timers()  # BentoML 1.4 leaks a 60 s timer per request: see serving.bentoml_patches
cache_root_schemas()  # and builds a JSON schema to parse each body: built once instead
skip_send_receive_spans()  # and traces each ASGI message in a span of its own: not any more

# The BentoML configuration of the service, read when this module is imported (a worker starts);
# benchmarks/floor_service.py serves a trivial endpoint with the same one (the framework's floor).
SERVICE_CONFIG: Final[dict[str, Any]] = service_config()


@bentoml.asgi_app(admin_app, path="/")
@bentoml.service(**SERVICE_CONFIG)
class ReferralService:
    """Specialist recommendations and no-show risk over HTTP (see the module docstring)."""

    def __init__(self) -> None:
        global _instance
        self.runtime = runtime_from_env()
        if not self.runtime.load():
            log.error("not ready: %s", self.runtime.not_ready_reason)
        self.runtime.follow_reloads()  # /admin/reload reaches one worker; the others follow
        _watch_monitoring(self.runtime)
        threading.Thread(target=_warm_fhir, name="fhir-warm", daemon=True).start()
        _instance = self

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    def _answer(self, ctx: bentoml.Context, outcome: Outcome) -> Any:
        """The answer as a ready response, which BentoML sends as it is (`api_endpoint`):
        its own output path would validate the dict again, build a JSON schema of the return
        type to pick the media type and encode with the json module, on every request (about a
        third of /recommend's time over HTTP in a py-spy profile). BentoML copies the status and
        headers of `ctx.response` onto the response, so they are set there too."""
        ctx.response.status_code = outcome.status
        for name, value in outcome.headers.items():
            ctx.response.metadata[name] = value
        return _respond(outcome)

    # Over HTTP, GatewayMiddleware answers these two routes itself with the same `dispatch`
    # (one JSON parse, no API wrapper); the methods keep them in BentoML's service definition
    # (its API list, `bentoml build`, its Python clients, whose calls the gateway answers).
    @bentoml.api(route="/recommend")
    async def recommend(self, body: Any, /, ctx: bentoml.Context) -> Any:
        # Run on the event loop: a few milliseconds of CPU, which a worker thread would not run
        # any faster (one GIL) but whose hand-offs between threads cost as much again.
        return self._answer(ctx, dispatch(self.runtime, _RECOMMEND, ctx.request.headers, body))

    @bentoml.api(route="/no_show_risk")
    def no_show_risk(self, body: Any, /, ctx: bentoml.Context) -> Any:
        return self._answer(ctx, dispatch(self.runtime, _NO_SHOW, ctx.request.headers, body))


_RECOMMEND: Final = JSON_ENDPOINTS[("POST", "/recommend")]
_NO_SHOW: Final = JSON_ENDPOINTS[("POST", "/no_show_risk")]
ReferralService.add_asgi_middleware(GatewayMiddleware)  # type: ignore[attr-defined]
