"""Traces of the like handler's decisions: OpenTelemetry spans, W3C trace context in Kafka headers.

With `LIKEFLOW_TRACING` off (the default) the worker builds no `LikeTracing` and the like
handler checks one attribute per batch: no span, no header, no clock read per like. On, a like
is traced when its `traceparent` header is sampled (the upstream decision stands: a header that
is not sampled is not traced), or, without a valid one, with probability
`LIKEFLOW_TRACE_SAMPLE_RATIO`. A traced like gets a `like` span (a child of its `traceparent`,
or a new trace) with the children `decode`, `join` and `decide`, timed on the main thread, and
`outputs`, from the start of its batch's completion to the acknowledgement of every output of
the batch (changelog, prompts, dead letters, audit, Redis): the like's span ends with it. Its
prompt and its dead letter carry the `traceparent` (and `tracestate`) of the `like` span, so the
app's order and the feedback continue the trace. Spans carry the user's pseudonym, never the
raw id (docs/privacy.md). docs/observability.md#tracing shows a trace.

Spans go to the SDK's `BatchSpanProcessor`: exported over OTLP/HTTP by its own thread, off the
event loop; a full queue (2,048 spans) drops spans instead of holding the worker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config import Settings
from likeflow import __version__
from likeflow.domain.pseudonym import edge_pseudonym
from streams.events import CONTRACT_HEADERS, Invalid, Like, Prompt

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_CONTEXT_HEADERS = (TRACEPARENT, TRACESTATE)
_W3C = TraceContextTextMapPropagator()
# The parent of a like that starts a new trace.
_ROOT = Context()
# Outcomes of `PromptLikes._one` that are not skip reasons.
_OUTCOMES = frozenset({"prompted", "duplicate", "waiting"})

Header = tuple[str, bytes]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TracedRecord:
    """A fetched record whose trace context headers are the traced like's (for its dead letter)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header]


class LikeTrace:
    """One traced like while `_one` decides it: when decoding and the join ended, and what they gave."""

    __slots__ = ("parent", "started", "decoded_at", "joined_at", "like")

    def __init__(self, parent: Context) -> None:
        self.parent = parent
        self.started = time.time_ns()
        self.decoded_at = 0
        self.joined_at = 0
        self.like: Like | None = None

    def decoded(self, decoded: Like | Invalid) -> None:
        self.decoded_at = time.time_ns()
        if isinstance(decoded, Like):
            self.like = decoded

    def joined(self) -> None:
        self.joined_at = time.time_ns()


def _header(headers: Any, name: str) -> str | None:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key == name and value:
            return bytes(value).decode("ascii", "replace")
    return None


class LikeTracing:
    """Decides which likes are traced and records their spans (module doc); one per worker."""

    def __init__(
        self,
        provider: TracerProvider,
        topic: str,
        sample_ratio: float,
        pseudonymize: Callable[[str], str],
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("likeflow.prompt_likes", __version__)
        self.topic = topic
        self._ratio = sample_ratio
        self.pseudonymize = pseudonymize
        # Which likes without a trace context are sampled: no secret, no reproducibility needed.
        self._random = rng or random.Random().random  # noqa: S311

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        topic: str,
        pseudonymize: Callable[[str], str],
        exporter: SpanExporter | None = None,
    ) -> LikeTracing | None:
        """The worker's tracing (None when `settings.tracing` is off), exporting to `exporter`
        (default: OTLP/HTTP to `settings.otlp_endpoint`; none when that is empty)."""
        if not settings.tracing:
            return None
        # Built from the settings alone: the SDK's OTEL_* variables are not read for these.
        resource = Resource(
            {
                "service.name": settings.app_id,
                "service.version": __version__,
                "service.instance.id": settings.instance_id or "",
            }
        )
        provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False)
        if exporter is None and settings.otlp_endpoint:
            exporter = OTLPSpanExporter(
                endpoint=settings.otlp_endpoint, timeout=10, compression=Compression.NoCompression
            )
        if exporter is not None:
            provider.add_span_processor(
                BatchSpanProcessor(
                    exporter,
                    max_queue_size=2048,
                    schedule_delay_millis=1000,
                    max_export_batch_size=512,
                    export_timeout_millis=10_000,
                )
            )
        else:
            log.warning("tracing is on without LIKEFLOW_OTLP_ENDPOINT: spans are recorded, not exported")
        return cls(provider, topic, settings.trace_sample_ratio, pseudonymize)

    def shutdown(self) -> None:
        """Export the spans still queued and stop the exporter (the worker's shutdown)."""
        self.provider.shutdown()

    def sampled(self, headers: Any) -> Context | None:
        """The parent of a traced like with these headers, or None if it is not traced."""
        if headers:
            traceparent = _header(headers, TRACEPARENT)
            if traceparent is not None:
                carrier = {TRACEPARENT: traceparent}
                tracestate = _header(headers, TRACESTATE)
                if tracestate is not None:
                    carrier[TRACESTATE] = tracestate
                parent = _W3C.extract(carrier)
                remote = trace.get_current_span(parent).get_span_context()
                if remote.is_valid:
                    return parent if remote.trace_flags.sampled else None
        if self._ratio and self._random() < self._ratio:
            return _ROOT
        return None

    def batch(self, now_ms: int) -> BatchTraces:
        return BatchTraces(self, now_ms)


class BatchTraces:
    """The traced likes of one batch: their spans, their prompts' and dead letters' headers."""

    def __init__(self, tracing: LikeTracing, now_ms: int) -> None:
        self._tracing = tracing
        self._now_ms = now_ms
        self._open: list[tuple[Span, Context, int]] = []  # like span, its context, the like's ts
        # Index in the batch's prompt list -> the headers of that prompt.
        self.prompt_headers: dict[int, Sequence[Header]] = {}
        self._dead_letters: dict[tuple[int, int], Sequence[Header]] = {}  # (partition, offset)

    def wrap(self, one: Callable[..., str | Invalid]) -> Callable[..., str | Invalid]:
        """`one` (`PromptLikes._one`) tracing the likes that are sampled."""
        sampled = self._tracing.sampled

        def traced(
            partition: int, record: Any, now_ms: int, limits: Any, prompts: list[Any]
        ) -> str | Invalid:
            parent = sampled(record.headers)
            if parent is None:
                return one(partition, record, now_ms, limits, prompts)
            like = LikeTrace(parent)
            before = len(prompts)
            outcome = one(partition, record, now_ms, limits, prompts, like)
            self._decided(like, partition, record, outcome, prompts[before:], before)
            return outcome

        return traced

    def _decided(
        self,
        like: LikeTrace,
        partition: int,
        record: Any,
        outcome: str | Invalid,
        prompted: Sequence[tuple[int, Prompt, bytes]],
        index: int,
    ) -> None:
        ended = time.time_ns()
        tracing = self._tracing
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": tracing.topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": record.offset,
        }
        if isinstance(outcome, Invalid):
            attributes["likeflow.outcome"] = "invalid"
            attributes["likeflow.invalid_reason"] = outcome.reason.value
        elif outcome in _OUTCOMES:
            attributes["likeflow.outcome"] = outcome
        else:
            attributes["likeflow.outcome"] = "skipped"
            attributes["likeflow.skip_reason"] = outcome
        decoded = like.like
        like_ts = 0
        if decoded is not None:
            like_ts = decoded.ts
            attributes["likeflow.video_id"] = decoded.video_id
            # The pseudonym, never the raw id (cached by the pseudonymizer: computed once per like).
            attributes["likeflow.user"] = edge_pseudonym(
                decoded.user_id, record.headers, tracing.pseudonymize
            )
            attributes["likeflow.like_age_ms"] = max(0, self._now_ms - decoded.ts)
        if prompted:
            prompt = prompted[0][1]
            attributes["likeflow.product_id"] = prompt.product_id
            attributes["likeflow.prompt_id"] = prompt.prompt_id
        tracer = tracing.tracer
        span = tracer.start_span("like", like.parent, SpanKind.CONSUMER, attributes, start_time=like.started)
        context = trace.set_span_in_context(span)
        tracer.start_span("decode", context, start_time=like.started).end(like.decoded_at)
        if like.joined_at:
            tracer.start_span("join", context, start_time=like.decoded_at).end(like.joined_at)
            tracer.start_span("decide", context, start_time=like.joined_at).end(ended)
        self._open.append((span, context, like_ts))
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context)
        headers = [(name, value.encode()) for name, value in carrier.items()]
        if prompted:
            self.prompt_headers[index] = (*CONTRACT_HEADERS, *headers)
        if isinstance(outcome, Invalid):
            original = record.headers.items() if isinstance(record.headers, Mapping) else record.headers or ()
            kept = [(k, v) for k, v in original if k not in _CONTEXT_HEADERS]
            self._dead_letters[(partition, record.offset)] = kept + headers

    def dead_letters(self, invalid: Sequence[tuple[Any, Invalid]]) -> list[tuple[Any, Invalid]]:
        """`invalid` (record, why) with each traced like's record carrying its span's context."""
        if not self._dead_letters:
            return list(invalid)
        out: list[tuple[Any, Invalid]] = []
        for record, why in invalid:
            headers = self._dead_letters.get((record.partition, record.offset))
            if headers is not None:
                record = TracedRecord(
                    record.topic, record.partition, record.offset, record.key, record.value, headers
                )
            out.append((record, why))
        return out

    def completing(self, complete: Callable[[T], Awaitable[None]]) -> Callable[[T], Awaitable[None]]:
        """The batch's completion `complete`, ending each traced like's span with an `outputs`
        child from its start to its end (failed: both spans with the error)."""
        if not self._open:
            return complete

        async def traced(turn: T) -> None:
            started = time.time_ns()
            try:
                await complete(turn)
            except BaseException as exc:
                self._end(started, exc)
                raise
            self._end(started, None)

        return traced

    def _end(self, started: int, error: BaseException | None) -> None:
        ended = time.time_ns()
        tracer = self._tracing.tracer
        now_ms = ended // 1_000_000
        for span, context, like_ts in self._open:
            outputs = tracer.start_span("outputs", context, start_time=started)
            if error is not None:
                outputs.record_exception(error)
                outputs.set_status(Status(StatusCode.ERROR, repr(error)))
                span.set_status(Status(StatusCode.ERROR, "outputs not delivered"))
            elif like_ts:
                span.set_attribute("likeflow.like_to_ack_ms", max(0, now_ms - like_ts))
            outputs.end(ended)
            span.end(ended)
        self._open.clear()
