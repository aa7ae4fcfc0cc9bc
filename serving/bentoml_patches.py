"""Three fixes to BentoML 1.4, applied when the service module is imported.

1. Request timers (`cancel_request_timers`).

BentoML's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py) arms
``loop.call_later(timeout, ...)`` for every request and never cancels it, so each request leaves
a timer, a future and their closures alive for the whole timeout (60 s here). Under load those
thousands of live objects keep triggering Python's full garbage collections, 120-340 ms each,
every one to three seconds: the cause of a trivial endpoint's p99.9 of 100-350 ms against a p50
of 1-2 ms (measured in benchmarks/bench_service.py; the investigation is in its docstring). The
replacement below is BentoML's own method with the timer kept and cancelled once the request
is answered. It replaces a private method: `tests/unit/test_bentoml_patches.py` fails when a
BentoML upgrade changes the code it replaces, so the patch is looked at again then.

2. Root-model JSON schemas (`cache_root_schemas`). `IORootModel.model_validate_json`, which
parses every JSON body of an API taking one root argument (``body: Any``), first builds the JSON
schema of the argument's type with a new pydantic TypeAdapter, to learn whether it is a string
or a file: 126 us per request on this machine, more than parsing a /recommend body (6 us). A
class's schema never changes, so it is built once per class and argument set; callers get a copy
(BentoML adds keys to it). Checked the same way (`SCHEMA_SOURCE_SHA256`).

3. Send and receive spans (`skip_send_receive_spans`). BentoML wraps every app in
OpenTelemetry's ASGI middleware, which opens a child span for each ASGI message: an
"http send" span for the response start and one per body chunk, an "http receive" span per
body chunk read. Starting and ending those spans was about 7% of a worker's busy time on
/recommend (py-spy), for spans that time a socket write. The request's server span, its
attributes and propagation are kept; OpenTelemetry's own option (``exclude_spans``) drops the
per-message ones. BentoML builds the middleware from ``opentelemetry.instrumentation.asgi``
when it builds the app, so the class there is replaced by a subclass with that default;
`tests/unit/test_bentoml_patches.py` checks BentoML still takes it from there.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
import json
from typing import Any, Final

from starlette.responses import JSONResponse

# SHA-256 of the source of the method replaced (BentoML 1.4.x)
REPLACED_SOURCE_SHA256: Final = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"


# SHA-256 of the source of IORootModel.model_json_schema (BentoML 1.4.x)
SCHEMA_SOURCE_SHA256: Final = "be74241fff7e687f75d06d26ed3b138233860aa9d961a75d7a0945e627cacb14"


def source_digest() -> str:
    """SHA-256 of BentoML's original TimeoutMiddleware.__call__ source (before patching)."""
    from bentoml._internal.server.http import traffic

    original = getattr(traffic.TimeoutMiddleware, "_referral_ml_original", None)
    target = original or traffic.TimeoutMiddleware.__call__
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()


def cancel_request_timers() -> None:
    """Patch TimeoutMiddleware.__call__ to cancel its per-request timer (idempotent)."""
    from bentoml._internal.server.http import traffic

    cls: Any = traffic.TimeoutMiddleware
    if getattr(cls, "_referral_ml_original", None) is not None:
        return

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"},
                    status_code=504,
                )
                await resp(scope, receive, send)
        else:
            timer.cancel()  # answered: the timer has nothing left to do
            await fut
        finally:
            timer.cancel()
        return None

    cls._referral_ml_original = cls.__call__
    cls.__call__ = call


def schema_source_digest() -> str:
    """SHA-256 of BentoML's original IORootModel.model_json_schema source (before patching)."""
    from _bentoml_sdk.io_models import IORootModel

    original = getattr(IORootModel, "_referral_ml_schema", None)
    target = original or IORootModel.model_json_schema
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()


def cache_root_schemas() -> None:
    """Patch IORootModel.model_json_schema to build each class's schema once (idempotent)."""
    from _bentoml_sdk.io_models import IORootModel

    cls: Any = IORootModel
    if getattr(cls, "_referral_ml_schema", None) is not None:
        return
    original = cls.model_json_schema  # bound to the class it is called on, below
    built: dict[tuple[type, str], dict[str, Any]] = {}

    def model_json_schema(model: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (model, json.dumps([args, kwargs], sort_keys=True, default=repr))
        if key not in built:
            built[key] = original.__func__(model, *args, **kwargs)
        return copy.deepcopy(built[key])

    cls._referral_ml_schema = original
    cls.model_json_schema = classmethod(model_json_schema)


SPANS_EXCLUDED: Final = ("receive", "send")


def skip_send_receive_spans() -> None:
    """Make OpenTelemetry's ASGI middleware skip its per-message spans by default (idempotent;
    an explicit ``exclude_spans`` still wins)."""
    from opentelemetry.instrumentation import asgi

    original: Any = asgi.OpenTelemetryMiddleware
    if getattr(original, "_referral_ml_patched", False):
        return

    class OpenTelemetryMiddleware(original):  # type: ignore[misc, valid-type]
        _referral_ml_patched = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("exclude_spans", list(SPANS_EXCLUDED))
            super().__init__(*args, **kwargs)

    asgi.OpenTelemetryMiddleware = OpenTelemetryMiddleware  # type: ignore[misc]
