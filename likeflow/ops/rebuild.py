"""`likeflow rebuild-redis`: serving in Redis rewritten from the job's table changelogs in Kafka.

Redis is a cache of the job's state (docs/redis.md): every document it serves is derived from a
Faust table, and every table is a compacted changelog topic. The rebuild reads those topics
directly (no worker, no consumer group: it assigns itself every partition and reads from the
beginning to the end offsets it saw when it started; the latest record per key wins and a null
value is a tombstone), derives each document with the functions the agents use, and writes it
through the agents' own sinks:

- prompts: the prompts still in `sent` of each user's `user_state` value, through the same
  idempotent Lua upsert (a prompt already stored is left alone), minus any prompt of a user's
  erased past (like_ts <= the later of the state's erasure ts and the erasure ledger's), which
  the worker would not have written either;
- windows: each creator's `creator_counts` window rows, through the same version-guarded script,
  at version = the highest source offset stamped on those rows;
- standing: the document the judge last served, stored with its version in the creator's
  `creator_standing` row (`served`);
- platform: derived from the judge's platform row, at its `last_offset`.

The versions are those the worker wrote (or lower), never higher than anything it writes later,
so a rebuild can run next to a live worker: whichever writes last, Redis ends with the newer
numbers. See docs/redis.md, "Rebuilding Redis".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import Settings
from likeflow.connections import kafka_client_kwargs, redis_client, topic_partitions
from likeflow.domain.quality.counting import WindowRow
from likeflow.domain.quality.creator_rows import repair_row
from likeflow.domain.quality.horizon import PlatformHorizon
from likeflow.domain.quality.judging import platform_document
from likeflow.domain.user_state import UserState
from likeflow.errors import ServiceUnavailable
from likeflow.metrics import Metrics
from likeflow.policies import input_limits_from, quality_policies_from
from likeflow.sinks.redis_keys import platform_key, standing_key, windows_key
from likeflow.sinks.redis_prompts import RedisPromptStore, ServedPrompt
from likeflow.sinks.redis_quality import RedisQualityStore, WindowsUpdate
from streams.events import Prompt
from tables import CREATOR_COUNTS_TABLE, CREATOR_STANDING_TABLE, ERASURE_LEDGER_TABLE, USER_STATE_TABLE

log = logging.getLogger(__name__)

POLL_MS = 500
READ_TIMEOUT_S = 300.0
PROMPTS_PER_WRITE = 500  # prompts per pipelined round trip
CREATORS_PER_WRITE = 200
# An erasure handled while the rebuild writes may have deleted a key the rebuild then refilled;
# the changelog's tail is re-read after the writes and erasures found there are applied again.
MAX_TAIL_PASSES = 5
# The worker deletes an erased user's key right after handing the erased state to its producer;
# waiting this long before reading the tail lets that record reach the broker.
TAIL_SETTLE_S = 1.0

RERUN = "nothing is lost: re-run once Redis answers (locally: `make stack-up`)"

Offsets = dict[int, int]
ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust names a table's changelog `{app_id}-{table}-changelog` (no topic prefix)."""
    return f"{settings.app_id}-{table}-changelog"


def decode_key(raw: bytes | None) -> str | None:
    """A table key from its changelog bytes: Faust JSON-encodes str keys (b'"v1.ab"')."""
    if raw is None:
        return None
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode()
    return key if isinstance(key, str) else raw.decode()


@dataclass
class Changelog:
    """The latest value of every live key of one changelog, and where the read stopped."""

    topic: str
    values: dict[str, Any] = field(default_factory=dict)
    ends: Offsets = field(default_factory=dict)
    records: int = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record in offset order: the latest wins, a tombstone removes."""
        self.records += 1
        name = decode_key(key)
        if name is None:
            return
        if value is None:
            self.values.pop(name, None)
        else:
            self.values[name] = orjson.loads(value)


async def read_changelog(
    settings: Settings,
    topic: str,
    since: Offsets | None = None,
    progress: ProgressFn | None = None,
    into: Changelog | None = None,
) -> Changelog:
    """Read `topic` from `since` (default: the beginning) to the end offsets seen at the start.

    Group-less: nothing is committed and no worker's group is touched. A topic that does not
    exist (a table never written) reads as empty. `into` (default a new `Changelog`) is what the
    records are applied to.
    """
    out = into if into is not None else Changelog(topic)
    # `earliest`: assign() starts a position lookup in the background, and a `latest` one that
    # lands after our seek would skip a whole partition. Reading from too early is
    # harmless: records outside [start, end) are ignored.
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return out
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out.ends = {tp.partition: ends[tp] for tp in tps}
        firsts = await consumer.beginning_offsets(tps)
        begin = {tp.partition: max(firsts[tp], (since or {}).get(tp.partition, 0)) for tp in tps}
        for tp in tps:
            consumer.seek(tp, begin[tp.partition])
        total = sum(max(0, out.ends[p] - begin[p]) for p in out.ends)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while remaining := [tp for tp in tps if await consumer.position(tp) < out.ends[tp.partition]]:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"could not read {topic} to its end within {READ_TIMEOUT_S:.0f} s; is Kafka up?"
                )
            batch = await consumer.getmany(*remaining, timeout_ms=POLL_MS)
            for tp, records in batch.items():
                for record in records:
                    # Past the end offset seen at the start: the next pass reads it.
                    if begin[tp.partition] <= record.offset < out.ends[tp.partition]:
                        out.apply(record.key, record.value)
            if progress is not None:
                done = 0
                for tp in tps:
                    done += max(
                        0, min(await consumer.position(tp), out.ends[tp.partition]) - begin[tp.partition]
                    )
                progress(topic, done, total)
    finally:
        await consumer.stop()
    return out


# -- pure derivations: table values -> the documents the sinks write -----------------------------


def windows_updates(counts: Mapping[str, Any], ceiling: int | None = None) -> dict[str, WindowsUpdate]:
    """Every creator's windows from the `creator_counts` rows (keys `w|creator|start`); with
    `ceiling` (epoch ms, the newest event time accepted), rows of windows that start beyond it
    are left out (an earlier version's junk, which a worker deletes when it loads them).

    The version is the highest source offset stamped on the creator's rows: the offset of the
    last event that counted into them, which is the version the agent wrote with it. (When the
    agent's last write for a creator was an expiry, it used that later offset; the rebuild's
    lower version then loses to it, which is right: that write is newer.)
    """
    updates: dict[str, WindowsUpdate] = {}
    for key, value in counts.items():
        if not key.startswith("w|"):
            continue
        row = WindowRow.from_dict(value)
        if ceiling is not None and row.start_ms > ceiling:
            continue
        update = updates.setdefault(row.creator_id, WindowsUpdate(row.creator_id, row.last_offset))
        update.version = max(update.version, row.last_offset)
        update.written[row.start_ms] = row.counts.to_dict()
    return updates


def quality_documents(
    prefix: str, standing: Mapping[str, Any], horizon_ms: int, ceiling: int | None = None
) -> tuple[list[tuple[str, int, dict[str, Any]]], int]:
    """(key, version, doc) of the platform and of every creator's standing, from `creator_standing`;
    and how many creator rows had no served document (not judged yet).

    The platform document is derived from every creator's horizon windows, as the judge derives
    it, at the version the judge last changed it (the highest `last_offset` of the rows); with
    `ceiling` (epoch ms), windows that start beyond it are left out, as the judge does.
    """
    docs: list[tuple[str, int, dict[str, Any]]] = []
    without = 0
    if ceiling is not None:
        # As the judge loads them: an earlier version's windows and verdicts beyond the ceiling out.
        standing = {
            k: (repair_row(v, ceiling) or v) if isinstance(v, dict) else v for k, v in standing.items()
        }
    rows = [row for row in standing.values() if isinstance(row, dict)]
    if rows:
        platform = PlatformHorizon.rebuild(horizon_ms, rows, ceiling)
        doc, _ = platform_document(platform.totals())
        docs.append((platform_key(prefix), max(int(r.get("last_offset", -1)) for r in rows), doc))
    for key, row in sorted(standing.items()):
        if row.get("served"):
            served = row["served"]
            docs.append((standing_key(prefix, key), int(served["version"]), served["doc"]))
        else:
            without += 1
    return docs, without


# -- the rebuild ---------------------------------------------------------------------------------


@dataclass
class RebuildReport:
    """What a rebuild read and wrote."""

    records_read: int = 0
    users: int = 0
    prompt_keys: int = 0
    prompts: int = 0
    erased_users_skipped: int = 0
    creators: int = 0
    windows: int = 0
    windows_accepted: int = 0
    docs: int = 0
    docs_accepted: int = 0
    creators_without_doc: int = 0
    tail_passes: int = 0
    tail_erasures: int = 0
    seconds: float = 0.0

    @property
    def keys(self) -> int:
        """Redis keys rebuilt (prompt sets, windows hashes, standing and platform documents)."""
        return self.prompt_keys + self.creators + self.docs

    def summary(self) -> str:
        """One line for the terminal."""
        refused = (self.creators - self.windows_accepted) + (self.docs - self.docs_accepted)
        return (
            f"{self.keys} keys rebuilt in {self.seconds:.1f} s from {self.records_read} changelog records: "
            f"{self.prompt_keys} prompt sets ({self.prompts} prompts, {self.users} users, "
            f"{self.erased_users_skipped} erased users left empty), {self.creators} creator window hashes "
            f"({self.windows} windows), {self.docs} standing/platform documents "
            f"({self.creators_without_doc} creators without a served verdict); "
            f"{refused} writes refused because Redis already held a newer version; "
            f"{self.tail_erasures} erasures re-applied from the tail in {self.tail_passes} passes"
        )


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _gave_up(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("likeflow_redis_write_errors_total", {"outcome": "gave_up"})
    return value or 0.0


async def _write_prompts(store: RedisPromptStore, prompts: list[Prompt]) -> None:
    for chunk in _chunks(prompts, PROMPTS_PER_WRITE):
        if not await store.write([ServedPrompt.of(p) for p in chunk]):
            raise ServiceUnavailable(f"Redis did not accept a prompt write (see the log); {RERUN}")


async def _stale_fields(client: aioredis.Redis, prefix: str, update: WindowsUpdate) -> set[int]:
    """Window fields in Redis that the table no longer has (expired while Redis was away)."""
    fields = await client.hkeys(windows_key(prefix, update.creator_id))
    stale = set()
    for f in fields:
        text = f.decode() if isinstance(f, bytes) else f
        if text.startswith("w:") and int(text[2:]) not in update.written:
            stale.add(int(text[2:]))
    return stale


async def rebuild_redis(
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    client: aioredis.Redis | None = None,
) -> RebuildReport:
    """Rewrite every served Redis document of the job from its table changelogs."""
    started = time.monotonic()
    report = RebuildReport()
    window_policy, judge_policy = quality_policies_from(settings)
    own_client = client is None
    redis = client or redis_client(settings)
    metrics = Metrics()
    prompt_store = RedisPromptStore(
        redis,
        prefix=settings.redis_prefix,
        keep=settings.redis_prompts_keep,
        ttl_s=settings.redis_prompt_ttl_s,
        metrics=metrics,
    )
    quality_store = RedisQualityStore(redis, prefix=settings.redis_prefix, metrics=metrics)
    try:
        await redis.ping()
        users = await read_changelog(settings, changelog_topic(settings, USER_STATE_TABLE), progress=progress)
        ledger = await read_changelog(
            settings, changelog_topic(settings, ERASURE_LEDGER_TABLE), progress=progress
        )
        counts = await read_changelog(
            settings, changelog_topic(settings, CREATOR_COUNTS_TABLE), progress=progress
        )
        standing = await read_changelog(
            settings, changelog_topic(settings, CREATOR_STANDING_TABLE), progress=progress
        )
        report.records_read = users.records + ledger.records + counts.records + standing.records

        # Prompts, user by user, in the order each user's state holds them (the upsert's trim
        # gives the same set whatever the order).
        prompts: list[Prompt] = []
        for user, stored in users.values.items():
            report.users += 1
            state = UserState.from_dict(stored)
            # The ledger outlives the state's own erasure ts (retention): the later one counts.
            state.erased_ts = max(state.erased_ts, int(ledger.values.get(user, 0)))
            if state.erased_ts:
                # The erasure marker first (a FLUSHALL took it): the upsert then refuses every
                # prompt liked up to the erasure, from this rebuild or a worker's retried write.
                await prompt_store.erase(user, state.erased_ts)
            mine = state.served_prompts()
            if not mine:
                if state.erased_ts:
                    report.erased_users_skipped += 1
                continue
            report.prompt_keys += 1
            prompts += mine
        report.prompts = len(prompts)
        await _write_prompts(prompt_store, prompts)
        if progress is not None and prompts:
            progress("prompts", report.prompts, report.prompts)

        # Nothing from beyond the worker's clock plus the skew (an earlier version's junk).
        ceiling = input_limits_from(settings).at(int(time.time() * 1000)).max_ts
        updates = list(windows_updates(counts.values, ceiling).values())
        report.creators = len(updates)
        report.windows = sum(len(u.written) for u in updates)
        for chunk in _chunks(updates, CREATORS_PER_WRITE):
            for update in chunk:
                update.deleted = await _stale_fields(redis, settings.redis_prefix, update)
            report.windows_accepted += await quality_store.write_windows(chunk, window_policy.size_ms)

        docs, report.creators_without_doc = quality_documents(
            settings.redis_prefix, standing.values, judge_policy.horizon_ms, ceiling
        )
        report.docs = len(docs)
        for doc_chunk in _chunks(docs, CREATORS_PER_WRITE):
            report.docs_accepted += await quality_store.write(doc_chunk)
        if _gave_up(metrics):
            raise ServiceUnavailable(f"Redis failed a quality write (see the log); {RERUN}")

        await _reapply_tail_erasures(settings, users, prompt_store, report)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise ServiceUnavailable(f"Redis did not answer ({exc}); {RERUN}") from None
    finally:
        if own_client:
            await redis.aclose()
    report.seconds = time.monotonic() - started
    log.debug("rebuild-redis: %s", report.summary())
    return report


async def _reapply_tail_erasures(
    settings: Settings, snapshot: Changelog, store: RedisPromptStore, report: RebuildReport
) -> None:
    """Honour erasures the worker applied while the rebuild was writing.

    The worker writes the erased state to the changelog, then deletes the Redis key. If that
    happened after the snapshot was read, the rebuild may have refilled the key with the user's
    old prompts. The changelog's tail (from the snapshot's end offsets) is read until it shows
    no further erasure: each user erased there loses the key again and gets back only prompts
    liked after the erasure.
    """
    topic = snapshot.topic
    known = {user: UserState.from_dict(state).erased_ts for user, state in snapshot.values.items()}
    since = snapshot.ends
    for _ in range(MAX_TAIL_PASSES):
        await asyncio.sleep(TAIL_SETTLE_S)
        tail = await read_changelog(settings, topic, since=since)
        report.tail_passes += 1
        states = {user: UserState.from_dict(stored) for user, stored in tail.values.items()}
        erased = {user: s for user, s in states.items() if s.erased_ts > known.get(user, 0)}
        if not erased:
            return
        for user, state in erased.items():
            await store.erase(user, state.erased_ts)
            await _write_prompts(store, state.served_prompts())
            known[user] = state.erased_ts
        report.tail_erasures += len(erased)
        since = tail.ends
    log.warning("rebuild-redis: erasures still arriving after %d passes; re-run to be sure", MAX_TAIL_PASSES)
