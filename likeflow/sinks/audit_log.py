"""The audit trail on Kafka: one Merkle-tree batch record per transaction and partition, and
signed checkpoints of each partition's tree head (docs/audit.md, format v2)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerFenced

from config import Settings
from likeflow.connections import audit_signing_key, kafka_client_kwargs
from likeflow.domain.audit import AuditError, Kind
from likeflow.domain.audit_tree import (
    EMPTY_HEAD,
    VERSION,
    VERSION_HEADER,
    Checkpoint,
    TreeHead,
    log_id,
    seal_all,
    sign_checkpoint,
    tree_head_of,
)
from likeflow.sinks.dead_letter_records import dead_letter_headers, fitted
from streams.events import DeadLetterReason
from streams.topics import AUDIT_CHECKPOINTS, AUDIT_LOG, DEAD_LETTERS

log = logging.getLogger(__name__)

# A read that makes no progress for this long (broker gone, partition offline) gives up.
READ_STALL_S = 30.0
# An append that fails on a Kafka error (a broker or the transaction coordinator lost) is
# retried after these pauses (s), then every last pause for as long as the error lasts: the
# batch and its offsets wait (nothing is committed ahead of its audit entries), as the worker's
# other outputs wait for the broker. An append that keeps failing while the broker answers (a
# broken transaction coordinator) stops commits, and the stall watchdog ends the worker.
RETRY_PAUSES_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# Records after a chain's last entry that are not entries (someone else wrote them): this many
# are copied to the dead-letter topic with the next append and logged one by one; the rest are
# counted in one warning (`likeflow audit verify` lists them all).
MAX_FOREIGN_COPIED = 100
# At most this many entries per group-committed transaction (more queued go in the next one).
MAX_GROUP_RECORDS = 20_000
MAX_FOREIGN_LOGGED = 10
# A group's records are cut into batch records of about this many bytes at most (Kafka's
# default message limit is 1 MiB; the header adds at most ~4 KiB of frontier).
MAX_BATCH_RECORD_BYTES = 512 * 1024
# A shutdown waits this long for the last checkpoints (a broker that is gone cannot take them).
STOP_CHECKPOINT_S = 10.0
_VERSION_HEADERS = [(VERSION_HEADER, str(VERSION).encode())]


@dataclass(frozen=True, slots=True)
class ForeignRecord:
    """A record at the tail of an audit partition that is not a chain entry, as its dead letter:
    the original key and value (cut to the dead-letter limits) and `likeflow.dlq.*` headers."""

    offset: int
    reason: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class LoadedHead:
    """A partition's chain head as read from the broker, and the foreign records after it
    (the first `MAX_FOREIGN_COPIED` in log order; `foreign_count` counts them all)."""

    head: TreeHead
    foreign: tuple[ForeignRecord, ...] = ()
    foreign_count: int = 0


class AuditTrail:
    """Appends every emitted prompt and every feedback record to `audit-log` (format v2).

    One Merkle tree per partition, one batch record per transaction (a group of appends), and
    a signed checkpoint of the head in the same transaction every `audit_checkpoint_interval_s`
    (at an append, or by a timer) and on `stop` (docs/audit.md). The caller passes the
    partition of the source record it processed: `likes` and `prompt-feedback` are
    co-partitioned, so the worker that owns partition p of both is the single writer of audit
    partition p (prompts and feedback of p share one tree).

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
    Appends to one partition are in the tree in the order they start (one writer task per
    partition takes them from its queue); appends to different partitions run concurrently.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str | None = None,
        client_id: str = "likeflow-audit",
        checkpoint_topic: str | None = None,
    ) -> None:
        self.topic = topic or settings.topic(AUDIT_LOG)
        self.checkpoint_topic = checkpoint_topic or settings.topic(AUDIT_CHECKPOINTS)
        self._key = audit_signing_key(settings)  # ConfigError when it is missing or unreadable
        self._interval_s = settings.audit_checkpoint_interval_s
        self.export_dir = Path(settings.audit_checkpoint_dir or Path(settings.data_dir) / "audit-checkpoints")
        # Per partition: the size of the last checkpoint this writer signed, and when (monotonic).
        self._signed: dict[int, tuple[int, float]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._dead_letters = settings.topic(DEAD_LETTERS)
        self._max_key_bytes = settings.max_key_bytes
        self._max_value_bytes = settings.max_record_bytes
        self._kwargs = kafka_client_kwargs(settings)
        self._client_id = client_id
        # One transactional producer per audit partition, created when this worker first
        # appends to it (it owns the partition then). Starting it initialises its transactional
        # id (`<topic>-<partition>`) with the coordinator, which bumps the id's epoch: a zombie
        # that lost the partition but still holds the old producer is fenced (its next send or
        # commit fails with ProducerFenced), so it cannot fork the chain. Acks=all and
        # idempotence come with it: retries neither duplicate nor reorder a chain's entries.
        self._producers: dict[int, AIOKafkaProducer] = {}
        # Group-less (no group_id, nothing committed), read_committed: reads the last committed
        # entry of a partition to learn its chain head (never an aborted one).
        self._consumer = AIOKafkaConsumer(
            **self._kwargs,
            client_id=f"{client_id}-head",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self._heads: dict[int, TreeHead] = {}
        # Appends waiting for their partition's next transaction, and the task writing them
        # (kind None: a request to sign a checkpoint of the head).
        self._queued: dict[int, list[tuple[Kind | None, list[bytes], asyncio.Future[None]]]] = {}
        self._writers: dict[int, asyncio.Task[None]] = {}
        # Bumped by forget(): an append that started before a revoke does not cache its head.
        self._epochs: dict[int, int] = {}
        self._read_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._consumer.start()
        self._ticker = asyncio.ensure_future(self._sign_periodically())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        # Appends still queued finish first (the worker's completions waited for them already),
        # then every partition's head is signed.
        await asyncio.gather(*self._writers.values(), return_exceptions=True)
        try:
            await asyncio.wait_for(self.checkpoint_all(), STOP_CHECKPOINT_S)
        except (KafkaError, AuditError, TimeoutError) as exc:
            log.warning("audit %s: could not sign the last checkpoints on stop (%r)", self.topic, exc)
        try:
            await asyncio.gather(*(p.stop() for p in self._producers.values()), *self._closing)
            self._producers.clear()
        finally:
            await self._consumer.stop()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the cached chain heads and producers of `partitions` (revoked: the next owner
        extends them, and initialising its producer fences this one's)."""
        for p in partitions:
            self._heads.pop(p, None)
            self._signed.pop(p, None)
            self._epochs[p] = self._epochs.get(p, 0) + 1
            producer = self._producers.pop(p, None)
            if producer is not None:
                task = asyncio.ensure_future(producer.stop())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _producer_for(self, partition: int) -> AIOKafkaProducer:
        producer = self._producers.get(partition)
        if producer is None:
            producer = AIOKafkaProducer(
                **self._kwargs,
                client_id=f"{self._client_id}-{partition}",
                transactional_id=f"{self.topic}-{partition}",
                acks="all",
                # Entries go out as record batches built here; waiting to fill one only adds latency.
                linger_ms=0,
                max_batch_size=512 * 1024,
            )
            await producer.start()  # InitProducerId: fences any earlier producer of this id
            self._producers[partition] = producer
        return producer

    def _last_signed_at(self, partition: int) -> float:
        return self._signed.get(partition, (0, float("-inf")))[1]

    def _unsigned(self) -> list[int]:
        """Partitions whose cached head is beyond their last checkpoint."""
        return [p for p, h in self._heads.items() if h.size > self._signed.get(p, (0, 0.0))[0]]

    async def checkpoint_all(self) -> None:
        """Sign a checkpoint of every partition whose head moved since its last one."""
        await asyncio.gather(*(self._enqueue(p, None, []) for p in self._unsigned()))

    async def _sign_periodically(self) -> None:
        """Every `audit_checkpoint_interval_s`, a checkpoint of each head that moved (appends
        also sign one when the interval has passed: a busy partition needs no extra transaction)."""
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            due = [p for p in self._unsigned() if now - self._last_signed_at(p) >= self._interval_s]
            results = await asyncio.gather(*(self._enqueue(p, None, []) for p in due), return_exceptions=True)
            for p, result in zip(due, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("audit checkpoint of %s[%d] failed: %r", self.topic, p, result)

    async def append(self, partition: int, kind: Kind, records: Sequence[bytes]) -> None:
        """Append `records` (JSON bytes each) to the chain of `partition`; returns once all are acked.

        Raises AuditError for a record that is not JSON (nothing of this append is sent), and
        ProducerFenced when another worker owns the chain now. Other Kafka errors are retried
        until they pass (`RETRY_PAUSES_S`), each attempt from the head read again, so a retry
        cannot fork the chain. Records at the partition's tail that are not entries do not stop
        it: the chain continues after its last entry and they are dead-lettered (`_load_head`).

        Group commit: a transaction costs several broker round trips, so the appends that queue
        for a partition while its previous transaction runs go out together in the next one, in
        the order they were called (at 2,000 likes/s, one transaction per batch held each batch
        ~1 s). A chain's entries keep that order; each caller returns once its entries are in a
        committed transaction.
        """
        if not records:
            return
        await self._enqueue(partition, kind, records)

    async def _enqueue(self, partition: int, kind: Kind | None, records: Sequence[bytes]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(partition, []).append((kind, list(records), done))
        writer = self._writers.get(partition)
        if writer is None or writer.done():
            self._writers[partition] = asyncio.ensure_future(self._write_queued(partition))
        await done

    async def _write_queued(self, partition: int) -> None:
        """Commit what is queued for `partition`, a group per transaction, until nothing is."""
        queue = self._queued.get(partition, [])
        while queue:
            group: list[tuple[Kind | None, list[bytes], asyncio.Future[None]]] = []
            taken = 0
            while queue and (not group or taken + len(queue[0][1]) <= MAX_GROUP_RECORDS):
                group.append(queue.pop(0))
                taken += len(group[-1][1])
            try:
                await self._append_group(partition, group)
            except BaseException as exc:  # noqa: BLE001 - every caller of the group gets it
                for _, _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, _, done in group:
                    if not done.done():
                        done.set_result(None)

    async def _append_group(
        self, partition: int, group: Sequence[tuple[Kind | None, list[bytes], asyncio.Future[None]]]
    ) -> None:
        """One transaction (retried on Kafka errors) with the entries of every append of `group`."""
        epoch = self._epochs.get(partition, 0)
        for attempt in itertools.count():
            try:
                new_head = await self._append_once(partition, group)
                break
            except (AuditError, ProducerFenced) as exc:
                # A damaged chain, or this worker lost the partition (fenced): a fenced
                # producer is never re-initialised here, or it would fence the owner.
                await self._discard(partition)
                log.error("audit append to %s[%d] failed: %r", self.topic, partition, exc)
                raise
            except KafkaError as exc:
                # A broker or the transaction coordinator went away (failover): the transaction
                # is aborted with its producer, and the append starts over from the head read
                # again after a new producer's start, so it cannot fork.
                await self._discard(partition)
                pause_s = RETRY_PAUSES_S[min(attempt, len(RETRY_PAUSES_S) - 1)]
                level = logging.WARNING if attempt < len(RETRY_PAUSES_S) else logging.ERROR
                log.log(
                    level,
                    "audit append to %s[%d] failed (%r); retry %d in %.1f s (the batch waits; "
                    "is Kafka up, with transactions allowed for this user?)",
                    self.topic,
                    partition,
                    exc,
                    attempt + 1,
                    pause_s,
                )
                await asyncio.sleep(pause_s)
        if self._epochs.get(partition, 0) == epoch and new_head is not None:
            self._heads[partition] = new_head

    async def _append_once(
        self, partition: int, group: Sequence[tuple[Kind | None, list[bytes], asyncio.Future[None]]]
    ) -> TreeHead | None:
        """One transaction with a batch record of `group`'s appends (more than one when they
        exceed `MAX_BATCH_RECORD_BYTES`) and, when the interval has passed or the group asks
        for it, a signed checkpoint of the new head; returns the new head (None when nothing
        was written). An append with a record that cannot be stored (a newline byte in it)
        gets its AuditError and is left out; the others go on."""
        # The producer first: starting it waits until the previous owner's last transaction is
        # complete (committed markers written, or aborted), so the read_committed head read
        # below sees the real end of the chain.
        producer = await self._producer_for(partition)
        head = self._heads.get(partition)
        foreign: Sequence[ForeignRecord] = ()
        if head is None:
            loaded = await self._load_head(partition)
            head, foreign = loaded.head, loaded.foreign
        items: list[tuple[Kind, list[bytes]]] = []
        wants_checkpoint = False
        for kind, records, done in group:
            if kind is None:
                wants_checkpoint = True
            elif any(b"\n" in r for r in records):
                if not done.done():
                    done.set_exception(AuditError("an audited record must not contain a newline byte"))
            else:
                items.append((kind, records))
        values, head = seal_all(head, items, MAX_BATCH_RECORD_BYTES) if items else ([], head)
        signed_size, signed_at = self._signed.get(partition, (0, float("-inf")))
        now = time.monotonic()
        checkpoint: Checkpoint | None = None
        if head.size > signed_size and (wants_checkpoint or now - signed_at >= self._interval_s):
            checkpoint = sign_checkpoint(
                self._key, log_id(self.topic, partition), head, int(time.time() * 1000)
            )
        if not values and not foreign and checkpoint is None:
            return head
        await producer.begin_transaction()
        futures = [
            await producer.send(self.topic, value, partition=partition, headers=_VERSION_HEADERS)
            for value in values
        ]
        if checkpoint is not None:
            # In the partition's transaction: a fenced zombie cannot sign a head either.
            futures.append(
                await producer.send(
                    self.checkpoint_topic,
                    checkpoint.to_json(),
                    key=checkpoint.log.encode(),
                    partition=partition,
                )
            )
        # The foreign records after the old head go to the dead letters in the same transaction
        # as the entries that continue the chain past them: once it commits they are no longer
        # at the tail, and a failed attempt finds (and copies) them again.
        futures.extend(
            [await producer.send(self._dead_letters, r.value, key=r.key, headers=r.headers) for r in foreign]
        )
        sent = await asyncio.gather(*futures, return_exceptions=True)
        failed = next((r for r in sent if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        await producer.commit_transaction()
        if checkpoint is not None:
            self._signed[partition] = (checkpoint.size, now)
            await asyncio.to_thread(self._export, partition, checkpoint)
        return head

    def _export(self, partition: int, checkpoint: Checkpoint) -> None:
        """Write a committed checkpoint to `<export dir>/<topic>.<partition>/<size>-<time>.json`
        (atomically: a temporary file renamed), for shipping to WORM storage."""
        folder = self.export_dir / f"{self.topic}.{partition}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{checkpoint.size:016d}-{checkpoint.time_ms}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(checkpoint.to_json() + b"\n")
            tmp.replace(path)
        except OSError as exc:  # the checkpoint is on Kafka; the export is the extra copy
            log.error("audit checkpoint of %s[%d] not exported to %s: %s", self.topic, partition, folder, exc)

    async def _discard(self, partition: int) -> None:
        """Forget the head (the real tail is on the broker) and close the partition's producer
        (an open transaction is aborted, at the latest when the next producer of the id starts)."""
        self._heads.pop(partition, None)
        broken = self._producers.pop(partition, None)
        if broken is not None:
            await broken.stop()

    async def _load_head(self, partition: int) -> LoadedHead:
        """The head of the chain in `partition`: its last valid entry (one that decodes and
        matches its own hash), or genesis when it has none; and the foreign records after it.

        One record that is not an entry at the tail (a stray write by another producer) must not
        stop every worker that takes the partition: it is skipped, logged and dead-lettered, and
        the chain continues from the entry before it. `likeflow audit verify` reports it.
        """
        tp = TopicPartition(self.topic, partition)
        async with self._read_lock:  # the consumer reads one partition at a time
            self._consumer.assign([tp])
            begin = (await self._consumer.beginning_offsets([tp]))[tp]
            end = (await self._consumer.end_offsets([tp]))[tp]
            # read_committed: the end offset is the last stable offset. The last offsets may be
            # transaction markers (control records, never returned) or foreign records, so the
            # window moves back, growing, until it holds an entry; each record is read once.
            later: list[ForeignRecord] = []  # foreign records after the current window, in order
            later_count = 0
            upper, back = end, 1
            while upper > begin:
                start = max(begin, upper - back)
                last: tuple[int, TreeHead] | None = None
                found: list[ForeignRecord] = []  # after `last` in this window
                found_count = 0
                async for record in _scan_range(self._consumer, tp, start, upper):
                    try:
                        last = (record.offset, tree_head_of(record.value or b""))
                        found, found_count = [], 0
                    except AuditError as exc:
                        found_count += 1
                        if len(found) < MAX_FOREIGN_COPIED:
                            found.append(self._foreign(record, partition, str(exc)))
                later = (found + later)[:MAX_FOREIGN_COPIED]
                later_count += found_count
                if last is not None:
                    offset, head = last
                    log.info(
                        "audit log %s[%d]@%d continues after tree size %d",
                        self.topic,
                        partition,
                        offset,
                        head.size,
                    )
                    loaded = LoadedHead(head, tuple(later), later_count)
                    self._warn_foreign(partition, loaded, offset)
                    return loaded
                upper, back = start, back * 16
        log.info("audit chain %s[%d] starts at genesis", self.topic, partition)
        loaded = LoadedHead(EMPTY_HEAD, tuple(later), later_count)
        self._warn_foreign(partition, loaded, None)
        return loaded

    def _foreign(self, record: Any, partition: int, reason: str) -> ForeignRecord:
        """The dead letter of a record of this log that is not an entry (fits the dead-letter topic)."""
        headers = dead_letter_headers(
            record.headers,
            reason=DeadLetterReason.NOT_AN_AUDIT_ENTRY.value,
            error=reason,
            topic=self.topic,
            partition=partition,
            offset=record.offset,
        )
        key, value, cut = fitted(
            record.key, record.value, max_key_bytes=self._max_key_bytes, max_value_bytes=self._max_value_bytes
        )
        return ForeignRecord(record.offset, reason, key, value, headers + cut)

    def _warn_foreign(self, partition: int, loaded: LoadedHead, after: int | None) -> None:
        """One warning per foreign record (up to `MAX_FOREIGN_LOGGED`), one for the rest."""
        if not loaded.foreign_count:
            return
        where = "genesis" if after is None else f"the record at @{after} (tree size {loaded.head.size})"
        for record in loaded.foreign[:MAX_FOREIGN_LOGGED]:
            log.warning(
                "audit log %s[%d]@%d is not an audit entry (%s): skipped, the chain continues after %s; "
                "copied to %s with the next append (reason %s). Find out who wrote it: only the "
                "workers may write to the audit log",
                self.topic,
                partition,
                record.offset,
                record.reason,
                where,
                self._dead_letters,
                DeadLetterReason.NOT_AN_AUDIT_ENTRY.value,
            )
        rest = loaded.foreign_count - min(len(loaded.foreign), MAX_FOREIGN_LOGGED)
        if rest:
            log.warning(
                "audit log %s[%d]: %d more records after %s are not audit entries (%d of them are "
                "dead-lettered); `likeflow audit verify` lists them",
                self.topic,
                partition,
                rest,
                where,
                max(0, len(loaded.foreign) - MAX_FOREIGN_LOGGED),
            )


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


async def _scan_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
) -> AsyncIterator[Any]:
    """Records of `tp` with start <= offset < end, in order, one fetch at a time (the consumer
    must have `tp` assigned). Raises KafkaTimeoutError when a read makes no progress for
    `READ_STALL_S`."""
    consumer.seek(tp, start)
    deadline = time.monotonic() + READ_STALL_S
    while await consumer.position(tp) < end:
        if time.monotonic() > deadline:
            # The broker is away or the partition offline, not a damaged chain: the append
            # retries it like any other Kafka error.
            raise KafkaTimeoutError(f"could not read {tp.topic}[{tp.partition}] up to offset {end}")
        batch = await consumer.getmany(tp, timeout_ms=1000)
        records = batch.get(tp, [])
        if records:
            deadline = time.monotonic() + READ_STALL_S
        for record in records:
            if record.offset < end:
                yield record
