"""Stand-ins for the Kafka producer and a Faust memory table, for unit tests of pure wiring."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError


class FakeBatch:
    """aiokafka's BatchBuilder, keeping the appended records."""

    def __init__(self, limit: int) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self._limit = limit

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: Any, headers: Any = ()) -> Any:
        if len(self.records) >= self._limit:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """aiokafka's producer: `send_batch` records what was sent and acknowledges it at once
    (or fails it when `fail` is set)."""

    def __init__(self, batch_limit: int = 1000) -> None:
        self.sent: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.batch_limit = batch_limit
        self.fail: BaseException | None = None
        # A batch holding a value longer than this is refused as the broker would (too large).
        self.max_value_bytes: int | None = None

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_limit)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        too_large = self.max_value_bytes is not None and any(
            len(v or b"") > self.max_value_bytes for _, v in batch.records
        )
        if self.fail is not None:
            future.set_exception(self.fail)
        elif too_large:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent += [(topic, partition, k, v) for k, v in batch.records]
            future.set_result(None)
        return future


class _FaustMemoryStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._key_partition: dict[bytes, int] = {}


class _Topic:
    def get_topic_name(self) -> str:
        return "app-table-changelog"


class FakeTable:
    """A Faust table on the memory store, with a producer for its changelog."""

    def __init__(self) -> None:
        self.data = _FaustMemoryStore()
        self.changelog_topic = _Topic()
        self.kafka = FakeProducer()

    def producer(self) -> FakeProducer:
        return self.kafka

    @property
    def sent(self) -> list[tuple[int, bytes | None, bytes | None]]:
        """Changelog records sent: (partition, key, value)."""
        return [(p, k, v) for _, p, k, v in self.kafka.sent]
