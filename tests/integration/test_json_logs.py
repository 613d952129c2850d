"""LIKEFLOW_LOG_FORMAT=json on a real worker: every line is one JSON object, Faust's own included."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from config import Settings
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES
from tests.integration.harness import Record, WorkerProcess, produce, wait_until
from tests.integration.namespaces import private_settings


async def test_a_json_worker_logs_one_object_per_line_with_record_positions(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    settings = replace(private_settings(base_settings, tmp_path_factory), log_format="json")
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        bad: Record = (
            b"u-json",
            b'{"event_id": "e", "user_id": "u-json", "video_id": "v", "ts": "soon"}',
            [],
        )
        await produce(settings, settings.topic(LIKES), [bad])
        await wait_until(
            lambda: worker.metric_sum("likeflow_dead_letters_total") >= 1, 30, "a dead letter", worker
        )
        await asyncio.sleep(0.5)  # the log line is written just after the counter moves
    finally:
        worker.stop()
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    docs = []
    for line in lines:
        doc = orjson.loads(line)  # fails the test on any line that is not JSON
        assert {"ts", "level", "logger", "message"} <= doc.keys(), doc
        docs.append(doc)
    assert any(d["logger"].startswith("faust") for d in docs), "Faust's own lines are JSON too"
    [dead] = [d for d in docs if d["message"].startswith("dead letter")]
    assert dead["topic"] == settings.topic(LIKES) and dead["offset"] == 0 and dead["partition"] >= 0
