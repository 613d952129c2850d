"""Errors as data at the edge: yields the valid events of a raw stream, dead-letters the rest."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from agents.context import PipelineContext
from likeflow.engine import OutputBatch
from streams.events import Invalid
from streams.validation import InputLimits

T = TypeVar("T")
Decoder = Callable[[bytes | None, bytes | None, InputLimits], T | Invalid]


async def valid_events(
    stream: Any, decode: Decoder[T], ctx: PipelineContext, topic_name: str
) -> AsyncIterator[tuple[Any, T]]:
    """(event, decoded value) for each valid record of a Faust stream; an invalid one goes to the
    dead-letter topic.

    The dead letter is acknowledged by Kafka before the loop moves on, so the record's offset is
    committed only after its dead letter is stored: nothing acknowledged is lost.
    """
    consumed = ctx.metrics.records_consumed.labels(topic_name)
    async for event in stream.events():
        consumed.inc()
        message = event.message
        result = decode(message.key, message.value, ctx.limits.at(wall_clock_ms()))
        if isinstance(result, Invalid):
            await dead_letter_now(ctx, message, result)
            continue
        yield event, result


async def dead_letter_now(ctx: PipelineContext, message: Any, invalid: Invalid) -> None:
    """Send one dead letter and wait for its acknowledgement (the low-volume agents' path)."""
    outputs = OutputBatch(ctx.producer())
    ctx.dead_letters.add(outputs, message, invalid)
    await outputs.send()
    await outputs.delivered()


def wall_clock_ms() -> int:
    """The worker's clock (epoch ms): what event times are checked against (`InputLimits.at`)."""
    return int(time.time() * 1000)
