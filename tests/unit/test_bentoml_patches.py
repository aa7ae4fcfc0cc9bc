"""The BentoML TimeoutMiddleware fix: timers are cancelled once answered, timeouts still work,
and a BentoML upgrade that changes the replaced method is noticed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving.bentoml_patches import (
    REPLACED_SOURCE_SHA256,
    SCHEMA_SOURCE_SHA256,
    cache_root_schemas,
    cancel_request_timers,
    schema_source_digest,
    source_digest,
)

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


def test_the_schema_method_is_the_one_the_cache_was_written_for() -> None:
    assert schema_source_digest() == SCHEMA_SOURCE_SHA256


def test_root_schemas_are_built_once_and_handed_out_as_copies() -> None:
    from typing import Annotated

    from _bentoml_sdk.io_models import IORootModel
    from pydantic import Field

    cache_root_schemas()

    class Numbers(IORootModel):  # type: ignore[misc]
        root: Annotated[list[int], Field(min_length=1)]

    first = Numbers.model_json_schema()
    assert first["type"] == "array" and first["minItems"] == 1
    first["mutated"] = True  # a caller's change must not reach the next caller
    second = Numbers.model_json_schema()
    assert "mutated" not in second and second == {k: v for k, v in first.items() if k != "mutated"}
    # bodies still parse and validate through the cached schema
    assert Numbers.model_validate_json(b"[1, 2]").root == [1, 2]
    with pytest.raises(ValueError):
        Numbers.model_validate_json(b"[]")


def test_the_schema_is_built_once_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    from _bentoml_sdk.io_models import IORootModel
    from pydantic import TypeAdapter

    cache_root_schemas()

    class Text(IORootModel):  # type: ignore[misc]
        root: str

    built: list[object] = []
    real = TypeAdapter.json_schema

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TypeAdapter, "json_schema", counting)
    for _ in range(5):
        assert Text.model_validate_json(b"hello").root == "hello"  # a string root: not parsed
    assert len(built) == 1


# ---------------------------------------------------------------- per-message spans


def test_bentoml_takes_the_tracing_middleware_from_where_the_patch_replaces_it() -> None:
    # A BentoML upgrade that imports it otherwise fails here: re-check skip_send_receive_spans
    import inspect

    from _bentoml_impl.server.app import ServiceAppFactory

    source = inspect.getsource(ServiceAppFactory)
    assert "from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware" in source
    assert "exclude_spans" not in source  # BentoML does not choose it itself


def _traced_spans(**kwargs: Any) -> list[str]:
    """The names of the spans one request through the tracing middleware ends."""
    from opentelemetry.instrumentation import asgi
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = asgi.OpenTelemetryMiddleware(_ok, tracer_provider=provider, **kwargs)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/recommend",
        "raw_path": b"/recommend",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("127.0.0.1", 3000),
        "client": ("127.0.0.1", 50000),
        "http_version": "1.1",
    }
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return [span.name for span in exporter.get_finished_spans()]


def test_requests_are_traced_without_a_span_per_message() -> None:
    from serving.bentoml_patches import skip_send_receive_spans

    skip_send_receive_spans()
    skip_send_receive_spans()  # idempotent
    assert _traced_spans() == ["POST /recommend"]  # the server span alone
    # OpenTelemetry's own default, asked for explicitly: a span per message sent
    spans = _traced_spans(exclude_spans=[])
    assert spans.count("POST /recommend http send") == 2 and "POST /recommend" in spans
