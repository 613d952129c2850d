"""Follows every partition of a compacted topic into memory: the replicated side of a join."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 2.0
POLL_TIMEOUT_MS = 500
# How soon a follower started before its topic exists notices the topic (and new partitions).
METADATA_MAX_AGE_MS = 5_000


class CompactedFollower:
    """Base of the per-worker replicas of a compacted topic (subclasses implement `apply`).

    Not a Faust table: every worker needs *every* key, so each reads all partitions itself (no
    consumer group, no commits) from the beginning on start and then as records arrive. This
    avoids GlobalTable's recovery loop with several instances. `ready` is set once the records
    that existed at start have been applied, so consumers can wait for a complete view.
    """

    def __init__(self) -> None:
        self.ready = asyncio.Event()

    def apply(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Apply one record (a null value is a tombstone; `timestamp_ms` its Kafka timestamp)."""
        raise NotImplementedError

    async def follow(self, kafka: Mapping[str, Any], topic: str) -> None:
        """Read every partition of `topic` from the beginning and keep following it until cancelled.

        `kafka` is the client arguments from `likeflow.connections.kafka_client_kwargs`."""
        while True:
            # No group: the consumer assigns itself every partition of the topic (and any added
            # later), starting at the earliest offset since nothing is ever committed.
            consumer = AIOKafkaConsumer(
                topic,
                **kafka,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
            )
            try:
                await consumer.start()
                await self._consume(consumer, topic)
            except KafkaError as exc:
                log.warning("%s: %s; reconnecting in %.0f s", type(self).__name__, exc, RECONNECT_DELAY_S)
                await asyncio.sleep(RECONNECT_DELAY_S)
            finally:
                await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        pending: dict[TopicPartition, int] | None = None
        polls = 0
        while True:
            polls += 1
            batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            for records in batch.values():
                for record in records:
                    self.apply(record.key, record.value, record.timestamp)
            if self.ready.is_set():
                continue
            if pending is None:
                assigned = list(consumer.assignment())
                if not assigned:
                    if polls % 20 == 1:  # every ~10 s
                        log.info(
                            "%s: waiting for topic %s (run `likeflow topics`)", type(self).__name__, topic
                        )
                    continue
                # The snapshot to reach before `ready`: the end offsets once assigned.
                pending = {tp: end for tp, end in (await consumer.end_offsets(assigned)).items() if end > 0}
            for tp in [tp for tp in pending if await consumer.position(tp) >= pending[tp]]:
                del pending[tp]
            if not pending:
                log.info("%s: caught up with %s", type(self).__name__, topic)
                self.ready.set()
