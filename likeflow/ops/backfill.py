"""`likeflow backfill`: recompute creator windows for a past range with the live engine, diff, swap."""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from config import Settings
from likeflow.connections import kafka_client_kwargs, topic_partitions
from likeflow.domain.privacy import erased_by
from likeflow.domain.prompt_ids import PromptIds, is_legacy_id
from likeflow.domain.pseudonym import archived_pseudonym
from likeflow.domain.quality.counting import PartitionClock, WindowPolicy, WindowRow
from likeflow.domain.quality.engine import Effects, StoredValue, apply_record
from likeflow.domain.quality.index import PartitionIndex
from likeflow.domain.quality.windows import COUNT_FIELDS
from likeflow.ops.replay import archive_lines
from likeflow.policies import input_limits_from
from likeflow.progress import Progress
from likeflow.sinks.redis_quality import RedisQualityStore
from streams.events import CountBatch, CountRecord, CreatorEvent, DeadLetterReason, Invalid
from streams.topics import CREATOR_EVENTS, PROMPT_FEEDBACK
from streams.validation import InputLimits, decode_feedback

Windows = dict[str, dict[int, dict[str, int]]]  # creator -> window start -> counts

# Topics whose partitions are the creator-events partitions the live job counted from (same key
# and partition count), so their per-partition order is what the live job saw.
SAME_PARTITIONING = (PROMPT_FEEDBACK,)


@dataclass(slots=True)
class SourcedEvent:
    """A creator event, the source (input partition) it came from, and where it is counted.

    `partition` None: derive the counting partition from creator_id like the live producers do.
    """

    event: CreatorEvent
    partition: int | None
    source: str = "archive"


@dataclass(slots=True)
class SourcedRecord:
    """A count record as read from `creator-events`, at its partition and offset."""

    record: CountRecord | CountBatch
    partition: int
    offset: int


@dataclass(slots=True)
class BackfillResult:
    """Recomputed windows and what happened to the input."""

    namespace: str
    windows: Windows
    outcomes: Counter[str] = field(default_factory=Counter)
    invalid: list[str] = field(default_factory=list)
    out_of_range: int = 0


class DictStore:
    """The engine's Store over a plain dict."""

    def __init__(self) -> None:
        self.data: dict[str, StoredValue] = {}

    def get(self, key: str) -> StoredValue | None:
        return self.data.get(key)

    def put(self, key: str, value: StoredValue, order: int) -> None:
        self.data[key] = value

    def delete(self, key: str, order: int) -> None:
        self.data.pop(key, None)


def partition_for(creator_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives the key, as aiokafka does."""
    hashed: int = murmur2(creator_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def namespace_for(since_ms: int, until_ms: int, sources: Iterable[str]) -> str:
    """Deterministic shadow namespace: a re-run of the same backfill writes the same keys."""
    digest = hashlib.sha256(orjson.dumps([since_ms, until_ms, sorted(sources)])).hexdigest()[:12]
    return f"bf-{digest}"


def events_from_line(line: bytes, limits: InputLimits) -> CreatorEvent | Invalid:
    """A feedback record, or a prompt as on `order-prompts` (counted as the creator's prompt)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "like_ts" in obj:
        return _prompt_event(obj)
    key = obj.get("creator_id") if isinstance(obj, dict) else None
    return decode_feedback(key.encode() if isinstance(key, str) else None, line, limits)


def _prompt_event(obj: dict[str, Any]) -> CreatorEvent | Invalid:
    """A line of an `order-prompts` archive, checked for what the counters use."""
    for name in ("prompt_id", "creator_id", "product_id", "user_id"):
        value = obj.get(name)
        if type(value) is not str or not value:
            return Invalid(DeadLetterReason.WRONG_TYPE, f"prompt record: {name} must be a non-empty string")
    like_ts = obj.get("like_ts")
    if type(like_ts) is not int or not 0 < like_ts < 2**53:
        return Invalid(DeadLetterReason.WRONG_TYPE, "prompt record: like_ts must be epoch milliseconds")
    return CreatorEvent.prompt_count(
        obj["prompt_id"], obj["creator_id"], obj["product_id"], obj["user_id"], like_ts
    )


class Recomputation:
    """The live engine run over a backfill's input, one item at a time (memory: the windows and
    dedupe entries of the range, not the input).

    Records read from `creator-events` are applied as the live job applied them (same
    partitions, offsets and source clocks); loose events (feedback, archives) each become a
    count record of their source, with the source's clock advanced event by event.

    `ceiling` (epoch ms) is the newest event time accepted, as the live job's: the wall clock
    when the run starts plus the allowed skew (default: `InputLimits`' default skew). Events
    stamped later are not counted (`future_ts`), and no clock passes it.
    """

    def __init__(
        self,
        *,
        partitions: int,
        since_ms: int,
        until_ms: int,
        policy: WindowPolicy,
        namespace: str,
        ceiling: int | None = None,
    ) -> None:
        # Keep every window of the range: a backfill longer than the retention must not expire
        # them. Only the sources present in the input are waited for.
        self._policy = WindowPolicy(
            policy.size_ms,
            policy.grace_ms,
            max(policy.retention_ms, until_ms - since_ms + policy.size_ms),
            policy.dedupe_horizon_ms,
        )
        self._partitions = partitions
        self._since, self._until = since_ms, until_ms
        self._ceiling = InputLimits().at(int(time.time() * 1000)).max_ts if ceiling is None else ceiling
        self._stores: dict[int, DictStore] = defaultdict(DictStore)
        self._indexes: dict[int, PartitionIndex] = defaultdict(PartitionIndex)
        self._clocks: dict[int, PartitionClock] = defaultdict(PartitionClock)
        self._offsets: Counter[int] = Counter()
        self._source_clocks: Counter[str] = Counter()
        self.result = BackfillResult(namespace, {})

    def apply(self, item: SourcedEvent | SourcedRecord) -> None:
        """Count one input item, in input order."""
        since, until, result = self._since, self._until, self.result
        if isinstance(item, SourcedRecord):
            p, offset, record = item.partition, item.offset, item.record
            sections = record.sections if isinstance(record, CountBatch) else [record]
            result.out_of_range += sum(1 for s in sections for e in s.events if not since <= e.ts < until)
        else:
            event = item.event
            if not since <= event.ts < until:
                result.out_of_range += 1
                return
            p = (
                item.partition
                if item.partition is not None
                else partition_for(event.creator_id, self._partitions)
            )
            self._source_clocks[item.source] = max(self._source_clocks[item.source], event.ts)
            clock = self._source_clocks[item.source]
            record = CountRecord(item.source, clock, [event], [clock])
            offset = self._offsets[p]
            self._offsets[p] += 1
        effects = Effects()
        apply_record(
            self._stores[p],
            self._indexes[p],
            self._clocks[p],
            partition=p,
            offset=offset,
            record=record,
            policy=self._policy,
            effects=effects,
            ceiling=self._ceiling,
        )
        for counted, outcome in effects.outcomes:
            if since <= counted.ts < until:
                result.outcomes[outcome.value] += 1

    def finish(self) -> BackfillResult:
        """The windows that start in [since, until), with what happened to the input."""
        for store in self._stores.values():
            for key, value in store.data.items():
                if key.startswith("w|") and isinstance(value, WindowRow):
                    if self._since <= value.start_ms < self._until:
                        self.result.windows.setdefault(value.creator_id, {})[value.start_ms] = (
                            value.counts.to_dict()
                        )
        return self.result


def recompute(
    events: Iterable[SourcedEvent | SourcedRecord],
    *,
    partitions: int,
    since_ms: int,
    until_ms: int,
    policy: WindowPolicy,
    namespace: str,
) -> BackfillResult:
    """Run the live engine over `events` (in order), keeping windows that start in [since, until)."""
    run = Recomputation(
        partitions=partitions, since_ms=since_ms, until_ms=until_ms, policy=policy, namespace=namespace
    )
    for item in events:
        run.apply(item)
    return run.finish()


@dataclass(slots=True)
class ErasureFilter:
    """Leaves out the events of users erased since, from before their erasure (the erasure
    ledger, docs/privacy.md): a recomputation after an erasure counts without them, as any
    other recomputation of the job's outputs does (`replay file`, `rebuild-redis`)."""

    ledger: Mapping[str, int]  # user pseudonym -> erasure ts (epoch ms)
    pseudonymize: Callable[[str], str]  # for archived feedback, which names users by raw id
    left_out: int = 0

    def keep(self, item: SourcedEvent | SourcedRecord) -> SourcedEvent | SourcedRecord | None:
        """`item` without its erased users' events (None when nothing of it is left)."""
        if not self.ledger:
            return item
        if isinstance(item, SourcedEvent):
            if self._erased(item.event):
                self.left_out += 1
                return None
            return item
        record = item.record
        sections = record.sections if isinstance(record, CountBatch) else [record]
        filtered = [self._without_erased(section) for section in sections]
        if all(f is s for f, s in zip(filtered, sections, strict=True)):
            return item
        kept = CountBatch(filtered) if isinstance(record, CountBatch) else filtered[0]
        return SourcedRecord(kept, item.partition, item.offset)

    def _without_erased(self, record: CountRecord) -> CountRecord:
        kept = [i for i, event in enumerate(record.events) if not self._erased(event)]
        if len(kept) == len(record.events):
            return record
        self.left_out += len(record.events) - len(kept)
        # The source's clock still moves with the record (`clock`); only the events go.
        return CountRecord(
            record.source,
            record.clock,
            [record.events[i] for i in kept],
            [record.clocks[i] for i in kept if i < len(record.clocks)],
            record.idle,
            [record.offsets[i] for i in kept if i < len(record.offsets)],
        )

    def _erased(self, event: CreatorEvent) -> bool:
        return erased_by(self.ledger, archived_pseudonym(event.user_id, self.pseudonymize), event.ts)


@dataclass(slots=True)
class IssuedPrompts:
    """Keeps only the events of prompts likeflow issued, the check the live feedback handler
    makes (agents/route_feedback.py): a recomputation from archives or `prompt-feedback`
    counts no forged click. Count records of `creator-events` were checked when written."""

    prompt_ids: PromptIds
    pseudonymize: Callable[[str], str]
    # LIKEFLOW_LEGACY_PROMPT_IDS_UNTIL_MS: events stamped up to it may carry unkeyed ids.
    legacy_until_ms: int = 0
    refused: int = 0

    def keep(self, item: SourcedEvent | SourcedRecord) -> SourcedEvent | SourcedRecord | None:
        """`item`, or None (counted in `refused`) when its prompt is not one likeflow issued."""
        if isinstance(item, SourcedRecord):
            return item
        event = item.event
        user = archived_pseudonym(event.user_id, self.pseudonymize)
        if self.prompt_ids.verify(event.prompt_id, event.creator_id, event.product_id, user) or (
            event.ts <= self.legacy_until_ms and is_legacy_id(event.prompt_id)
        ):
            return item
        self.refused += 1
        return None


def file_events(paths: list[Path], limits: InputLimits, invalid: list[str]) -> Iterator[SourcedEvent]:
    """Creator events from JSON-lines archives; invalid lines are noted in `invalid`."""
    for path, number, line, _ in archive_lines(paths):
        event = events_from_line(line, limits)
        if isinstance(event, Invalid):
            invalid.append(f"{path}:{number}: {event.reason.value}: {event.error}")
            continue
        yield SourcedEvent(event, None)


async def topic_events(
    settings: Settings, topic: str, invalid: list[str], progress_out: TextIO | None = None
) -> AsyncIterator[SourcedEvent | SourcedRecord]:
    """Every record of `topic` up to its end offsets at the start, partition by partition, as
    they are read (nothing is held): the count records of `creator-events` as they are,
    feedback (or prompt) records as events of their partition. Shows progress in records."""
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    counts_topic = topic == settings.topic(CREATOR_EVENTS)
    keep_partition = any(topic == settings.topic(t) for t in SAME_PARTITIONING)
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        progress = Progress(
            sum(ends[tp] - begins[tp] for tp in tps), f"[backfill] read {topic}", progress_out
        )
        read = yielded = 0
        for tp in tps:
            consumer.seek(tp, begins[tp])
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset >= ends[tp]:
                        continue
                    read += 1
                    item = _item_of(
                        record, topic, tp.partition, counts_topic, keep_partition, settings, invalid
                    )
                    if item is not None:
                        yielded += 1
                        yield item
                progress.update(read, yielded)
        progress.finish()
    finally:
        await consumer.stop()


def _item_of(
    record: Any,
    topic: str,
    partition: int,
    counts_topic: bool,
    keep_partition: bool,
    settings: Settings,
    invalid: list[str],
) -> SourcedEvent | SourcedRecord | None:
    """The backfill input of one record of `topic`; None (noted in `invalid`) when unreadable."""
    if record.value is None:
        return None
    where = f"{topic}[{partition}]@{record.offset}"
    if counts_topic:
        try:
            return SourcedRecord(CountBatch.from_json(record.value), partition, record.offset)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            invalid.append(f"{where}: not a count record: {exc}")
            return None
    event = events_from_line(record.value, input_limits_from(settings).at(int(time.time() * 1000)))
    if isinstance(event, Invalid):
        invalid.append(f"{where}: {event.reason.value}: {event.error}")
        return None
    return SourcedEvent(event, partition if keep_partition else None, f"{topic}/{partition}")


@dataclass(frozen=True, slots=True)
class WindowDiff:
    """One window whose live and recomputed counts differ (None: absent on that side)."""

    creator_id: str
    start_ms: int
    live: dict[str, int] | None
    backfill: dict[str, int] | None

    def describe(self) -> str:
        """'c7 @1795000000000: clicks 3 -> 4 (+1)' style line."""
        if self.live is None:
            return f"{self.creator_id} @{self.start_ms}: only in the backfill {self.backfill}"
        if self.backfill is None:
            return f"{self.creator_id} @{self.start_ms}: only in live {self.live}"
        before, after = self.live, self.backfill
        parts = [
            f"{f} {before.get(f, 0)} -> {after.get(f, 0)} ({after.get(f, 0) - before.get(f, 0):+d})"
            for f in COUNT_FIELDS
            if before.get(f, 0) != after.get(f, 0)
        ]
        return f"{self.creator_id} @{self.start_ms}: " + ", ".join(parts)


def diff(live: Windows, backfill: Windows) -> list[WindowDiff]:
    """Every window of either side whose counts differ, sorted by creator and window."""
    out = []
    for creator_id in sorted(live.keys() | backfill.keys()):
        mine, theirs = live.get(creator_id, {}), backfill.get(creator_id, {})
        for start in sorted(mine.keys() | theirs.keys()):
            a, b = mine.get(start), theirs.get(start)
            if a != b:
                out.append(WindowDiff(creator_id, start, a, b))
    return out


def carry_live_likes(live: Windows, recomputed: Windows) -> None:
    """Give `recomputed` (from an input that holds no likes: archives of prompts and feedback,
    the feedback topic) the live windows' `likes`, in place: likes are counted from `likes`
    itself and only `creator-events` carries them, so such a recomputation keeps what is served
    rather than report (and swap in) zero likes."""
    for creator_id, windows in live.items():
        for start, counts in windows.items():
            if counts.get("likes"):
                mine = recomputed.setdefault(creator_id, {})
                row = mine.setdefault(start, dict.fromkeys(COUNT_FIELDS, 0))
                row["likes"] = counts["likes"]


async def live_windows(
    store: RedisQualityStore, creators: Iterable[str], since_ms: int, until_ms: int
) -> Windows:
    """Serving's windows in [since, until) for `creators`."""
    out: Windows = {}
    for creator_id in creators:
        for w in await store.read_windows(creator_id) or []:
            if since_ms <= w["start_ms"] < until_ms:
                out.setdefault(creator_id, {})[w["start_ms"]] = {f: w.get(f, 0) for f in COUNT_FIELDS}
    return out
