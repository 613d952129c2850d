"""What batch delivery hands a batch handler and what the handler hands back (`delivery` delivers;
the hot-topic agents implement `BatchHandler`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from faust.types import TP

# A topic's records, by partition, in offset order: aiokafka ConsumerRecords.
Records = Mapping[TP, Sequence[Any]]


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

    async def __aenter__(self) -> Turn:
        if self._previous is not None:
            await self._previous.passed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.passed.set()


Completion = Callable[[Turn], Awaitable[None]]


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
