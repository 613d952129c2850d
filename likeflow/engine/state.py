"""Table state for the batch handlers: decoded values in memory, one changelog record per changed key.

Faust's `table[key] = value` creates a changelog message future per write (through its one-at-a-
time producer buffer, the largest cost of a batch; bench/README.md) and needs `current_event()` to
know the changelog partition. A `ChangelogStore` keeps each partition's decoded values in memory,
records which keys a batch changed, and on `flush(partition)` encodes each changed key once (its
latest value), writes the bytes into the Faust table's own storage and sends them to the table's
changelog partition as one produce request. Faust's recovery and standbys read that changelog as
if Faust had written it (raw bytes keys and values), so a restarted or rebalanced worker restores
the same state.

Kafka semantics:

- Every record of one changelog partition is sent by one producer, in `flush` order, under a
  lock: a later flush's records land after an earlier one's, so after a crash the restored
  state is the state after some prefix of the flushes. Within a flush, keys go out in their
  `order` (0 first): callers use it to make a prefix recognisable (creator counts write rows,
  then dedupe entries, then clocks).
- `flush` returns an awaitable for every record of the partition still unacknowledged, its own
  and those of flushes by other callers: awaiting it before sending outputs that depend on the
  state means the state is on the changelog first.
- A rebalance clears the decoded values (the next owner of a partition may have written it);
  they are read again from the table's storage, which Faust's recovery has brought up to date.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from faust.types import TP

from streams.events import kept

V = TypeVar("V")


class Codec(Protocol[V]):
    """How one table's values become changelog bytes and back."""

    def encode(self, value: V) -> bytes: ...

    def decode(self, raw: bytes) -> V: ...


class _MemoryBytes:
    """The bytes of a Faust `memory://` table (`faust.stores.memory.Store`), by partition.

    The store keeps a dict of values and, for the keys its recovery read, their partition
    (`_key_partition`, used to drop a revoked partition's keys after recovery); writes made
    here record their partition there too.
    """

    def __init__(self, store: Any) -> None:
        self._values: dict[bytes, bytes] = store.data
        self._partitions: dict[bytes, int] = store._key_partition

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self._values.get(key)

    def set(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._values.pop(key, None)
            self._partitions.pop(key, None)
        else:
            self._values[key] = value
            self._partitions[key] = partition

    def keys(self, partition: int) -> Iterator[bytes]:
        return (k for k, p in list(self._partitions.items()) if p == partition)

    def apply(self, partition: int, records: Sequence[Any]) -> None:
        values, partitions = self._values, self._partitions
        for record in records:
            if record.value is None:
                values.pop(record.key, None)
                partitions.pop(record.key, None)
            else:
                values[record.key] = record.value
                partitions[record.key] = partition

    def acknowledged(self, tp: Any, offset: int) -> None:
        """Memory tables are always restored from the changelog's start: nothing to record."""

    def __len__(self) -> int:
        return len(self._values)


class _RocksBytes:
    """The bytes of a Faust `rocksdb://` table (`faust.stores.rocksdb.Store`, on rocksdict): one
    database per partition. `acknowledged` records the highest changelog offset written, as
    Faust's own table writes do, so a restart only replays the changelog past it."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._store._db_for_partition(partition).get(key)
        return value

    def set(self, partition: int, key: bytes, value: bytes | None) -> None:
        db = self._store._db_for_partition(partition)
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)

    def keys(self, partition: int) -> Iterator[bytes]:
        db = self._store._db_for_partition(partition)
        offset_key = self._store.offset_key
        return (k for k in db.keys() if k != offset_key)

    def apply(self, partition: int, records: Sequence[Any]) -> None:
        db = self._store._db_for_partition(partition)
        for record in records:
            if record.value is None:
                db.delete(record.key)
            else:
                db.put(record.key, record.value)
        self._store.set_persisted_offset(TP(records[-1].topic, partition), records[-1].offset)

    def acknowledged(self, tp: Any, offset: int) -> None:
        self._store.set_persisted_offset(tp, offset)

    def __len__(self) -> int:
        return sum(1 for db in self._store._dbs.values() for _ in db.keys())


class ChangelogStore(Generic[V]):
    """Decoded values of one Faust table in memory, written to its changelog once per key per flush."""

    def __init__(
        self,
        table: Any,
        codec: Codec[V],
        producer: Callable[[], AIOKafkaProducer],
        *,
        max_cached: int = 1_000_000,
    ) -> None:
        self._table = table
        self._codec = codec
        self._producer = producer
        self._max_cached = max_cached
        self._bytes: _MemoryBytes | _RocksBytes | None = None
        self._cache: dict[int, dict[str, V]] = {}
        self._dirty: dict[int, dict[str, int]] = {}
        self._unacked: dict[int, list[asyncio.Future[Any]]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.changelog_records = 0  # sent since start (for metrics)

    @property
    def changelog_topic(self) -> str:
        name: str = self._table.changelog_topic.get_topic_name()
        return name

    def _storage(self) -> _MemoryBytes | _RocksBytes:
        if self._bytes is None:
            data = self._table.data
            self._bytes = _RocksBytes(data) if hasattr(data, "_db_for_partition") else _MemoryBytes(data)
        return self._bytes

    def get(self, partition: int, key: str) -> V | None:
        """The value of `key` (in `partition`'s changelog), or None."""
        cache = self._cache.get(partition)
        if cache is None:
            cache = self._cache[partition] = {}
        value = cache.get(key)
        if value is not None:
            return value
        raw = self._storage().get(partition, key.encode())
        if raw is None:
            return None
        value = self._codec.decode(raw)
        cache[key] = value
        return value

    def put(self, partition: int, key: str, value: V, order: int = 0) -> None:
        """Set `key`; the changelog record goes out with the partition's next flush."""
        cache = self._cache.get(partition)
        if cache is None:
            cache = self._cache[partition] = {}
        cache[key] = value
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = {}
        dirty[key] = order

    def delete(self, partition: int, key: str, order: int = 0) -> None:
        """Delete `key`; a tombstone goes out with the partition's next flush."""
        self._cache.get(partition, {}).pop(key, None)
        # The bytes go now: a read before the flush must not find the old value.
        self._storage().set(partition, key.encode(), None)
        self._dirty.setdefault(partition, {})[key] = order

    def keys(self, partition: int) -> set[str]:
        """Every key of `partition` held here (stored or only in memory so far)."""
        found = {k.decode() for k in self._storage().keys(partition)}
        found.update(self._cache.get(partition, {}))
        return found

    def __len__(self) -> int:
        return len(self._storage())

    def pending(self, partition: int) -> bool:
        """Whether `partition` has changes not flushed yet."""
        return bool(self._dirty.get(partition))

    async def flush(self, partition: int) -> asyncio.Future[Any]:
        """Send `partition`'s changed keys to the changelog; returns what resolves once every
        record of the partition sent so far is acknowledged (raises if one was not)."""
        return await self.snapshot(partition).send()

    def snapshot(self, partition: int) -> Snapshot:
        """Encode `partition`'s changed keys now (their current values, in `order`) and return
        them unsent: a caller that must send other outputs first sends the snapshot after them.

        Snapshots of one partition must be sent in the order they were taken.
        """
        dirty = self._dirty.pop(partition, None) or {}
        keys = sorted(dirty, key=dirty.__getitem__) if len(set(dirty.values())) > 1 else list(dirty)
        cache = self._cache.get(partition, {})
        storage = self._storage()
        encode = self._codec.encode
        records: list[tuple[bytes, bytes | None]] = []
        for key in keys:
            value = cache.get(key)
            raw = None if value is None else kept(encode(value))
            key_bytes = key.encode()
            if raw is not None:
                storage.set(partition, key_bytes, raw)
            records.append((key_bytes, raw))
        self._evict(partition)
        return Snapshot(self, partition, records)

    async def _send(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> asyncio.Future[Any]:
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        async with lock:
            if records:
                producer = self._producer()
                topic = self.changelog_topic
                futures = self._unacked.setdefault(partition, [])
                builder = producer.create_batch()
                for key, raw in records:
                    if builder.append(key=key, value=raw, timestamp=None) is None:
                        futures.append(await producer.send_batch(builder, topic, partition=partition))
                        builder = producer.create_batch()
                        builder.append(key=key, value=raw, timestamp=None)
                future = await producer.send_batch(builder, topic, partition=partition)
                futures.append(future)
                future.add_done_callback(functools.partial(self._on_acknowledged, topic, partition, builder))
                self.changelog_records += len(records)
        return self._acknowledged(partition)

    def _on_acknowledged(self, topic: str, partition: int, builder: Any, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        # The last record of the batch: its base offset plus the records before it.
        self._storage().acknowledged(
            TP(topic, partition), future.result().offset + builder.record_count() - 1
        )

    def _acknowledged(self, partition: int) -> asyncio.Future[Any]:
        futures = [f for f in self._unacked.get(partition, []) if not f.done() or f.exception()]
        self._unacked[partition] = [f for f in futures if not f.done()]
        return asyncio.ensure_future(_all(futures))

    def _evict(self, partition: int) -> None:
        cache = self._cache[partition] if partition in self._cache else {}
        excess = len(cache) - self._max_cached
        if excess > 0:
            # The oldest-inserted first; islice, not a list of every key (a full cache has 10^5).
            for key in list(itertools.islice(cache, excess)):
                del cache[key]

    def forget(self) -> None:
        """Drop every decoded value (after a rebalance: read them again from storage)."""
        self._cache.clear()

    def apply_changelog(self, partition: int, records: Sequence[Any]) -> None:
        """Write changelog records (aiokafka ConsumerRecords, in offset order) to storage, as
        Faust's recovery does (a null value deletes), in one pass."""
        self._storage().apply(partition, records)


class Snapshot:
    """Encoded changelog records of one partition, taken by `ChangelogStore.snapshot`."""

    def __init__(
        self, store: ChangelogStore[Any], partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        self._store = store
        self.partition = partition
        self.records = records

    async def send(self) -> asyncio.Future[Any]:
        """Send the records; returns what resolves once every record of the partition sent so far
        is acknowledged."""
        return await self._store._send(self.partition, self.records)


async def _all(futures: list[asyncio.Future[Any]]) -> None:
    for future in futures:
        await future
