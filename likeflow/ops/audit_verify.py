"""`likeflow audit verify | prove | consistency`: re-walk every partition's audit log against its
signed checkpoints, and make proofs a third party checks with the public key (docs/audit.md)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from config import Settings
from likeflow.connections import kafka_client_kwargs, topic_partitions
from likeflow.domain.audit import AuditError
from likeflow.domain.audit_proof import CONSISTENCY_FORMAT, INCLUSION_FORMAT
from likeflow.domain.audit_tree import (
    Checkpoint,
    LogResult,
    LogVerifier,
    decode_checkpoint,
    leaves_of,
    log_id,
)
from likeflow.domain.merkle import consistency_proof, inclusion_path, leaf_hash, tree_root
from likeflow.errors import LikeflowError, ServiceUnavailable
from likeflow.progress import Progress
from likeflow.sinks.audit_log import READ_STALL_S
from streams.topics import AUDIT_CHECKPOINTS, AUDIT_LOG


class ProofUnavailable(LikeflowError):
    """No proof can be made: the record is not in the log, or no checkpoint covers it yet."""


def _consumer(settings: Settings, client_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        client_id=client_id,
        enable_auto_commit=False,
        # Records and checkpoints are written in transactions: aborted ones never count.
        isolation_level="read_committed",
    )


async def _walk(
    consumer: AIOKafkaConsumer,
    topic: str,
    partitions: Iterable[int] | None = None,
    progress: tuple[str, TextIO | None] | None = None,
    stop: Callable[[int], bool] = lambda p: False,
) -> AsyncIterator[tuple[int, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of every record of `topic` (or of its `partitions`) from
    the first offset to the end offset seen at the start, each partition in offset order; a
    partition is left once `stop(partition)` says so."""
    wanted = list(partitions) if partitions is not None else await topic_partitions(consumer, topic)
    tps = [TopicPartition(topic, p) for p in wanted]
    consumer.assign(tps)
    begins = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    bar = Progress(sum(ends[tp] - begins[tp] for tp in tps), *progress) if progress is not None else None
    pending = {tp for tp in tps if ends[tp] > begins[tp]}
    for tp in pending:
        consumer.seek(tp, begins[tp])
    deadline = time.monotonic() + READ_STALL_S
    done = 0
    while pending:
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"no progress reading {topic} for {READ_STALL_S:.0f} s; is Kafka up?")
        batch = await consumer.getmany(*pending, timeout_ms=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp] or stop(tp.partition):
                    break
                done += 1
                yield tp.partition, record.offset, record.key, record.value or b""
            if records:
                deadline = time.monotonic() + READ_STALL_S
        for tp in list(pending):
            if stop(tp.partition) or await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
                consumer.pause(tp)
        if bar is not None:
            bar.update(done, done)
    if bar is not None:
        bar.finish()


async def read_checkpoints(settings: Settings, topic: str) -> list[Checkpoint]:
    """Every committed checkpoint on `topic` (records that are not checkpoints are skipped;
    `LogVerifier` checks each one's signature)."""
    consumer = _consumer(settings, "likeflow-audit-checkpoints")
    await consumer.start()
    found = []
    try:
        async for _, _, _, value in _walk(consumer, topic):
            try:
                found.append(decode_checkpoint(value))
            except AuditError:
                continue
    finally:
        await consumer.stop()
    return found


def checkpoints_in(folder: Path) -> list[Checkpoint]:
    """The checkpoints exported as files under `folder` (any depth): what WORM storage kept."""
    found = []
    for path in sorted(folder.rglob("*.json")):
        try:
            found.append(decode_checkpoint(path.read_bytes()))
        except (AuditError, OSError):
            continue
    return found


async def verify_topic(
    settings: Settings,
    topic: str | None = None,
    progress_out: TextIO | None = None,
    *,
    checkpoints: Iterable[Checkpoint] | None = None,
    checkpoint_topic: str | None = None,
    log_name: str | None = None,
    public_key: bytes | None = None,
) -> dict[int, LogResult]:
    """Walk every partition's log in `topic` (default: the audit log) from its first record to
    the end offset seen at the start, checking each signed checkpoint of log `log_name/<p>`
    (default: `topic`) from `checkpoints` plus those on `checkpoint_topic` (default: the
    audit-checkpoints topic; "" for none); returns {partition: result}. A partition's walk
    stops at its first break; records that are not entries are listed and skipped."""
    name = topic or settings.topic(AUDIT_LOG)
    log_topic = log_name or name
    known = list(checkpoints or ())
    if checkpoint_topic != "":
        known += await read_checkpoints(settings, checkpoint_topic or settings.topic(AUDIT_CHECKPOINTS))
    consumer = _consumer(settings, "likeflow-audit-verify")
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, name)
        verifiers = {p: LogVerifier(log_id(log_topic, p), known, public_key) for p in partitions}
        async for partition, offset, _, value in _walk(
            consumer, name, partitions, (f"audit verify {name}", progress_out), lambda p: verifiers[p].broken
        ):
            verifiers[partition].feed(offset, value)
    finally:
        await consumer.stop()
    return {p: v.result() for p, v in sorted(verifiers.items())}


async def _leaves(
    settings: Settings, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, list[bytes]]:
    """Every leaf (record bytes) of each partition's v2 tree, in tree order."""
    consumer = _consumer(settings, "likeflow-audit-prove")
    await consumer.start()
    out: dict[int, list[bytes]] = {}
    try:
        async for partition, _, _, value in _walk(consumer, topic, partitions):
            found = leaves_of(value)
            if found is not None:
                first, records = found
                tree = out.setdefault(partition, [])
                if first == len(tree):  # the verifier names anything else; a proof needs the log intact
                    tree.extend(records)
    finally:
        await consumer.stop()
    return out


def _signed_for(
    checkpoints: Iterable[Checkpoint], log: str, leaves: list[bytes], at_least: int
) -> Checkpoint:
    """The largest checkpoint of `log` covering `at_least` leaves that matches the log's tree."""
    for cp in sorted((c for c in checkpoints if c.log == log), key=lambda c: -c.size):
        if (
            at_least <= cp.size <= len(leaves)
            and tree_root([leaf_hash(x) for x in leaves[: cp.size]]).hex() == cp.root
        ):
            return cp
    raise ProofUnavailable(
        f"no checkpoint of {log} that matches the log covers {at_least} leaves yet: wait for the next "
        "one (LIKEFLOW_AUDIT_CHECKPOINT_INTERVAL_S) and run `likeflow audit verify`"
    )


async def prove(
    settings: Settings,
    prompt_id: str,
    topic: str | None = None,
    checkpoint_topic: str | None = None,
    checkpoints: Iterable[Checkpoint] = (),
) -> dict[str, Any]:
    """An inclusion proof (the format `likeflow.domain.audit_proof` checks) of the first prompt
    with `prompt_id` in the audit log, against the latest checkpoint that covers it."""
    name = topic or settings.topic(AUDIT_LOG)
    known = [
        *checkpoints,
        *await read_checkpoints(settings, checkpoint_topic or settings.topic(AUDIT_CHECKPOINTS)),
    ]
    needle = f'"prompt_id":{orjson.dumps(prompt_id).decode()}'.encode()
    for partition, leaves in sorted((await _leaves(settings, name)).items()):
        for index, leaf in enumerate(leaves):
            if needle in leaf and _prompt_id(leaf) == prompt_id:
                log = log_id(name, partition)
                cp = _signed_for(known, log, leaves, index + 1)
                hashes = [leaf_hash(x) for x in leaves[: cp.size]]
                return {
                    "format": INCLUSION_FORMAT, "log": log, "leaf_index": index, "tree_size": cp.size,
                    "leaf_b64": base64.b64encode(leaf).decode(), "leaf_hash": hashes[index].hex(),
                    "path": [h.hex() for h in inclusion_path(index, hashes)], "checkpoint": cp.as_dict(),
                }  # fmt: skip
    raise ProofUnavailable(f"no prompt {prompt_id!r} in the v2 audit log {name}")


def _prompt_id(leaf: bytes) -> object:
    try:
        doc = orjson.loads(leaf)
    except orjson.JSONDecodeError:
        return None
    return doc.get("prompt_id") if isinstance(doc, dict) else None


async def consistency(
    settings: Settings,
    first: Checkpoint,
    second: Checkpoint | None = None,
    checkpoint_topic: str | None = None,
) -> dict[str, Any]:
    """A consistency proof between checkpoint `first` and `second` (default: the latest
    checkpoint of the same log on the checkpoint topic), made from the log itself."""
    topic, _, part = first.log.rpartition("/")
    partition = int(part)
    if second is None:
        latest = [
            c
            for c in await read_checkpoints(settings, checkpoint_topic or settings.topic(AUDIT_CHECKPOINTS))
            if c.log == first.log
        ]
        if not latest:
            raise ProofUnavailable(f"no checkpoint of {first.log} on the checkpoint topic")
        second = max(latest, key=lambda c: (c.size, c.time_ms))
    if second.log != first.log or second.size < first.size:
        raise ProofUnavailable("the second checkpoint must be of the same log and at least as large")
    leaves = (await _leaves(settings, topic, [partition])).get(partition, [])
    hashes = [leaf_hash(x) for x in leaves[: second.size]]
    if len(hashes) < second.size or tree_root(hashes).hex() != second.root:
        raise ProofUnavailable(f"the log {first.log} does not match the checkpoint of size {second.size}")
    return {
        "format": CONSISTENCY_FORMAT,
        "first": first.as_dict(),
        "second": second.as_dict(),
        "path": [h.hex() for h in consistency_proof(first.size, hashes)],
    }
