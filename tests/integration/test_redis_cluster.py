"""The job on a Redis Cluster (3 primaries, 3 replicas on loopback): prompts and creator windows
served through the cluster client, a primary killed with kill -9 mid-run, and `likeflow
rebuild-redis` afterwards. Kafka is the shared local broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings, load_settings
from likeflow.connections import redis_client
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import prompts_key, windows_key
from streams.topics import LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.clock import hours_ago
from tests.integration.harness import WorkerProcess, produce, read_topic, run_cli, wait_until
from tests.integration.namespaces import private_settings
from tests.integration.redis_cluster import RedisCluster
from tests.integration.test_broker_faults import SHORT, consumed
from tests.integration.test_chaos import served_windows
from tests.integration.workload import build


async def users_served(settings: Settings, users: set[str]) -> set[str]:
    """Which of `users` (pseudonyms) have a prompt set in Redis."""
    client = redis_client(settings)
    ordered = sorted(users)
    try:
        found = await asyncio.gather(*(client.exists(prompts_key(settings.redis_prefix, u)) for u in ordered))
    finally:
        await client.aclose()
    return {u for u, n in zip(ordered, found, strict=True) if n}


@pytest.mark.chaos
async def test_the_job_serves_through_a_redis_cluster_and_a_primary_loss(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    cluster = RedisCluster(tmp_path / "redis-cluster")
    cluster.start()
    settings = load_settings(
        private_settings(base_settings, tmp_path_factory).to_env(), redis_url=cluster.url, redis_cluster=1
    )
    wl = build(settings, SHORT, 20261203, hours_ago(24))
    creators = sorted(wl.expected_windows)
    expected = wl.served_form()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    figures: dict[str, Any] = {}
    try:
        await ensure_topics(settings)
        await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
        worker.start()
        pid = worker.proc.pid if worker.proc else None
        await wait_until(
            lambda: bool((worker.health() or {}).get("video_mappings_ready")), 60, "mappings", worker
        )
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        half = len(wl.likes) // 2
        await produce(settings, settings.topic(LIKES), wl.likes[:half])
        await wait_until(lambda: consumed(worker) >= half // 2, 120, "load", worker)
        # kill -9 the primary that holds the first creator's windows; its replica takes over.
        victim = cluster.primary_for(windows_key(settings.redis_prefix, creators[0]))
        victim.kill()
        figures["failover s"] = round(await asyncio.to_thread(cluster.wait_ok), 1)
        await produce(settings, settings.topic(LIKES), wl.likes[half:])
        try:
            await wait_until(lambda: served_windows(worker, creators) == expected, 120, "windows", worker)
            figures["exact without rebuild"] = True
        except TimeoutError:
            figures["exact without rebuild"] = False  # writes acknowledged by the lost primary
        same_process = worker.alive() and worker.proc is not None and worker.proc.pid == pid
        # A new client (the rebuild's) must start from a live node: the killed one may have been
        # the node the worker was given (it learned the others from it).
        settings = replace(settings, redis_url=cluster.url)
        rebuilt = await run_cli(settings, "rebuild-redis", timeout_s=180)
        final_windows = served_windows(worker, creators)
        prompts = [
            orjson.loads(r.value)
            for r in await read_topic(settings, settings.topic(ORDER_PROMPTS))
            if r.value
        ]
        users = {p["user_id"] for p in prompts}
        served = await users_served(settings, users)
    finally:
        worker.stop()
        cluster.stop()
    print(
        f"\nRedis Cluster, primary kill -9: {figures}, {len(served)}/{len(users)} users served after rebuild"
    )
    assert same_process, "the worker kept running through the failover"
    assert rebuilt.returncode == 0, rebuilt.stdout.decode() + rebuilt.stderr.decode()
    assert final_windows == expected
    assert served == users
