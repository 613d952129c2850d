"""Static group membership, real broker: kill -9 under live load, prompts within 10 s; a duplicate stops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config import Settings, load_settings
from likeflow.connections import kafka_client_kwargs
from likeflow.engine import KeyPartitioner
from likeflow.errors import EXIT_DUPLICATE_IDENTITY
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.integration.clock import NOW
from tests.integration.harness import Record, WorkerProcess, free_port, produce, pseudonymizer_for, wait_until
from tests.integration.namespaces import private_settings

pytestmark = pytest.mark.integration

PRODUCTS = [
    {"product_id": f"s-p{i}", "title": f"T{i}", "category": "dress", "price_cents": 1000 + i,
     "certified": True, "stock": 100}
    for i in range(3)
]  # fmt: skip
MAPPING: Record = (
    b"s-v1",
    orjson.dumps({"video_id": "s-v1", "creator_id": "s-c", "ts": NOW, "products": PRODUCTS}),
    [],
)
LIKES_PER_S = 300
DEFAULTS = load_settings({})
# The target of issue 24: kill -9 -> prompts on every partition again, default settings.
RECOVERY_TARGET_S = 10.0


@pytest.fixture
def static_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private namespace with the default session timeout (45 s): what a restart without static
    membership would wait out."""
    settings = dataclasses.replace(
        private_settings(base_settings, tmp_path_factory), session_timeout_s=DEFAULTS.session_timeout_s
    )
    asyncio.run(ensure_topics(settings))
    return settings


def worker(settings: Settings, instance_id: str, log: Path) -> WorkerProcess:
    """A worker of `settings` with its own identity and web port."""
    return WorkerProcess(dataclasses.replace(settings, instance_id=instance_id, web_port=free_port()), log)


class LiveLoad:
    """Likes at a steady rate from users spread over every partition, and the prompts they get."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        partition_of = KeyPartitioner(settings.partitions)
        users = [f"s-u{i}" for i in range(400)]
        pseudonym = pseudonymizer_for(settings)
        # The likes partition of each user, known from the prompt's user pseudonym.
        self.partition_of = {pseudonym(u): partition_of(u.encode()) for u in users}
        self.users = users
        # (likes partition, like ts ms, seen at ms) of each prompt read.
        self.seen: list[tuple[int, int, float]] = []
        self._stop = asyncio.Event()

    async def produce(self) -> None:
        producer = AIOKafkaProducer(**kafka_client_kwargs(self.settings), linger_ms=5)
        await producer.start()
        try:
            n = 0
            started = time.monotonic()
            while not self._stop.is_set():
                user = self.users[n % len(self.users)]
                body = {
                    "event_id": f"s-{n}",
                    "user_id": user,
                    "video_id": "s-v1",
                    "ts": int(time.time() * 1000),
                }
                await producer.send(self.settings.topic(LIKES), orjson.dumps(body), key=user.encode())
                n += 1
                await asyncio.sleep(max(0.0, started + n / LIKES_PER_S - time.monotonic()))
        finally:
            await producer.stop()

    async def observe(self) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topic(ORDER_PROMPTS),
            **kafka_client_kwargs(self.settings),
            auto_offset_reset="latest",
            fetch_max_wait_ms=20,
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time() * 1000
                for records in batch.values():
                    for record in records:
                        prompt = orjson.loads(record.value or b"{}")
                        self.seen.append((self.partition_of[prompt["user_id"]], prompt["like_ts"], now))
        finally:
            await consumer.stop()

    def prompted_partitions(self, liked_after_ms: float) -> set[int]:
        return {p for p, like_ts, _ in self.seen if like_ts > liked_after_ms}

    def recovered_at(self, liked_after_ms: float) -> float | None:
        """When every partition had shown a prompt for a like made after `liked_after_ms`."""
        first: dict[int, float] = {}
        for p, like_ts, seen in self.seen:
            if like_ts > liked_after_ms and p not in first:
                first[p] = seen
        return max(first.values()) if len(first) == self.settings.partitions else None

    async def wait_recovered(self, liked_after_ms: float, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            at = self.recovered_at(liked_after_ms)
            if at is not None:
                return at
            await asyncio.sleep(0.2)  # polls what the observer task collects
        return None

    def stop(self) -> None:
        self._stop.set()


async def test_a_worker_killed_and_restarted_under_its_identity_prompts_again_within_10_s(
    static_settings: Settings, tmp_path: Path
) -> None:
    settings = static_settings
    first = worker(settings, "s-worker-0", tmp_path / "w0.log")
    other = worker(settings, "s-worker-1", tmp_path / "w1.log")
    load = LiveLoad(settings)
    workers = [first, other]
    tasks: list[asyncio.Task[None]] = []
    try:
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [MAPPING])
        first.start()
        other.start()
        await wait_until(
            lambda: (
                sum((w.health() or {}).get("assigned_partitions", 0) for w in (first, other)) > 0
                and all((w.health() or {}).get("assigned_partitions", 0) for w in (first, other))
            ),
            60,
            "both workers to hold partitions",
            first,
        )
        tasks = [asyncio.ensure_future(load.observe()), asyncio.ensure_future(load.produce())]
        await asyncio.sleep(1.0)  # the observer is subscribed before the load it must see
        await wait_until(
            lambda: len(load.prompted_partitions(0)) == settings.partitions,
            60,
            "prompts on every partition",
            first,
        )
        killed_ms = time.time() * 1000
        first.stop(signal.SIGKILL)
        # A supervisor's restart: same identity, same web address (Faust's assignor checks it).
        restarted = WorkerProcess(first.settings, tmp_path / "w0-restarted.log")
        workers.append(restarted)
        restarted.spawn()
        recovered_ms = await load.wait_recovered(killed_ms, timeout_s=45)
        assert recovered_ms is not None, (
            f"no prompts on every partition 45 s after kill -9:\n{restarted.tail()}"
        )
        recovery_s = (recovered_ms - killed_ms) / 1000
        print(f"kill -9 -> prompts on every partition: {recovery_s:.1f} s")  # noqa: T201 - the figure
        assert recovery_s <= RECOVERY_TARGET_S, f"{recovery_s:.1f} s"
        assert other.alive() and restarted.alive()
    finally:
        load.stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        for w in workers:
            w.stop(signal.SIGKILL)


async def test_a_second_live_worker_with_the_same_identity_stops_the_one_it_replaced(
    static_settings: Settings, tmp_path: Path
) -> None:
    settings = static_settings
    first = worker(settings, "s-twin", tmp_path / "first.log")
    twin = worker(settings, "s-twin", tmp_path / "twin.log")
    try:
        first.start()
        twin.start()
        # The twin's join took the identity; the first finds it on its next heartbeat and exits.
        await wait_until(lambda: not first.alive(), 45, "the replaced worker to exit", first)
        assert first.proc is not None and first.proc.returncode == EXIT_DUPLICATE_IDENTITY
        assert "LIKEFLOW_INSTANCE_ID='s-twin'" in first.tail(200)
        held = (twin.health() or {}).get("assigned_partitions")
        await asyncio.sleep(5)  # no ping-pong: the twin keeps every partition the group had
        assert twin.alive() and held and (twin.health() or {}).get("assigned_partitions") == held
    finally:
        for w in (first, twin):
            w.stop(signal.SIGKILL)
