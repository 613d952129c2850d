"""`likeflow audit verify`: re-walks every chain of the audit log from its first record (docs/audit.md)."""

from __future__ import annotations

import time
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition

from config import Settings
from likeflow.connections import kafka_client_kwargs, topic_partitions
from likeflow.domain.audit import ChainVerifier, VerifyResult
from likeflow.errors import ServiceUnavailable
from likeflow.progress import Progress
from likeflow.sinks.audit_log import READ_STALL_S
from streams.topics import AUDIT_LOG


async def verify_topic(
    settings: Settings, topic: str | None = None, progress_out: TextIO | None = None
) -> dict[int, VerifyResult]:
    """Re-walk every partition's chain in `topic` (default: the audit log) from its first record
    to the end offset seen at the start; returns {partition: result}. Records that are not
    entries are listed in each result's `foreign` and skipped (the entries around them must
    still link); a partition's walk stops at its first break."""
    name = topic or settings.topic(AUDIT_LOG)
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        client_id="likeflow-audit-verify",
        enable_auto_commit=False,
        # Entries are written in transactions (one per append): aborted ones never count.
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        verifiers = {tp.partition: ChainVerifier() for tp in tps}
        progress = Progress(sum(ends[tp] - begins[tp] for tp in tps), f"audit verify {name}", progress_out)
        done = 0
        # A chain starts at the partition's first record: with retention -1 nothing is ever
        # deleted, so a log that no longer starts at genesis shows up as a seq gap there.
        pending = {tp for tp in tps if ends[tp] > begins[tp]}
        for tp in pending:
            consumer.seek(tp, begins[tp])
        deadline = time.monotonic() + READ_STALL_S
        while pending:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"no progress reading {name} for {READ_STALL_S:.0f} s; is Kafka up?")
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                verifier = verifiers[tp.partition]
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    done += 1
                    if verifier.feed(record.offset, record.value or b"") is not None:
                        break  # the first break is the answer; nothing after it is trusted
                if records:
                    deadline = time.monotonic() + READ_STALL_S
            for tp in list(pending):
                if verifiers[tp.partition].result().first_break or await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
            progress.update(done, done)
        progress.finish()
    finally:
        await consumer.stop()
    return {p: v.result() for p, v in sorted(verifiers.items())}
