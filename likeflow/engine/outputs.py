"""Output records of one batch, grouped by topic partition and sent as one produce request each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2

from likeflow.errors import LikeflowError


class DeliveryError(LikeflowError):
    """A batch's output record was not delivered after the producer's own retries.

    Raised before the batch's input offsets are acknowledged, so the batch is consumed again
    (at-least-once, with deterministic ids downstream) instead of being committed and lost.
    """


class KeyPartitioner:
    """The partition Kafka's default partitioner gives a key (murmur2, as aiokafka and the Java
    client do), cached: a key is hashed once per worker (murmur2 runs in pure Python). Keys
    longer than `max_cached_bytes` are hashed every time, so the cache holds at most
    `max_keys` x `max_cached_bytes` bytes whatever the input."""

    def __init__(self, partitions: int, max_keys: int = 500_000, max_cached_bytes: int = 160) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}
        self._max_keys = max_keys
        self._max_cached_bytes = max_cached_bytes

    def __call__(self, key: bytes) -> int:
        partition = self._cache.get(key)
        if partition is None:
            partition = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            if len(key) <= self._max_cached_bytes:
                if len(self._cache) >= self._max_keys:
                    self._cache.clear()
                self._cache[key] = partition
        return partition


OutRecord = tuple[bytes | None, bytes | None, int | None, Sequence[tuple[str, bytes]]]
# Told which record the broker refused for good, and why (see `OutputBatch.add`).
OnRefused = Callable[[OutRecord, BaseException], None]
# The broker's answers that no retry can change: the record (or its batch) is too large or invalid.
REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError, CorruptRecordException)


class OutputBatch:
    """Collects a batch's output records per (topic, partition); `send` produces each group as
    one record batch (aiokafka's batch builder: far cheaper per record than a `send` each;
    bench/README.md) and returns once they are queued; `delivered` once they are acknowledged."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._groups: dict[tuple[str, int], list[OutRecord]] = {}
        self._refused: dict[tuple[str, int], OnRefused] = {}
        self._futures: list[tuple[asyncio.Future[Any], tuple[str, int], list[OutRecord]]] = []
        self.records = 0

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_refused: OnRefused | None = None,
    ) -> None:
        """Queue one record (timestamp in epoch ms; None: the producer's clock).

        With `on_refused` (dead letters), a record the broker refuses for good (too large,
        invalid) is handed to it instead of failing the batch: its batch is sent again record by
        record, so only the refused record itself is left out. Retriable errors still fail.
        """
        group = self._groups.get((topic, partition))
        if group is None:
            group = self._groups[(topic, partition)] = []
        group.append((key, value, timestamp_ms, list(headers) if headers else []))
        if on_refused is not None:
            self._refused[(topic, partition)] = on_refused
        self.records += 1

    async def send(self) -> None:
        """Hand every queued record to the producer, in `add` order within each partition."""
        groups, self._groups = self._groups, {}
        for (topic, partition), records in groups.items():
            await self._send_group(topic, partition, records)

    async def _send_group(self, topic: str, partition: int, records: list[OutRecord]) -> None:
        producer = self._producer
        builder = producer.create_batch()
        first = 0
        for i, (key, value, timestamp_ms, headers) in enumerate(records):
            if builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is None:
                future = await producer.send_batch(builder, topic, partition=partition)
                self._futures.append((future, (topic, partition), records[first:i]))
                first = i
                builder = producer.create_batch()
                builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers)
        future = await producer.send_batch(builder, topic, partition=partition)
        self._futures.append((future, (topic, partition), records[first:]))

    async def delivered(self) -> int:
        """Wait until every record sent is acknowledged; returns how many. Raises DeliveryError."""
        futures, self._futures = self._futures, []
        results = await asyncio.gather(*(f for f, _, _ in futures), return_exceptions=True)
        errors = []
        for (_, group, records), result in zip(futures, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            on_refused = self._refused.get(group)
            if on_refused is not None and isinstance(result, REFUSALS):
                await self._one_by_one(group, records, on_refused)
            else:
                errors.append(result)
        if errors:
            raise DeliveryError(
                f"{len(errors)} of {len(results)} record batches not delivered: {errors[0]!r}"
            )
        sent, self.records = self.records, 0
        return sent

    async def _one_by_one(
        self, group: tuple[str, int], records: list[OutRecord], on_refused: OnRefused
    ) -> None:
        """Send a refused batch's records one per request; those refused again go to `on_refused`."""
        topic, partition = group
        for record in records:
            key, value, timestamp_ms, headers = record
            builder = self._producer.create_batch()
            builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers)
            try:
                await (await self._producer.send_batch(builder, topic, partition=partition))
            except REFUSALS as exc:
                on_refused(record, exc)
            except Exception as exc:
                raise DeliveryError(f"a record for {topic}[{partition}] was not delivered: {exc!r}") from exc


class OutputProducer:
    """A producer of the batches' outputs (prompts, count records, dead letters, closed windows),
    beside Faust's, which keeps the changelogs.

    aiokafka sends one produce request at a time per broker and producer: on one producer a
    batch's changelog records (which must be acknowledged before its prompts go out) queue
    behind the previous batches' prompts, count records and dead letters, and the prompts
    behind the next batch's changelog. Two producers are two connections, with a request in
    flight on each. Every output goes through this one producer, so the records of one topic
    partition keep their send order (the counters rely on each source's order).

    Started with the batch consumer (before the first batch), stopped after the last batch
    completed (the app's `on_before_shutdown`).
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._kwargs)
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.flush()
            await producer.stop()

    def __call__(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the output producer is used before the batch consumer started it")
        return self._producer
