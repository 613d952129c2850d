"""The audit trail on Kafka: appends hash-chained entries per partition and re-walks them (docs/audit.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.domain.audit import (
    GENESIS,
    AuditError,
    ChainVerifier,
    Head,
    Kind,
    VerifyResult,
    extend,
    head_of,
)
from likeflow.errors import ServiceUnavailable
from likeflow.progress import Progress
from likeflow.replay import topic_partitions
from streams.topics import AUDIT_LOG

log = logging.getLogger(__name__)

# A read that makes no progress for this long (broker gone, partition offline) gives up.
READ_STALL_S = 30.0


class AuditTrail:
    """Appends every emitted prompt and every feedback record to the hash-chained `audit-log`.

    One chain per partition. The caller passes the partition of the source record it processed:
    `likes` and `prompt-feedback` are co-partitioned, so the worker that owns partition p of
    both is the single writer of audit partition p (prompts and feedback of p share one chain).

    How to use it from the job (one instance per worker)::

        trail = AuditTrail(settings)
        await trail.start()                    # on worker start (e.g. app.on_startup / a service)
        ...
        # in an agent, after a batch of source records from partition p was processed, with the
        # JSON bytes that were emitted (prompts) or consumed (feedback), in processing order:
        await trail.append(p, "prompt", prompt_values)
        await trail.append(p, "feedback", feedback_values)
        ...
        # on rebalance (app.on_partitions_revoked): another worker may extend those chains now
        trail.forget({tp.partition for tp in revoked})
        ...
        await trail.stop()                     # on worker shutdown

    `append` returns once every entry of the batch is acknowledged by all in-sync replicas, so
    awaiting it before the batch's offsets are committed keeps the trail at-least-once with the
    job: a crash before the commit re-processes the batch and appends its records again. Those
    repeated entries are a true record of a re-send (the prompt bytes are identical, see
    docs/guarantees.md), and consumers of the trail de-duplicate by `prompt_id` / `event_id`.
    Appends to one partition are chained in the order they start (an asyncio.Lock per
    partition held while entries are built and queued, not while they are acknowledged);
    appends to different partitions run concurrently.
    """

    def __init__(
        self, settings: Settings, topic: str | None = None, client_id: str = "likeflow-audit"
    ) -> None:
        self.topic = topic or settings.topic(AUDIT_LOG)
        kwargs = kafka_client_kwargs(settings)
        # Idempotent producer with acks=all: a retried send is de-duplicated by the broker
        # (producer id + sequence number) and batches of one partition are never reordered, so
        # retries cannot duplicate or swap entries of a chain.
        self._producer = AIOKafkaProducer(
            **kwargs,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            # Entries go out as record batches built here; waiting to fill one only adds latency.
            linger_ms=0,
            max_batch_size=512 * 1024,
        )
        # Group-less (no group_id, nothing committed): reads the last entry of a partition to
        # learn its chain head.
        self._consumer = AIOKafkaConsumer(**kwargs, client_id=f"{client_id}-head", enable_auto_commit=False)
        self._heads: dict[int, Head] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        # Bumped by forget(): an append that started before a revoke does not cache its head.
        self._epochs: dict[int, int] = {}
        self._read_lock = asyncio.Lock()

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()

    async def stop(self) -> None:
        try:
            await self._producer.stop()  # flushes what is still buffered
        finally:
            await self._consumer.stop()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the cached chain heads of `partitions` (revoked: the next owner extends them)."""
        for p in partitions:
            self._heads.pop(p, None)
            self._epochs[p] = self._epochs.get(p, 0) + 1

    async def append(self, partition: int, kind: Kind, records: Sequence[bytes]) -> None:
        """Append `records` (JSON bytes each) to the chain of `partition`; returns once all are acked.

        Raises AuditError for a record that is not JSON (nothing of the batch is sent) or when
        the partition's last entry is damaged, and Kafka errors when a send fails; after a
        failure the head is re-read from the topic on the next append.
        """
        if not records:
            return
        lock = self._locks.setdefault(partition, asyncio.Lock())
        # Entries are chained and queued on the producer under the chain's lock, in the order the
        # appends take it; the acknowledgements are awaited outside it, so the next batch's
        # entries are chained while this batch's are in flight. The idempotent producer keeps a
        # partition's batches in order and without gaps: if one fails, the ones after it fail
        # too, and the worker stops (nothing of the batch is committed).
        async with lock:
            epoch = self._epochs.get(partition, 0)
            head = self._heads.get(partition)
            if head is None:
                head = await self._load_head(partition)
            entries, new_head = extend(head, kind, records)
            futures = await self._send(partition, entries)
            if self._epochs.get(partition, 0) == epoch:
                self._heads[partition] = new_head
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # Some entries may have been written: the real tail is on the broker, not here.
            self._heads.pop(partition, None)
            log.error(
                "audit append to %s[%d] failed for %d of %d entries (seq %d..%d): %r",
                self.topic,
                partition,
                len(failed),
                len(entries),
                head.next_seq,
                new_head.seq,
                failed[0],
            )
            raise failed[0]

    async def _send(self, partition: int, entries: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Produce `entries` to `partition` in order, as record batches (one request per batch)."""
        futures = []
        builder = self._producer.create_batch()
        for entry in entries:
            if builder.append(key=None, value=entry, timestamp=None) is None:
                futures.append(await self._producer.send_batch(builder, self.topic, partition=partition))
                builder = self._producer.create_batch()
                builder.append(key=None, value=entry, timestamp=None)
        futures.append(await self._producer.send_batch(builder, self.topic, partition=partition))
        return futures

    async def _load_head(self, partition: int) -> Head:
        """The head of the chain in `partition`: its last entry, or genesis when it is empty."""
        tp = TopicPartition(self.topic, partition)
        async with self._read_lock:  # the consumer reads one partition at a time
            self._consumer.assign([tp])
            begin = (await self._consumer.beginning_offsets([tp]))[tp]
            end = (await self._consumer.end_offsets([tp]))[tp]
            # The end offset (high watermark) is one past the last entry acknowledged by every
            # in-sync replica. Without transactions there are no control records, so end-1 is the
            # last entry; widen the window anyway in case the last offsets hold none.
            back = 1
            while end > begin:
                start = max(begin, end - back)
                last = None
                for record in await _read_range(self._consumer, tp, start, end):
                    last = record
                if last is not None:
                    head = head_of(last.value or b"")
                    log.info(
                        "audit chain %s[%d]@%d continues after seq %d",
                        self.topic,
                        partition,
                        last.offset,
                        head.seq,
                    )
                    return head
                if start == begin:
                    break
                back *= 16
        log.info("audit chain %s[%d] starts at genesis", self.topic, partition)
        return GENESIS


class WorkerAudit:
    """A worker's AuditTrail, started on its first append and stopped with the worker.

    aiokafka clients must be created inside the running event loop, which a Faust app's
    constructor is not; the agents call `append`, the app's revoke and shutdown signals call
    `forget` and `stop`.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._trail: AuditTrail | None = None
        self._starting = asyncio.Lock()

    async def append(self, partition: int, kind: Kind, records: Sequence[bytes]) -> None:
        """`AuditTrail.append`, starting the trail first if needed."""
        if not records:
            return
        if self._trail is None:
            async with self._starting:
                if self._trail is None:
                    trail = AuditTrail(self._settings)
                    await trail.start()
                    self._trail = trail
        await self._trail.append(partition, kind, records)

    def forget(self, partitions: Iterable[int]) -> None:
        """`AuditTrail.forget` (no-op before the first append)."""
        if self._trail is not None:
            self._trail.forget(partitions)

    async def stop(self) -> None:
        """Flush and close the trail's clients."""
        if self._trail is not None:
            trail, self._trail = self._trail, None
            await trail.stop()


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> list[Any]:
    """Records of `tp` with start <= offset < end (the consumer must have `tp` assigned)."""
    consumer.seek(tp, start)
    out: list[Any] = []
    deadline = time.monotonic() + READ_STALL_S
    while await consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise AuditError(f"could not read {tp.topic}[{tp.partition}] up to offset {end}")
        batch = await consumer.getmany(tp, timeout_ms=1000)
        out.extend(r for r in batch.get(tp, []) if r.offset < end)
    return out


async def verify_topic(
    settings: Settings, topic: str | None = None, progress_out: TextIO | None = None
) -> dict[int, VerifyResult]:
    """Re-walk every partition's chain in `topic` (default: the audit log) from its first record
    to the end offset seen at the start; returns {partition: result}."""
    name = topic or settings.topic(AUDIT_LOG)
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings), client_id="likeflow-audit-verify", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        verifiers = {tp.partition: ChainVerifier() for tp in tps}
        progress = Progress(sum(ends[tp] - begins[tp] for tp in tps), f"audit verify {name}", progress_out)
        done = 0
        # A chain starts at the partition's first record: with retention -1 nothing is ever
        # deleted, so a log that no longer starts at genesis shows up as a seq gap there.
        pending = {tp for tp in tps if ends[tp] > begins[tp]}
        for tp in pending:
            consumer.seek(tp, begins[tp])
        deadline = time.monotonic() + READ_STALL_S
        while pending:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"no progress reading {name} for {READ_STALL_S:.0f} s; is Kafka up?")
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                verifier = verifiers[tp.partition]
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    done += 1
                    if verifier.feed(record.offset, record.value or b"") is not None:
                        break  # the first break is the answer; nothing after it is trusted
                if records:
                    deadline = time.monotonic() + READ_STALL_S
            for tp in list(pending):
                if verifiers[tp.partition].result().first_break or await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
            progress.update(done, done)
        progress.finish()
    finally:
        await consumer.stop()
    return {p: v.result() for p, v in sorted(verifiers.items())}
