"""Serves creator quality from Redis: absolute values behind a version guard, per-window fields."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from likeflow.metrics import Metrics
from likeflow.sinks.redis_keys import standing_key, window_field, windows_key
from likeflow.sinks.redis_prompts import REDIS_DOWN, run_concurrently

log = logging.getLogger(__name__)

# A write whose version is below the stored one is refused, so a replay or a zombie worker (one
# that lost its partitions but has not noticed yet) never overwrites newer numbers. Equal
# versions rewrite identical content.
VERSIONED_DOC_LUA = """
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'doc', ARGV[2])
return 1
"""

# KEYS[1] = a creator's windows hash; ARGV = version, n, then n (field, counts) pairs, then the
# fields to delete. Only the windows a batch changed are written, so a backfill promoted into
# closed windows stays until those windows expire.
VERSIONED_WINDOWS_LUA = """
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1])
local n = tonumber(ARGV[2])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[3 + 2 * i], ARGV[4 + 2 * i]) end
for i = 3 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 1
"""

# KEYS[1] = a forgotten creator's windows hash, KEYS[2] = its standing (one slot: the creator id
# is the hash tag); ARGV[1] = the expiry cutoff (epoch ms). The standing goes; the windows hash
# goes unless it holds a window starting at or after the cutoff: the counting handler wrote it
# for a creator that came back, whose served windows must stay.
FORGET_LUA = """
redis.call('DEL', KEYS[2])
local cutoff = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'w:' and tonumber(string.sub(f, 3)) >= cutoff then return 0 end
end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS = pairs of (live windows hash, shadow windows hash); ARGV = since_ms, until_ms. On one
# node, one call for every creator, so readers see all old numbers or all new ones; on Redis
# Cluster one call per creator (its two hashes share a slot). Within
# [since, until) the live fields become exactly the shadow's; the version field is kept.
SWAP_LUA = """
local since, until_ = tonumber(ARGV[1]), tonumber(ARGV[2])
local changed = 0
for k = 1, #KEYS, 2 do
  local live, shadow = KEYS[k], KEYS[k + 1]
  local fields = redis.call('HKEYS', live)
  for _, f in ipairs(fields) do
    if string.sub(f, 1, 2) == 'w:' then
      local start = tonumber(string.sub(f, 3))
      if start >= since and start < until_ then redis.call('HDEL', live, f) end
    end
  end
  local pairs_ = redis.call('HGETALL', shadow)
  for i = 1, #pairs_, 2 do redis.call('HSET', live, pairs_[i], pairs_[i + 1]) end
  changed = changed + 1
end
return changed
"""


# While paused above the pending bound: how long between attempts (s).
PAUSED_RETRY_S = 1.0


@dataclass(slots=True)
class WindowsUpdate:
    """Windows of one creator to set (start -> counts) or delete, at a version."""

    creator_id: str
    version: int
    written: dict[int, Mapping[str, int]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _window_value(start_ms: int, size_ms: int, counts: Mapping[str, int]) -> bytes:
    return orjson.dumps({"start_ms": start_ms, "end_ms": start_ms + size_ms, **counts})


class RedisQualityStore:
    """Versioned writes of quality documents, one pipelined round trip per batch."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, metrics: Metrics, max_pending: int = 0
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._metrics = metrics
        self._doc_script = client.register_script(VERSIONED_DOC_LUA)
        self._windows_script = client.register_script(VERSIONED_WINDOWS_LUA)
        self._swap_script = client.register_script(SWAP_LUA)
        self._forget_script = client.register_script(FORGET_LUA)
        # Redis Cluster refuses a script or MULTI whose keys lie in different slots.
        self._one_node = not isinstance(client, RedisCluster)
        # Writes that failed while Redis was unreachable, merged per key (the newest version
        # wins, as in Redis): bounded by the number of creators, capped by `max_pending`.
        self._max_pending = max_pending
        self._pending_docs: dict[str, tuple[int, dict[str, Any]]] = {}
        self._pending_windows: dict[str, WindowsUpdate] = {}
        # Creators to forget, by their standing key: (creator_id, cutoff ms). Written after the
        # documents and windows of the same flush; a standing document held later (the creator
        # was judged again) cancels it.
        self._pending_forget: dict[str, tuple[str, int]] = {}
        self._pending_gauge = metrics.redis_pending.labels("quality")
        self._size_ms = 0  # window size (ms), known from the first write_windows call
        self._flushing = asyncio.Lock()

    async def write(self, docs: Sequence[tuple[str, int, dict[str, Any]]]) -> int:
        """Write (key, version, doc) triples; returns how many were accepted (newer or equal).

        A Redis outage is logged and counted, not raised: the documents are held (see
        `max_pending`) and written with the next call; the tables are the source of truth.
        """
        for key, _, _ in docs:
            self._pending_forget.pop(key, None)
        _hold_docs(self._pending_docs, docs)
        return await self._flush()

    async def forget_creators(self, creator_ids: Sequence[str], cutoff_ms: int) -> int:
        """Delete the standing of creators the judge forgot, and their windows hash unless it
        holds a window starting at or after `cutoff_ms` (the counting handler wrote one since:
        the creator came back). Held like any write while Redis is down; call it after the
        documents written before the creators were forgotten. Returns how many windows hashes
        went."""
        for creator_id in creator_ids:
            self._pending_forget[standing_key(self.prefix, creator_id)] = (creator_id, cutoff_ms)
        return await self._flush()

    def hold_windows(self, updates: Sequence[WindowsUpdate], size_ms: int) -> None:
        """Queue window updates for the next flush, merged per creator.

        Call it in the order the updates were made (the counting handler does, in its batch
        turn): a creator's hash has one version, so the merge, not the flush, decides which
        counts of a window are the newest.
        """
        self._size_ms = size_ms
        _hold_windows(self._pending_windows, updates)

    async def write_windows(self, updates: Sequence[WindowsUpdate], size_ms: int) -> int:
        """Apply window updates of several creators; returns how many were accepted."""
        self.hold_windows(updates, size_ms)
        return await self._flush()

    async def flush(self) -> int:
        """Write everything held (see `hold_windows`); returns how many writes were accepted."""
        return await self._flush()

    async def _flush(self) -> int:
        """Write everything held; on failure keep it (bounded) or, above the bound, retry until
        Redis answers, which pauses the calling agent (its offsets stay uncommitted)."""
        async with self._flushing:  # the counting handler and the judge write concurrently
            return await self._flush_held()

    async def _flush_held(self) -> int:
        while True:
            # Take what is held: updates queued while this flush is in flight go to the next one
            # (merged into a dict being written, they would be cleared unwritten).
            docs, windows, forget = self._pending_docs, self._pending_windows, self._pending_forget
            self._pending_docs, self._pending_windows, self._pending_forget = {}, {}, {}
            calls = [(self._doc_script, [k], [v, orjson.dumps(doc)]) for k, (v, doc) in docs.items()]
            for u in windows.values():
                args: list[Any] = [u.version, len(u.written)]
                for start, counts in sorted(u.written.items()):
                    args += [window_field(start), _window_value(start, self._size_ms, counts)]
                args += [window_field(gone) for gone in sorted(u.deleted)]
                calls.append((self._windows_script, [windows_key(self.prefix, u.creator_id)], args))
            # Last: after the windows the counting handler wrote for a creator that came back.
            for key, (creator_id, cutoff) in forget.items():
                calls.append((self._forget_script, [windows_key(self.prefix, creator_id), key], [cutoff]))
            accepted = await self._run(calls)
            if accepted is not None or not self._max_pending:
                self._pending_gauge.set(
                    len(self._pending_docs) + len(self._pending_windows) + len(self._pending_forget)
                )
                return accepted or 0
            # Not written: hold it again, under anything queued meanwhile (which is newer).
            _hold_docs(docs, [(k, v, d) for k, (v, d) in self._pending_docs.items()])
            _hold_windows(windows, list(self._pending_windows.values()))
            for key in self._pending_docs:
                forget.pop(key, None)  # judged again since: the newer document stays
            forget.update(self._pending_forget)
            self._pending_docs, self._pending_windows, self._pending_forget = docs, windows, forget
            held = len(docs) + len(windows) + len(forget)
            self._pending_gauge.set(held)
            if held <= self._max_pending:
                return 0
            log.error("redis unreachable with %d quality writes pending: pausing until it answers", held)
            await asyncio.sleep(PAUSED_RETRY_S)

    async def _run(self, calls: Sequence[tuple[Any, list[str], list[Any]]]) -> int | None:
        """Run the script calls in one pipeline; the number accepted, or None if Redis failed."""
        if not calls:
            return 0
        try:
            if self._one_node:
                async with self._client.pipeline(transaction=False) as pipe:
                    for script, keys, args in calls:
                        await script(keys=keys, args=args, client=pipe)
                    results = await pipe.execute()
            else:  # one call per key, each to its slot's node (no scripts in cluster pipelines)
                results = await run_concurrently(script(keys=keys, args=args) for script, keys, args in calls)
        except REDIS_DOWN as exc:
            self._metrics.redis_write_errors.labels("gave_up").inc()
            log.error("redis write of %d quality documents failed: %s", len(calls), exc)
            return None
        return sum(int(r) for r in results)

    async def read(self, key: str) -> dict[str, Any] | None:
        """The document stored at `key`, or None."""
        raw = await self._client.hget(key, "doc")
        if raw is None:
            return None
        doc: dict[str, Any] = orjson.loads(raw)
        return doc

    async def read_windows(self, creator_id: str, namespace: str = "") -> list[dict[str, int]] | None:
        """A creator's windows, oldest first; None when the creator has no windows hash."""
        raw = await self._client.hgetall(windows_key(self.prefix, creator_id, namespace))
        if not raw:
            return None
        windows = [orjson.loads(v) for k, v in raw.items() if _text(k).startswith("w:")]
        return sorted(windows, key=lambda w: w["start_ms"])

    async def creators(self) -> list[str]:
        """Every creator with a serving windows hash (SCAN, so Redis is never blocked)."""
        head, tail = windows_key(self.prefix, "\0").split("\0")
        found = []
        async for key in self._client.scan_iter(match=f"{head}*{tail}", count=1000):
            text = _text(key)
            found.append(text[len(head) : -len(tail)])
        return sorted(found)

    async def write_shadow(
        self, namespace: str, windows: Mapping[str, Mapping[int, Mapping[str, int]]], size_ms: int
    ) -> None:
        """Replace the shadow windows of `namespace` with `windows` (creator -> start -> counts)."""
        async with self._client.pipeline(transaction=self._one_node) as pipe:
            for creator_id, by_start in windows.items():
                key = windows_key(self.prefix, creator_id, namespace)
                pipe.delete(key)
                if by_start:
                    pipe.hset(
                        key,
                        mapping={window_field(s): _window_value(s, size_ms, c) for s, c in by_start.items()},
                    )
            await pipe.execute()

    async def swap(self, namespace: str, creators: Sequence[str], since_ms: int, until_ms: int) -> int:
        """Promote the shadow windows of `creators` in [since, until) into serving: atomically
        for all creators on one Redis node; on Redis Cluster atomically per creator (a creator's
        live and shadow hashes share a slot, different creators do not), one call each."""
        pairs = [
            [windows_key(self.prefix, creator_id), windows_key(self.prefix, creator_id, namespace)]
            for creator_id in creators
        ]
        if not pairs:
            return 0
        if self._one_node:
            keys = [key for pair in pairs for key in pair]
            return int(await self._swap_script(keys=keys, args=[since_ms, until_ms]))
        swapped = await run_concurrently(
            self._swap_script(keys=pair, args=[since_ms, until_ms]) for pair in pairs
        )
        return sum(int(r) for r in swapped)


def _hold_docs(
    held: dict[str, tuple[int, dict[str, Any]]], docs: Sequence[tuple[str, int, dict[str, Any]]]
) -> None:
    """Merge (key, version, doc) into `held`: per key the newest version wins, as in Redis."""
    for key, version, doc in docs:
        current = held.get(key)
        if current is None or version >= current[0]:
            held[key] = (version, doc)


def _hold_windows(held: dict[str, WindowsUpdate], updates: Sequence[WindowsUpdate]) -> None:
    """Merge window updates, made in this order, into `held` (one update per creator)."""
    for u in updates:
        current = held.get(u.creator_id)
        if current is None:
            held[u.creator_id] = WindowsUpdate(u.creator_id, u.version, dict(u.written), set(u.deleted))
            continue
        current.version = max(current.version, u.version)
        current.written.update(u.written)
        current.deleted = (current.deleted - u.written.keys()) | u.deleted
        for gone in u.deleted:
            current.written.pop(gone, None)
