"""A fix for a record-dropping race in Faust's end of table recovery (the restart "stall").

After a rebalance, Faust's `Recovery` (faust-streaming 0.15) finishes with

    consumer.resume_partitions(stream partitions)   # fetching of input topics starts again
    await consumer.perform_seek()                   # one broker round trip (committed offsets)
    app.flow_control.resume()                       # clears every channel queue

When tables had to be restored, flow control is already running (it was resumed to read the
changelogs), so during the awaited seek the fetcher delivers input records into the agents'
channel queues and moves each partition's read offset past them. `flow_control.resume()` then
empties those queues: the records are dropped without being acknowledged, and since the read
offset has passed them they are not fetched again either. Faust commits an offset only up to the
first record that was not acknowledged, so from then on nothing is committed on that partition:
the worker keeps processing later records, but its consumer lag never goes down and the dropped
records are processed only after the next restart (at-least-once still holds: nothing past the
hole is ever committed). In the chaos test T2 about one restart under load in four hit it.

The fix keeps the stream partitions paused until the seek is done: `resume_partitions` calls made
while recovery completes are held back and applied right after `perform_seek` returns. Between
that and the queue clearing there is no await, so no record can arrive in between; the first
fetch after the resume starts at the committed offsets.

Two more holes show up once the partitions stay paused across the seek:

- A fetch that started before recovery paused the changelogs can return records of paused
  input partitions (aiokafka reads Faust's then empty set of active partitions as "every
  partition"): `likeflow.engine.delivery.BatchConsumerThread` fetches over a snapshot instead.
- `perform_seek` only moves partitions with a committed offset above 0 (aiokafka's
  `seek_to_committed`), so a partition whose group never committed keeps whatever position it
  had. `resume_after_seek` rewinds those to offset 0, which is where the group's
  `auto_offset_reset="earliest"` starts them (Kafka resets an offset below the log start to the
  earliest one).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from faust.tables import TableManager
from faust.tables.recovery import Recovery

log = logging.getLogger(__name__)


@contextmanager
def resume_after_seek(consumer: Any) -> Iterator[None]:
    """While inside, `consumer.resume_partitions(tps)` is held back until `consumer.perform_seek()`
    has returned; anything still held when the block ends (no seek happened) is resumed then."""
    held: list[set[Any]] = []
    resume: Callable[[Any], None] = consumer.resume_partitions
    seek: Callable[[], Awaitable[None]] = consumer.perform_seek

    def hold(tps: Any) -> None:
        held.append(set(tps))

    def release() -> None:
        while held:
            resume(held.pop(0))

    async def seek_then_resume() -> None:
        try:
            await seek()
            # No committed offset (or 0): aiokafka did not move it; start where a new group does.
            committed = consumer._committed_offset
            for tp in sorted({tp for tps in held for tp in tps if not committed.get(tp)}):
                await consumer.seek(tp, 0)
        finally:
            # No await between this and the caller's flow_control.resume(): nothing is fetched
            # for these partitions before the positions are the committed offsets.
            release()

    # Instance attributes shadow the class's methods for the duration of the block only.
    consumer.resume_partitions = hold
    consumer.perform_seek = seek_then_resume
    try:
        yield
    finally:
        del consumer.resume_partitions
        del consumer.perform_seek
        release()


class SeekFirstRecovery(Recovery):
    """Faust's Recovery, with the stream partitions resumed only after the seek (module doc)."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        with resume_after_seek(self.app.consumer):
            await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        with resume_after_seek(self.app.consumer):
            await super()._resume_streams(generation_id)


class SeekFirstTableManager(TableManager):
    """Faust's TableManager with `SeekFirstRecovery` (pass as `faust.App(TableManager=...)`)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
