"""Tracing of the like handler (likeflow/tracing.py), in process, spans in the SDK's memory exporter."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agents.testing import InProcess, in_process
from config import ConfigError, load_settings
from likeflow.engine import KeyPartitioner
from likeflow.engine.testing import Delivered, Sent
from streams.events import CONTRACT_HEADERS
from tests.factories import mapping_json
from tests.unit.loop import run

NOW = int(time.time() * 1000)
MINUTE = 60_000
KEY = "unit-test-key-" + "0123456789abcdef" * 3
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
SAMPLED = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
NOT_SAMPLED = f"00-{TRACE_ID}-{PARENT_ID}-00".encode()


def like(user: str, event_id: str, video: str = "v1", ts: int = NOW - MINUTE) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body)


def traced_worker(**settings: Any) -> tuple[InProcess, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    mappings = [(b"v1", mapping_json("v1", ts=NOW - 3_600_000))]
    config = load_settings({}, user_key=KEY, mapping_grace_s=0.0, **settings)
    return in_process(config, mappings, span_exporter=exporter), exporter


def deliver(
    worker: InProcess, records: Sequence[tuple[bytes, bytes]], headers: Sequence[Sequence[Any]]
) -> Delivered:
    """One fetched batch of `likes`, record i with `headers[i]`."""
    topic, partition_of = worker.topic("likes"), KeyPartitioner(worker.settings.partitions)
    sent = [Sent(topic, partition_of(k), k, v, tuple(h)) for (k, v), h in zip(records, headers, strict=True)]
    return run(worker.harness.deliver(worker.handlers.likes, worker.harness.refetch(sent)))


def finished(worker: InProcess, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert worker.ctx.tracing is not None
    worker.ctx.tracing.provider.force_flush()
    return list(exporter.get_finished_spans())


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def traceparent(headers: Sequence[tuple[str, bytes]]) -> tuple[str, str, str]:
    """(trace id, span id, flags) of the record's `traceparent` header."""
    (value,) = [v for k, v in headers if k == "traceparent"]
    version, trace_id, span_id, flags = value.decode().split("-")
    assert version == "00"
    return trace_id, span_id, flags


def test_a_like_with_a_sampled_traceparent_is_traced_and_its_prompt_continues_the_trace() -> None:
    worker, exporter = traced_worker(tracing=True)
    done = deliver(worker, [like("u-raw-1", "e1")], [[("traceparent", SAMPLED)]])
    spans = by_name(finished(worker, exporter))
    assert sorted(spans) == ["decide", "decode", "join", "like", "outputs"]
    (root,) = spans["like"]
    assert root.context is not None and root.parent is not None
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == PARENT_ID and root.parent.is_remote
    assert root.kind == SpanKind.CONSUMER
    for name in ("decode", "join", "decide", "outputs"):
        (child,) = spans[name]
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context is not None and child.context.trace_id == root.context.trace_id
    attributes = dict(root.attributes or {})
    (prompt,) = done.outputs("order-prompts")
    body = orjson.loads(prompt.value or b"")
    assert attributes["likeflow.outcome"] == "prompted"
    assert attributes["likeflow.video_id"] == "v1"
    assert attributes["likeflow.product_id"] == body["product_id"]
    assert attributes["likeflow.user"] == worker.ctx.pseudonymize("u-raw-1") == body["user_id"]
    assert attributes["messaging.destination.name"] == "likes"
    assert attributes["messaging.kafka.offset"] == 0
    # The like is stamped NOW - MINUTE, NOW taken when this module was imported.
    age_now = int(time.time() * 1000) - (NOW - MINUTE)
    assert 0 <= age_now - int(str(attributes["likeflow.like_age_ms"])) < 60_000
    assert int(str(attributes["likeflow.like_to_ack_ms"])) >= int(str(attributes["likeflow.like_age_ms"]))
    # The span tree is in time order: decode, join, decide, then the batch's outputs.
    decode, join, decide, outputs = (spans[n][0] for n in ("decode", "join", "decide", "outputs"))
    assert root.start_time == decode.start_time
    assert decode.end_time == join.start_time and join.end_time == decide.start_time
    assert decide.end_time is not None and outputs.start_time is not None
    assert decide.end_time <= outputs.start_time and outputs.end_time == root.end_time
    # The prompt carries the like span's context: the app's order continues the trace.
    assert dict(prompt.headers)["likeflow.contract"] == dict(CONTRACT_HEADERS)["likeflow.contract"]
    assert traceparent(prompt.headers) == (TRACE_ID, f"{root.context.span_id:016x}", "01")
    # No span names the raw user id.
    for span in finished(worker, exporter):
        assert not any("u-raw-1" in str(v) for v in (span.attributes or {}).values())


def test_a_skipped_like_has_the_reason_and_a_duplicate_is_named() -> None:
    worker, exporter = traced_worker(tracing=True)
    records = [like("u1", "e1", video="v-unmapped"), like("u2", "e2"), like("u2", "e2")]
    deliver(worker, records, [[("traceparent", SAMPLED)]] * 3)
    roots = sorted(by_name(finished(worker, exporter))["like"], key=lambda s: s.start_time or 0)
    outcomes = [
        (s.attributes or {}).get("likeflow.outcome") for s in roots
    ]  # in the order the likes were decided
    assert sorted(str(o) for o in outcomes) == ["duplicate", "prompted", "skipped"]
    (skipped,) = [s for s in roots if (s.attributes or {}).get("likeflow.outcome") == "skipped"]
    assert (skipped.attributes or {})["likeflow.skip_reason"] == "no_mapping"
    assert (skipped.attributes or {})["likeflow.video_id"] == "v-unmapped"
    assert "likeflow.product_id" not in (skipped.attributes or {})
    names = [s.name for s in finished(worker, exporter)]
    assert names.count("join") == 3 and names.count("outputs") == 3


def test_an_invalid_like_is_traced_with_its_reason_and_its_dead_letter_carries_the_context() -> None:
    worker, exporter = traced_worker(tracing=True)
    done = deliver(
        worker,
        [(b"u1", b"{not json")],
        [[("traceparent", SAMPLED), ("tracestate", b"app=1"), ("x-app", b"kept")]],
    )
    spans = by_name(finished(worker, exporter))
    assert sorted(spans) == ["decode", "like", "outputs"], "no join or decision for an invalid like"
    (root,) = spans["like"]
    assert root.context is not None
    attributes = dict(root.attributes or {})
    assert attributes["likeflow.outcome"] == "invalid"
    assert attributes["likeflow.invalid_reason"] == "malformed_json"
    (dead,) = done.outputs("likeflow-dlq")
    names = [k for k, _ in dead.headers]
    assert names.count("traceparent") == 1 and names.count("tracestate") == 1, "replaced, not added"
    assert traceparent(dead.headers) == (TRACE_ID, f"{root.context.span_id:016x}", "01")
    headers = dict(dead.headers)
    assert headers["tracestate"] == b"app=1" and headers["x-app"] == b"kept"
    assert headers["likeflow.dlq.reason"] == b"malformed_json"


def test_an_unsampled_traceparent_and_no_header_at_ratio_0_are_not_traced() -> None:
    worker, exporter = traced_worker(tracing=True)
    done = deliver(worker, [like("u1", "e1"), like("u2", "e2")], [[("traceparent", NOT_SAMPLED)], []])
    assert finished(worker, exporter) == []
    assert [s.headers for s in done.outputs("order-prompts")] == [CONTRACT_HEADERS, CONTRACT_HEADERS]


def test_at_ratio_1_a_like_without_a_header_starts_a_trace() -> None:
    worker, exporter = traced_worker(tracing=True, trace_sample_ratio=1.0)
    done = deliver(worker, [like("u1", "e1"), (b"u2", b"[]")], [[], []])
    spans = by_name(finished(worker, exporter))
    assert len(spans["like"]) == 2 and all(s.parent is None for s in spans["like"])
    (prompt,) = done.outputs("order-prompts")
    trace_ids = {f"{s.context.trace_id:032x}" for s in spans["like"] if s.context is not None}
    assert traceparent(prompt.headers)[0] in trace_ids
    (dead,) = done.outputs("likeflow-dlq")
    assert traceparent(dead.headers)[0] in trace_ids - {traceparent(prompt.headers)[0]}


def test_tracing_off_records_nothing_and_adds_no_header() -> None:
    exporter = InMemorySpanExporter()
    mappings = [(b"v1", mapping_json("v1", ts=NOW - 3_600_000))]
    worker = in_process(load_settings({}, user_key=KEY), mappings, span_exporter=exporter)
    assert worker.ctx.tracing is None
    done = deliver(worker, [like("u1", "e1"), (b"u2", b"{")], [[("traceparent", SAMPLED)]] * 2)
    assert exporter.get_finished_spans() == ()
    (prompt,) = done.outputs("order-prompts")
    assert prompt.headers == CONTRACT_HEADERS
    (dead,) = done.outputs("likeflow-dlq")
    assert dict(dead.headers)["traceparent"] == SAMPLED, "the like's own header, kept as it came"


def test_undelivered_outputs_end_the_spans_with_the_error() -> None:
    worker, exporter = traced_worker(tracing=True)
    worker.producer.fail = RuntimeError("broker gone")
    deliver(worker, [like("u1", "e1")], [[("traceparent", SAMPLED)]])
    spans = by_name(finished(worker, exporter))
    assert spans["outputs"][0].status.status_code == StatusCode.ERROR
    assert spans["like"][0].status.status_code == StatusCode.ERROR
    assert "likeflow.like_to_ack_ms" not in (spans["like"][0].attributes or {})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIKEFLOW_TRACE_SAMPLE_RATIO": "0.01"}, "only used with LIKEFLOW_TRACING=true"),
        ({"LIKEFLOW_TRACING": "true", "LIKEFLOW_TRACE_SAMPLE_RATIO": "1.5"}, "must be 0-1"),
        ({"LIKEFLOW_TRACING": "true", "LIKEFLOW_OTLP_ENDPOINT": "collector:4318"}, "http:// or https://"),
    ],
)
def test_tracing_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, user_key=KEY)


def test_tracing_settings_parse() -> None:
    env = {
        "LIKEFLOW_TRACING": "true",
        "LIKEFLOW_TRACE_SAMPLE_RATIO": "0.01",
        "LIKEFLOW_OTLP_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
    }
    settings = load_settings(env, user_key=KEY)
    assert (settings.tracing, settings.trace_sample_ratio) == (True, 0.01)
    assert settings.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
