"""Replay, backfill and rewind on the real Kafka and Redis: idempotent, exact, and equal to live."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from config import Settings
from likeflow.errors import EXIT_USAGE
from likeflow.metrics import Metrics
from likeflow.ops.replay import (
    ReplayArgumentError,
    ReplayError,
    copy_topic_range,
    copy_topics,
    replay_files,
    reset_offsets,
)
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_quality import RedisQualityStore
from streams.topics import AUDIT_LOG, DEAD_LETTERS, LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK
from tests.integration.harness import (
    CliResult,
    Record,
    WorkerProcess,
    present,
    produce,
    read_topic,
    read_topic_until,
    run_cli,
    wait_until,
    with_issued_prompt_ids,
)
from tests.integration.namespaces import private_settings

H = 3_600_000
T = (int(time.time() * 1000) // H - 72) * H
CREATORS = [f"r4-c{i}" for i in range(5)]


def archive_lines(settings: Settings) -> list[bytes]:
    """Feedback as the apps send it (each naming a prompt the worker issued), with duplicates."""
    lines = []
    ts = T
    for i in range(400):
        ts += 35_000  # ~4 hours of event time, in order
        creator = CREATORS[i % len(CREATORS)]
        kind = ("click", "click", "order", "return", "complaint")[i % 5 if i % 7 else 0]
        body = {
            "event_id": f"r4-e{i}",
            "prompt_id": f"p{i}",
            "creator_id": creator,
            "product_id": "x",
            "user_id": "u",
            "kind": kind,
            "ts": ts,
        }
        if kind == "order":
            body["amount_cents"] = 100 + i
        lines.append(orjson.dumps(body))
        if i % 17 == 0:
            lines.append(orjson.dumps(body))  # upstream duplicate
    return issued(settings, lines)


def issued(settings: Settings, lines: list[bytes]) -> list[bytes]:
    """`lines` with prompt ids the worker of `settings` accepts (its key issued them)."""
    return [value or b"" for _, value, _ in with_issued_prompt_ids(settings, [(None, v, []) for v in lines])]


@pytest.fixture
async def replay_worker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> AsyncIterator[WorkerProcess]:
    settings = private_settings(base_settings, tmp_path_factory)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()


async def served(settings: Settings) -> dict[str, list[dict[str, int]] | None]:
    client = aioredis.from_url(settings.redis_url)
    try:
        store = RedisQualityStore(client, prefix=settings.redis_prefix, metrics=Metrics())
        return {c: await store.read_windows(c) for c in CREATORS}
    finally:
        await client.aclose()


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


async def cli(settings: Settings, *args: str) -> str:
    result = await run_cli(settings, *args)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return result.stdout.decode()


async def test_replay_is_idempotent_and_backfill_equals_live_then_swaps(
    replay_worker: WorkerProcess, tmp_path: Path
) -> None:
    worker, settings = replay_worker, replay_worker.settings
    lines = archive_lines(settings)
    plain = tmp_path / "feedback-1.jsonl"
    plain.write_bytes(b"\n".join(lines[:200] + [b"{broken", b""]) + b"\n")
    packed = tmp_path / "feedback-2.jsonl.gz"
    packed.write_bytes(gzip.compress(b"\n".join(lines[200:] + [b'{"kind": "click"}']) + b"\n"))
    files = [plain, packed]

    dry = await replay_files(settings, files, PROMPT_FEEDBACK, dry_run=True)
    assert (dry.sent, dry.invalid) == (len(lines), 2)
    first = await replay_files(settings, files, PROMPT_FEEDBACK)
    assert (first.sent, first.invalid) == (len(lines), 2)
    assert any(p.startswith(f"{plain}:201: malformed_json") for p in first.problems)

    def processed() -> float:
        return worker.metric_sum("likeflow_creator_events_total")

    await wait_until(lambda: processed() >= len(lines), 60, "the first replay", worker)
    after_first = await served(settings)
    counted = worker.metric_sum("likeflow_creator_events_total", outcome="counted")
    assert all(after_first[c] for c in CREATORS)

    await replay_files(settings, files, PROMPT_FEEDBACK)
    await wait_until(lambda: processed() >= 2 * len(lines), 60, "the second replay", worker)
    assert await served(settings) == after_first
    assert worker.metric_sum("likeflow_creator_events_total", outcome="counted") == counted

    dead = await read_topic_until(
        settings, settings.topic(DEAD_LETTERS), lambda rs: len(rs) >= 4, 30, "dead letters"
    )
    origins = {
        (dict(r.headers)["likeflow.dlq.topic"], dict(r.headers)["likeflow.dlq.offset"])
        for r in dead
        if r.value in (b"{broken", b'{"kind": "click"}')
    }
    gz_line = str(len(lines) - 200 + 1).encode()
    assert origins == {(f"file:{plain}".encode(), b"201"), (f"file:{packed}".encode(), gz_line)}

    since, until = str(T), str(T + 6 * H)
    from_files = await cli(
        settings, "backfill", "--since", since, "--until", until, "--from-files", str(plain), str(packed)
    )
    assert "0 windows of 0 creators differ from live" in from_files, from_files
    from_topic = await cli(
        settings, "backfill", "--since", since, "--until", until, "--from-topic", "creator-events"
    )
    assert "0 windows of 0 creators differ from live" in from_topic, from_topic

    # A fix: one click of r4-c0 in the first window was lost upstream and is found again.
    found = {
        "event_id": "r4-found",
        "prompt_id": "p",
        "creator_id": "r4-c0",
        "product_id": "x",
        "user_id": "u",
        "kind": "click",
        "ts": T + 60_000,
    }
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(b"\n".join(issued(settings, [orjson.dumps(found)]) + lines) + b"\n")
    report = await cli(settings, "backfill", "--since", since, "--until", until, "--from-files", str(fixed))
    assert "1 windows of 1 creators differ from live" in report and "clicks" in report, report
    # --swap names what it replaces and swaps nothing without --yes.
    swap = ("backfill", "--since", since, "--until", until, "--from-files", str(fixed), "--swap")
    unconfirmed = await run_cli(settings, *swap)
    out, err = unconfirmed.stdout.decode(), unconfirmed.stderr.decode()
    assert unconfirmed.returncode == EXIT_USAGE, out + err
    namespace = out.split("shadow namespace ", 1)[1].split(":", 1)[0]
    assert f"--swap replaces the served windows in [{iso(T)}, {iso(T + 6 * H)}) of 5 creators" in out, out
    assert "windows of 5 creators served now) with the " in out and f"shadow namespace {namespace}\n" in out
    assert "--yes" in err and "nothing was swapped" in err and "Traceback" not in err, err
    assert await served(settings) == after_first
    again = await cli(settings, *swap, "--yes")
    assert report.splitlines()[1:] == again.splitlines()[1:-2]  # a re-run computes the same result
    assert again.splitlines()[-2] == out.splitlines()[-1]
    now_served = await served(settings)

    def first_window(windows: list[dict[str, int]] | None) -> dict[str, int]:
        assert windows is not None
        return next(w for w in windows if w["start_ms"] == T)

    assert first_window(now_served["r4-c0"])["clicks"] == first_window(after_first["r4-c0"])["clicks"] + 1
    assert {c: now_served[c] for c in CREATORS[1:]} == {c: after_first[c] for c in CREATORS[1:]}
    final = await cli(settings, "backfill", "--since", since, "--until", until, "--from-files", str(fixed))
    assert "0 windows of 0 creators differ from live" in final


@pytest.fixture
async def archive(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, str, list[int]]:
    """A private namespace with the contract's topics and an archive topic (a full name that is
    not a contract topic) holding 30 records, two stamped out of order; (settings, archive
    topic, each record's timestamp)."""
    settings = private_settings(base_settings, tmp_path_factory)
    await ensure_topics(settings)
    src = settings.topic("archive-src")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(src, 3, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    stamps = [T + i * 1000 for i in range(30)]
    stamps[5], stamps[25] = T + 15_500, T + 12_500  # out of order: inside the range, outside its offsets
    try:
        for i, ts in enumerate(stamps):
            await producer.send(
                src,
                f"v{i}".encode(),
                key=f"k{i % 7}".encode(),
                timestamp_ms=ts,
                headers=[("h", str(i).encode())],
            )
        await producer.flush()
    finally:
        await producer.stop()
    return settings, src, stamps


SINCE, UNTIL = T + 10_000, T + 20_000


def in_range(stamps: list[int]) -> set[int]:
    return {i for i, ts in enumerate(stamps) if SINCE <= ts < UNTIL}


async def cli_with_stdin(settings: Settings, *args: str, stdin: int) -> CliResult:
    """`likeflow ARGS` with `stdin` as its standard input (a terminal or not)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "likeflow",
        *args,
        env={**os.environ, **settings.to_env()},
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return CliResult(proc.returncode, stdout, stderr)


async def test_topic_copy_takes_exactly_the_range(archive: tuple[Settings, str, list[int]]) -> None:
    settings, src, stamps = archive
    # Contract names get the topic prefix; any other source is a full name used as is.
    assert copy_topics(settings, PROMPT_FEEDBACK, LIKES) == (
        settings.topic(PROMPT_FEEDBACK),
        settings.topic(LIKES),
    )
    assert copy_topics(settings, src, LIKES) == (src, settings.topic(LIKES))
    assert settings.topic(LIKES) != LIKES
    copied = await copy_topic_range(settings, src, LIKES, SINCE, UNTIL)
    expected = in_range(stamps)
    assert copied.sent and copied.total == len(expected)
    assert (copied.source, copied.dest) == (src, settings.topic(LIKES))
    got = await read_topic(settings, settings.topic(LIKES))
    assert {int(present(r.value)[1:]) for r in got} == expected
    received = await read_consumer_records(settings, settings.topic(LIKES))
    for r in received:
        i = int(r.value[1:])
        assert (
            r.key == f"k{i % 7}".encode()
            and r.timestamp == stamps[i]
            and dict(r.headers)["h"] == str(i).encode()
        )


async def read_consumer_records(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` with its timestamp (the harness's reader drops it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        got: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 20
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_replay_topic_refuses_what_is_not_a_replayable_input(
    archive: tuple[Settings, str, list[int]],
) -> None:
    """One stray record on `audit-log` would stop every worker that owns its partition; outputs
    are not inputs of the job."""
    settings, src, _ = archive
    for dest in (AUDIT_LOG, ORDER_PROMPTS, settings.topic(LIKES), "archive-dst"):
        result = await run_cli(
            settings, "replay", "topic", "--from", src, "--to", dest, "--since", str(SINCE),
            "--until", str(UNTIL), "--yes",
        )  # fmt: skip
        assert result.returncode == EXIT_USAGE, result.stderr.decode()
        assert b"invalid choice" in result.stderr and b"Traceback" not in result.stderr
        with pytest.raises(ReplayArgumentError, match="replay topic writes to the input topics"):
            await copy_topic_range(settings, src, dest, SINCE, UNTIL)
    with pytest.raises(ReplayArgumentError, match="same topic"):
        await copy_topic_range(settings, LIKES, LIKES, SINCE, UNTIL)
    assert await read_topic(settings, settings.topic(AUDIT_LOG)) == []
    assert await read_topic(settings, settings.topic(ORDER_PROMPTS)) == []
    assert await read_topic(settings, settings.topic(LIKES)) == []


async def test_replay_topic_dry_run_sends_nothing_and_a_copy_needs_yes_or_a_terminal(
    archive: tuple[Settings, str, list[int]],
) -> None:
    settings, src, stamps = archive
    expected = len(in_range(stamps))
    args = ("replay", "topic", "--from", src, "--to", LIKES, "--since", str(SINCE), "--until", str(UNTIL))

    dry = await cli_with_stdin(settings, *args, "--dry-run", stdin=subprocess.DEVNULL)
    out = dry.stdout.decode()
    assert dry.returncode == 0, dry.stderr.decode()
    assert f"total\t{expected} records of " in out and "would be copied" in out and "nothing sent" in out
    assert f"{src}[0]\t" in out and "records in range (not sent)" in out

    refused = await cli_with_stdin(settings, *args, stdin=subprocess.DEVNULL)
    err = refused.stderr.decode()
    assert refused.returncode == EXIT_USAGE, err
    assert "--yes" in err and "--dry-run" in err and "Traceback" not in err
    assert await read_topic(settings, settings.topic(LIKES)) == []

    # On a terminal it counts, shows the count and asks; "n" changes nothing, "y" copies.
    for answer, code in ((b"n\n", EXIT_USAGE), (b"y\n", 0)):
        leader, follower = os.openpty()
        try:
            os.write(leader, answer)
            asked = await cli_with_stdin(settings, *args, stdin=follower)
        finally:
            os.close(follower)
            os.close(leader)
        shown = asked.stdout.decode()
        assert asked.returncode == code, asked.stderr.decode()
        assert f"copy these {expected} records to {settings.topic(LIKES)}? [y/N]" in shown
    assert "records copied" in shown and f"total\t{expected} records of " in shown
    assert len(await read_topic(settings, settings.topic(LIKES))) == expected

    copied = await cli_with_stdin(settings, *args, "--yes", stdin=subprocess.DEVNULL)
    assert copied.returncode == 0, copied.stderr.decode()
    assert f"copied to {settings.topic(LIKES)}" in copied.stdout.decode()
    assert len(await read_topic(settings, settings.topic(LIKES))) == 2 * expected


async def test_reset_offsets_refuses_a_time_in_the_future(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A time not reached yet would move the group to the end, past records not yet written."""
    settings = private_settings(base_settings, tmp_path_factory)
    await ensure_topics(settings)
    now = int(time.time() * 1000)
    later = now + int(settings.max_clock_skew_s * 1000) + 60_000
    with pytest.raises(ReplayArgumentError, match="in the future .*LIKEFLOW_MAX_CLOCK_SKEW_S"):
        await reset_offsets(settings, later, dry_run=True)
    result = await run_cli(settings, "reset-offsets", "--to-datetime", str(later))
    err = result.stderr.decode()
    assert result.returncode == EXIT_USAGE and "in the future" in err and "Traceback" not in err, err
    # Within the allowed clock skew, and the past, are accepted.
    moves = await reset_offsets(settings, now + 60_000, dry_run=True)
    assert moves and all(m.after == 0 for m in moves)


async def test_reset_offsets_refuses_live_workers_then_rewinds(replay_worker: WorkerProcess) -> None:
    worker, settings = replay_worker, replay_worker.settings
    now = int(time.time() * 1000)
    likes: list[Record] = [
        (
            f"rw-u{i}".encode(),
            orjson.dumps({"event_id": f"rw{i}", "user_id": f"rw-u{i}", "video_id": "none", "ts": now}),
            [],
        )
        for i in range(20)
    ]
    await produce(settings, settings.topic(LIKES), likes[:10])
    await asyncio.sleep(1.5)
    middle = int(time.time() * 1000)
    await asyncio.sleep(0.5)
    await produce(settings, settings.topic(LIKES), likes[10:])
    await wait_until(
        lambda: worker.metric_sum("likeflow_records_consumed_total", topic=settings.topic(LIKES)) >= 20,
        30,
        "likes",
        worker,
    )
    with pytest.raises(ReplayError, match="alive"):
        await reset_offsets(settings, middle)
    worker.stop()
    for _ in range(60):  # the group empties once the worker has left it
        try:
            moves = await reset_offsets(settings, middle)
            break
        except ReplayError:
            await asyncio.sleep(0.5)
    records = await read_topic(settings, settings.topic(LIKES))
    by_tp = {(m.topic, m.partition): m.after for m in moves if m.topic == settings.topic(LIKES)}
    for (topic, partition), offset in by_tp.items():
        mine = [r for r in records if r.partition == partition]
        later = [
            r.offset
            for r in mine
            if orjson.loads(present(r.value))["event_id"] in {f"rw{i}" for i in range(10, 20)}
        ]
        assert offset == (min(later) if later else len(mine)), (topic, partition)
