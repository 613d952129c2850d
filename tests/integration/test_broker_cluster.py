"""T10 and T11 on a 3-broker cluster.

T10: a 3-broker cluster, topics at replication factor 3 and min.insync.replicas 2, under load:
the leader of `likes`[0] is killed with kill -9 twice, and a broker stays down longer than the
session timeout. The worker keeps running throughout (no restart), every prompt and window
matches the oracle of workload.py, nothing acknowledged is lost, and the audit chain verifies.

T11: three workers in one group on the cluster; one is killed with kill -9 and a fourth joins
during the run. Outputs exact, every `likes` partition consumed to its end (none left unowned),
the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from config import Settings, load_settings
from likeflow.connections import kafka_client_kwargs
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.broker_cluster import BrokerCluster
from tests.integration.clock import hours_ago
from tests.integration.harness import WorkerProcess, free_port, produce, run_cli, wait_until
from tests.integration.namespaces import private_settings
from tests.integration.test_broker_faults import SHORT, OracleDiff, consumed, consumed_at_least, settled
from tests.integration.test_chaos import unprocessed_likes
from tests.integration.workload import build

# A worker's consumption may pause while leadership moves (metadata refresh, producer retries);
# it must continue within this bound, without a restart.
RESUME_BOUND_S = 60.0


def on_cluster(private: Settings, cluster: BrokerCluster) -> Settings:
    """A private namespace on `cluster`, its topics at replication factor 3, min ISR 2."""
    return load_settings(
        replace(private, kafka_bootstrap=cluster.bootstrap).to_env(),
        replication_factor=3,
        min_insync_replicas=2,
    )


async def leader_of(settings: Settings, topic: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        for _ in range(100):
            [described] = await admin.describe_topics([topic])
            leaders = {p["partition"]: p["leader"] for p in described["partitions"]}
            if leaders.get(partition, -1) >= 0:
                return int(leaders[partition])
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise TimeoutError(f"{topic}[{partition}] has no leader")


async def resumed(worker: WorkerProcess, since: float) -> float:
    """Seconds from `since` until the worker consumes again (it is never restarted)."""
    before = consumed(worker)
    await wait_until(lambda: consumed(worker) > before, RESUME_BOUND_S, "the worker to go on", worker)
    return round(time.monotonic() - since, 1)


@pytest.mark.chaos
async def test_three_brokers_lose_leaders_and_a_broker_and_nothing_is_lost(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    cluster = BrokerCluster(tmp_path / "cluster")
    figures: dict[str, Any] = {"cluster start s": round(await cluster.start(), 1), "resume s": []}
    settings = on_cluster(private_settings(base_settings, tmp_path_factory), cluster)
    base_ts = hours_ago(24)
    wl = build(settings, SHORT, 20261201, base_ts)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    started = time.monotonic()
    try:
        await ensure_topics(settings)
        await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
        worker.start(timeout_s=120)
        pid = worker.proc.pid if worker.proc else None
        await wait_until(
            lambda: bool((worker.health() or {}).get("video_mappings_ready")), 60, "mappings", worker
        )
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        # Contiguous chunks in workload order: the oracle's guards depend on each user's order.
        size = len(wl.likes) // 4 + 1
        chunks = [wl.likes[i * size : (i + 1) * size] for i in range(4)]
        for k in range(3):
            target = consumed(worker) + len(chunks[k]) // 4
            await produce(settings, settings.topic(LIKES), chunks[k])
            # Under load: the leader dies while the worker works through this chunk.
            await wait_until(consumed_at_least(worker, target), 120, "load", worker)
            victim = cluster.node(await leader_of(settings, settings.topic(LIKES), 0))
            victim.kill()
            killed_at = time.monotonic()
            # The next chunk goes in while the broker is down: acks=all still succeeds on two.
            await produce(settings, settings.topic(LIKES), chunks[k + 1] if k == 2 else [])
            figures["resume s"].append(await resumed(worker, killed_at))
            # The last one stays down past the session timeout (8 s in tests) before it returns.
            await asyncio.sleep(settings.session_timeout_s * 2 if k == 2 else 3)
            await asyncio.to_thread(victim.start)
        end = await settled(worker, settings, wl)
        same_process = worker.alive() and worker.proc is not None and worker.proc.pid == pid
        audit = await run_cli(settings, "audit", "verify", timeout_s=120)
    finally:
        worker.stop()
        cluster.stop()

    diff = OracleDiff.of(wl, end.records, end.windows)
    print(
        f"\nT10 3 brokers, RF 3, min ISR 2 ({len(wl.likes)} likes): leader kill -9 x3 (the last down "
        f"{settings.session_timeout_s * 2:.0f} s), {figures}, {diff}, "
        f"total {time.monotonic() - started:.0f} s"
    )
    assert same_process, "the worker was never restarted"
    assert all(s <= RESUME_BOUND_S for s in figures["resume s"]), figures
    assert end.ready_status == 200, end.ready_body
    diff.assert_exact()
    assert not end.dead, [dict(r.headers) for r in end.dead[:3]]
    assert audit.returncode == 0, audit.stdout.decode() + audit.stderr.decode()


@pytest.mark.chaos
@pytest.mark.parametrize("standby", [1, 0])
async def test_three_workers_one_killed_one_added_on_three_brokers(
    standby: int, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    cluster = BrokerCluster(tmp_path / "cluster")
    await cluster.start()
    settings = replace(
        on_cluster(private_settings(base_settings, tmp_path_factory), cluster), standby_replicas=standby
    )
    wl = build(settings, SHORT, 20261202, hours_ago(24))
    workers: list[WorkerProcess] = []

    def add_worker() -> WorkerProcess:
        own = replace(settings, web_port=free_port(), data_dir=str(tmp_path / f"state-{len(workers)}"))
        worker = WorkerProcess(own, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        worker.spawn()
        return worker

    def total_consumed() -> float:
        return sum(consumed(w) for w in workers if w.alive())

    figures: dict[str, Any] = {}
    started = time.monotonic()
    try:
        await ensure_topics(settings)
        await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
        for _ in range(3):
            add_worker()
        for worker in workers:
            await asyncio.to_thread(worker.wait_ready, 120)
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        size = len(wl.likes) // 3 + 1
        chunks = [wl.likes[i * size : (i + 1) * size] for i in range(3)]
        await produce(settings, settings.topic(LIKES), chunks[0])
        target = len(chunks[0]) // 2
        await wait_until(lambda: total_consumed() >= target, 120, "load", workers[0])
        workers[1].stop(signal.SIGKILL)
        killed_at = time.monotonic()
        await produce(settings, settings.topic(LIKES), chunks[1])
        joined = add_worker()
        await asyncio.to_thread(joined.wait_ready, 120)
        figures["fourth worker ready after the kill s"] = round(time.monotonic() - killed_at, 1)
        await produce(settings, settings.topic(LIKES), chunks[2])
        live = [w for w in workers if w.alive()]
        end = await settled(live[0], settings, wl)
        figures["settled after the kill s"] = round(time.monotonic() - killed_at, 1)
        # Offsets are committed on Faust's commit timer, after the outputs: wait for the last one.
        for _ in range(60):
            behind = await unprocessed_likes(settings)
            if not behind:
                break
            await asyncio.sleep(1)
        audit = await run_cli(settings, "audit", "verify", timeout_s=120)
    finally:
        for worker in workers:
            worker.stop()
        cluster.stop()

    diff = OracleDiff.of(wl, end.records, end.windows)
    print(
        f"\nT11 3 brokers, 3 workers, standby replicas {standby}, one killed, one added "
        f"({len(wl.likes)} likes): {figures}, {diff}, "
        f"likes left {behind}, total {time.monotonic() - started:.0f} s"
    )
    assert len(live) == 3
    assert behind == 0, "every likes partition consumed to its end: none left unowned"
    diff.assert_exact()
    assert not end.dead, [dict(r.headers) for r in end.dead[:3]]
    assert audit.returncode == 0, audit.stdout.decode() + audit.stderr.decode()
