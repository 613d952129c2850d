"""Replay tooling: publish JSON-lines archives, copy a time range between topics, rewind the group."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, cast

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request
from aiokafka.structs import OffsetAndMetadata

from config import Settings
from likeflow.connections import kafka_client_kwargs, pseudonymizer, topic_partitions
from likeflow.domain.privacy import erased_by
from likeflow.domain.pseudonym import archived_pseudonym
from likeflow.errors import EXIT_USAGE, LikeflowError
from likeflow.ops.erasures import read_erasure_ledger
from likeflow.policies import input_limits_from
from likeflow.progress import Progress
from likeflow.sinks.dead_letter_records import (
    dead_letter_headers,
    fitted,
    pseudonymised_header,
    without_raw_user_id,
)
from streams.events import Invalid
from streams.topics import DEAD_LETTERS, INPUT_TOPICS, REPLAYABLE_TOPICS, SPECS_BY_NAME, USER_ERASURE

log = logging.getLogger(__name__)


# Invalid lines listed in a result (each one is dead-lettered and counted whatever their number).
MAX_PROBLEMS_KEPT = 100


class ReplayError(LikeflowError):
    """The command cannot go on; the message says why and what to do."""


class ReplayArgumentError(ReplayError):
    """An argument the command refuses (a destination that is not replayable, a future time):
    the message says which and what to give instead."""

    exit_code = EXIT_USAGE


@dataclass(slots=True)
class FileReplayResult:
    """What `replay file` did."""

    sent: int = 0
    invalid: int = 0
    # Valid records of users erased since, from before their erasure: left out (docs/privacy.md).
    erased: int = 0
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def archive_lines(paths: list[Path]) -> Iterator[tuple[Path, int, bytes, int]]:
    """(file, line number, line without newline, bytes consumed so far) for non-blank lines."""
    consumed = 0
    for path in paths:
        with _open(path) as handle:
            for number, line in enumerate(handle, start=1):
                consumed += len(line)
                stripped = line.rstrip(b"\r\n")
                if stripped.strip():
                    yield path, number, stripped, consumed


def _key_of(line: bytes, field_name: str) -> bytes | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    key = value.get(field_name) if isinstance(value, dict) else None
    return key.encode() if isinstance(key, str) else None


async def replay_files(
    settings: Settings,
    paths: list[Path],
    topic: str,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    strict: bool = False,
    progress_out: TextIO | None = None,
) -> FileReplayResult:
    """Publish JSON-lines archives (plain or .gz) to `topic` in file order.

    Each record gets the key the live producers use and its own `ts` as the record timestamp.
    Invalid lines are reported with file and line number and dead-lettered (unless `dry_run`)
    without a raw user id and cut to fit; with `strict`, the first invalid line stops the run
    before anything after it is sent. A record of a user the erasure ledger says was erased at
    or after its `ts` is left out (counted in `erased`): an archive must not bring an erased
    user's data back into the input topics.
    """
    spec = SPECS_BY_NAME.get(topic)
    if spec is None or spec.replay is None:
        raise ReplayError(f"replay file publishes to {', '.join(REPLAYABLE_TOPICS)}; not {topic!r}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReplayError(f"no such file: {', '.join(missing)}")
    decode, key_field = spec.replay
    limits = input_limits_from(settings)
    result = FileReplayResult()
    total_bytes = sum(_uncompressed_size(p) for p in paths)
    progress = Progress(total_bytes, f"replay {topic}", progress_out)
    # Records that name a user need the pseudonym key: their dead letters keep no raw user id
    # (docs/privacy.md), and the erasure ledger is keyed by pseudonym.
    pseudonymize = pseudonymizer(settings) if spec.names_user else None
    # Read when the first valid record of a user needs it (an archive with nothing valid in it
    # is reported without asking Kafka).
    ledger: dict[str, int] | None = None if pseudonymize is not None and topic != USER_ERASURE else {}
    producer = None if dry_run else AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all", linger_ms=5)
    if producer is not None:
        await producer.start()
    started = time.monotonic()
    try:
        for path, number, line, consumed in archive_lines(paths):
            key = _key_of(line, key_field)
            event = decode(key, line, limits.at(int(time.time() * 1000)))
            if isinstance(event, Invalid):
                result.invalid += 1
                problem = f"{path}:{number}: {event.reason.value}: {event.error}"
                if len(result.problems) < MAX_PROBLEMS_KEPT:  # the rest are counted (and dead-lettered)
                    result.problems.append(problem)
                if strict:
                    raise ReplayError(f"{problem} (--strict: stopped; {result.sent} records were sent)")
                if producer is not None:
                    headers = dead_letter_headers(
                        None,
                        reason=event.reason.value,
                        error=event.error,
                        topic=f"file:{path}",
                        partition=-1,
                        offset=number,
                    )
                    dead_key: bytes | None = key
                    dead_value: bytes | None = line
                    if pseudonymize is not None:
                        dead_key, dead_value, changed = without_raw_user_id(
                            key, line, pseudonymize, key_is_user_id=spec.co_partitioned
                        )
                        headers = pseudonymised_header(headers) if changed else headers
                    dead_key, dead_value, cut = fitted(
                        dead_key,
                        dead_value,
                        max_key_bytes=settings.max_key_bytes,
                        max_value_bytes=settings.max_record_bytes,
                    )
                    await producer.send(
                        settings.topic(DEAD_LETTERS), dead_value, key=dead_key, headers=headers + cut
                    )
            elif pseudonymize is not None and erased_by(
                ledger := ledger if ledger is not None else await read_erasure_ledger(settings),
                archived_pseudonym(event.user_id, pseudonymize),
                event.ts,
            ):
                result.erased += 1
            else:
                if producer is not None:
                    await producer.send(settings.topic(topic), line, key=key, timestamp_ms=event.ts)
                result.sent += 1
            progress.update(consumed, result.sent)
            if rate:
                # Pace to `rate` records per second on average since the start.
                ahead = (result.sent + result.invalid) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if producer is not None:
            await producer.flush()
    finally:
        if producer is not None:
            await producer.stop()
        result.elapsed_s = progress.finish()
    return result


def _uncompressed_size(path: Path) -> int:
    if path.suffix != ".gz":
        return path.stat().st_size
    size = 0
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            size += len(chunk)
    return size


def copy_topics(settings: Settings, source: str, dest: str) -> tuple[str, str]:
    """The full topic names `replay topic` reads and writes.

    `dest` must be a replayable contract topic (its records are decoded by the job like live
    ones); anything else, the audit log above all, is refused: one stray record there stops
    every chain that ends in it. Both get the topic prefix when they are contract names; any
    other `source` is a full topic name (an archive topic) used as is.
    """
    if dest not in REPLAYABLE_TOPICS:
        raise ReplayArgumentError(
            f"replay topic writes to the input topics {', '.join(REPLAYABLE_TOPICS)} (contract names, "
            f"the topic prefix is added); not {dest!r}"
        )
    src = settings.topic(source) if source in SPECS_BY_NAME else source
    dst = settings.topic(dest)
    if src == dst:
        raise ReplayArgumentError(f"--from and --to are the same topic {dst!r}: nothing to copy")
    return src, dst


@dataclass(frozen=True, slots=True)
class TopicCopy:
    """What `replay topic` found (and copied, when `sent`): full topic names and, per source
    partition, the records with since <= timestamp < until."""

    source: str
    dest: str
    in_range: dict[int, int]
    sent: bool

    @property
    def total(self) -> int:
        return sum(self.in_range.values())


async def copy_topic_range(
    settings: Settings,
    source: str,
    dest: str,
    since_ms: int,
    until_ms: int,
    *,
    dry_run: bool = False,
    confirm: Callable[[TopicCopy], bool] | None = None,
    progress_out: TextIO | None = None,
) -> TopicCopy:
    """Copy records with since_ms <= timestamp < until_ms from `source` to `dest` (names as
    `copy_topics` resolves them).

    Keeps key, value, headers and timestamp (the partition follows the key, as with the live
    producers). Starts at offsets-for-times(since) and reads to the end offsets seen at the
    start, filtering by timestamp, so out-of-order timestamps are copied exactly. `dry_run`
    reads and counts, sends nothing. With `confirm`, the range is counted first and copied only
    if `confirm` (shown the count) returns True; the copy reads the same offsets, so it sends
    exactly what was counted.
    """
    src, dst = copy_topics(settings, source, dest)
    if until_ms <= since_ms:
        raise ReplayError("--until must be after --since")
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        await topic_partitions(consumer, dst)  # MissingTopic before anything is read
        tps = [TopicPartition(src, p) for p in await topic_partitions(consumer, src)]
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await consumer.end_offsets(tps)
        firsts = {tp: (found.offset if (found := starts.get(tp)) is not None else ends[tp]) for tp in tps}
        ranges = {tp: (firsts[tp], ends[tp]) for tp in tps}
        if dry_run or confirm is not None:
            counted = await _copy_range(consumer, ranges, since_ms, until_ms, None, progress_out)
            found = TopicCopy(src, dst, counted, sent=False)
            if dry_run or confirm is None or not confirm(found):
                return found
        producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all", linger_ms=5)
        await producer.start()
        try:
            copied = await _copy_range(consumer, ranges, since_ms, until_ms, (producer, dst), progress_out)
            await producer.flush()
        finally:
            await producer.stop()
        return TopicCopy(src, dst, copied, sent=True)
    finally:
        await consumer.stop()


async def _copy_range(
    consumer: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    since_ms: int,
    until_ms: int,
    to: tuple[AIOKafkaProducer, str] | None,
    progress_out: TextIO | None,
) -> dict[int, int]:
    """Read each partition's [first, end) offsets and send the records stamped in [since, until)
    to `to` (producer, topic), or only count them when `to` is None; {partition: records}."""
    label = f"replay {next(iter(ranges)).topic if ranges else ''} -> {to[1] if to else '(dry run)'}"
    progress = Progress(sum(end - first for first, end in ranges.values()), label, progress_out)
    found: dict[int, int] = {}
    read = 0
    for tp, (first, end) in ranges.items():
        found[tp.partition] = 0
        if first >= end:
            continue
        consumer.seek(tp, first)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            records = batch.get(tp, [])
            read += len(records)
            progress.update(read, sum(found.values()))
            for record in records:
                if record.offset >= end:
                    break
                if since_ms <= record.timestamp < until_ms:
                    if to is not None:
                        producer, topic = to
                        await producer.send(
                            topic,
                            record.value,
                            key=record.key,
                            headers=list(record.headers) or None,
                            timestamp_ms=record.timestamp,
                        )
                    found[tp.partition] += 1
    progress.finish()
    return found


@dataclass(frozen=True, slots=True)
class OffsetMove:
    """One partition's committed offset before and after a reset."""

    topic: str
    partition: int
    before: int | None
    after: int


async def reset_offsets(settings: Settings, to_ms: int, *, dry_run: bool = False) -> list[OffsetMove]:
    """Move the job's consumer group on the input topics to the first offsets at or after `to_ms`.

    Refuses while the group has live members: a running worker would overwrite the new offsets
    with its next commit. Partitions with nothing at or after `to_ms` move to their end.
    Refuses a `to_ms` later than now + LIKEFLOW_MAX_CLOCK_SKEW_S: moving to the end of every
    partition for a time not yet reached would skip the records written until then.
    """
    now_ms = int(time.time() * 1000)
    if to_ms > now_ms + settings.max_clock_skew_s * 1000:
        raise ReplayArgumentError(
            f"--to-datetime {_iso(to_ms)} is {(to_ms - now_ms) / 1000:.0f} s in the future (more than "
            f"LIKEFLOW_MAX_CLOCK_SKEW_S = {settings.max_clock_skew_s:g} s): the group would skip every "
            f"record written until then. Give a time up to now ({_iso(now_ms)})"
        )
    group = settings.app_id
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        members = await live_members(admin, group)
        if members:
            raise ReplayError(
                f"{members} worker(s) of consumer group {group!r} are alive; stop them first "
                "(`make worker-stop`, or stop the deployment), then run reset-offsets again"
            )
        tps = []
        consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
        await consumer.start()
        try:
            for name in INPUT_TOPICS:
                tps += [
                    TopicPartition(settings.topic(name), p)
                    for p in await topic_partitions(consumer, settings.topic(name))
                ]
            found = await consumer.offsets_for_times({tp: to_ms for tp in tps})
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    moves = []
    for tp in tps:
        target = found[tp].offset if found.get(tp) is not None else ends[tp]
        before = committed.get(tp)
        moves.append(
            OffsetMove(
                tp.topic, tp.partition, before.offset if before and before.offset >= 0 else None, target
            )
        )
    if not dry_run:
        # A consumer with the group id but a manual assignment commits without joining the group.
        committer = AIOKafkaConsumer(
            **kafka_client_kwargs(settings), group_id=group, enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign(tps)
            await committer.commit(
                {TopicPartition(m.topic, m.partition): OffsetAndMetadata(m.after, "") for m in moves}
            )
        finally:
            await committer.stop()
    return moves


def _iso(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC to the second (for messages)."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


class _DescribeGroupsUpToV2(
    Request[DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]  # type: ignore[misc]
):
    """DescribeGroups limited to v0-v2: aiokafka 0.14 decodes the v3 answer with the v2 schema
    and fails ("Buffer underrun"), which is what its describe_consumer_groups() negotiates with
    Kafka 3.x."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: Any) -> Any:
        return request_struct_class(self._groups)


async def live_members(admin: AIOKafkaAdminClient, group: str) -> int:
    """How many members the consumer group has right now (0 for an empty or unknown group)."""
    node = await admin.find_coordinator(group)
    response = await admin._client.send(node, _DescribeGroupsUpToV2([group]))  # noqa: SLF001
    return sum(len(g["members"]) for g in response.to_object()["groups"])
