"""`likeflow dlq`: read the dead-letter topic and its replay ledger, and replay repaired records.

The rules (filters, the export format, what may be replayed) are in `dlq_records.py`; this
module only reads and writes Kafka.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config import Settings
from likeflow.connections import kafka_client_kwargs, topic_partitions
from likeflow.ops.dlq_records import (
    DeadLetter,
    Filter,
    Planned,
    ReplayItem,
    Target,
    earlier_entries,
    ledger_entry,
    plan_replay,
    replay_headers,
)
from likeflow.policies import input_limits_from
from likeflow.progress import Progress
from streams.topics import DEAD_LETTERS, DLQ_REPLAYS, REPLAYABLE_TOPICS, SPECS_BY_NAME, Decoder
from streams.validation import InputLimits

# Records sent before their acknowledgements are awaited and their ledger entries written.
SEND_CHUNK = 500


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)


async def read_dead_letters(
    settings: Settings, flt: Filter | None = None, progress_out: TextIO | None = None
) -> list[DeadLetter]:
    """The dead letters `flt` matches, in partition and offset order, read up to the end
    offsets seen at the start (progress on stderr for a long read)."""
    flt = flt or Filter()
    topic = settings.topic(DEAD_LETTERS)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        if flt.partition is not None:
            partitions = [p for p in partitions if p == flt.partition]
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        if flt.since_ms is not None:
            found = await consumer.offsets_for_times({tp: flt.since_ms for tp in tps})
            firsts = {tp: (f.offset if (f := found.get(tp)) is not None else ends[tp]) for tp in tps}
        if flt.offsets is not None:
            firsts = {tp: max(firsts[tp], flt.offsets[0]) for tp in tps}
            ends = {tp: min(ends[tp], flt.offsets[1] + 1) for tp in tps}
        return await _read(consumer, {tp: (firsts[tp], ends[tp]) for tp in tps}, flt, progress_out)
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    flt: Filter,
    progress_out: TextIO | None,
) -> list[DeadLetter]:
    progress = Progress(
        sum(max(end - first, 0) for first, end in ranges.values()), "[dlq] reading", progress_out
    )
    out: list[DeadLetter] = []
    read = 0
    for tp, (first, end) in ranges.items():
        if first >= end:
            continue
        consumer.seek(tp, first)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.offset >= end:
                    break
                read += 1
                letter = DeadLetter(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.timestamp,
                    record.key,
                    record.value,
                    tuple((name, bytes(value)) for name, value in record.headers),
                )
                if flt.matches(letter):
                    out.append(letter)
            progress.update(read, len(out))
    progress.finish()
    return out


async def read_ledger(settings: Settings) -> dict[str, object]:
    """The replay ledger: dead-letter coordinates -> the latest entry of its replay."""
    topic = settings.topic(DLQ_REPLAYS)
    consumer = _consumer(settings)
    await consumer.start()
    ledger: dict[str, object] = {}
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    if record.key is None or record.offset >= ends[tp]:
                        continue
                    coordinates = record.key.decode("utf-8", "replace")
                    if record.value is None:
                        ledger.pop(coordinates, None)
                    else:
                        ledger[coordinates] = orjson.loads(record.value)
    finally:
        await consumer.stop()
    return ledger


async def replay_targets(settings: Settings) -> dict[str, Target]:
    """Full topic name -> Target for every input topic a dead letter may go back to."""
    limits = input_limits_from(settings).at(int(time.time() * 1000))
    consumer = _consumer(settings)
    await consumer.start()
    targets = {}
    try:
        for name in REPLAYABLE_TOPICS:
            spec = SPECS_BY_NAME[name]
            if spec.replay is None:
                continue
            topic = settings.topic(name)
            targets[topic] = Target(
                name=name,
                partitions=len(await topic_partitions(consumer, topic)),
                user_keyed=spec.co_partitioned,
                names_user=spec.names_user,
                decode=partial(_decode, spec.replay[0], limits),
            )
    finally:
        await consumer.stop()
    return targets


def _decode(decoder: Decoder, limits: InputLimits, key: bytes | None, value: bytes | None) -> object:
    return decoder(key, value, limits)


@dataclass(slots=True)
class ReplayResult:
    """What `dlq replay` decided for each item and, when it sent, where each record went."""

    planned: list[Planned]
    sent: list[tuple[Planned, int, int]] = field(default_factory=list)  # (item, partition, offset)
    executed: bool = False
    run_id: str = ""

    def count(self, outcome: str) -> int:
        return sum(1 for p in self.planned if p.outcome == outcome)


async def replay(
    settings: Settings,
    items: Sequence[ReplayItem],
    *,
    force: bool = False,
    dry_run: bool = False,
    confirm: Callable[[ReplayResult], bool] | None = None,
    progress_out: TextIO | None = None,
) -> ReplayResult:
    """Plan the replay of `items` against the ledger and the topics; unless `dry_run` (or
    `confirm`, shown the plan, says no) send each record that may go to its source topic and
    partition with its key, then write its ledger entry (keyed by the dead letter's
    coordinates: what was sent, where, when, by whom)."""
    targets = await replay_targets(settings)
    ledger = await read_ledger(settings)
    result = ReplayResult(plan_replay(items, targets, ledger, force=force), run_id=uuid.uuid4().hex)
    chosen = [p for p in result.planned if p.send]
    if dry_run or not chosen or (confirm is not None and not confirm(result)):
        return result
    result.executed = True
    by, host = getpass.getuser(), socket.gethostname()
    ledger_topic = settings.topic(DLQ_REPLAYS)
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all", enable_idempotence=True)
    await producer.start()
    progress = Progress(len(chosen), "[dlq] replaying", progress_out)
    try:
        for start in range(0, len(chosen), SEND_CHUNK):
            chunk = chosen[start : start + SEND_CHUNK]
            futures = []
            for planned in chunk:
                item = planned.item
                if item.topic is None or item.partition is None:  # a planned send has both
                    raise ValueError(f"{item.dlq}: no source topic or partition")
                futures.append(
                    await producer.send(
                        item.topic,
                        item.value,
                        key=item.key,
                        partition=item.partition,
                        headers=replay_headers(item),
                    )
                )
            # The ledger entry of a record is written once the record is on the broker.
            for planned, future in zip(chunk, futures, strict=True):
                metadata = await future
                entry = ledger_entry(
                    planned,
                    run_id=result.run_id,
                    by=by,
                    host=host,
                    at_ms=int(time.time() * 1000),
                    sent_partition=metadata.partition,
                    sent_offset=metadata.offset,
                    earlier=earlier_entries(ledger.get(planned.item.dlq)),
                )
                await producer.send(ledger_topic, entry, key=planned.item.dlq.encode())
                result.sent.append((planned, metadata.partition, metadata.offset))
            await producer.flush()
            progress.update(len(result.sent), len(result.sent))
    finally:
        progress.finish()
        await producer.stop()
    return result
