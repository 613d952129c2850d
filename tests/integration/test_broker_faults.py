"""T6: the broker is killed (kill -9, down for seconds) twice and restarted cleanly once, under load.

The broker is a private one (own ports and data directory, kept across restarts: own_broker.py);
Redis is the shared one. Input is produced in chunks while the broker is up (so the oracle is
exact), and the broker is killed while the worker works through a chunk. After each restart the
worker must resume on its own (no manual step) within 60 s, and at the end every output is
compared with the oracle of workload.py: prompt ids exact, no differing duplicates, every
creator's windows exact, no dead letters.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from likeflow.ops.topics import ensure_topics
from streams.topics import DEAD_LETTERS, LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.clock import hours_ago
from tests.integration.harness import Consumed, WorkerProcess, produce, reachable, read_topic, wait_until
from tests.integration.namespaces import private_settings
from tests.integration.own_broker import OwnBroker
from tests.integration.test_chaos import SMALL, served_windows
from tests.integration.test_quality import get_json
from tests.integration.test_restart import by_prompt_id
from tests.integration.workload import Scale, Workload, build

SHORT = Scale(likes=1_200, users=150, videos=60, creators=6)
RESUME_BOUND_S = 60.0


@dataclass(frozen=True)
class BrokerFault:
    name: str
    # Seconds the broker stays down after each kill -9; None: a random 5-30 s.
    downs_s: tuple[float | None, ...]


CASES = [
    # ~80 s (three broker starts, two of them recovering an unclean log): chaos, not CI.
    pytest.param(
        BrokerFault("T6 broker kill -9 x2 + clean restart", (5.0, 5.0)),
        SHORT,
        id="T6-short",
        marks=pytest.mark.chaos,
    ),
    pytest.param(
        BrokerFault("T6 broker kill -9 x2 + clean restart", (None, None)),
        SMALL,
        id="T6-small",
        marks=pytest.mark.chaos,
    ),
]


def consumed(worker: WorkerProcess) -> float:
    try:
        return worker.metric_sum("likeflow_records_consumed_total")
    except OSError:
        return -1.0


def consumed_at_least(worker: WorkerProcess, target: float) -> Callable[[], bool]:
    """A `wait_until` check: the worker has consumed `target` records (bound now, not at call time)."""
    return lambda: consumed(worker) >= target


async def resume_after_broker_up(broker: OwnBroker, worker: WorkerProcess) -> float:
    """Seconds from the restarted broker accepting connections to the worker consuming again."""
    for _ in range(1800):  # the broker's own start is bounded (120 s) by OwnBroker.start
        if await asyncio.to_thread(reachable, "127.0.0.1", broker.port):
            break
        await asyncio.sleep(0.1)
    up_at, before = time.monotonic(), consumed(worker)
    await wait_until(lambda: consumed(worker) > before, RESUME_BOUND_S, "the worker to resume", worker)
    return round(time.monotonic() - up_at, 1)


@pytest.mark.parametrize(("fault", "scale"), CASES)
async def test_worker_resumes_after_broker_kills_and_outputs_match_the_oracle(
    fault: BrokerFault,
    scale: Scale,
    base_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    broker = OwnBroker(tmp_path / "kafka")
    broker.format()
    broker.start()
    settings = replace(private_settings(base_settings, tmp_path_factory), kafka_bootstrap=broker.bootstrap)
    rng = random.Random(20261128)
    base_ts = hours_ago(24)
    wl = build(settings, scale, 20261128, base_ts)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    figures: dict[str, Any] = {"down s": [], "broker start s": [], "resume s": []}
    started = time.monotonic()
    try:
        await ensure_topics(settings)
        await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
        worker.start()
        await wait_until(
            lambda: bool((worker.health() or {}).get("video_mappings_ready")), 60, "mappings", worker
        )
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        # One chunk before each fault (two kills, one clean restart) and one after the last.
        n = len(fault.downs_s) + 2
        size = len(wl.likes) // n + 1
        chunks = [wl.likes[i * size : (i + 1) * size] for i in range(n)]
        for k, down in enumerate([*fault.downs_s, 0.0]):
            base = consumed(worker)
            await produce(settings, settings.topic(LIKES), chunks[k])
            # Under load: the fault hits while the worker works through this chunk.
            target = base + len(chunks[k]) // 4
            await wait_until(consumed_at_least(worker, target), 120, "load", worker)
            if k < len(fault.downs_s):
                broker.kill()
                seconds = rng.uniform(5, 30) if down is None else down
                figures["down s"].append(round(seconds, 1))
                await asyncio.sleep(seconds)
            else:
                broker.stop()  # the clean restart
            resumed = asyncio.create_task(resume_after_broker_up(broker, worker))
            figures["broker start s"].append(round(await asyncio.to_thread(broker.start), 1))
            await produce(settings, settings.topic(LIKES), chunks[k + 1] if k + 1 < n - 1 else [])
            figures["resume s"].append(await resumed)
        await produce(settings, settings.topic(LIKES), chunks[-1])
        end = await settled(worker, settings, wl)
    finally:
        worker.stop()
        broker.stop()

    diff = OracleDiff.of(wl, end.records, end.windows)
    print(
        f"\n{fault.name} ({len(wl.likes)} likes, {len(wl.feedback)} feedback): faults "
        f"{len(fault.downs_s)} kill -9 + 1 clean restart, {figures}, watchdog restarts "
        f"{worker.watchdog_restarts}, {diff}, dead letters {len(end.dead)}, "
        f"total {time.monotonic() - started:.0f} s"
    )
    assert all(s <= RESUME_BOUND_S for s in figures["resume s"]), figures
    assert end.ready_status == 200, end.ready_body
    diff.assert_exact()
    assert not end.dead, [dict(r.headers) for r in end.dead[:3]]


@dataclass
class Settled:
    """What a fault test compares with the oracle once the worker is done."""

    windows: dict[str, Any]
    ready_status: int
    ready_body: Any
    records: list[Consumed]
    dead: list[Consumed]


async def settled(worker: WorkerProcess, settings: Settings, wl: Workload) -> Settled:
    """Wait (180 s at most) for the served windows to match the oracle, then read what the
    assertions compare: the windows, /ready, every prompt and every dead letter."""
    creators, expected = sorted(wl.expected_windows), wl.served_form()
    try:
        await wait_until(lambda: served_windows(worker, creators) == expected, 180, "windows", worker)
    except TimeoutError:
        pass  # the assertions show the difference
    ready_status, ready_body = get_json(worker, "/ready")
    return Settled(
        served_windows(worker, creators),
        ready_status,
        ready_body,
        await read_topic(settings, settings.topic(ORDER_PROMPTS), timeout_s=60),
        await read_topic(settings, settings.topic(DEAD_LETTERS), timeout_s=60),
    )


@dataclass
class OracleDiff:
    """How the outputs of a fault test differ from the oracle of workload.py."""

    prompts: int
    expected: int
    missing: set[str]
    unexpected: set[str]
    differing: list[str]
    wrong: dict[str, Any]

    @classmethod
    def of(cls, wl: Workload, records: list[Consumed], served: dict[str, Any]) -> OracleDiff:
        copies = by_prompt_id(records)
        expected = wl.served_form()
        return cls(
            prompts=len(copies),
            expected=len(wl.expected_prompt_ids),
            missing=wl.expected_prompt_ids - copies.keys(),
            unexpected=copies.keys() - wl.expected_prompt_ids,
            differing=[p for p, c in copies.items() if len(c) > 1],
            wrong={c: (served.get(c), w) for c, w in expected.items() if served.get(c) != w},
        )

    def __str__(self) -> str:
        return (
            f"prompts {self.prompts}/{self.expected}, missing {len(self.missing)}, unexpected "
            f"{len(self.unexpected)}, differing duplicates {len(self.differing)}, creators differing "
            f"{len(self.wrong)}"
        )

    def assert_exact(self) -> None:
        assert not self.wrong, f"{len(self.wrong)} creators differ; first: {next(iter(self.wrong.items()))}"
        assert not self.missing and not self.unexpected, (
            sorted(self.missing)[:5],
            sorted(self.unexpected)[:5],
        )
        assert not self.differing, self.differing[:5]
