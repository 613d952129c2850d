"""Output records of one batch, grouped by topic partition and sent as one produce request each."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from likeflow.errors import LikeflowError


class DeliveryError(LikeflowError):
    """A batch's output record was not delivered after the producer's own retries.

    Raised before the batch's input offsets are acknowledged, so the batch is consumed again
    (at-least-once, with deterministic ids downstream) instead of being committed and lost.
    """


class KeyPartitioner:
    """The partition Kafka's default partitioner gives a key (murmur2, as aiokafka and the Java
    client do), cached: a key is hashed once per worker (murmur2 runs in pure Python)."""

    def __init__(self, partitions: int, max_keys: int = 500_000) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes) -> int:
        partition = self._cache.get(key)
        if partition is None:
            partition = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            if len(self._cache) >= self._max_keys:
                self._cache.clear()
            self._cache[key] = partition
        return partition


class OutputBatch:
    """Collects a batch's output records per (topic, partition); `send` produces each group as
    one record batch (aiokafka's batch builder: far cheaper per record than a `send` each;
    bench/README.md) and returns once they are queued; `delivered` once they are acknowledged."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._groups: dict[
            tuple[str, int], list[tuple[bytes | None, bytes | None, int | None, Sequence[Any]]]
        ] = {}
        self._futures: list[asyncio.Future[Any]] = []
        self.records = 0

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue one record (timestamp in epoch ms; None: the producer's clock)."""
        group = self._groups.get((topic, partition))
        if group is None:
            group = self._groups[(topic, partition)] = []
        group.append((key, value, timestamp_ms, list(headers) if headers else []))
        self.records += 1

    async def send(self) -> None:
        """Hand every queued record to the producer, in `add` order within each partition."""
        producer = self._producer
        groups, self._groups = self._groups, {}
        for (topic, partition), records in groups.items():
            builder = producer.create_batch()
            for key, value, timestamp_ms, headers in records:
                if builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is None:
                    self._futures.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers)
            self._futures.append(await producer.send_batch(builder, topic, partition=partition))

    async def delivered(self) -> int:
        """Wait until every record sent is acknowledged; returns how many. Raises DeliveryError."""
        futures, self._futures = self._futures, []
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise DeliveryError(
                f"{len(errors)} of {len(results)} record batches not delivered: {errors[0]!r}"
            )
        sent, self.records = self.records, 0
        return sent
