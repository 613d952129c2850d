"""Fault tests: a seeded workload, injected faults, then every output compared with the oracle.

T1, T8 and T9 short variants run in CI (`make test`); `make chaos` runs the rest (marker `chaos`).
T2 is chaos-only for now: about one short run in four, a worker restarted under redelivery load
stalls (its event loop idle, Faust's producer buffer full, no error logged) and the run times out;
when it completes, every output is exact.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from config import Settings
from likeflow.admin import ensure_topics
from streams.topics import DEAD_LETTERS, LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.conftest import private_settings
from tests.integration.harness import WorkerProcess, produce, read_topic, wait_until
from tests.integration.test_quality import get_json
from tests.integration.test_restart import by_prompt_id
from tests.integration.workload import Scale, Workload, build, interleave

SMALL = Scale(likes=3_000, users=300, videos=120, creators=12)
LARGE = Scale(likes=200_000, users=20_000, videos=5_000, creators=500)


@dataclass(frozen=True)
class Fault:
    """One fault-test case."""

    name: str
    kills: int = 0
    poison_ratio: float = 0.0
    # T8: 5% out of order, 1% too late (likes and feedback), mapping updates racing likes.
    disorder: bool = False


CASES = [
    pytest.param(Fault("T1 no fault"), SMALL, id="T1-small"),
    pytest.param(Fault("T2 kill -9 x3", kills=3), SMALL, id="T2-small", marks=pytest.mark.chaos),
    pytest.param(Fault("T8 disorder", disorder=True), SMALL, id="T8-small"),
    pytest.param(Fault("T9 1% poison", poison_ratio=0.01), SMALL, id="T9-small"),
    pytest.param(Fault("T1 no fault"), LARGE, id="T1-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T2 kill -9 x3", kills=3), LARGE, id="T2-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T8 disorder", disorder=True), LARGE, id="T8-large", marks=pytest.mark.chaos),
    pytest.param(Fault("T9 1% poison", poison_ratio=0.01), LARGE, id="T9-large", marks=pytest.mark.chaos),
]


def served_windows(worker: WorkerProcess, creators: list[str]) -> dict[str, object]:
    return {c: get_json(worker, f"/creators/{c}/quality")[1].get("windows") for c in creators}


def consumed_at_least(worker: WorkerProcess, n: int) -> Callable[[], bool]:
    return lambda: worker.metric_sum("likeflow_records_consumed_total") >= n


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
    base_ts = (int(time.time() * 1000) // 3_600_000 - 24) * 3_600_000
    disorder = {"out_of_order_ratio": 0.05, "late_ratio": 0.01, "raced_videos": 10} if fault.disorder else {}
    wl: Workload = build(
        settings, Scale(**{**scale.__dict__, "poison_ratio": fault.poison_ratio, **disorder}), seed, base_ts
    )
    await ensure_topics(settings)
    await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)

    workers = [WorkerProcess(settings, tmp_path / "worker-0.log")]
    workers[0].start()
    started = time.monotonic()
    await wait_until(
        lambda: bool((workers[0].health() or {}).get("video_mappings_ready")), 60, "mappings", workers[0]
    )
    likes = interleave(rng, wl.likes, wl.poison + wl.raced_likes)
    # Mapping updates race the likes: published halfway through them.
    await produce(settings, settings.topic(LIKES), likes[: len(likes) // 2])
    await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mapping_updates)
    await produce(settings, settings.topic(LIKES), likes[len(likes) // 2 :])
    await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback + wl.late_feedback)

    recovery_s: list[float] = []
    for k in range(fault.kills):
        current = workers[-1]
        # Kill at a random point of the stream, after this process has made some progress.
        progress = rng.randint(50, max(51, len(wl.likes) // (fault.kills + 2)))
        await wait_until(consumed_at_least(current, progress), 300, f"progress before kill {k + 1}", current)
        current.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        nxt = WorkerProcess(settings, tmp_path / f"worker-{k + 1}.log")
        nxt.start()
        recovery_s.append(time.monotonic() - killed_at)
        workers.append(nxt)

    last = workers[-1]
    creators = sorted(wl.expected_windows)
    expected = wl.served_form()
    try:
        try:
            await wait_until(
                lambda: served_windows(last, creators) == expected, 120 + len(wl.likes) / 200, "windows", last
            )
        except TimeoutError:
            pass  # the assertion below shows the difference
        final_windows = served_windows(last, creators)
        raced_windows = served_windows(last, sorted(wl.raced_creators))
        too_late = last.metric_sum("likeflow_likes_skipped_total", reason="too_late")
        ready_status, ready_body = get_json(last, "/ready")
        records = await read_topic(settings, settings.topic(ORDER_PROMPTS), timeout_s=60)
        dead = await read_topic(settings, settings.topic(DEAD_LETTERS), timeout_s=60)
    finally:
        last.stop()

    copies = by_prompt_id(records)
    duplicates_differing = [p for p, c in copies.items() if len(c) > 1]
    raced_ids = {p for allowed in wl.raced.values() for p in allowed}
    missing = wl.expected_prompt_ids - copies.keys()
    unexpected = copies.keys() - wl.expected_prompt_ids - raced_ids
    # A raced like has exactly one prompt, for its video's mapping before or after the update.
    raced_wrong = {e: ids & copies.keys() for e, ids in wl.raced.items() if len(ids & copies.keys()) != 1}
    raced_counted = sum(w["prompts"] for ws in raced_windows.values() for w in ws or [])  # type: ignore[attr-defined]
    poison_dead = [r for r in dead if dict(r.headers).get("origin") == b"chaos"]
    late_dead = [r for r in dead if dict(r.headers).get("likeflow.dlq.reason") == b"late"]
    print(
        f"\n{fault.name} ({len(wl.likes)} likes, {len(wl.feedback)} feedback, {len(wl.poison)} poison): "
        f"{fault.kills} kills, prompts {len(copies)}/{len(wl.expected_prompt_ids)}, "
        f"missing {len(missing)}, unexpected {len(unexpected)}, differing duplicates "
        f"{len(duplicates_differing)}, dead letters {len(dead)} ({len(late_dead)} late), raced likes "
        f"{len(wl.raced)} (wrong {len(raced_wrong)}), too-late likes {too_late:.0f}, restart-to-ready s "
        f"{[round(s, 1) for s in recovery_s]}, total {time.monotonic() - started:.0f} s"
    )
    assert ready_status == 200, ready_body
    wrong = {c: (final_windows.get(c), expected[c]) for c in creators if final_windows.get(c) != expected[c]}
    assert not wrong, f"{len(wrong)} creators differ; first: {next(iter(wrong.items()))}"
    assert not missing and not unexpected, (sorted(missing)[:5], sorted(unexpected)[:5])
    assert not duplicates_differing, duplicates_differing[:5]
    # Every poison record is dead-lettered with its original bytes and headers, and nothing
    # else is; without kills exactly once (a redelivery after a kill may dead-letter it again).
    assert {r.value for r in poison_dead} == {value for _, value, _ in wl.poison}
    assert len(dead) == len(poison_dead) + len(late_dead)
    assert not raced_wrong, list(raced_wrong.items())[:5]
    assert raced_counted == len(wl.raced), "each raced prompt counted once for its creator"
    if fault.kills == 0:
        assert len(poison_dead) == len(wl.poison)
        # Late feedback: dead-lettered as late, each once, never counted (the windows above).
        assert {orjson.loads(r.value or b"{}")["event_id"] for r in late_dead} == {
            orjson.loads(v)["event_id"] for _, v, _ in wl.late_feedback
        }
        assert len(late_dead) == len(wl.late_feedback)
        assert too_late == wl.expected_skips.get("too_late", 0)
