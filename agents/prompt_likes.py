"""Batch handler `prompt_likes`: likes → join → guards and ranking → prompts to Kafka and Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from agents.context import PipelineContext, new_user_state
from likeflow.domain.decide import Duplicate, NoPromptReason, Skip, decide
from likeflow.domain.mapping_versions import Unknown
from likeflow.domain.pseudonym import edge_pseudonym
from likeflow.domain.quality.sources import SourceReports
from likeflow.domain.user_state import UserState
from likeflow.domain.waiting import WaitingLike, WaitList
from likeflow.engine import ChangelogStore, Completion, KeyPartitioner, OutputBatch, Records, StageTimer, Turn
from likeflow.metrics import observe_many
from likeflow.sinks.redis_prompts import ServedPrompt
from likeflow.tracing import BatchTraces, LikeTrace
from streams.events import CONTRACT_HEADERS, CreatorEvent, Invalid, Like, Prompt, VideoMapping
from streams.topics import CREATOR_EVENTS, LIKES, ORDER_PROMPTS
from streams.validation import InputLimits, decode_like

log = logging.getLogger(__name__)


class PromptLikes:
    """Turns each fetched batch of `likes` into prompts, count records and user-state changes.

    The batch's CPU work happens in `process`, in the fetch loop (one batch at a time, so the
    user states in memory are never shared between two batches); the user states it changed go
    to their changelog before `process` returns. The completion then waits for those changelog
    acknowledgements *before* the prompts and count records go out: after a crash the restored
    state knows every prompt that may have been seen, and a redelivered like re-sends its exact
    bytes instead of deciding again. Prompts, count records, dead letters, the audit trail and
    Redis are written concurrently; the batch's offsets are committable once all are done.
    """

    def __init__(
        self, ctx: PipelineContext, states: ChangelogStore[UserState], reports: SourceReports
    ) -> None:
        settings = ctx.settings
        self._ctx = ctx
        self._states = states
        self._reports = reports
        self._prompts_topic = settings.topic(ORDER_PROMPTS)
        self._counts_topic = settings.topic(CREATOR_EVENTS)
        self._prompt_partition = KeyPartitioner(settings.partitions)
        self._limits = ctx.limits
        metrics = ctx.metrics
        self._consumed = metrics.records_consumed.labels(settings.topic(LIKES))
        self._latency = metrics.like_to_prompt_latency
        self._skipped = metrics.likes_skipped
        self._batch_seconds = metrics.batch_duration.labels("prompt_likes")
        self._stages = StageTimer(settings.topic(LIKES), metrics.observe_stage)
        self._partitions = settings.partitions
        self._likes_topic = settings.topic(LIKES)
        self._grace_ms = int(settings.mapping_grace_s * 1000)
        self._waits = WaitList(settings.mapping_waits_max)
        self._wait_outcomes = metrics.mapping_wait_outcomes
        # Waiting likes decided in a completed batch, whose table entries are still to delete.
        self._settled: list[tuple[int, WaitingLike]] = []
        ctx.video_mappings.on_mapped.append(self._waits.mapped)
        self._tracing = ctx.tracing  # None: tracing is off (likeflow/tracing.py)

    def forget(self) -> None:
        """After a rebalance: the waiting likes are loaded again from the table (module doc)."""
        self._waits.forget()
        self._settled.clear()

    async def process(self, batch: Records) -> Completion:
        """Decide every like of the batch (see the class doc)."""
        ctx = self._ctx
        # Before the first like, this worker's mapping replica holds every mapping published
        # before it started; otherwise a fresh worker would skip likes as "no_mapping". (This
        # holds the fetch loop, and so every topic, for the seconds the replica needs at start.)
        await ctx.video_mappings.ready.wait()
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        limits = self._limits.at(now_ms)
        prompts: list[tuple[int, Prompt, bytes]] = []
        invalid: list[tuple[Any, Invalid]] = []
        outcomes: Counter[str] = Counter()
        # Likes that waited for their mapping first: they came before the batch's likes.
        decided = self._waiting_due(batch, now_ms, prompts, outcomes)
        traces = None if self._tracing is None else self._tracing.batch(now_ms)
        one = self._one if traces is None else traces.wrap(self._one)
        for tp, records in batch.items():
            partition = tp.partition
            for record in records:
                outcome = one(partition, record, now_ms, limits, prompts)
                if isinstance(outcome, Invalid):
                    invalid.append((record, outcome))
                else:
                    outcomes[outcome] += 1
            ctx.retention.observe(partition, self._reports.clocks.get(partition, 0))
        ctx.retention.sweep_due({tp.partition for tp in batch})
        flushed = [await self._states.flush(tp.partition) for tp in batch]
        waits = self._ctx.mapping_waits
        flushed.extend([await waits.flush(tp.partition) for tp in batch if waits.pending(tp.partition)])
        self._ctx.metrics.mapping_waits.set(len(self._waits))
        count_records = self._reports.records({tp.partition for tp in batch}, time.monotonic())
        self._account(batch, prompts, outcomes, now_ms)
        self._batch_seconds.observe(time.perf_counter() - started)

        async def complete(turn: Turn) -> None:
            # The user states that record these prompts are on the changelog.
            await self._stages.timed("changelog_ack", _all(flushed))
            await self._emit(turn, prompts, count_records, invalid, traces)
            # Their decisions are out: the next batch of their partition deletes their entries
            # (until then a crash finds them again and re-sends the same decision).
            self._settled.extend(decided)

        return complete if traces is None else traces.completing(complete)

    def _one(
        self,
        partition: int,
        record: Any,
        now_ms: int,
        limits: InputLimits,
        prompts: list[tuple[int, Prompt, bytes]],
        trace: LikeTrace | None = None,
    ) -> str | Invalid:
        """Decide one like; returns why it is invalid, or PROMPTED, DUPLICATE or a skip reason.
        `trace`: the like is traced (`likeflow.tracing.BatchTraces.wrap`), told where it is."""
        ctx = self._ctx
        decoded = decode_like(record.key, record.value, limits)
        if trace is not None:
            trace.decoded(decoded)
        if isinstance(decoded, Invalid):
            return decoded
        self._reports.observe(partition, decoded.ts)
        if decoded.action == "unlike":
            return "unlike"
        # The join: the version of the video's mapping valid at the like's ts, in this worker's
        # replica of `video-products` (a Kafka Streams stream-table join on a versioned store).
        mapping = ctx.video_mappings.at(decoded.video_id, decoded.ts)
        if trace is not None:
            trace.joined()
        if mapping is None:
            return "no_mapping"
        # The edge: from here on the user is a pseudonym, in state, counts, prompts and logs.
        user = edge_pseudonym(decoded.user_id, record.headers, ctx.pseudonymize)
        if isinstance(mapping, Unknown):
            return self._wait(partition, record.offset, decoded, user, now_ms)
        like = Like(decoded.event_id, user, decoded.video_id, decoded.ts, decoded.action, decoded.watch_ms)
        return self._decide(partition, like, mapping, record.offset, now_ms, prompts)

    def _decide(
        self,
        partition: int,
        like: Like,
        mapping: VideoMapping,
        offset: int,
        now_ms: int,
        prompts: list[tuple[int, Prompt, bytes]],
    ) -> str:
        """Decide `like` (from `offset` of its partition; -1: decided after waiting for its
        mapping, counted by event id) joined with `mapping`."""
        ctx = self._ctx
        user = like.user_id
        state = self._states.get(partition, user)
        if state is None:
            # A user without state may still have been erased (retention deleted the state, the
            # ledger keeps the erasure): a like from before it is ignored all the same.
            state = new_user_state(ctx, partition, user)
        decision = decide(
            state,
            like,
            mapping,
            creator_weight=ctx.creator_weight(mapping.creator_id),
            now_ms=now_ms,
            guards=ctx.guards,
            ranking=ctx.ranking,
            prompt_ids=ctx.prompt_ids,
            pricing=ctx.pricing,
            offset=offset,
        )
        if isinstance(decision, Duplicate):
            if decision.redelivered:
                # This record was decided before a crash: its like may not have been counted.
                # Reported again at its own offset, it counts only if it never arrived.
                self._reports.add(partition, self._like_event(like, mapping.creator_id), offset)
            # Re-send the original prompt byte for byte: if the first send was lost in a crash
            # before the producer flushed, this one delivers it.
            if decision.sent is not None:
                original = decision.sent.prompt
                prompts.append((partition, original, decision.sent.raw))
                # Counted at the like that first produced it: the counters count each like of a
                # source once (by offset), so a re-send counts only if the first never arrived.
                self._reports.add(partition, CreatorEvent.for_prompt(original), decision.sent.offset)
            return DUPLICATE
        if isinstance(decision, Skip) and decision.reason in UNCHANGED:
            return decision.reason.value  # nothing of the like was recorded: no state to write
        self._states.put(partition, user, state)
        ctx.retention.touch(partition, user, state)
        # The creator's like count: every like recorded in the user's state, prompted or not.
        self._reports.add(partition, self._like_event(like, mapping.creator_id), offset)
        if isinstance(decision, Skip):
            return decision.reason.value
        prompts.append((partition, decision.prompt, decision.raw))
        # The creator's prompt count. A re-sent prompt has the same event_id, counted once.
        self._reports.add(partition, CreatorEvent.for_prompt(decision.prompt), offset)
        return PROMPTED

    # -- likes waiting for their video's mapping (likeflow/domain/waiting.py) -----------------

    def _wait(self, partition: int, offset: int, decoded: Like, user: str, now_ms: int) -> str:
        """Hold a like whose video has no mapping version yet, up to the grace."""
        waits = self._waits
        if self._grace_ms <= 0:
            return "no_mapping"
        if waits.holds(partition, offset):
            return WAITING  # redelivered while it waits: the held entry stands
        if not waits.has_room():
            self._wait_outcomes.labels("refused").inc()
            return "no_mapping"
        like = WaitingLike(
            decoded.event_id, user, decoded.video_id, decoded.ts, offset, now_ms + self._grace_ms
        )
        # In the changelogged table before this batch's offsets commit: a crash does not lose it.
        self._ctx.mapping_waits.put(partition, like.key(partition), like)
        waits.add(partition, like)
        return WAITING

    def due_partitions(self) -> set[int]:
        """The partitions to deliver with no new records (the engine's timer): waiting likes due
        (mapped, or past their grace), settled ones to delete, or not loaded since assignment."""
        waits = self._waits
        due = waits.due_partitions(int(time.time() * 1000))
        due.update(p for p, _ in self._settled)
        due.update(p for p in range(self._partitions) if not waits.loaded(p))
        return due

    def _waiting_due(
        self,
        batch: Records,
        now_ms: int,
        prompts: list[tuple[int, Prompt, bytes]],
        outcomes: Counter[str],
    ) -> list[tuple[int, WaitingLike]]:
        """Load, settle and decide the waiting likes of the batch's partitions; returns those
        decided (their entries are deleted once this batch's outputs are acknowledged)."""
        ctx, waits = self._ctx, self._waits
        store = ctx.mapping_waits
        mappings = ctx.video_mappings
        partitions = {tp.partition for tp in batch}
        for partition in partitions:
            if not waits.loaded(partition):
                held = [
                    like for key in store.keys(partition) if (like := store.get(partition, key)) is not None
                ]
                waits.load(partition, held, lambda video: not isinstance(mappings.at(video, 0), Unknown))
                if held:
                    log.info(
                        "%s[%d]: %d likes waiting for their mapping, restored",
                        self._likes_topic,
                        partition,
                        len(held),
                    )
        if self._settled:
            settled, self._settled = self._settled, []
            for partition, like in settled:
                if partition in partitions:
                    store.delete(partition, like.key(partition))
                    waits.settled(partition, like.offset)
                else:
                    self._settled.append((partition, like))
        decided: list[tuple[int, WaitingLike]] = []
        due = waits.due_partitions(now_ms) & partitions
        for partition in sorted(due):
            for like in waits.due(partition):
                mapping = mappings.at(like.video_id, like.ts)
                if isinstance(mapping, VideoMapping):
                    self._wait_outcomes.labels("joined").inc()
                    joined = Like(like.event_id, like.user_id, like.video_id, like.ts, "like")
                    outcome = self._decide(partition, joined, mapping, -1, now_ms, prompts)
                else:
                    self._wait_outcomes.labels("expired").inc()
                    outcome = "no_mapping"
                outcomes[outcome] += 1
                decided.append((partition, like))
        return decided

    @staticmethod
    def _like_event(like: Like, creator_id: str) -> CreatorEvent:
        return CreatorEvent.for_like(like.event_id, creator_id, like.user_id, like.ts)

    def _account(
        self, batch: Records, prompts: list[tuple[int, Prompt, bytes]], outcomes: Counter[str], now_ms: int
    ) -> None:
        metrics = self._ctx.metrics
        self._consumed.inc(sum(len(r) for r in batch.values()))
        for outcome, n in outcomes.items():
            if outcome == PROMPTED:
                metrics.prompts_emitted.inc(n)
            elif outcome == WAITING:
                self._wait_outcomes.labels("waiting").inc(n)
            elif outcome == DUPLICATE:
                metrics.duplicates.inc(n)
            else:
                self._skipped.labels(outcome).inc(n)
        # Emitted now (not a re-sent one): like ts to emission, seconds.
        observe_many(
            self._latency,
            (max(0, now_ms - p.like_ts) / 1000 for _, p, _ in prompts if p.emitted_ts == now_ms),
        )

    async def _emit(
        self,
        turn: Turn,
        prompts: Sequence[tuple[int, Prompt, bytes]],
        count_records: Sequence[tuple[int, Any]],
        invalid: Sequence[tuple[Any, Invalid]],
        traces: BatchTraces | None = None,
    ) -> None:
        ctx = self._ctx
        outputs = OutputBatch(ctx.producer())
        audit: dict[int, list[bytes]] = {}
        served: list[ServedPrompt] = []
        # A traced like's prompt carries its trace context (likeflow/tracing.py).
        traced = traces.prompt_headers if traces is not None else None
        for i, (partition, prompt, value) in enumerate(prompts):
            key = prompt.user_id.encode()
            headers = CONTRACT_HEADERS if not traced else traced.get(i, CONTRACT_HEADERS)
            outputs.add(self._prompts_topic, self._prompt_partition(key), key, value, prompt.like_ts, headers)
            audit.setdefault(partition, []).append(value)
            if not self._erased_since(partition, prompt):
                served.append(ServedPrompt(prompt.user_id, prompt.like_ts, prompt.prompt_id, value))
        for k, count in count_records:
            outputs.add(self._counts_topic, k, count.key, count.to_json(), count.clock or None)
        ctx.dead_letters.add_all(outputs, invalid if traces is None else traces.dead_letters(invalid))
        stages = self._stages
        async with turn:
            # In batch order: the records of each partition, and each audit chain's entries
            # (an audit append takes its chain's lock in the order the appends start).
            await stages.timed("send", outputs.send())
            appends = [asyncio.ensure_future(ctx.audit.append(p, "prompt", v)) for p, v in audit.items()]
            await asyncio.sleep(0)  # let the appends take their locks before the next turn
        # Every emitted prompt (re-sends too) is on its partition's audit chain, and in Redis,
        # before the batch's offsets can be committed; the three go out together.
        await asyncio.gather(
            stages.timed("outputs_ack", outputs.delivered()),
            stages.timed("audit", asyncio.gather(*appends)),
            stages.timed("redis", ctx.prompt_store.write(served)),
        )

    def _erased_since(self, partition: int, prompt: Prompt) -> bool:
        # An erasure applied since the batch was decided has deleted the user's Redis key;
        # writing the prompt now would bring it back (Redis refuses it too: docs/redis.md).
        state = self._states.get(partition, prompt.user_id)
        return state is not None and state.erased_ts >= prompt.like_ts


PROMPTED = "prompted"
DUPLICATE = "duplicate"
WAITING = "waiting"  # held for its video's mapping (decided later, in another batch)
# Skips that record nothing of the like in the user's state, so no changelog write. (A
# rate-limited like may prune the state by its time: a function of the state's clock that the
# user's next written like repeats, so it need not be written now; writing it would re-send a
# capped user's whole state with every batch.)
UNCHANGED = frozenset(
    {NoPromptReason.PROMPTS_OFF, NoPromptReason.ERASED, NoPromptReason.TOO_LATE, NoPromptReason.RATE_LIMITED}
)


async def _all(futures: Sequence[asyncio.Future[Any]]) -> None:
    for future in futures:
        await future
