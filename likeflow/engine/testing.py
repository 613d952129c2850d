"""In-process harness for batch handlers: fake records in; outputs, state and commits out (no broker).

The model is faust's `test_context` and bytewax's testing source and sink: a test builds the
handler with stores from `Harness.store`, feeds it batches with `Harness.deliver`, and reads
what it sent (`sent`, `outputs`), what its state holds (the stores), and which offsets the
engine would commit (`committed`). Completions run through the same pipeline as in the worker
(`likeflow.engine.delivery`), so a batch's offsets become committable only once its outputs and
every earlier batch's are acknowledged, and a failed completion commits nothing after it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP

from likeflow.engine.contract import BatchHandler, OnStage, Records
from likeflow.engine.delivery import _Pipeline
from likeflow.engine.state import ChangelogStore, Codec

V = TypeVar("V")
Header = tuple[str, bytes]


class Sent(NamedTuple):
    """One record a handler produced."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


class FakeBatch:
    """aiokafka's `BatchBuilder`, keeping the appended records; with `encode`, each record is also
    appended to a real `BatchBuilder` (the CPU a real send spends building the batch)."""

    def __init__(self, limit: int, encode: bool = False) -> None:
        self.records: list[tuple[bytes | None, bytes | None, tuple[Header, ...]]] = []
        self._limit = limit
        self._real = BatchBuilder(1 << 24, 0, is_transactional=False) if encode else None

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: Any, headers: Any = ()) -> Any:
        if len(self.records) >= self._limit:
            return None
        if self._real is not None:
            self._real.append(key=key, value=value, timestamp=timestamp, headers=list(headers or ()))
        self.records.append((key, value, tuple(headers or ())))
        return object()

    def record_count(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class _Acknowledged:
    """What aiokafka's `send_batch` future resolves to: the batch's first offset."""

    topic: str
    partition: int
    offset: int


class FakeProducer:
    """aiokafka's producer: `send_batch` records what was sent and acknowledges it at once, with
    offsets per partition (or fails it when `fail` is set)."""

    def __init__(self, batch_limit: int = 1000, encode: bool = False) -> None:
        self.sent: list[Sent] = []
        self.batch_limit = batch_limit
        self.encode = encode
        self.fail: BaseException | None = None
        # A batch holding a value longer than this is refused as the broker would (too large).
        self.max_value_bytes: int | None = None
        self._ends: dict[tuple[str, int], int] = {}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_limit, self.encode)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        too_large = self.max_value_bytes is not None and any(
            len(v or b"") > self.max_value_bytes for _, v, _ in batch.records
        )
        if self.fail is not None:
            future.set_exception(self.fail)
        elif too_large:
            future.set_exception(MessageSizeTooLargeError())
        else:
            first = self._ends.get((topic, partition), 0)
            self._ends[(topic, partition)] = first + len(batch.records)
            self.sent += [Sent(topic, partition, k, v, h) for k, v, h in batch.records]
            future.set_result(_Acknowledged(topic, partition, first))
        return future


class _FaustMemoryStore:
    """The two fields of Faust's memory store (`faust.stores.memory.Store`) a ChangelogStore uses."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._key_partition: dict[bytes, int] = {}


class _ChangelogTopic:
    def __init__(self, name: str) -> None:
        self._name = name

    def get_topic_name(self) -> str:
        return self._name


class FakeTable:
    """A Faust table on the memory store, with a producer for its changelog."""

    def __init__(self, changelog: str = "app-table-changelog", producer: FakeProducer | None = None) -> None:
        self.data = _FaustMemoryStore()
        self.changelog_topic = _ChangelogTopic(changelog)
        self.kafka = producer or FakeProducer()

    def producer(self) -> FakeProducer:
        return self.kafka

    @property
    def sent(self) -> list[tuple[int, bytes | None, bytes | None]]:
        """Changelog records sent: (partition, key, value)."""
        topic = self.changelog_topic.get_topic_name()
        return [(s.partition, s.key, s.value) for s in self.kafka.sent if s.topic == topic]


@dataclass
class Record:
    """A fetched record, as aiokafka's `ConsumerRecord` gives it to a handler."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    timestamp: int = 0


@dataclass
class Delivered:
    """What one `Harness.deliver` did: the records sent while the batch ran, and its commits."""

    sent: list[Sent]
    committed: dict[TP, int]

    def outputs(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


@dataclass
class Harness:
    """Feeds batches to handlers as the engine's delivery does, over a `FakeProducer`."""

    producer: FakeProducer = field(default_factory=FakeProducer)
    # Next offset to commit per partition: one past the last record whose batch is complete.
    committed: dict[TP, int] = field(default_factory=dict)
    crashes: list[BaseException] = field(default_factory=list)
    max_in_flight: int = 4
    # Told where each batch's time went, as the worker's router is (`contract.STAGES`).
    on_stage: OnStage | None = None
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _pipelines: dict[str, _Pipeline] = field(default_factory=dict)

    @property
    def sent(self) -> list[Sent]:
        """Every record sent since the harness was made, in send order."""
        return self.producer.sent

    def outputs(self, topic: str) -> list[Sent]:
        return [s for s in self.producer.sent if s.topic == topic]

    def store(
        self, codec: Codec[V], changelog: str = "app-table-changelog", **kwargs: Any
    ) -> ChangelogStore[V]:
        """A real ChangelogStore over a Faust memory table whose changelog goes to this harness."""
        table = FakeTable(changelog, self.producer)
        return ChangelogStore(table, codec, lambda: self.producer, **kwargs)

    def batch(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        partition: int | Callable[[bytes], int] = 0,
        headers: Sequence[Header] = (),
    ) -> Records:
        """`records` (key, value) as one fetch of `topic`: in `partition`, or in the partition a
        function gives each key; offsets continue where the partition's last batch ended."""

        def partition_of(key: bytes | None) -> int:
            return partition if isinstance(partition, int) else partition(key or b"")

        kept = tuple(headers)
        return self.refetch(Sent(topic, partition_of(key), key, value, kept) for key, value in records)

    def refetch(self, sent: Iterable[Sent]) -> Records:
        """Records a handler sent, as the next fetch of their topic: each in the partition it was
        sent to, offsets continuing (the harness's loopback from one handler to the next)."""
        batch: dict[TP, list[Record]] = {}
        for record in sent:
            where = (record.topic, record.partition)
            offset = self._offsets.get(where, 0)
            self._offsets[where] = offset + 1
            batch.setdefault(TP(*where), []).append(
                Record(record.topic, record.partition, offset, record.key, record.value, record.headers)
            )
        return batch

    async def deliver(self, handler: BatchHandler, batch: Records) -> Delivered:
        """`handler.process(batch)`, then its completion in the topic's pipeline; returns what was
        sent meanwhile and the offsets the batch made committable (none if it failed)."""
        if not batch:
            return Delivered([], {})
        topic = next(iter(batch)).topic
        pipeline = self._pipelines.get(topic)
        if pipeline is None:
            pipeline = self._pipelines[topic] = _Pipeline(
                topic, self.max_in_flight, self._crashed, self.on_stage
            )
        before = len(self.producer.sent)
        committed: dict[TP, int] = {}
        await pipeline.room()
        completion = await handler.process(batch)
        ends = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        pipeline.submit(completion, functools.partial(self._commit, ends, committed), topic)
        await pipeline.idle()
        return Delivered(self.producer.sent[before:], committed)

    async def tick(self, handler: BatchHandler, topic: str, due: Iterable[int]) -> Delivered:
        """What a fetch with no new records does for a handler with a timer: `due`'s partitions
        of `topic` delivered as empty batches (`BatchRouter.register(..., due=)`)."""
        return await self.deliver(handler, {TP(topic, p): [] for p in sorted(due)})

    async def feed(
        self,
        handler: BatchHandler,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        partition: int | Callable[[bytes], int] = 0,
        headers: Sequence[Header] = (),
    ) -> Delivered:
        """`deliver` of `batch(topic, records, partition, headers)`."""
        return await self.deliver(handler, self.batch(topic, records, partition, headers))

    def _commit(self, ends: Mapping[TP, int], committed: dict[TP, int]) -> None:
        for tp, end in ends.items():
            if end > self.committed.get(tp, -1):
                self.committed[tp] = committed[tp] = end

    async def _crashed(self, exc: BaseException) -> None:
        self.crashes.append(exc)
