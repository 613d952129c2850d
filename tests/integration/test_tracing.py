"""Tracing live: a worker exports the spans of a traced like over OTLP/HTTP to a receiver on loopback,
and its prompt and dead letter carry the like's trace context."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from config import Settings, load_settings
from likeflow.ops.topics import ensure_topics
from streams.topics import DEAD_LETTERS, LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.factories import mapping_json
from tests.integration.harness import (
    Consumed,
    Record,
    WorkerProcess,
    free_port,
    produce,
    read_topic_until,
    wait_until,
)
from tests.integration.namespaces import pseudonymizer_for

pytestmark = pytest.mark.integration

LIKE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BAD_TRACE = "5cf92f3577b34da6a3ce929d0e0e4737"
APP_SPAN = "00f067aa0ba902b7"


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    service: str
    start_ns: int
    end_ns: int


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (protobuf) that keeps every span it is sent."""

    port: int = field(default_factory=free_port)
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests += 1
        for resource_spans in message.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        a.key: a.value.string_value if a.value.HasField("string_value") else a.value.int_value
                        for a in span.attributes
                    }
                    self.spans.append(
                        ReceivedSpan(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            attributes,
                            resource.get("service.name", ""),
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def of_trace(self, trace_id: str) -> dict[str, ReceivedSpan]:
        return {s.name: s for s in self.spans if s.trace_id == trace_id}

    def tree(self, trace_id: str) -> str:
        """The trace as text: each span with its start after the root's and its duration."""
        ids = {s.span_id for s in self.spans if s.trace_id == trace_id}
        spans = sorted(
            (s for s in self.spans if s.trace_id == trace_id),
            key=lambda s: (s.start_ns, s.parent_span_id in ids),
        )
        t0 = min(s.start_ns for s in spans)
        lines = []
        for s in spans:
            depth = "  " if s.parent_span_id in ids else ""
            at, took = (s.start_ns - t0) / 1e6, (s.end_ns - s.start_ns) / 1e6
            lines.append(f"{depth}{s.name:<10} +{at:7.3f} ms {took:8.3f} ms")
        return "\n".join(lines)


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", otlp.export)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", otlp.port).start()
    try:
        yield otlp
    finally:
        await runner.cleanup()


def like(user: str, video: str, ts: int, headers: list[tuple[str, bytes]]) -> Record:
    body = {"event_id": f"{user}-{video}-{ts}", "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body), headers


def traceparent(record: Consumed) -> list[str]:
    return [v.decode() for k, v in record.headers if k == "traceparent"]


async def test_a_traced_like_is_exported_over_otlp_and_its_prompt_continues_the_trace(
    private: Settings, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    settings = load_settings(private.to_env(), tracing=True, otlp_endpoint=receiver.url, mapping_grace_s=0.0)
    await ensure_topics(settings)
    now = int(time.time() * 1000)
    product = {
        "product_id": "p-trace", "title": "碎花连衣裙", "category": "dress", "price_cents": 12900,
        "certified": True, "stock": 5,
    }  # fmt: skip
    mapping = mapping_json("trace-v1", ts=now - 60_000, products=[product])
    await produce(settings, settings.topic(VIDEO_PRODUCTS), [(b"trace-v1", mapping, [])])
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        await produce(
            settings,
            settings.topic(LIKES),
            [
                like(
                    "trace-u1", "trace-v1", now, [("traceparent", f"00-{LIKE_TRACE}-{APP_SPAN}-01".encode())]
                ),
                like("trace-u2", "trace-v1", now, []),  # not traced: no header, ratio 0
                (b"trace-u3", b"{not json", [("traceparent", f"00-{BAD_TRACE}-{APP_SPAN}-01".encode())]),
            ],
        )
        wanted = {"like", "decode", "join", "decide", "outputs"}
        await wait_until(
            lambda: set(receiver.of_trace(LIKE_TRACE)) == wanted and "like" in receiver.of_trace(BAD_TRACE),
            30,
            "the spans of both traced likes at the receiver",
            worker,
        )
        pseudonym = pseudonymizer_for(settings)
        keys = {pseudonym("trace-u1").encode(), pseudonym("trace-u2").encode()}
        prompts = await read_topic_until(
            settings,
            settings.topic(ORDER_PROMPTS),
            lambda rs: len([r for r in rs if r.key in keys]) == 2,
            30,
            "the two prompts",
        )
    finally:
        worker.stop()
    spans = receiver.of_trace(LIKE_TRACE)
    root = spans["like"]
    assert root.parent_span_id == APP_SPAN, "the like span is a child of the app's span"
    assert root.service == settings.app_id
    assert {s.parent_span_id for n, s in spans.items() if n != "like"} == {root.span_id}
    assert root.attributes["likeflow.outcome"] == "prompted"
    assert root.attributes["likeflow.product_id"] == "p-trace"
    assert root.attributes["likeflow.user"] == pseudonym("trace-u1")
    assert root.attributes["messaging.destination.name"] == settings.topic(LIKES)
    assert not any("trace-u1" in str(v) for s in receiver.spans for v in s.attributes.values())
    by_user = {r.key: r for r in prompts if r.key in keys}
    assert traceparent(by_user[pseudonym("trace-u1").encode()]) == [f"00-{LIKE_TRACE}-{root.span_id}-01"]
    assert traceparent(by_user[pseudonym("trace-u2").encode()]) == [], "an untraced like's prompt has none"
    assert len({s.trace_id for s in receiver.spans}) == 2, "only the two likes with a sampled header"
    bad = receiver.of_trace(BAD_TRACE)["like"]
    assert bad.attributes["likeflow.outcome"] == "invalid"
    assert bad.attributes["likeflow.invalid_reason"] == "malformed_json"
    dead = await read_topic_until(
        settings, settings.topic(DEAD_LETTERS), lambda rs: len(rs) >= 1, 30, "the dead letter"
    )
    assert [traceparent(d) for d in dead] == [[f"00-{BAD_TRACE}-{bad.span_id}-01"]]
    print(f"\n{len(receiver.spans)} spans in {receiver.requests} OTLP requests\n{receiver.tree(LIKE_TRACE)}")
    print(root.attributes)
