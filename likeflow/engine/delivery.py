"""Batch delivery inside the Faust app: fetched records of the hot topics reach a handler as lists.

Faust hands every consumed record to its agents one event at a time, and that per-record path
costs more CPU than likeflow's own work on a record (bench/README.md). For the high-volume topics
likeflow takes the records out of the fetch instead: `BatchConsumer._getmany` (the driver's fetch,
below Faust's per-record drain loop) splits each fetched `{partition: [records]}` map, gives the
records of the batch topics to their `BatchHandler` as one map per topic and returns the rest to
Faust. Faust keeps everything else: the worker lifecycle, group membership and its co-partitioning
assignor, table recovery and standbys, the commit timer, rebalances and the low-volume agents.

Kafka semantics kept:

- **Nothing is committed ahead of its outputs.** A handler's `process` does the batch's CPU work
  and starts its sends; it returns a `Completion` that finishes once every output of the batch
  (prompts, count records, changelog records, audit entries, Redis) is acknowledged. Only then,
  and once every earlier batch of the topic is done, are the batch's offsets (gaps included)
  handed to Faust's commit as committable, so committed offsets only ever move forward.
  Completions overlap (a batch's acknowledgements are awaited while the next one sends); a
  `Turn` keeps the sends of one topic in batch order.
- **A batch in flight holds a rebalance.** `wait_empty` (what Faust awaits before it commits on
  revoke, and on shutdown) first waits until no batch is being processed and every completion
  has finished.
- **Records fetched before a seek are skipped.** Faust's seeks (after recovery, when the flow
  was stopped) set the partition's read offset; a record below it, or fetched while the flow is
  stopped or in an older group generation, is not delivered (it is fetched again).
- **A failed completion stops the worker.** Its offsets are never committed, so the records are
  redelivered to the next owner; handler state in memory may be ahead of the changelog and is
  not trusted after that (the supervisor restarts the process).

What the batch topics lose: Faust's per-record sensors and stream operators, `current_event()`
(table writes must name their changelog partition: see `likeflow.engine.state`), and
`stream_processing_timeout`.

The private Faust and aiokafka names this module uses are listed, with the others the engine
touches, in `likeflow.engine.internals` (checked against the installed versions by a test).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from likeflow.engine.contract import BatchHandler, Completion, OnStage, Records, Turn
from likeflow.engine.membership import DuplicateInstanceError, exit_on_duplicate, guard_static_identity
from likeflow.engine.outputs import OutputProducer

log = logging.getLogger(__name__)


@dataclass
class BatchRouter:
    """Which topics are delivered in batches, and to which handler; how many may be in flight."""

    handlers: dict[str, BatchHandler] = field(default_factory=dict)
    # Changelog topics whose records are applied in bulk during recovery and standby replay:
    # topic -> apply(partition, records) (likeflow.engine.state.ChangelogStore.apply_changelog).
    changelogs: dict[str, Callable[[int, Sequence[Any]], None]] = field(default_factory=dict)
    # Batches of one topic whose outputs may be awaited while the next batch is processed.
    max_in_flight: int = 4
    # Bounded fetch wait (ms): how long the broker may hold a fetch that has no records yet.
    fetch_max_wait_ms: int = 20
    # Called after each batch is handed to its handler: (topic, records, seconds spent waiting for
    # room in the topic's pipeline, seconds in `process`).
    on_batch: Callable[[str, int, float, float], None] | None = None
    # Told where each batch's time went (`likeflow.engine.contract.STAGES`).
    on_stage: OnStage | None = None
    # The producer of the handlers' outputs (changelogs stay on Faust's): started with the
    # consumer, before the first batch (`likeflow.engine.outputs.OutputProducer`).
    outputs: OutputProducer | None = None
    # Called (from the consumer thread) when another live worker took this worker's static group
    # identity (`likeflow.engine.membership`); the worker must exit. Default: exit at once.
    on_duplicate_identity: Callable[[DuplicateInstanceError], None] = field(
        default_factory=lambda: exit_on_duplicate
    )

    # Timers of the handlers: topic -> () -> the partitions with work due without new records
    # (a like whose grace ran out). Each fetch delivers those partitions to the handler as
    # empty batches, in the topic's pipeline like any batch.
    timers: dict[str, Callable[[], Collection[int]]] = field(default_factory=dict)

    def register(
        self, topic: str, handler: BatchHandler, due: Callable[[], Collection[int]] | None = None
    ) -> None:
        """Deliver `topic`'s records to `handler` (the full topic name, prefix included); with
        `due`, also the partitions it names, as empty batches, when they have no records."""
        self.handlers[topic] = handler
        if due is not None:
            self.timers[topic] = due

    def restore(self, changelog_topic: str, apply: Callable[[int, Sequence[Any]], None]) -> None:
        """Apply `changelog_topic`'s records in bulk while Faust recovers or replays a standby."""
        self.changelogs[changelog_topic] = apply


class _Pipeline:
    """The completions of one topic: run one after the other, at most `limit` pending."""

    def __init__(
        self,
        topic: str,
        limit: int,
        on_crash: Callable[[BaseException], Awaitable[None]],
        on_stage: OnStage | None = None,
    ) -> None:
        self.topic = topic
        self._limit = limit
        self._on_crash = on_crash
        self._on_stage = on_stage
        self._pending: list[asyncio.Task[None]] = []
        self._last_turn: Turn | None = None
        self.failed: BaseException | None = None

    async def room(self) -> None:
        """Wait until fewer than `limit` completions are pending."""
        while len(self._pending) >= self._limit:
            await asyncio.wait([self._pending[0]])
            self._prune()

    def submit(self, completion: Completion, on_done: Callable[[], None], where: str) -> None:
        previous = self._pending[-1] if self._pending else None
        turn = self._last_turn = Turn(self._last_turn)
        self._pending.append(asyncio.ensure_future(self._run(previous, completion, turn, on_done, where)))

    async def _run(
        self,
        previous: asyncio.Task[None] | None,
        completion: Completion,
        turn: Turn,
        on_done: Callable[[], None],
        where: str,
    ) -> None:
        failed: BaseException | None = None
        started = time.perf_counter()
        try:
            if self.failed is None:
                await completion(turn)
                if self._on_stage is not None:
                    self._on_stage(self.topic, "turn", turn.waited_s)
                    self._on_stage(self.topic, "complete", time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - any failure stops the worker (module doc)
            failed = exc
        finally:
            turn.passed.set()  # a completion that failed before its turn must not hold the next
        if previous is not None:
            await asyncio.wait([previous])  # offsets become committable in order
        if failed is not None and self.failed is None:
            self.failed = failed
            log.error("batch %s failed before its outputs were acknowledged: %r", where, failed)
            await self._on_crash(failed)
        if self.failed is None:
            on_done()

    def _prune(self) -> None:
        self._pending = [t for t in self._pending if not t.done()]

    @property
    def busy(self) -> bool:
        """Whether a submitted completion has not finished yet."""
        return any(not t.done() for t in self._pending)

    async def idle(self) -> None:
        """Wait until every submitted completion has finished."""
        while self._pending:
            await asyncio.wait(list(self._pending))
            self._prune()


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with batch delivery for the router's topics (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Next offset to commit per batch partition: one past the last record whose batch has
        # all its outputs acknowledged.
        self._batch_committable: dict[TP, int] = {}
        self._delivered_at: dict[TP, float] = {}
        self._pipelines: dict[str, _Pipeline] = {}
        self._processing = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def batch_router(self) -> BatchRouter:
        router: BatchRouter = self.transport.batch_router  # type: ignore[attr-defined]
        return router

    async def on_start(self) -> None:
        outputs = self.batch_router.outputs
        if outputs is not None:
            await outputs.start()  # before any batch is fetched (and any idle-source record)
        await super().on_start()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- delivery ------------------------------------------------------------------------------

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's signature
        fetch_started = time.perf_counter()
        records = await super()._getmany(active_partitions, timeout)
        fetched_s = time.perf_counter() - fetch_started
        router = self.batch_router
        handlers = router.handlers
        if records and router.changelogs:
            records = self._restore_in_bulk(records, active_partitions)
        due = self._due(active_partitions) if router.timers else {}
        if not due and (not records or not any(tp.topic in handlers for tp in records)):
            return records
        generation = self.app.consumer_generation_id
        rest: dict[Any, Any] = {}
        by_topic: dict[str, dict[TP, list[Any]]] = {}
        for tp, batch in records.items():
            if tp.topic not in handlers:
                rest[tp] = batch
            elif active_partitions is None or tp in active_partitions:
                fresh = self._fresh(tp, batch)
                if fresh:
                    by_topic.setdefault(tp.topic, {})[TP(tp.topic, tp.partition)] = fresh
        for tp in due:
            # Work due on a partition with no new records: an empty batch of it.
            by_topic.setdefault(tp.topic, {}).setdefault(tp, [])
        # Fetched in an older generation, or the flow stopped meanwhile (a rebalance started):
        # not delivered; Faust seeks back to the committed offsets and they are fetched again.
        if by_topic and self.flow_active and not self.should_stop:
            if self.app.consumer_generation_id == generation:
                if router.on_stage is not None:
                    _observe_fetch(router.on_stage, by_topic, fetched_s)
                await self._deliver_shielded(by_topic)
        return rest

    async def _deliver_shielded(self, by_topic: dict[str, dict[TP, list[Any]]]) -> None:
        """`_deliver`, finished even if the fetcher task awaiting it is cancelled.

        Faust cancels its fetcher at shutdown (and on some rebalances) while a handler may be in
        `process`, whose changelog writes may already be on their way: the batch must then
        still complete and become committable, or the next owner finds its likes in the
        restored state and redelivers them as duplicates. The batch counts as processing from
        here, so `wait_empty` (which commits) waits for it even if cancelled before it starts.
        """
        self._processing += 1
        self._idle.clear()
        await asyncio.shield(asyncio.ensure_future(self._deliver(by_topic)))

    def _restore_in_bulk(self, records: Any, active_partitions: Any) -> Any:
        """Apply every fetched changelog record of the router's tables to storage, in offset
        order, and hand Faust's recovery only each partition's last record, already applied.

        Faust's recovery takes changelog records one event at a time, at its per-record cost.
        Here the records are written to the table's storage at once and Faust's recovery offsets
        moved to the last of them (`active_offsets` / `standby_offsets`, what it compares with
        the highwaters to decide that recovery is complete). The last record still reaches
        Faust's recovery loop, which skips it (its offset is not past the recovery offset) and
        then runs its end-of-recovery check as usual.

        No record of these tables may be applied by Faust itself: its recovery buffers events
        (`recovery_buffer_size`, 1000) and applies them later, after the next fetches were
        applied here, so a buffered record would overwrite a key's newer value with an older one.
        """
        changelogs = self.batch_router.changelogs
        if not any(tp.topic in changelogs for tp in records):
            return records
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]  # SeekFirstTableManager
        now = time.monotonic()
        rest: dict[Any, Any] = {}
        for tp, batch in records.items():
            apply = changelogs.get(tp.topic)
            ftp = TP(tp.topic, tp.partition)
            if apply is None or (active_partitions is not None and tp not in active_partitions):
                rest[tp] = batch
                continue
            if ftp in recovery.active_tps:
                offsets = recovery.active_offsets
                recovery._active_events_received_at[ftp] = now
            elif ftp in recovery.standby_tps:
                offsets = recovery.standby_offsets
                recovery._standby_events_received_at[ftp] = now
            else:
                rest[tp] = batch
                continue
            seen = offsets.get(ftp)
            fresh = [r for r in batch if seen is None or r.offset > seen]
            if fresh:
                apply(tp.partition, fresh)
                offsets[ftp] = fresh[-1].offset
            # Seen by Faust's loop for its bookkeeping only: at or below the offset just set.
            rest[tp] = batch[-1:]
        return rest

    def _due(self, active_partitions: Any) -> list[TP]:
        """The owned, active partitions whose handlers have work due (`BatchRouter.timers`)."""
        assigned = self.assignment()
        out = []
        for topic, due in self.batch_router.timers.items():
            for partition in due():
                tp = TP(topic, partition)
                if tp in assigned and (active_partitions is None or tp in active_partitions):
                    out.append(tp)
        return out

    def _fresh(self, tp: Any, batch: Sequence[Any]) -> list[Any]:
        """The records at or past the partition's read offset (older ones predate a seek)."""
        read = self._read_offset[TP(tp.topic, tp.partition)]
        if read is None or batch[0].offset >= read:
            return list(batch)
        return [r for r in batch if r.offset >= read]

    async def _deliver(self, by_topic: dict[str, dict[TP, list[Any]]]) -> None:
        """Hand each topic's batch to its handler (counted in `_processing` by the caller)."""
        router = self.batch_router
        try:
            for topic, batch in by_topic.items():
                pipeline = self._pipeline(topic)
                if pipeline.failed is not None:
                    return
                waited = time.perf_counter()
                await pipeline.room()
                started = time.perf_counter()
                completion = await router.handlers[topic].process(batch)
                ends = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
                for tp, end in ends.items():
                    # Delivered: a later fetch of the same offsets (no seek between) is skipped.
                    self._read_offset[tp] = end
                    self._delivered_at[tp] = self.app.monitor.stream_inbound_time[tp] = time.monotonic()
                pipeline.submit(completion, functools.partial(self._committable, ends), _where(batch))
                processed = time.perf_counter()
                if router.on_batch is not None:
                    n = sum(len(r) for r in batch.values())
                    router.on_batch(topic, n, started - waited, processed - started)
                if router.on_stage is not None:
                    router.on_stage(topic, "room", started - waited)
                    router.on_stage(topic, "process", processed - started)
        finally:
            self._processing -= 1
            if not self._processing:
                self._idle.set()

    def _pipeline(self, topic: str) -> _Pipeline:
        pipeline = self._pipelines.get(topic)
        if pipeline is None:
            router = self.batch_router
            pipeline = _Pipeline(topic, router.max_in_flight, self._stop_on_failure, router.on_stage)
            self._pipelines[topic] = pipeline
        return pipeline

    async def _stop_on_failure(self, exc: BaseException) -> None:
        await self.app.crash(exc)

    def _committable(self, ends: Mapping[TP, int]) -> None:
        assignment = self.assignment()
        for tp, end in ends.items():
            if tp in assignment and end > self._batch_committable.get(tp, -1):
                self._batch_committable[tp] = end

    # -- commit bookkeeping (Faust's ack lists are not used for batch partitions) --------------

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        started = time.perf_counter()
        committed: bool = await super().commit(*args, **kwargs)
        on_stage = self.batch_router.on_stage
        if committed and on_stage is not None:
            on_stage("all", "commit", time.perf_counter() - started)
        return committed

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp in list(self._batch_committable):
            if topics is None or tp in topics or tp.topic in topics:
                yield tp

    def _new_offset(self, tp: TP) -> int | None:
        if tp in self._batch_committable:
            return self._batch_committable[tp]
        offset: int | None = super()._new_offset(tp)
        return offset

    def delivered_at(self, tp: TP) -> float | None:
        """When a batch of `tp` was last delivered (time.monotonic()), or None since the assignment."""
        return self._delivered_at.get(tp)

    def caught_up(self, tp: TP) -> bool:
        """Whether every record of `tp` up to its high watermark (as of the last fetch) has been
        delivered to its handler."""
        highwater = self.highwater(tp)
        if highwater is None:
            return False
        read = self._read_offset.get(tp)
        return (read or 0) >= highwater

    def batches_pending(self, topic: str) -> bool:
        """Whether a batch of `topic` is being processed or has outputs not yet acknowledged."""
        pipeline = self._pipelines.get(topic)
        return self._processing > 0 or (pipeline is not None and pipeline.busy)

    async def wait_batches(self) -> None:
        """Until no batch is being processed and every completion has finished."""
        while True:
            await self._idle.wait()
            for pipeline in list(self._pipelines.values()):
                await pipeline.idle()
            if self._idle.is_set() and not any(p.busy for p in self._pipelines.values()):
                return

    async def wait_empty(self) -> None:
        # A rebalance (revoke) and a shutdown wait here before committing: batches in flight
        # finish first, so their offsets are committed by the commit that follows.
        await self.wait_batches()
        await super().wait_empty()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)
        for tp in revoked:
            self._batch_committable.pop(tp, None)
            self._delivered_at.pop(tp, None)


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with the broker-side fetch wait bounded and every fetch made over a
    snapshot of the active partitions.

    - Faust hard-codes a 1.5 s `fetch.max.wait.ms`: a fetch that finds no records waits that
      long at the broker, and every partition in it waits too, so a like arriving just after
      such a fetch started waited up to 1.5 s before the worker saw it.
    - Faust hands aiokafka its *live* set of active partitions for a fetch that may wait, and
      aiokafka reads an empty set as "every partition". When recovery pauses the changelogs
      (the set becomes empty) during such a fetch, aiokafka returns records of paused input
      partitions and moves their positions past them; Faust then discards them as not active
      (`likeflow.engine.recovery` describes the race around it). A copy is fetched instead,
      and an empty one fetches nothing.
    """

    async def on_start(self) -> None:
        await super().on_start()
        # The consumer is started (its group coordinator exists) and not subscribed yet: no join
        # has happened. Faust passes `consumer_group_instance_id` to aiokafka itself.
        instance_id = self.app.conf.consumer_group_instance_id
        consumer: Any = self._consumer
        coordinator = consumer._coordinator
        router: BatchRouter = self.transport.batch_router  # type: ignore[attr-defined]  # BatchTransport
        on_duplicate = router.on_duplicate_identity
        if instance_id and coordinator is not None:
            guard_static_identity(coordinator, instance_id, on_duplicate)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        router: BatchRouter = transport.batch_router
        consumer._fetch_max_wait_ms = router.fetch_max_wait_ms
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: Any = None,  # noqa: ASYNC109 - Faust's signature (it passes `timeout=` by keyword)
        max_records: Any = None,
    ) -> Any:
        snapshot = set(active_partitions or ())
        if not snapshot:
            return {}
        return await super()._fetch_records(consumer, snapshot, timeout=timeout, max_records=max_records)


class BatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with `BatchConsumer` (set as `app.transport` before start)."""

    Consumer = BatchConsumer

    def __init__(self, url: Any, app: Any, router: BatchRouter, **kwargs: Any) -> None:
        super().__init__(url, app, **kwargs)
        self.batch_router = router


def install_batch_transport(app: Any, router: BatchRouter) -> None:
    """Make `app` deliver `router`'s topics in batches; call before the app starts."""
    app.transport = BatchTransport(app.conf.broker_consumer, app, router)


def kafka_producer(app: Any) -> AIOKafkaProducer:
    """The aiokafka producer inside Faust's producer (started with the app)."""
    producer: AIOKafkaProducer = app.producer._ensure_producer()
    return producer


def _where(batch: Records) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}]@{rs[0].offset}-{rs[-1].offset}" if rs else f"{tp.topic}[{tp.partition}]"
        for tp, rs in batch.items()
    )


def _observe_fetch(
    on_stage: OnStage, by_topic: Mapping[str, Mapping[TP, Sequence[Any]]], fetched_s: float
) -> None:
    """The fetch's wait, and the age of each topic's oldest record as it is delivered."""
    now_ms = time.time() * 1000
    for topic, batch in by_topic.items():
        on_stage(topic, "fetch", fetched_s)
        oldest = min(
            (records[0].timestamp for records in batch.values() if records and records[0].timestamp),
            default=None,
        )
        if oldest is not None:
            on_stage(topic, "age", max(0.0, now_ms - oldest) / 1000)
