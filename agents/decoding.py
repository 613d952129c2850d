"""Errors as data at the edge: yields the valid events of a raw stream, dead-letters the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from agents.context import PipelineContext
from streams.events import Invalid

T = TypeVar("T")
Decoder = Callable[[bytes | None, bytes | None, int], T | Invalid]


async def valid_events(
    stream: Any, decode: Decoder[T], ctx: PipelineContext, topic_name: str
) -> AsyncIterator[tuple[Any, T]]:
    """(event, decoded value) for each valid record; an invalid one goes to the dead-letter topic.

    The dead letter is queued before the loop moves on, so the record's offset is committed
    only after its dead letter is on its way: nothing acknowledged is lost.
    """
    consumed = ctx.metrics.records_consumed.labels(topic_name)
    async for event in stream.events():
        consumed.inc()
        result = await decode_or_dead_letter(event, decode, ctx)
        if result is not None:
            yield event, result


async def decode_or_dead_letter(event: Any, decode: Decoder[T], ctx: PipelineContext) -> T | None:
    """The event's record decoded, or None once it is queued for the dead-letter topic."""
    message = event.message
    result = decode(message.key, message.value, ctx.settings.max_record_bytes)
    if isinstance(result, Invalid):
        await ctx.dead_letters.send(event, result)
        return None
    return result
