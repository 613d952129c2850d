"""Batch delivery: completions in order, failures stop what follows, and the Faust internals it needs.

The shape tests fail when faust-streaming or aiokafka change what the engine's modules override
or read (`likeflow.engine.internals` lists the names): re-check those modules against the new
version before changing the pins.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from types import SimpleNamespace
from typing import Any

import aiokafka
from faust import streams as faust_streams
from faust.stores import memory, rocksdb
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from likeflow.engine import Completion, Turn, delivery
from likeflow.engine.delivery import _Pipeline


def params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_consumer_methods_overridden_keep_their_shape() -> None:
    base = faust_consumer.Consumer
    assert params(faust_consumer.ThreadDelegateConsumer._getmany) == ["self", "active_partitions", "timeout"]
    assert params(base._new_offset) == ["self", "tp"]
    assert params(base._filter_tps_with_pending_acks) == ["self", "topics"]
    assert params(base.wait_empty) == ["self"]
    assert params(base.on_partitions_revoked) == ["self", "revoked"]
    # The drain loop asks getmany -> _wait_next_records -> _getmany, and keeps read offsets.
    assert "_wait_next_records" in inspect.getsource(base.getmany)
    assert "self._getmany(" in inspect.getsource(base._wait_next_records)
    assert "_read_offset" in inspect.getsource(base.perform_seek)
    # Commits go through _new_offset for every partition _filter_tps_with_pending_acks yields.
    assert "_filter_tps_with_pending_acks" in inspect.getsource(base.force_commit)
    assert "_new_offset" in inspect.getsource(base._filter_committable_offsets)
    assert params(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
    assert "fetch_max_wait_ms=1500" in inspect.getsource(
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    )
    assert "_fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert params(faust_aiokafka.Consumer._new_consumer_thread) == ["self"]
    assert faust_aiokafka.Transport.Consumer is faust_aiokafka.Consumer


def test_the_recovery_bookkeeping_read_and_moved_keeps_its_names() -> None:
    init = inspect.getsource(Recovery.__init__)
    for name in ("active_offsets", "standby_offsets", "active_tps", "standby_tps"):
        assert f"self.{name}" in init
    slurp = inspect.getsource(Recovery._slurp_changelogs.fun)  # a mode ServiceTask
    assert "self._active_events_received_at" in slurp and "self._standby_events_received_at" in slurp
    assert "offset > seen_offset" in slurp, "records at or below the recovery offset are skipped"
    # ...and the end-of-recovery check runs for every record, skipped or not (the bulk restore
    # hands Faust only records it has applied, so Faust's loop must still see them).
    after_check = slurp.split("offset > seen_offset", 1)[1]
    assert "await _maybe_signal_recovery_end()" in after_check
    assert "table.apply_changelog_batch(buf)" in after_check, "Faust applies from a buffer, later"


def _changelog_record(offset: int, key: bytes, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic="counts-changelog", partition=0, offset=offset, key=key, value=value)


def test_the_bulk_restore_applies_every_record_in_order_and_leaves_faust_none() -> None:
    storage: dict[bytes, bytes] = {}
    tp = TP("counts-changelog", 0)
    recovery = SimpleNamespace(
        active_tps={tp},
        standby_tps=set(),
        active_offsets={},
        standby_offsets={},
        _active_events_received_at={},
        _standby_events_received_at={},
    )
    router = delivery.BatchRouter()
    router.restore("counts-changelog", lambda _p, records: storage.update((r.key, r.value) for r in records))
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery))
    consumer = SimpleNamespace(batch_router=router, app=app)
    passed_to_faust = []
    # Key k's value of the first fetch's last record is overwritten by the next fetches (one of
    # them a single record): Faust applying that record late would bring "old" back.
    fetches = [
        [_changelog_record(0, b"j", b"1"), _changelog_record(1, b"k", b"old")],
        [_changelog_record(2, b"k", b"new")],
        [_changelog_record(2, b"k", b"new"), _changelog_record(3, b"j", b"2")],  # a refetch
    ]
    for records in fetches:
        rest = delivery.BatchConsumer._restore_in_bulk(consumer, {tp: records}, None)  # type: ignore[arg-type]
        passed_to_faust += rest[tp]
    assert storage == {b"j": b"2", b"k": b"new"}
    assert recovery.active_offsets[tp] == 3
    # Faust's loop applies a record only past the recovery offset: none of these.
    assert all(r.offset <= recovery.active_offsets[tp] for r in passed_to_faust)
    assert [r.offset for r in passed_to_faust] == [1, 2, 3]


def test_the_stores_written_keep_their_shape() -> None:
    assert "self._key_partition" in inspect.getsource(memory.Store.__post_init__)
    assert "self.data" in inspect.getsource(memory.Store.__post_init__)
    assert params(rocksdb.Store._db_for_partition) == ["self", "partition"]
    assert params(rocksdb.Store.set_persisted_offset) == ["self", "tp", "offset"]
    assert rocksdb.Store.offset_key == b"__faust\0offset__"
    assert params(faust_aiokafka.Producer._ensure_producer) == ["self"]
    # tables.put_for_event sets Faust's current event around a write; RocksDB's _set reads it.
    assert "current_event()" in inspect.getsource(rocksdb.Store._set)
    assert "_current_event.get(" in inspect.getsource(faust_streams.current_event)


async def test_completions_overlap_but_send_and_mark_in_batch_order() -> None:
    done: list[int] = []
    sent: list[int] = []
    marked: list[int] = []

    def completion(n: int, delay: float) -> Completion:
        async def run(turn: Turn) -> None:
            async with turn:
                sent.append(n)
            await asyncio.sleep(delay)  # the acknowledgements: they may come in any order
            done.append(n)

        return run

    crashes: list[BaseException] = []

    async def on_crash(exc: BaseException) -> None:
        crashes.append(exc)

    pipeline = _Pipeline("t", limit=3, on_crash=on_crash)
    for n, delay in ((1, 0.03), (2, 0.0), (3, 0.01)):
        await pipeline.room()
        pipeline.submit(completion(n, delay), functools.partial(marked.append, n), f"t@{n}")
    assert pipeline.busy
    await pipeline.idle()
    assert sent == [1, 2, 3], "what is inside the turn keeps the batches' order"
    assert done == [2, 3, 1], "completions overlap: the first waited longest for its acknowledgements"
    assert marked == [1, 2, 3], "but offsets become committable in order"
    assert not crashes and not pipeline.busy


async def test_a_failed_completion_stops_the_worker_and_nothing_after_it_is_marked() -> None:
    marked: list[int] = []
    crashes: list[BaseException] = []

    async def on_crash(exc: BaseException) -> None:
        crashes.append(exc)

    async def fails(turn: Turn) -> None:
        raise RuntimeError("not delivered")

    async def fine(turn: Turn) -> None:
        async with turn:
            return None

    pipeline = _Pipeline("t", limit=4, on_crash=on_crash)
    pipeline.submit(fine, lambda: marked.append(1), "t@1")
    pipeline.submit(fails, lambda: marked.append(2), "t@2")
    pipeline.submit(fine, lambda: marked.append(3), "t@3")
    await pipeline.idle()
    assert marked == [1], "offsets after a failed batch are never committable"
    assert len(crashes) == 1 and pipeline.failed is crashes[0]


async def test_room_waits_while_the_limit_is_reached() -> None:
    release = asyncio.Event()

    async def held(turn: Turn) -> None:
        await release.wait()

    async def on_crash(exc: BaseException) -> None:
        raise AssertionError(exc)

    pipeline = _Pipeline("t", limit=1, on_crash=on_crash)
    pipeline.submit(held, lambda: None, "t@1")
    waiting = asyncio.ensure_future(pipeline.room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    release.set()
    await asyncio.wait_for(waiting, 1)


async def test_a_delivery_finishes_when_the_fetcher_is_cancelled() -> None:
    """Faust cancels its fetcher at shutdown, possibly inside a handler's `process`: the batch
    still completes, and until it has the consumer is not idle (wait_empty does not commit)."""
    release = asyncio.Event()
    delivered: list[str] = []

    async def deliver(by_topic: dict[str, Any]) -> None:
        try:
            await release.wait()  # the handler's process, its changelog writes in flight
            delivered.append("done")
        finally:
            consumer._processing -= 1
            if not consumer._processing:
                consumer._idle.set()

    consumer: Any = SimpleNamespace(_processing=0, _idle=asyncio.Event(), _deliver=deliver)
    consumer._idle.set()
    fetcher = asyncio.ensure_future(delivery.BatchConsumer._deliver_shielded(consumer, {"likes": {}}))
    await asyncio.sleep(0)
    fetcher.cancel()
    await asyncio.sleep(0)
    assert fetcher.cancelled() or fetcher.done()
    assert not consumer._idle.is_set(), "a batch in flight after the cancel: not idle"
    release.set()
    await asyncio.wait_for(consumer._idle.wait(), 1)
    assert delivered == ["done"]
