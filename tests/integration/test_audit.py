"""The audit trail on the real broker: chains survive restarts, rebalances and strays; tampering is caught."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from config import Settings
from likeflow.domain.audit import AuditError, BreakReason
from likeflow.domain.audit_tree import decode_batch, tree_head_of
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.ops.audit_verify import verify_topic
from likeflow.ops.backfill import partition_for
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.audit_log import AuditTrail
from likeflow.sinks.dead_letter_records import HEADER_PREFIX
from streams.topics import AUDIT_LOG, DEAD_LETTERS, LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.clock import NOW
from tests.integration.harness import (
    Consumed,
    Record,
    WorkerProcess,
    present,
    produce,
    read_topic,
    read_topic_until,
    run_cli,
    wait_until,
)
from tests.integration.namespaces import private_settings

DLQ_PARTITION, DLQ_OFFSET = HEADER_PREFIX + "partition", HEADER_PREFIX + "offset"


@pytest.fixture(scope="module")
def audit_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = private_settings(base_settings, tmp_path_factory)
    asyncio.run(ensure_topics(settings))
    return settings


def leaves_in(rs: list[Consumed], partition: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(kind, record) of every leaf of the v2 batch records in `rs`, in log order."""
    out = []
    for r in sorted(rs, key=lambda r: (r.partition, r.offset)):
        if r.value and (partition is None or r.partition == partition) and r.value.startswith(b'{"first"'):
            batch = decode_batch(r.value)
            kinds = {"p": "prompt", "f": "feedback"}
            out += [(kinds[k], orjson.loads(v)) for k, v in zip(batch.kinds, batch.records, strict=True)]
    return out


def records(tag: str, n: int) -> list[bytes]:
    return [
        orjson.dumps({"prompt_id": f"{tag}-{i}", "user_id": "v1.ab", "price_cents": 100 + i})
        for i in range(n)
    ]


async def copy_topic(
    settings: Settings, source: list[Consumed], dest: str, change: Callable[[Consumed], bytes | None]
) -> None:
    """Write `source` to a new topic `dest`, same partitions and order, through `change` (None drops)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(dest, settings.partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for record in sorted(source, key=lambda r: (r.partition, r.offset)):
            value = change(record)
            if value is not None:
                await (await producer.send(dest, value, partition=record.partition))
    finally:
        await producer.stop()


async def test_chains_continue_across_restart_and_rebalance_and_tampering_is_caught(
    audit_settings: Settings,
) -> None:
    settings = audit_settings
    topic = settings.topic(AUDIT_LOG)

    first = AuditTrail(settings)
    await first.start()
    try:
        # Appends to two partitions run concurrently; two batches of one partition queue up.
        await asyncio.gather(
            first.append(0, "prompt", records("a0", 4)),
            first.append(1, "feedback", records("a1", 3)),
            first.append(0, "feedback", records("b0", 2)),
        )
        await first.append(1, "prompt", [])  # nothing to do
        with pytest.raises(AuditError):  # refused before anything of the batch is sent
            await first.append(2, "prompt", [*records("x", 2), b"two\nlines"])
    finally:
        await first.stop()

    # A restarted worker (or the partition's next owner) reads each chain's tail and continues.
    second = AuditTrail(settings)
    third = AuditTrail(settings)
    await second.start()
    await third.start()
    try:
        await second.append(0, "prompt", records("c0", 3))
        await second.append(1, "prompt", records("c1", 2))
        # Rebalance: partition 0 moves to `third`, which extends it; back to `second`, which
        # forgot its cached head on revoke and so continues after `third`'s entries.
        second.forget([0])
        await third.append(0, "feedback", records("d0", 2))
        third.forget([0])
        await second.append(0, "prompt", records("e0", 1))
    finally:
        await second.stop()
        await third.stop()

    log = await read_topic(settings, topic)
    by_partition = {p: sorted((r for r in log if r.partition == p), key=lambda r: r.offset) for p in (0, 1)}
    # One record per group-committed transaction: each continues the partition's tree.
    sizes = [
        (decode_batch(present(r.value)).first, decode_batch(present(r.value)).size) for r in by_partition[0]
    ]
    assert sizes[0][0] == 0 and sizes[-1][1] == 12
    assert all(a[1] == b[0] for a, b in zip(sizes, sizes[1:], strict=False))
    assert len(leaves_in(log, 1)) == 5
    assert all(dict(r.headers)["likeflow.audit.version"] == b"2" for r in log)
    assert {r.partition for r in log} == {0, 1}  # nothing reached partition 2

    results = await verify_topic(settings)
    assert all(r.ok for r in results.values())
    assert {p: r.count for p, r in results.items() if r.count} == {0: 12, 1: 5}
    assert results[0].head == tree_head_of(present(by_partition[0][-1].value)).hash
    # Each writer signed the heads it left on stop: the whole log is covered by checkpoints.
    assert (results[0].signed_size, results[1].signed_size) == (12, 5)

    ok = await run_cli(settings, "audit", "verify")
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"intact: 17 records" in ok.stdout
    line = f"{topic}[0]\t{len(by_partition[0])} batches verified\ttree size 12 root {results[0].root}"
    assert line.encode() in ok.stdout, ok.stdout

    # Kafka records are immutable: a tampered copy of the log stands in for a rewritten one.
    [target] = [r for r in by_partition[1] if b'"prompt_id":"c1-0"' in present(r.value)]
    target_at = by_partition[1].index(target)
    tampered = settings.topic("audit-tampered")
    await copy_topic(
        settings,
        log,
        tampered,
        lambda r: present(r.value).replace(b'"c1-0"', b'"c1-9"') if r is target else r.value,
    )
    bad = await run_cli(settings, "audit", "verify", "--topic", tampered, "--log-name", topic)
    assert bad.returncode == 1, bad.stdout.decode()
    assert f"first break: {tampered}[1]@{target_at}: bad root".encode() in bad.stdout, bad.stdout
    assert f"{tampered}[0]\t{len(by_partition[0])} batches verified".encode() in bad.stdout

    # Deleting one batch record: the next one no longer follows.
    dropped = by_partition[0][1]
    deleted = settings.topic("audit-deleted")
    await copy_topic(settings, log, deleted, lambda r: None if r is dropped else r.value)
    results = await verify_topic(settings, deleted, log_name=topic)
    brk = results[0].first_break
    assert brk is not None and (brk.offset, brk.reason) == (1, BreakReason.MISSING_BATCH)
    assert results[1].ok and results[1].count == 5 and results[1].checkpoints >= 1
    cli = await run_cli(settings, "audit", "verify", "--topic", deleted, "--log-name", topic)
    assert cli.returncode == 1
    assert f"first break: {deleted}[0]@1: missing batch".encode() in cli.stdout


async def test_the_worker_audits_every_prompt_and_feedback_record(
    worker: WorkerProcess, settings: Settings, pseudonym: Pseudonymizer
) -> None:
    """The running job appends what it emits and consumes; the whole trail verifies intact."""
    tag = uuid.uuid4().hex[:6]
    video, creator = f"au-v-{tag}", f"au-c-{tag}"
    item = {"product_id": f"au-p-{tag}", "title": "t", "category": "c", "price_cents": 990,
            "certified": True, "stock": 9}  # fmt: skip
    mapping = {"video_id": video, "creator_id": creator, "ts": NOW - 60_000, "products": [item]}
    mappings_before = worker.metric_sum("likeflow_mapping_updates_total")
    await produce(settings, settings.topic(VIDEO_PRODUCTS), [(video.encode(), orjson.dumps(mapping), [])])
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total") > mappings_before, 30, "mapping", worker
    )
    users = [f"au-u{i}-{tag}" for i in range(3)]
    likes: list[Record] = [
        (
            u.encode(),
            orjson.dumps({"event_id": uuid.uuid4().hex, "user_id": u, "video_id": video, "ts": NOW}),
            [],
        )
        for u in users
    ]
    await produce(settings, settings.topic(LIKES), likes)
    mine = {pseudonym(u) for u in users}
    prompts = await read_topic_until(
        settings,
        settings.topic(ORDER_PROMPTS),
        lambda rs: len({orjson.loads(r.value)["user_id"] for r in rs if r.value} & mine) == 3,
        60,
        "the prompts",
    )
    prompt_ids = {
        p["prompt_id"] for r in prompts if r.value and (p := orjson.loads(r.value))["user_id"] in mine
    }
    feedback = [
        {"event_id": f"au-f{i}-{tag}", "prompt_id": pid, "creator_id": creator,
         "product_id": item["product_id"], "user_id": users[0], "kind": "click", "ts": NOW + 1000}
        for i, pid in enumerate(sorted(prompt_ids))
    ]  # fmt: skip
    await produce(
        settings,
        settings.topic(PROMPT_FEEDBACK),
        [(creator.encode(), orjson.dumps(f), []) for f in feedback],
    )

    def audited(rs: list[Consumed]) -> tuple[set[str], set[str]]:
        entries = leaves_in(rs)
        return (
            {e["prompt_id"] for kind, e in entries if kind == "prompt"} & prompt_ids,
            {e["event_id"] for kind, e in entries if kind == "feedback"} & {f["event_id"] for f in feedback},
        )

    trail = await read_topic_until(
        settings,
        settings.topic(AUDIT_LOG),
        lambda rs: audited(rs) == (prompt_ids, {f["event_id"] for f in feedback}),
        60,
        "every prompt and feedback record on the audit trail",
    )
    for kind, entry in leaves_in(trail):
        if kind == "feedback" and entry["event_id"].endswith(tag):
            assert entry["user_id"] == pseudonym(users[0]), "the trail holds pseudonyms only"
    result = await run_cli(settings, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_zombie_writer_is_fenced_and_cannot_fork_a_chain(audit_settings: Settings) -> None:
    settings = audit_settings
    zombie, owner = AuditTrail(settings, client_id="zombie"), AuditTrail(settings, client_id="owner")
    await zombie.start()
    await owner.start()
    try:
        await zombie.append(3, "prompt", records("z", 2))
        # The zombie lost partition 3 without noticing (no revoke); the new owner appends: its
        # producer's start fences the zombie's.
        await owner.append(3, "prompt", records("o", 2))
        with pytest.raises(KafkaError):
            await zombie.append(3, "prompt", records("late", 2))
        await owner.append(3, "feedback", records("o2", 1))
    finally:
        await zombie.stop()
        await owner.stop()
    results = await verify_topic(settings)
    assert results[3].ok and results[3].count == 5, results[3]


async def write_stray(settings: Settings, partition: int, values: list[bytes]) -> list[int]:
    """Write records that are not entries to the audit log (a replay aimed at the wrong topic,
    say); returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await (
                await producer.send(
                    settings.topic(AUDIT_LOG),
                    value,
                    key=b"stray",
                    partition=partition,
                    headers=[("origin", b"a mistake")],
                )
            )
            for value in values
        ]
    finally:
        await producer.stop()
    return [meta.offset for meta in sent]


def not_entries(records: list[Consumed], topic: str) -> list[Consumed]:
    """The dead letters of records of `topic` that were not audit entries."""
    return [
        r
        for r in records
        if dict(r.headers).get("likeflow.dlq.reason") == b"not_an_audit_entry"
        and dict(r.headers).get("likeflow.dlq.topic") == topic.encode()
    ]


async def test_foreign_records_at_a_chain_tail_are_dead_lettered_and_the_chain_goes_on(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = private_settings(base_settings, tmp_path_factory)
    await ensure_topics(settings)
    topic = settings.topic(AUDIT_LOG)
    like = orjson.dumps({"event_id": "e1", "user_id": "u1", "video_id": "v1", "ts": NOW})

    first = AuditTrail(settings)
    await first.start()
    try:
        await first.append(0, "prompt", records("f0", 3))
    finally:
        await first.stop()
    # Partition 0: a chain, then two stray records; partition 1: nothing but a stray record.
    stray_0 = await write_stray(settings, 0, [like, b"\xff not even text"])
    stray_1 = await write_stray(settings, 1, [b'{"seq": 0}'])

    caplog.set_level(logging.WARNING, logger="likeflow.sinks.audit_log")
    second = AuditTrail(settings)
    await second.start()
    try:  # a restarted worker: it used to crash here, on every restart, on the chain's head
        await second.append(0, "feedback", records("g0", 2))
        await second.append(1, "prompt", records("g1", 1))
    finally:
        await second.stop()
    warned = [r.getMessage() for r in caplog.records]
    for offset in stray_0:
        assert any(f"{topic}[0]@{offset} is not an audit entry" in m for m in warned), warned
    assert any(f"{topic}[1]@{stray_1[0]} is not an audit entry" in m and "genesis" in m for m in warned)

    third = AuditTrail(settings)  # the strays are inside the chain now: nothing more to set aside
    await third.start()
    try:
        await third.append(0, "prompt", records("h0", 1))
    finally:
        await third.stop()

    log = await read_topic(settings, topic)
    chain_0 = [r for r in sorted(log, key=lambda r: r.offset) if r.partition == 0 and r.offset not in stray_0]
    assert [decode_batch(present(r.value)).size for r in chain_0] == [3, 5, 6]
    assert decode_batch(present(chain_0[1].value)).prev == tree_head_of(present(chain_0[0].value)).hash
    dead = not_entries(
        await read_topic_until(
            settings,
            settings.topic(DEAD_LETTERS),
            lambda rs: len(not_entries(rs, topic)) >= 3,
            30,
            "the stray records' dead letters",
        ),
        topic,
    )
    assert len(dead) == 3  # once each, not again at the third start
    by_origin = {(dict(r.headers)[DLQ_PARTITION], dict(r.headers)[DLQ_OFFSET]): r for r in dead}
    assert set(by_origin) == {(b"0", str(stray_0[0]).encode()), (b"0", str(stray_0[1]).encode()),
                              (b"1", str(stray_1[0]).encode())}  # fmt: skip
    first_dead = by_origin[(b"0", str(stray_0[0]).encode())]
    assert (first_dead.key, first_dead.value) == (b"stray", like)  # the original bytes
    assert dict(first_dead.headers)["origin"] == b"a mistake"

    results = await verify_topic(settings)
    assert results[0].intact and results[0].count == 6 and not results[0].ok
    assert [f.offset for f in results[0].foreign] == stray_0
    assert results[1].intact and results[1].count == 1
    assert [f.offset for f in results[1].foreign] == stray_1
    cli = await run_cli(settings, "audit", "verify")
    out, err = cli.stdout.decode(), cli.stderr.decode()
    assert cli.returncode == 1, out + err
    assert f"foreign record: {topic}[0]@{stray_0[0]}: not an audit entry (expected fields" in out, out
    assert f"foreign record: {topic}[1]@{stray_1[0]}: not an audit entry" in out, out
    assert f"{topic}[0]\t3 batches verified\ttree size 6" in out and "2 foreign records skipped" in out
    assert "first break" not in out and "FOREIGN: 3 records" in err and "BROKEN" not in err, err


async def test_the_worker_keeps_appending_after_a_stray_record_on_its_audit_partition(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """One record written to `audit-log` by mistake used to crash-loop every worker that took
    its partition; now the worker restarts, sets it aside and `audit verify` names it."""
    settings = private_settings(base_settings, tmp_path_factory)
    await ensure_topics(settings)
    topic = settings.topic(AUDIT_LOG)
    video, creator = "st-v", "st-c"
    item = {"product_id": "st-p", "title": "t", "category": "c", "price_cents": 990,
            "certified": True, "stock": 9}  # fmt: skip
    mapping = {"video_id": video, "creator_id": creator, "ts": NOW - 60_000, "products": [item]}
    users = [u for u in (f"st-u{i}" for i in range(200)) if partition_for(u, settings.partitions) == 0][:6]

    def likes(round_: int) -> list[Record]:
        return [
            (
                u.encode(),
                orjson.dumps(
                    {"event_id": f"st-{round_}-{u}", "user_id": u, "video_id": video, "ts": NOW + round_}
                ),
                [],
            )  # fmt: skip
            for u in users[round_ * 3 : round_ * 3 + 3]
        ]

    def prompts_on_chain(rs: list[Consumed]) -> int:
        return sum(
            1 for kind, _ in leaves_in([r for r in rs if r.offset not in strays], 0) if kind == "prompt"
        )

    strays: list[int] = []

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [(video.encode(), orjson.dumps(mapping), [])])
        await wait_until(
            lambda: worker.metric_sum("likeflow_mapping_updates_total") >= 1, 30, "the mapping", worker
        )
        await produce(settings, settings.topic(LIKES), likes(0))
        await read_topic_until(settings, topic, lambda rs: prompts_on_chain(rs) >= 3, 60, "3 audited prompts")
        worker.stop()
        [stray] = await write_stray(settings, 0, [orjson.dumps({"event_id": "x", "user_id": "y"})])
        strays.append(stray)
        worker.start()
        await produce(settings, settings.topic(LIKES), likes(1))
        await read_topic_until(
            settings, topic, lambda rs: prompts_on_chain(rs) >= 6, 60, "3 more audited prompts"
        )
        assert worker.alive(), worker.tail()
        assert f"{topic}[0]@{stray} is not an audit entry" in worker.log_path.read_text()
    finally:
        worker.stop()
    results = await verify_topic(settings)
    assert results[0].intact and [f.offset for f in results[0].foreign] == [stray]
    assert results[0].count >= 6 and all(r.intact and not r.foreign for p, r in results.items() if p != 0)
    cli = await run_cli(settings, "audit", "verify")
    assert cli.returncode == 1
    assert f"foreign record: {topic}[0]@{stray}: not an audit entry".encode() in cli.stdout
    assert b"first break" not in cli.stdout
