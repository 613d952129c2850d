"""Every worker's view of all creators' ranking weights, read from the compacted `creator-quality`."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


class CreatorWeights:
    """creator_id -> weight in (0, 1]; unknown creators weigh 1.0.

    Not a Faust table: the prompt agent on *every* worker needs *every* creator's weight, so each
    worker reads all partitions of the compacted topic itself (no consumer group, no commits),
    from the beginning on start and then as verdicts arrive. This avoids GlobalTable's recovery
    loop with several instances.
    """

    def __init__(self) -> None:
        self._weights: dict[str, float] = {}

    def __call__(self, creator_id: str) -> float:
        return self._weights.get(creator_id, 1.0)

    def __len__(self) -> int:
        return len(self._weights)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one `creator-quality` record (a null value forgets the creator)."""
        if key is None:
            return
        creator_id = key.decode("utf-8", "replace")
        if value is None:
            self._weights.pop(creator_id, None)
            return
        try:
            self._weights[creator_id] = float(orjson.loads(value)["weight"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable creator-quality record for %s", creator_id)

    async def follow(self, bootstrap: str, topic: str, partitions: int) -> None:
        """Read `topic` from the beginning and keep following it until cancelled."""
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
            try:
                await consumer.start()
                tps = [TopicPartition(topic, p) for p in range(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            self.apply(record.key, record.value)
            except KafkaError as exc:
                log.warning("creator weights: %s; reconnecting in 2 s", exc)
                await asyncio.sleep(2)
            finally:
                await consumer.stop()
