"""T7: Redis is a cache of the job's tables; `likeflow rebuild-redis` puts back exactly what was served.

(a) FLUSH (in `make test`): a workload through a worker, windows closed so the judge serves
    standings and the platform document; every key of the test's prefix snapshotted, deleted,
    rebuilt while the worker keeps running; the snapshot and the rebuilt keys are equal.
(b) Redis killed (`make chaos`): a private redis-server is kill -9'd mid-workload; the worker
    keeps consuming (health, consumed counter, gave_up counted); Redis restarts empty; after
    the rebuild prompts and windows equal the oracle's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from config import Settings, load_settings
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import platform_key, prompts_key
from streams.topics import LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.harness import (
    Consumed,
    Record,
    WorkerProcess,
    free_port,
    produce,
    reachable,
    read_topic_until,
    run_cli,
    wait_until,
)
from tests.integration.namespaces import private_settings
from tests.integration.test_chaos import served_windows
from tests.integration.workload import HOUR_MS, Scale, Workload, build

FLUSH_SCALE = Scale(likes=2_000, users=200, videos=80, creators=8)
KILL_SCALE = Scale(likes=6_000, users=600, videos=200, creators=16)

Snapshot = dict[str, Any]


async def snapshot(client: aioredis.Redis, prefix: str) -> Snapshot:
    """Every key under `prefix`: sorted sets with scores, hashes; and whether a TTL is set."""
    out: Snapshot = {}
    async for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        kind_raw = await client.type(key)
        kind = kind_raw.decode() if isinstance(kind_raw, bytes) else kind_raw
        if kind == "zset":
            value: Any = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            value = await client.hgetall(key)
        else:
            value = await client.dump(key)
        out[key] = (kind, value, await client.pttl(key) > 0)
    return out


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    """Delete only this test's keys (other tests share the stack's Redis)."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])
    return len(keys)


def closers(wl: Workload, base_ts: int) -> list[Record]:
    """One click per creator 3 h after the workload: every `creator-events` partition's
    watermark passes the workload's window, so it closes and the judge serves verdicts."""
    out: list[Record] = []
    for i, creator in enumerate(sorted(wl.expected_windows)):
        event = {
            "event_id": f"closer-{i}",
            "prompt_id": f"closer-{i}",
            "creator_id": creator,
            "product_id": "x",
            "user_id": "closer",
            "kind": "click",
            "ts": base_ts + 3 * HOUR_MS,
        }
        out.append((creator.encode(), orjson.dumps(event), []))
    return out


async def stable_snapshot(client: aioredis.Redis, prefix: str, worker: WorkerProcess) -> Snapshot:
    """The snapshot once it has not changed for 3 s (the worker is idle)."""
    previous: Snapshot | None = None
    deadline = time.monotonic() + 120
    while True:
        current = await snapshot(client, prefix)
        if current == previous and platform_key(prefix) in current:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Redis did not settle (platform document there: {platform_key(prefix) in current}, "
                f"unchanged for 3 s: {current == previous}, {len(current)} keys):\n{worker.tail()}"
            )
        previous = current
        await asyncio.sleep(3)


def describe_difference(before: Snapshot, after: Snapshot) -> str:
    missing = sorted(before.keys() - after.keys())
    extra = sorted(after.keys() - before.keys())
    differ = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    first = differ[0] if differ else None
    detail = f"; first differing {first}: {before[first]} != {after[first]}" if first else ""
    return (
        f"missing {len(missing)} {missing[:3]}, extra {len(extra)} {extra[:3]}, differ {len(differ)}{detail}"
    )


async def start_workload(
    settings: Settings, scale: Scale, tmp_path: Path
) -> tuple[Workload, WorkerProcess, int]:
    base_ts = (int(time.time() * 1000) // HOUR_MS - 24) * HOUR_MS
    wl = build(settings, scale, 20261128, base_ts)
    await ensure_topics(settings)
    await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    await wait_until(
        lambda: bool((worker.health() or {}).get("video_mappings_ready")), 60, "mappings", worker
    )
    return wl, worker, base_ts


async def test_flushed_redis_is_rebuilt_to_the_exact_keys_with_the_worker_running(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    settings = private_settings(base_settings, tmp_path_factory)
    prefix = settings.redis_prefix
    wl, worker, base_ts = await start_workload(settings, FLUSH_SCALE, tmp_path)
    client = aioredis.from_url(settings.redis_url)
    try:
        await produce(settings, settings.topic(LIKES), wl.likes)
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        creators = sorted(wl.expected_windows)
        expected = wl.served_form()
        await wait_until(lambda: served_windows(worker, creators) == expected, 180, "windows", worker)
        # Only once everything is counted: a closer overtaking a prompt would make it late.
        await produce(settings, settings.topic(PROMPT_FEEDBACK), closers(wl, base_ts))
        before = await stable_snapshot(client, prefix, worker)

        kinds: dict[str, int] = {}
        for key in before:
            kind = key.split(":v2:", 1)[1].split(":", 1)[0] + (
                ":standing" if key.endswith(":standing") else ""
            )
            kinds[kind] = kinds.get(kind, 0) + 1
        assert kinds.get("creator:standing", 0) > 0, kinds  # the judge served verdicts
        assert all(ttl for kind, _, ttl in before.values() if kind == "zset")

        deleted = await delete_prefix(client, prefix)
        assert await snapshot(client, prefix) == {}
        started = time.monotonic()
        result = await run_cli(settings, "rebuild-redis", timeout_s=300)
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        after = await snapshot(client, prefix)
        print(
            f"\nT7 flush: {deleted} keys deleted ({kinds}); rebuilt in {seconds:.1f} s, worker running:"
            f"\n{result.stdout.decode().strip()}"
        )
        assert after == before, describe_difference(before, after)
        assert worker.alive()
    finally:
        await client.aclose()
        worker.stop()


# -- (b) Redis killed mid-workload ----------------------------------------------------------------


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, started and killed by PID."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = (self.dir / "redis.log").open("ab")
        # No persistence (as scripts/stack.sh): a restarted Redis is empty, like a lost one.
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)]
            + ["--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not reachable("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis did not start: {(self.dir / 'redis.log').read_text()}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def expected_prompt_sets(records: list[Consumed], keep: int, ttl_ms: int, prefix: str) -> dict[str, Any]:
    """Each user's sorted set as the worker's upsert leaves it, from `order-prompts`: the first
    copy of each prompt, scored by like_ts; within the TTL of the newest; the newest `keep`."""
    by_user: dict[str, dict[str, tuple[bytes, float]]] = {}
    for r in records:
        assert r.value is not None
        prompt = orjson.loads(r.value)
        by_user.setdefault(prompt["user_id"], {}).setdefault(
            prompt["prompt_id"], (r.value, prompt["like_ts"])
        )
    out: dict[str, Any] = {}
    for user, prompts in by_user.items():
        entries = sorted(((score, member) for member, score in prompts.values()))
        newest = entries[-1][0]
        kept = [(m, s) for s, m in entries if s >= newest - ttl_ms][-keep:]
        out[prompts_key(prefix, user)] = ("zset", [(m, float(s)) for m, s in kept], True)
    return out


@pytest.mark.chaos
async def test_worker_survives_redis_kill_and_the_rebuild_restores_the_oracle(
    base_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    private_redis: PrivateRedis,
) -> None:
    settings = load_settings(
        private_settings(base_settings, tmp_path_factory).to_env(), redis_url=private_redis.url
    )
    prefix = settings.redis_prefix
    wl, worker, _ = await start_workload(settings, KILL_SCALE, tmp_path)
    try:
        rng = random.Random(7)
        # Half the likes before the kill and half after it: a worker fast enough to finish the
        # whole workload before Redis dies would have nothing left to write without it.
        half = len(wl.likes) // 2
        await produce(settings, settings.topic(LIKES), wl.likes[:half])
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        kill_after = rng.randint(len(wl.likes) // 5, len(wl.likes) // 3)
        await wait_until(
            lambda: worker.metric_sum("likeflow_records_consumed_total") >= kill_after,
            120,
            "progress",
            worker,
        )
        private_redis.kill()
        killed = time.monotonic()
        consumed_at_kill = worker.metric_sum("likeflow_records_consumed_total")
        await produce(settings, settings.topic(LIKES), wl.likes[half:])
        await wait_until(
            lambda: worker.metric_sum("likeflow_redis_write_errors_total", outcome="gave_up") >= 1,
            60,
            "a Redis write given up",
            worker,
        )
        # Still consuming and healthy while Redis is gone.
        await wait_until(
            lambda: worker.metric_sum("likeflow_records_consumed_total") > consumed_at_kill + 500,
            60,
            "consumption to go on without Redis",
            worker,
        )
        health = worker.health()
        assert health is not None, worker.tail()
        consumed_down = worker.metric_sum("likeflow_records_consumed_total") - consumed_at_kill
        gave_up = worker.metric_sum("likeflow_redis_write_errors_total", outcome="gave_up")
        down_s = time.monotonic() - killed
        private_redis.start()  # same port, empty

        records = await read_topic_until(
            settings,
            settings.topic(ORDER_PROMPTS),
            lambda rs: (
                {orjson.loads(r.value or b"{}").get("prompt_id") for r in rs} >= wl.expected_prompt_ids
            ),
            300,
            "every expected prompt",
        )
        # Let the worker finish the feedback and count events (its consumed counter settles).
        last = -1.0
        while (now := worker.metric_sum("likeflow_records_consumed_total")) != last:
            last = now
            await asyncio.sleep(3)
        started = time.monotonic()
        result = await run_cli(settings, "rebuild-redis", timeout_s=300)
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.stderr.decode()[-3000:]

        client = aioredis.from_url(settings.redis_url)
        try:
            rebuilt = await snapshot(client, prefix)
        finally:
            await client.aclose()
        prompt_sets = {k: v for k, v in rebuilt.items() if ":v2:prompts:" in k}
        served_ids = {
            orjson.loads(m)["prompt_id"] for _, (_, members, _) in prompt_sets.items() for m, _ in members
        }
        expected_sets = expected_prompt_sets(
            records, settings.redis_prompts_keep, settings.redis_prompt_ttl_s * 1000, prefix
        )
        creators = sorted(wl.expected_windows)
        final_windows = served_windows(worker, creators)
        print(
            f"\nT7 redis kill -9 after {consumed_at_kill:.0f} records: {consumed_down:.0f} consumed and "
            f"{gave_up:.0f} Redis batch writes given up in {down_s:.1f} s without Redis; worker healthy; "
            f"rebuilt in {seconds:.1f} s:\n{result.stdout.decode().strip()}"
        )
        assert {orjson.loads(r.value or b"{}")["prompt_id"] for r in records} == wl.expected_prompt_ids
        assert prompt_sets == expected_sets, describe_difference(expected_sets, prompt_sets)
        assert served_ids == wl.expected_prompt_ids
        assert final_windows == wl.served_form()
        assert worker.alive()
    finally:
        worker.stop()
