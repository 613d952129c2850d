"""What batch delivery hands a batch handler and what the handler hands back (`delivery` delivers;
the hot-topic agents implement `BatchHandler`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from faust.types import TP

# A topic's records, by partition, in offset order: aiokafka ConsumerRecords.
Records = Mapping[TP, Sequence[Any]]
T = TypeVar("T")


class Turn:
    """A completion's place in its topic's order: `async with turn:` waits until every earlier
    completion of the topic has left its own `async with` block.

    Completions run concurrently (one batch's acknowledgements are awaited while the next
    batch's are): what must keep the batches' order (sending to a partition, appending to an
    audit chain, writing a changelog) goes inside the block, waiting for acknowledgements
    after it.
    """

    def __init__(self, previous: Turn | None) -> None:
        self._previous = previous
        self.passed = asyncio.Event()
        self.waited_s = 0.0  # how long `async with` waited for the earlier completions (seconds)

    async def __aenter__(self) -> Turn:
        if self._previous is not None and not self._previous.passed.is_set():
            started = time.perf_counter()
            await self._previous.passed.wait()
            self.waited_s = time.perf_counter() - started
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.passed.set()


Completion = Callable[[Turn], Awaitable[None]]
# Told where a batch's time went: (topic, stage, seconds); see `STAGES`.
OnStage = Callable[[str, str, float], None]
# The stages the engine times for every batch; handlers add their own (e.g. "changelog_ack",
# "send", "outputs_ack", "audit", "redis") with `StageTimer`.
STAGES = {
    "fetch": "the fetch the batch came in: main thread waiting for the consumer thread's records",
    "age": "the batch's oldest record, from its Kafka timestamp to its delivery to the handler",
    "room": "waiting for the topic's completions in flight to drop below the limit",
    "process": "the handler's `process` (decisions, on the main thread)",
    "turn": "the completion waiting for the previous batch's sends (its `Turn`)",
    "complete": "the completion, from submission to every output acknowledged",
    "commit": "one offset commit (every batch topic's committable offsets)",
}


class StageTimer:
    """Times the stages of one topic's batches into an `OnStage` (`async with timer.stage(...)`)."""

    def __init__(self, topic: str, on_stage: OnStage | None) -> None:
        self.topic = topic
        self._on_stage = on_stage

    def observe(self, stage: str, seconds: float) -> None:
        if self._on_stage is not None:
            self._on_stage(self.topic, stage, seconds)

    async def timed(self, stage: str, awaitable: Awaitable[T]) -> T:
        """`await awaitable`, its duration observed as `stage`."""
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.observe(stage, time.perf_counter() - started)


class BatchHandler(Protocol):
    """Handles the fetched records of one topic, a batch at a time."""

    async def process(self, batch: Records) -> Completion:
        """Do the batch's work and start its sends; return what finishes its outputs.

        Called from the fetch loop, one batch at a time per worker: the state a handler keeps
        in memory is never touched by two batches at once. The returned completion runs
        concurrently with the topic's other completions; its `Turn` orders what must stay in
        batch order. The batch's offsets become committable once it and every earlier
        completion have finished.
        """
        ...
