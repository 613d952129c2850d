"""Batch handler `route_feedback`: validates `prompt-feedback`, audits it and reports it to the
counters; routes each order to the partition of its user's state (`user-orders`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from agents.context import PipelineContext
from agents.decoding import wall_clock_ms
from likeflow.domain.prompt_ids import is_legacy_id
from likeflow.domain.pseudonym import edge_pseudonym
from likeflow.domain.quality.sources import SourceReports
from likeflow.engine import Completion, KeyPartitioner, OutputBatch, Records, StageTimer, Turn
from likeflow.metrics import UNROUTABLE
from streams.engagement import UserOrder
from streams.events import CreatorEvent, DeadLetterReason, Invalid
from streams.topics import CREATOR_EVENTS, PROMPT_FEEDBACK, USER_ORDERS
from streams.validation import decode_feedback

UNKNOWN_PROMPT = Invalid(
    DeadLetterReason.UNKNOWN_PROMPT,
    "prompt_id is not a prompt likeflow issued for this creator_id, product_id and user_id",
)


class RouteFeedback:
    """Each fetched batch of feedback becomes count records (one per counting partition that
    has events from it or has to hear the source's clock) and audit entries.

    Feedback is keyed by creator like the counting partitions, but it is reported with its
    source partition's clock: the counters judge lateness per source (docs/quality.md).
    """

    def __init__(self, ctx: PipelineContext, reports: SourceReports) -> None:
        settings = ctx.settings
        self._ctx = ctx
        self._reports = reports
        self._counts_topic = settings.topic(CREATOR_EVENTS)
        self._orders_topic = settings.topic(USER_ORDERS)
        # A user's state lives on the partition Kafka's default partitioner gives their raw id
        # (the key of their likes): their orders are written there.
        self._user_partition = KeyPartitioner(settings.partitions)
        self._unroutable = ctx.metrics.user_engagements.labels("order", UNROUTABLE)
        self._limits = ctx.limits
        self._legacy_until = settings.legacy_prompt_ids_until_ms
        self._consumed = ctx.metrics.records_consumed.labels(settings.topic(PROMPT_FEEDBACK))
        self._batch_seconds = ctx.metrics.batch_duration.labels("route_feedback")
        self._stages = StageTimer(settings.topic(PROMPT_FEEDBACK), ctx.metrics.observe_stage)

    async def process(self, batch: Records) -> Completion:
        """Validate and pseudonymise the batch; the completion sends, audits and returns."""
        ctx = self._ctx
        started = time.perf_counter()
        invalid: list[tuple[Any, Invalid]] = []
        audit: dict[int, list[bytes]] = {}
        orders: list[tuple[int, UserOrder]] = []
        now_ms = wall_clock_ms()
        limits = self._limits.at(now_ms)
        # Ids of before the upgrade to keyed ids, during the window the operator opened; it closes
        # by the worker's clock, not by the records' own (a sender's) timestamps.
        legacy_until = self._legacy_until if now_ms <= self._legacy_until else 0
        for tp, records in batch.items():
            partition = tp.partition
            for record in records:
                decoded = decode_feedback(record.key, record.value, limits)
                if isinstance(decoded, Invalid):
                    invalid.append((record, decoded))
                    continue
                # The edge for feedback: the app reports the raw user id; only its pseudonym goes
                # on (a repaired dead letter, marked pseudonymised, carries it already).
                feedback = replace(
                    decoded, user_id=edge_pseudonym(decoded.user_id, record.headers, ctx.pseudonymize)
                )
                if not ctx.prompt_ids.verify(
                    feedback.prompt_id, feedback.creator_id, feedback.product_id, feedback.user_id
                ) and not (feedback.ts <= legacy_until and is_legacy_id(feedback.prompt_id)):
                    # Not a prompt likeflow issued for this creator, product and user: a forged
                    # click must not move the creator's rates or the platform's averages.
                    invalid.append((record, UNKNOWN_PROMPT))
                    continue
                self._reports.observe(partition, feedback.ts)
                self._reports.add(partition, feedback, record.offset)
                audit.setdefault(partition, []).append(feedback.to_json())
                if feedback.kind == "order" and feedback.amount_cents > 0:
                    self._route_order(decoded.user_id, feedback.user_id, feedback, orders)
        count_records = self._reports.records({tp.partition for tp in batch}, time.monotonic())
        self._consumed.inc(sum(len(r) for r in batch.values()))
        self._batch_seconds.observe(time.perf_counter() - started)

        stages = self._stages

        async def complete(turn: Turn) -> None:
            outputs = OutputBatch(ctx.producer())
            for k, count in count_records:
                outputs.add(self._counts_topic, k, count.key, count.to_json(), count.clock or None)
            for user_partition, order in orders:
                outputs.add(
                    self._orders_topic, user_partition, order.user_id.encode(), order.to_json(), order.ts
                )
            ctx.dead_letters.add_all(outputs, invalid)
            async with turn:
                # In batch order: a source's count records reach each counting partition in the
                # source's order (the counters de-duplicate by it), and so do audit entries.
                await stages.timed("send", outputs.send())
                appends = [
                    asyncio.ensure_future(ctx.audit.append(p, "feedback", values))
                    for p, values in audit.items()
                ]
                await asyncio.sleep(0)  # let the appends take their chains' locks before the next turn
            # Each record is forwarded and on its audit chain (or dead-lettered) before the
            # batch's offsets can be committed.
            await asyncio.gather(
                stages.timed("outputs_ack", outputs.delivered()),
                stages.timed("audit", asyncio.gather(*appends)),
            )

        return complete

    def _route_order(
        self, raw_user: str, user: str, feedback: CreatorEvent, orders: list[tuple[int, UserOrder]]
    ) -> None:
        """The user's own order, for their consumption level (docs/profile.md): to the partition
        of their state, keyed by their pseudonym (no raw id is written). Sent with the batch's
        other outputs, before its offsets are committed; a redelivered order is sent again and
        recorded once (by its event id, in the user's state)."""
        if raw_user == user:
            # Already a pseudonym (a repaired dead letter): the raw id that places the user's
            # state is unknown, so the order cannot reach it.
            self._unroutable.inc()
            return
        partition = self._user_partition(raw_user.encode())
        orders.append((partition, UserOrder(feedback.event_id, user, feedback.amount_cents, feedback.ts)))
