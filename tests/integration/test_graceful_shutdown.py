"""SIGTERM under load: the worker finishes the batch in hand, commits, and exits 0 within the bound.

Then a new worker takes over the same group and the outputs are compared with the oracle: prompt
ids exact, no differing duplicates, every creator's windows exact. The workload has no upstream
duplicates, so every duplicate like the second worker sees would be a record the first one
processed without committing: a graceful stop leaves none.
"""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from config import Settings
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.clock import hours_ago
from tests.integration.harness import WorkerProcess, produce, read_topic, wait_until
from tests.integration.namespaces import private_settings
from tests.integration.test_chaos import served_windows
from tests.integration.test_restart import by_prompt_id
from tests.integration.workload import Scale, build

SHUTDOWN_BOUND_S = 20.0
SCALE = Scale(likes=3_000, users=300, videos=120, creators=12, duplicate_ratio=0.0)


async def test_sigterm_under_load_commits_what_it_processed_and_loses_nothing(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    settings = replace(
        private_settings(base_settings, tmp_path_factory),
        shutdown_timeout_s=SHUTDOWN_BOUND_S,
    )
    base_ts = hours_ago(24)
    wl = build(settings, SCALE, 20261129, base_ts)
    creators = sorted(wl.expected_windows)
    expected = wl.served_form()
    await ensure_topics(settings)
    await produce(settings, settings.topic(VIDEO_PRODUCTS), wl.mappings)
    first = WorkerProcess(settings, tmp_path / "worker-0.log")
    second = WorkerProcess(replace(settings, data_dir=str(tmp_path / "state-1")), tmp_path / "worker-1.log")
    try:
        first.start()
        await wait_until(
            lambda: bool((first.health() or {}).get("video_mappings_ready")), 60, "mappings", first
        )
        await produce(settings, settings.topic(PROMPT_FEEDBACK), wl.feedback)
        await produce(settings, settings.topic(LIKES), wl.likes)
        # Under load: a third of the likes done, the rest waiting.
        await wait_until(
            lambda: (
                first.metric_sum("likeflow_records_consumed_total", topic=settings.topic(LIKES))
                >= len(wl.likes) // 3
            ),
            120,
            "load",
            first,
        )
        consumed_before = first.metric_sum("likeflow_records_consumed_total", topic=settings.topic(LIKES))
        assert first.proc is not None
        sent = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        code = first.proc.wait(SHUTDOWN_BOUND_S + 15)
        exit_s = time.monotonic() - sent
        log = first.log_path.read_text(errors="replace")

        second.start()
        await wait_until(lambda: served_windows(second, creators) == expected, 180, "windows", second)
        final_windows = served_windows(second, creators)
        redelivered = second.metric_sum("likeflow_duplicate_likes_total")
        second_consumed = second.metric_sum("likeflow_records_consumed_total", topic=settings.topic(LIKES))
        records = await read_topic(settings, settings.topic(ORDER_PROMPTS), timeout_s=60)
    finally:
        first.stop(signal.SIGKILL)
        second.stop()

    copies = by_prompt_id(records)
    missing = wl.expected_prompt_ids - copies.keys()
    unexpected = copies.keys() - wl.expected_prompt_ids
    differing = [p for p, c in copies.items() if len(c) > 1]
    print(
        f"\nSIGTERM under load ({len(wl.likes)} likes): first worker consumed {consumed_before:.0f}, "
        f"exit code {code} after {exit_s:.1f} s (bound {SHUTDOWN_BOUND_S:.0f} s), second worker consumed "
        f"{second_consumed:.0f} likes, redelivered likes {redelivered:.0f}, prompts "
        f"{len(copies)}/{len(wl.expected_prompt_ids)}, missing {len(missing)}, unexpected {len(unexpected)}, "
        f"differing duplicates {len(differing)}, creators differing "
        f"{sum(final_windows.get(c) != expected[c] for c in creators)}"
    )
    assert code == 0, log[-3000:]
    assert exit_s <= SHUTDOWN_BOUND_S, f"took {exit_s:.1f} s"
    assert "did not finish within" not in log
    assert final_windows == expected
    assert not missing and not unexpected, (sorted(missing)[:5], sorted(unexpected)[:5])
    assert not differing, differing[:5]
    # Everything the first worker processed was committed: none of it came back to the second.
    assert redelivered == 0
