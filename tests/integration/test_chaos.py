"""Fault tests: a seeded workload, injected faults, then every output compared with the oracle.

Short variants of T1, T2, T3, T5, T8 and T9 run in CI (`make test`); `make chaos` runs the rest
(marker `chaos`: T4's storm, and every case at 200k likes).
Each case starts its own workers (own web port and state directory each) in a private namespace,
injects its fault, waits for everything to heal, and then compares prompts, dead letters and the
served creator windows with the oracle of `workload.py`. While it runs, a sampler checks that no
served window count ever goes down.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.dead_letter_records import without_raw_user_id
from streams.topics import DEAD_LETTERS, LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.clock import hours_ago
from tests.integration.harness import (
    Record,
    WorkerProcess,
    free_port,
    present,
    produce,
    read_topic,
    run_cli,
    wait_until,
)
from tests.integration.namespaces import private_settings, pseudonymizer_for
from tests.integration.test_quality import get_json
from tests.integration.test_restart import by_prompt_id
from tests.integration.workload import Scale, Workload, build, interleave

SMALL = Scale(likes=3_000, users=300, videos=120, creators=12)
LARGE = Scale(likes=200_000, users=20_000, videos=5_000, creators=500)


@dataclass(frozen=True)
class Fault:
    """One fault-test case."""

    name: str
    kills: int = 0  # T2: kill -9 of the worker this many times
    poison_ratio: float = 0.0  # T9
    disorder: bool = False  # T8: out of order, too late, mapping updates racing likes
    recovery_kill: bool = False  # T3: kill -9 during table recovery, restart with state wiped
    storm_s: float = 0.0  # T4: a second worker joins and leaves for this long
    zombie: bool = False  # T5: SIGSTOP a worker past its session timeout, then SIGCONT

    @property
    def one_process(self) -> bool:
        """One worker from start to end: per-process metrics cover the whole run."""
        return not (self.kills or self.recovery_kill or self.storm_s or self.zombie)


CASES = [
    pytest.param(Fault("T1 no fault"), SMALL, id="T1-small"),
    pytest.param(Fault("T2 kill -9 x3", kills=3), SMALL, id="T2-small"),
    pytest.param(Fault("T3 kill in recovery", recovery_kill=True), SMALL, id="T3-small"),
    pytest.param(Fault("T4 rebalance storm", storm_s=60), SMALL, id="T4-small", marks=pytest.mark.chaos),
    pytest.param(Fault("T5 zombie", zombie=True), SMALL, id="T5-small"),
    pytest.param(Fault("T8 disorder", disorder=True), SMALL, id="T8-small"),
    pytest.param(Fault("T9 1% poison", poison_ratio=0.01), SMALL, id="T9-small"),
    pytest.param(Fault("T1 no fault"), LARGE, id="T1-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T2 kill -9 x3", kills=3), LARGE, id="T2-large", marks=pytest.mark.chaos),
    pytest.param(
        Fault("T3 kill in recovery", recovery_kill=True), LARGE, id="T3-large", marks=pytest.mark.chaos
    ),
    pytest.param(Fault("T4 rebalance storm", storm_s=240), LARGE, id="T4-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T5 zombie", zombie=True), LARGE, id="T5-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T8 disorder", disorder=True), LARGE, id="T8-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T9 1% poison", poison_ratio=0.01), LARGE, id="T9-large", marks=pytest.mark.chaos),
]


def served_windows(worker: WorkerProcess, creators: list[str]) -> dict[str, Any]:
    return {c: get_json(worker, f"/creators/{c}/quality")[1].get("windows") for c in creators}


def raced_prompts_counted(worker: WorkerProcess, wl: Workload) -> int:
    """Prompts served in the windows of the raced videos' creators (T8)."""
    served = served_windows(worker, sorted(wl.raced_creators))
    return sum(w["prompts"] for ws in served.values() for w in ws or [])


def consumed_at_least(worker: WorkerProcess, n: int) -> Callable[[], bool]:
    return lambda: worker.metric_sum("likeflow_records_consumed_total") >= n


@dataclass
class Run:
    """One case in progress: its namespace, workload, workers and printed figures."""

    settings: Settings
    wl: Workload
    rng: random.Random
    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    went_backwards: list[str] = field(default_factory=list)

    def spawn(self, data_dir: str | None = None) -> WorkerProcess:
        """A new worker process (not yet ready) with its own web port and state directory."""
        n = len(self.workers)
        own = replace(
            self.settings,
            web_port=free_port(),
            data_dir=data_dir or str(self.tmp_path / f"state-{n}"),
        )
        worker = WorkerProcess(own, self.tmp_path / f"worker-{n}.log")
        worker.spawn()
        self.workers.append(worker)
        return worker

    def start(self, data_dir: str | None = None) -> WorkerProcess:
        worker = self.spawn(data_dir)
        worker.wait_ready()
        return worker

    def live(self) -> WorkerProcess:
        return next(w for w in reversed(self.workers) if w.alive())

    def progress_point(self, parts: int) -> int:
        """A random number of consumed records, early enough to leave work after it."""
        return self.rng.randint(50, max(51, len(self.wl.likes) // parts))


async def sample_monotonic(run: Run, creators: list[str], stop: asyncio.Event) -> None:
    """Redis must never serve a smaller count than it served before (windows do not close here)."""
    seen: dict[tuple[str, int], dict[str, int]] = {}
    while not stop.is_set():
        try:
            worker = run.live()
            windows = await asyncio.to_thread(served_windows, worker, creators)
        except (StopIteration, OSError, ValueError):
            windows = {}
        for creator, rows in windows.items():
            for row in rows or []:
                key = (creator, row["start_ms"])
                before = seen.get(key, {})
                lower = [k for k, v in before.items() if isinstance(v, int) and row.get(k, 0) < v]
                if lower:
                    run.went_backwards.append(f"{key}: {before} -> {row}")
                seen[key] = row
        await asyncio.sleep(0.5)


async def inject_kills(run: Run, fault: Fault) -> None:
    """T2: kill -9 at random points; a new worker takes over each time."""
    recovery_s = run.figures.setdefault("restart-to-ready s", [])
    for k in range(fault.kills):
        current = run.live()
        # The seeded random point; only when fewer likes than that are left (a worker fast
        # enough to finish the backlog first: the new one has just the rest to do) half of what
        # is left, or that kill would never come.
        left = await unprocessed_likes(run.settings)
        point = run.progress_point(fault.kills + 2)
        if point > left:
            point = max(1, left // 2)
        await wait_until(consumed_at_least(current, point), 300, f"kill {k}", current)
        current.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        run.start()
        recovery_s.append(round(time.monotonic() - killed_at, 1))


async def inject_recovery_kill(run: Run, fault: Fault) -> None:
    """T3: kill -9, kill -9 the replacement while it restores its tables, then restart it with
    its local state directory wiped: the third worker restores everything from the changelogs."""
    first = run.live()
    await wait_until(consumed_at_least(first, run.progress_point(2)), 300, "progress", first)
    first.stop(signal.SIGKILL)
    second = run.spawn()
    for _ in range(1200):  # up to 60 s
        if "Recovery" in second.log_path.read_text(errors="replace"):
            break
        await asyncio.sleep(0.05)
    second.stop(signal.SIGKILL)
    run.figures["killed in recovery"] = "Recovery" in second.log_path.read_text(errors="replace")
    shutil.rmtree(second.settings.data_dir, ignore_errors=True)
    started = time.monotonic()
    run.start(data_dir=second.settings.data_dir)
    run.figures["recovery s"] = round(time.monotonic() - started, 1)


async def inject_storm(run: Run, fault: Fault, likes: list[Record]) -> None:
    """T4: likes arrive in chunks while a second worker joins and leaves (SIGTERM, SIGKILL
    alternately) every 5-20 s; the first worker must survive every rebalance."""
    main = run.live()
    chunks = 12
    size = len(likes) // chunks + 1
    ends = time.monotonic() + fault.storm_s
    joins = 0
    for i in range(chunks):
        await produce(run.settings, run.settings.topic(LIKES), likes[i * size : (i + 1) * size])
        if time.monotonic() < ends:
            extra = run.start()
            joins += 1
            await asyncio.sleep(run.rng.uniform(5, 20))
            extra.stop(signal.SIGTERM if joins % 2 else signal.SIGKILL)
        assert main.alive(), f"the first worker died in the storm:\n{main.tail()}"
    run.figures["joins and leaves"] = joins


async def inject_zombie(run: Run, fault: Fault) -> None:
    """T5: two workers; one is frozen past its session timeout, the other takes its partitions,
    then the frozen one wakes up as a zombie and must not win any stale write."""
    zombie = run.live()
    run.start()
    await wait_until(consumed_at_least(zombie, run.progress_point(3)), 300, "progress", zombie)
    assert zombie.proc is not None
    zombie.proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(run.settings.session_timeout_s + 6)
    zombie.proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(10)
    run.figures["zombie frozen s"] = run.settings.session_timeout_s + 6


async def unprocessed_likes(settings: Settings) -> int:
    """Likes not yet committed by the job's group, summed over partitions."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(LIKES), p) for p in range(settings.partitions)]
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
        ends = await consumer.end_offsets(tps)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


@pytest.mark.parametrize(("fault", "scale"), CASES)
async def test_outputs_match_the_oracle_under_faults(
    fault: Fault,
    scale: Scale,
    base_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    settings = private_settings(base_settings, tmp_path_factory)
    seed = 20261127
    rng = random.Random(seed)
    # Event time an hour-aligned day ago: inside retention, windows never close during the run.
    base_ts = hours_ago(24)
    disorder = {"out_of_order_ratio": 0.05, "late_ratio": 0.01, "raced_videos": 10} if fault.disorder else {}
    wl: Workload = build(
        settings, Scale(**{**scale.__dict__, "poison_ratio": fault.poison_ratio, **disorder}), seed, base_ts
    )
    await ensure_topics(settings)
    await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
    run = Run(settings, wl, rng, tmp_path)
    creators = sorted(wl.expected_windows)
    expected = wl.served_form()
    stop_sampling = asyncio.Event()
    sampler: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        first = run.start()
        await wait_until(
            lambda: bool((first.health() or {}).get("video_mappings_ready")), 60, "mappings", first
        )
        sampler = asyncio.create_task(sample_monotonic(run, creators[:20], stop_sampling))
        likes = interleave(rng, wl.likes, wl.poison + wl.raced_likes)
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback + wl.late_feedback)
        if fault.storm_s:
            await inject_storm(run, fault, likes)
        else:
            # Mapping updates race the likes: published halfway through them.
            await produce(settings, settings.topic(LIKES), likes[: len(likes) // 2])
            await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mapping_updates)
            await produce(settings, settings.topic(LIKES), likes[len(likes) // 2 :])
        if fault.kills:
            await inject_kills(run, fault)
        if fault.recovery_kill:
            await inject_recovery_kill(run, fault)
        if fault.zombie:
            await inject_zombie(run, fault)

        last = run.live()
        try:
            await wait_until(
                lambda: (
                    served_windows(last, creators) == expected
                    and raced_prompts_counted(last, wl) == len(wl.raced)
                ),
                120 + len(wl.likes) / 200,
                "windows",
                last,
            )
        except TimeoutError:
            pass  # the assertions below show the difference
        final_windows = served_windows(last, creators)
        raced_counted = raced_prompts_counted(last, wl)
        too_late = last.metric_sum("likeflow_likes_skipped_total", reason="too_late")
        run.figures["last worker: likes consumed"] = last.metric_sum(
            "likeflow_records_consumed_total", topic=settings.topic(LIKES)
        )
        run.figures["last worker: no_mapping"] = last.metric_sum(
            "likeflow_likes_skipped_total", reason="no_mapping"
        )
        ready_status, ready_body = get_json(last, "/ready")
        # Offsets are committed every few seconds (Faust's commit interval): allow for one.
        for _ in range(60):
            behind = await unprocessed_likes(settings)
            if not behind:
                break
            await asyncio.sleep(0.5)
        records = await read_topic(settings, settings.topic(ORDER_PROMPTS), timeout_s=60)
        dead = await read_topic(settings, settings.topic(DEAD_LETTERS), timeout_s=60)
        # Every chain of the audit log verifies: a zombie (T5) is fenced, a kill -9 re-appends
        # identical entries at the end of the chain, never a fork (docs/audit.md).
        audit = await run_cli(settings, "audit", "verify", timeout_s=120)
    finally:
        stop_sampling.set()
        if sampler is not None:
            await sampler
        for worker in run.workers:
            worker.stop()

    copies = by_prompt_id(records)
    duplicates_differing = [p for p, c in copies.items() if len(c) > 1]
    raced_ids = {p for allowed in wl.raced.values() for p in allowed}
    missing = wl.expected_prompt_ids - copies.keys()
    unexpected = copies.keys() - wl.expected_prompt_ids - raced_ids
    # A raced like has exactly one prompt, for its video's mapping before or after the update.
    raced_wrong = {e: ids & copies.keys() for e, ids in wl.raced.items() if len(ids & copies.keys()) != 1}
    poison_dead = [r for r in dead if dict(r.headers).get("origin") == b"chaos"]
    late_dead = [r for r in dead if dict(r.headers).get("likeflow.dlq.reason") == b"late"]
    wrong = {c: (final_windows.get(c), expected[c]) for c in creators if final_windows.get(c) != expected[c]}
    # Restarts after the stall watchdog ended a worker (the harness acts as its supervisor).
    run.figures["watchdog restarts"] = sum(w.watchdog_restarts for w in run.workers)
    print(
        f"\n{fault.name} ({len(wl.likes)} likes, {len(wl.feedback)} feedback, {len(wl.poison)} poison): "
        f"workers {len(run.workers)}, prompts {len(copies)}/{len(wl.expected_prompt_ids) + len(wl.raced)}, "
        f"missing {len(missing)}, unexpected {len(unexpected)}, differing duplicates "
        f"{len(duplicates_differing)}, creators differing {len(wrong)}, served counts gone down "
        f"{len(run.went_backwards)}, dead letters {len(dead)} ({len(late_dead)} late), raced likes "
        f"{len(wl.raced)} (wrong {len(raced_wrong)}), too-late likes {too_late:.0f}, likes left "
        f"unprocessed {behind}, {run.figures}, total {time.monotonic() - started:.0f} s"
    )
    assert ready_status == 200, ready_body
    assert not wrong, f"{len(wrong)} creators differ; first: {next(iter(wrong.items()))}"
    assert not missing and not unexpected, (sorted(missing)[:5], sorted(unexpected)[:5])
    assert not duplicates_differing, duplicates_differing[:5]
    assert not run.went_backwards, run.went_backwards[:5]
    assert behind == 0, "every likes partition advanced to its end"
    # Every poison record is dead-lettered with its bytes and headers (a raw user id replaced by
    # its pseudonym, docs/privacy.md; an oversized value cut to fit), and nothing else is; with
    # one process exactly once (a redelivery after a kill may dead-letter it again).
    pseudonymize = pseudonymizer_for(settings)
    assert {r.value for r in poison_dead} == {
        present(without_raw_user_id(key, value, pseudonymize)[1])[: settings.max_record_bytes]
        for key, value, _ in wl.poison
    }
    assert len(dead) == len(poison_dead) + len(late_dead)
    assert not raced_wrong, list(raced_wrong.items())[:5]
    assert audit.returncode == 0, audit.stdout.decode() + audit.stderr.decode()
    assert raced_counted == len(wl.raced), "each raced prompt counted once for its creator"
    if fault.one_process:
        assert len(poison_dead) == len(wl.poison)
        # Late feedback: dead-lettered as late, each once, never counted (the windows above).
        assert {orjson.loads(r.value or b"{}")["event_id"] for r in late_dead} == {
            orjson.loads(present(v))["event_id"] for _, v, _ in wl.late_feedback
        }
        assert len(late_dead) == len(wl.late_feedback)
        assert too_late == wl.expected_skips.get("too_late", 0)
