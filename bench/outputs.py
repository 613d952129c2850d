"""Records and bytes a run produced per topic: end offsets before and after, and the records read back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient

Offsets = dict[TopicPartition, int]


@dataclass
class TopicOutput:
    """What one topic received between two offset snapshots: `records` data records read back
    (transaction markers are not records), `offsets` the end-offset delta (includes one marker per
    transaction), and the bytes of the records' keys, values and headers (names + values)."""

    records: int = 0
    offsets: int = 0
    key_bytes: int = 0
    value_bytes: int = 0
    header_bytes: int = 0

    @property
    def bytes(self) -> int:
        """Key + value bytes: what the brief's "bytes per like" counts (headers apart)."""
        return self.key_bytes + self.value_bytes


async def end_offsets(bootstrap: str, wanted: Callable[[str], bool]) -> Offsets:
    """End offset of every partition of every topic whose name `wanted` accepts."""
    # The consumer's `topics()` does not keep the partitions it fetched: the client's full
    # metadata has them.
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
    finally:
        await client.close()
    topics = sorted(t for t in cluster.topics() if wanted(t))
    tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends: Offsets = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def settled_offsets(
    bootstrap: str, wanted: Callable[[str], bool], quiet_s: float = 2.0, timeout_s: float = 20.0
) -> Offsets:
    """`end_offsets` once they have not moved for `quiet_s` seconds (the outputs that trail the
    last like: audit appends, Redis-side flushes), or after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    last = await end_offsets(bootstrap, wanted)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = await end_offsets(bootstrap, wanted)
        if now == last:
            break
        last = now
    return last


async def read_back(
    bootstrap: str, before: Offsets, after: Offsets, timeout_s: float = 300.0
) -> dict[str, TopicOutput]:
    """Each topic's records between `before` and `after` offsets, read back (isolation
    read_uncommitted: every data record written, aborted transactions' too), counted and sized."""
    ranges = {tp: (before.get(tp, 0), end) for tp, end in after.items() if end > before.get(tp, 0)}
    out: dict[str, TopicOutput] = {tp.topic: TopicOutput() for tp in after}
    for tp, (start, end) in ranges.items():
        out[tp.topic].offsets += end - start
    if not ranges:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        pending = set(ranges)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=50_000)
            for tp, records in batch.items():
                end, topic = ranges[tp][1], out[tp.topic]
                for r in records:
                    if r.offset >= end:
                        break
                    topic.records += 1
                    topic.key_bytes += len(r.key or b"")
                    topic.value_bytes += len(r.value or b"")
                    topic.header_bytes += sum(len(k) + len(v or b"") for k, v in r.headers or ())
            for tp in list(pending):
                if await consumer.position(tp) >= ranges[tp][1]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


def per_like(outputs: dict[str, TopicOutput], likes: int, rename: Callable[[str], str]) -> dict[str, Any]:
    """{topic (renamed): {records, offsets, bytes, ..., records_per_like, bytes_per_like}} of the
    topics that received anything, and their "total"; bytes are key + value."""
    rows: dict[str, Any] = {}
    total = TopicOutput()
    for topic, o in sorted(outputs.items()):
        if not o.offsets:
            continue
        rows[rename(topic)] = {
            **asdict(o),
            "records_per_like": o.records / likes,
            "bytes_per_like": o.bytes / likes,
            "header_bytes_per_like": o.header_bytes / likes,
        }
        for name in ("records", "offsets", "key_bytes", "value_bytes", "header_bytes"):
            setattr(total, name, getattr(total, name) + getattr(o, name))
    rows["total"] = {
        **asdict(total),
        "records_per_like": total.records / likes,
        "bytes_per_like": total.bytes / likes,
        "header_bytes_per_like": total.header_bytes / likes,
    }
    return rows


def markdown(rows: dict[str, Any], title: str) -> list[str]:
    """A table: per topic, records and key+value bytes per like (and headers apart)."""
    if not rows:
        return []
    lines = [
        f"| {title}: topic | records | records/like | key+value bytes/like | header bytes/like |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {topic} | {r['records']:,} | {r['records_per_like']:.3f} | {r['bytes_per_like']:.1f} | "
        f"{r['header_bytes_per_like']:.1f} |"
        for topic, r in rows.items()
    ]
    return lines
