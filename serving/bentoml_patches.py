"""One fix to BentoML 1.4, applied when the service module is imported.

BentoML's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py) arms
``loop.call_later(timeout, ...)`` for every request and never cancels it, so each request leaves
a timer, a future and their closures alive for the whole timeout (60 s here). Under load those
thousands of live objects keep triggering Python's full garbage collections, 120-340 ms each,
every one to three seconds: the cause of a trivial endpoint's p99.9 of 100-350 ms against a p50
of 1-2 ms (measured in benchmarks/bench_service.py; the investigation is in its docstring). The
replacement below is BentoML's own method with the timer kept and cancelled once the request
is answered. It replaces a private method: `tests/unit/test_bentoml_patches.py` fails when a
BentoML upgrade changes the code it replaces, so the patch is looked at again then.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any, Final

from starlette.responses import JSONResponse

# SHA-256 of the source of the method replaced (BentoML 1.4.x)
REPLACED_SOURCE_SHA256: Final = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"


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
