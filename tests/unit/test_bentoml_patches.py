"""The BentoML TimeoutMiddleware fix: timers are cancelled once answered, timeouts still work,
and a BentoML upgrade that changes the replaced method is noticed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving.bentoml_patches import REPLACED_SOURCE_SHA256, cancel_request_timers, source_digest

pytestmark = pytest.mark.unit


def test_the_replaced_method_is_the_one_the_patch_was_written_for() -> None:
    # A BentoML upgrade that changes TimeoutMiddleware.__call__ fails here: re-check the patch
    assert source_digest() == REPLACED_SOURCE_SHA256


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(5)


async def _serve(app: Any, timeout: float, requests: int) -> tuple[list[int], int]:
    cancel_request_timers()
    middleware = TimeoutMiddleware(app, timeout=timeout)
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    for _ in range(requests):
        await middleware({"type": "http", "path": "/"}, receive, send)
    loop: Any = asyncio.get_running_loop()
    live_timers = [h for h in loop._scheduled if not h.cancelled()]
    return statuses, len(live_timers)


def test_answered_requests_leave_no_timer_behind() -> None:
    statuses, live = asyncio.run(_serve(_ok, timeout=60, requests=200))
    assert statuses == [200] * 200
    assert live == 0  # unpatched, 200 timers would wait here for 60 s


def test_a_request_over_the_timeout_is_still_a_504() -> None:
    statuses, _ = asyncio.run(_serve(_slow, timeout=0.05, requests=1))
    assert statuses == [504]
