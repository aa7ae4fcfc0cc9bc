"""The framework floor: a trivial BentoML endpoint on the same configuration as ReferralService.

    bentoml serve benchmarks.floor_service:FloorService --host 127.0.0.1 --port 3001

POST /floor takes any JSON body (parsed by BentoML's API wrapper, no validation, no auth, no
audit) and answers a small dict: what a trivial BentoML API costs (BentoML + uvicorn + the
client). POST /floor/gateway does the same in an ASGI middleware, as `serving.service`'s
GatewayMiddleware answers /recommend and /no_show_risk: the body parsed once with `json.loads`,
the answer sent from the middleware, with BentoML's outer middleware (metrics, tracing, access
log, timeout) still around it. What /recommend costs over HTTP beyond the second is the
service's own work. The configuration comes from `serving.service.SERVICE_CONFIG` (only the name
differs), so the two cannot drift.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

import bentoml
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.runtime import settle_heap
from serving.service import SERVICE_CONFIG

# For experiments only (the p99 investigation in bench_service.py's docstring): a JSON object
# merged over the configuration, e.g. '{"threads": 4}' or '{"metrics": {"enabled": false}}'.
ENV_OVERRIDES: Final = "REFERRAL_ML_FLOOR_OVERRIDES"
GATEWAY_ROUTE: Final = "/floor/gateway"
CONFIG: Final[dict[str, Any]] = {
    **SERVICE_CONFIG,
    "name": "referral_ml_floor",
    **json.loads(os.environ.get(ENV_OVERRIDES) or "{}"),
}


@bentoml.service(**CONFIG)
class FloorService:
    def __init__(self) -> None:
        settle_heap()  # as the service does after loading its models

    @bentoml.api(route="/floor")
    def floor(self, body: Any, /, ctx: bentoml.Context) -> dict[str, Any]:
        ctx.response.status_code = 200
        return {"ok": True}


class FloorGateway:
    """Answers POST /floor/gateway itself: reads and parses the body, sends a small dict."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != GATEWAY_ROUTE or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        json.loads(b"".join(chunks) or b"{}")
        await JSONResponse({"ok": True})(scope, receive, send)


FloorService.add_asgi_middleware(FloorGateway)  # type: ignore[attr-defined]
