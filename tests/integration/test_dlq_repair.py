"""`likeflow dlq` on the real broker: a bad like is listed, shown, exported, repaired by hand and
replayed; it becomes exactly one prompt, and a second replay changes nothing."""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from pathlib import Path

import orjson
import pytest

from config import Settings
from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER
from likeflow.ops.dlq_records import REPLAYED_FROM_HEADER
from likeflow.ops.topics import ensure_topics
from streams.topics import DEAD_LETTERS, DLQ_REPLAYS, LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.integration.harness import (
    Consumed,
    WorkerProcess,
    produce,
    read_topic,
    read_topic_until,
    run_cli,
    wait_until,
)
from tests.integration.namespaces import pseudonymizer_for

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]


def prompts_for(records: list[Consumed], pseudonym: str) -> list[Consumed]:
    return [r for r in records if r.key == pseudonym.encode()]


async def test_a_repaired_bad_like_becomes_one_prompt_and_a_second_replay_changes_nothing(
    private: Settings, tmp_path: Path
) -> None:
    settings = private
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        now = int(time.time() * 1000)
        video, user = f"dlq-v-{RUN}", f"dlq-user-{RUN}"
        pseudonym = pseudonymizer_for(settings)(user)
        product = {"product_id": "p-dlq", "title": "bag", "category": "bag", "price_cents": 5000,
                   "certified": True, "stock": 50}  # fmt: skip
        mapping = {"video_id": video, "creator_id": f"c-{RUN}", "ts": now - 3_600_000, "products": [product]}
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [(video.encode(), orjson.dumps(mapping), [])])
        await wait_until(
            lambda: worker.metric_sum("likeflow_mapping_updates_total") >= 1, 30, "the mapping", worker
        )
        # A bad like: `ts` is text. It lands on the dead-letter topic, pseudonymised.
        bad = {"event_id": f"e-{RUN}", "user_id": user, "video_id": video, "ts": "yesterday"}
        await produce(
            settings, settings.topic(LIKES), [(user.encode(), orjson.dumps(bad), [("trace", b"t-1")])]
        )
        [dead] = await read_topic_until(
            settings, settings.topic(DEAD_LETTERS), lambda rs: len(rs) >= 1, 30, "the dead letter"
        )
        assert dead.key == pseudonym.encode()

        listed = await run_cli(settings, "dlq", "list")
        assert listed.returncode == 0, listed.stderr.decode()
        rows = [line.split("\t") for line in listed.stdout.decode().splitlines()]
        assert [settings.topic(LIKES), "wrong_type", "1", "0"] in [row[:4] for row in rows]

        shown = await run_cli(settings, "dlq", "show", "--reason", "wrong_type", "--topic", LIKES)
        assert shown.returncode == 0, shown.stderr.decode()
        text = shown.stdout.decode()
        assert f"{settings.topic(DEAD_LETTERS)}/{dead.partition}/{dead.offset}" in text
        assert "header likeflow.dlq.reason: wrong_type" in text and pseudonym in text
        assert user not in text, "no raw id in a dead letter"
        none = await run_cli(settings, "dlq", "show", "--reason", "late")
        assert none.stdout == b"" and b"0 dead letters match" in none.stderr

        # Export, repair the `ts` by hand, dry run, then replay.
        export = tmp_path / "dead.jsonl"
        exported = await run_cli(settings, "dlq", "export", "--reason", "wrong_type", "-o", str(export))
        assert exported.returncode == 0, exported.stderr.decode()
        [line] = export.read_bytes().splitlines()
        doc = orjson.loads(line)
        assert doc["value_format"] == "json" and doc["value"]["ts"] == "yesterday"
        doc["value"]["ts"] = now - 5_000
        export.write_bytes(orjson.dumps(doc) + b"\n")

        dry = await run_cli(settings, "dlq", "replay", "--from-file", str(export), "--dry-run")
        assert dry.returncode == 0, dry.stderr.decode()
        assert dry.stdout.decode().startswith("send\t") and "dry run: 1 of 1" in dry.stdout.decode()
        unconfirmed = await run_cli(settings, "dlq", "replay", "--from-file", str(export))
        assert unconfirmed.returncode == 2 and b"--yes" in unconfirmed.stderr
        assert len(await read_topic(settings, settings.topic(LIKES))) == 1, "nothing sent yet"

        sent = await run_cli(settings, "dlq", "replay", "--from-file", str(export), "--yes")
        assert sent.returncode == 0, sent.stderr.decode()
        assert "sent 1 of 1 records" in sent.stdout.decode()
        prompts = await read_topic_until(
            settings,
            settings.topic(ORDER_PROMPTS),
            lambda rs: len(prompts_for(rs, pseudonym)) >= 1,
            60,
            "the repaired like's prompt",
        )
        [prompt] = prompts_for(prompts, pseudonym)
        assert orjson.loads(prompt.value or b"")["user_id"] == pseudonym, "pseudonymised once, not twice"
        # Back on its original partition, with its own headers and the dead letter it came from.
        likes = await read_topic(settings, settings.topic(LIKES))
        [again] = [r for r in likes if dict(r.headers).get(REPLAYED_FROM_HEADER)]
        assert len(likes) == 2
        headers = dict(again.headers)
        assert again.partition == int(dict(dead.headers)["likeflow.dlq.partition"])
        assert headers[PSEUDONYMISED_HEADER] == b"1" and headers["trace"] == b"t-1"
        assert (
            headers[REPLAYED_FROM_HEADER]
            == f"{settings.topic(DEAD_LETTERS)}/{dead.partition}/{dead.offset}".encode()
        )
        assert not any(name.startswith("likeflow.dlq.") for name in headers)

        # The ledger says what was sent, where, by whom.
        [entry] = await read_topic(settings, settings.topic(DLQ_REPLAYS))
        record = orjson.loads(entry.value or b"")
        assert entry.key == headers[REPLAYED_FROM_HEADER]
        assert record["sent"]["topic"] == settings.topic(LIKES)
        assert (record["sent"]["partition"], record["sent"]["offset"]) == (again.partition, again.offset)
        assert record["edited"] is True and record["by"] == getpass.getuser() and record["forced"] == []

        # A second replay, from the file or from the topic, is skipped: nothing is sent.
        for args in (("--from-file", str(export)), ("--reason", "wrong_type")):
            second = await run_cli(settings, "dlq", "replay", *args, "--yes")
            assert second.returncode == 0, second.stderr.decode()
            out = second.stdout.decode()
            assert (
                out.startswith("skip\t")
                and "already_replayed" in out
                and "0 of 1 records would be sent" in out
            )
        await asyncio.sleep(5)  # time for a second prompt, if anything had been sent
        assert len(prompts_for(await read_topic(settings, settings.topic(ORDER_PROMPTS)), pseudonym)) == 1
        assert len(await read_topic(settings, settings.topic(DLQ_REPLAYS))) == 1
        assert worker.metric_sum("likeflow_dead_letters_total") == 1
        listed = await run_cli(settings, "dlq", "list")
        assert [settings.topic(LIKES), "wrong_type", "1", "1"] in [
            line.split("\t")[:4] for line in listed.stdout.decode().splitlines()
        ]
    finally:
        worker.stop()
