"""Prometheus metrics of one worker (`likeflow_<noun>_<unit>`; labels are bounded sets, never ids)."""

from __future__ import annotations

import bisect
import platform
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

import likeflow
from likeflow.domain.decide import NoPromptReason
from likeflow.domain.profile.record import Recorded
from likeflow.domain.profile.weights import ENGAGEMENT_KINDS
from streams.events import DeadLetterReason

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All metric families, on a registry of their own so several apps can live in one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds, start time.
        ProcessCollector(registry=r)
        self.build_info = Gauge(
            "likeflow_build_info",
            "Always 1; the labels say which build runs (compare versions across workers).",
            ["version", "faust", "python"],
            registry=r,
        )
        build = (likeflow.__version__, version("faust-streaming"), platform.python_version())
        self.build_info.labels(*build).set(1)
        self.records_consumed = Counter(
            "likeflow_records_consumed_total", "Records consumed, by topic.", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "likeflow_dead_letters_total",
            "Records sent to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.likes_skipped = Counter(
            "likeflow_likes_skipped_total",
            "Valid likes that produced no prompt, by reason.",
            ["reason"],
            registry=r,
        )
        self.prompts_emitted = Counter(
            "likeflow_prompts_emitted_total", "New prompts emitted to order-prompts.", registry=r
        )
        self.duplicates = Counter(
            "likeflow_duplicate_likes_total",
            "Redelivered likes (same event_id); their original prompt is re-sent unchanged.",
            registry=r,
        )
        self.user_controls = Counter(
            "likeflow_user_controls_total",
            "Privacy controls applied from user-consent and user-erasure, by control.",
            ["control"],
            registry=r,
        )
        self.users_expired = Counter(
            "likeflow_users_expired_total",
            "User states dropped by retention (last activity older than the horizon).",
            registry=r,
        )
        self.mapping_waits = Gauge(
            "likeflow_likes_waiting",
            "Likes this worker holds waiting for their video's mapping (LIKEFLOW_MAPPING_GRACE_S).",
            registry=r,
        )
        self.mapping_wait_outcomes = Counter(
            "likeflow_mapping_waits_total",
            "Likes of a video with no mapping yet, by outcome: waiting (held), joined (its mapping "
            "came within the grace), expired (skipped as no_mapping after the grace), refused "
            "(skipped at once: LIKEFLOW_MAPPING_WAITS_MAX likes already wait).",
            ["outcome"],
            registry=r,
        )
        self.content_matches = Counter(
            "likeflow_content_matches_total",
            "video-content records matched against the catalogue, by outcome: matched (a proposal "
            "sent to video-matches), none (nothing above LIKEFLOW_MATCH_MIN_CONFIDENCE: any earlier "
            "proposal withdrawn), no_creator (no creator_id: nothing proposed).",
            ["outcome"],
            registry=r,
        )
        self.mapping_updates = Counter(
            "likeflow_mapping_updates_total",
            "Video mapping records applied, by outcome (set, removed, stale; refused: a new video "
            "while the replica is at LIKEFLOW_MAPPINGS_MAX_BYTES).",
            ["outcome"],
            registry=r,
        )
        self.mappings_bytes = Gauge(
            "likeflow_video_mappings_bytes",
            "Memory held by this worker's replica of video-products, bytes (estimated per mapping).",
            registry=r,
        )
        self.mappings_max_bytes = Gauge(
            "likeflow_video_mappings_max_bytes",
            "LIKEFLOW_MAPPINGS_MAX_BYTES: above it the mapping of a new video is refused.",
            registry=r,
        )
        self.user_engagements = Counter(
            "likeflow_user_engagements_total",
            "What the user's profile made of each user-engagement event (comment, share, "
            "long_watch) and each order routed from prompt-feedback (order), by kind and outcome "
            "(docs/profile.md): recorded, duplicate, not_personalized, erased, too_late, "
            "rate_limited, nothing_to_count (no mapping, a free order), unroutable (an order whose "
            "user's partition is unknown: feedback already pseudonymised).",
            ["kind", "outcome"],
            registry=r,
        )
        self.user_controls_stateless = Counter(
            "likeflow_user_controls_stateless_total",
            "Privacy controls for a user with no state that created none, by control: a consent "
            "with the default choices, an erasure (kept in the erasure ledger only).",
            ["control"],
            registry=r,
        )
        self.clock_repairs = Counter(
            "likeflow_clock_repairs_total",
            "Stored event times found beyond now + LIKEFLOW_MAX_CLOCK_SKEW_S and brought back to "
            "it (state written before the limit existed), by what held them.",
            ["what"],
            registry=r,
        )
        self.dead_letters_refused = Counter(
            "likeflow_dead_letters_refused_total",
            "Dead letters the broker refused for good (record too large or invalid): counted, "
            "logged and skipped so that one record cannot stop the worker, by source topic.",
            ["topic"],
            registry=r,
        )
        self.creators_expired = Counter(
            "likeflow_creators_expired_total",
            "Creators forgotten after LIKEFLOW_CREATOR_RETENTION_DAYS without a closed window.",
            registry=r,
        )
        self.creator_events = Counter(
            "likeflow_creator_events_total",
            "Creator events (likes decided, prompts and feedback) by kind and outcome (counted, "
            "duplicate, redelivered, late, future_ts).",
            ["kind", "outcome"],
            registry=r,
        )
        self.gmv = Counter(
            "likeflow_gmv_cents_total",
            "GMV of the orders and bookings counted by the creator counters (cents; each once). Per "
            '10,000 likes: 100 * rate(this) / rate(likeflow_creator_events_total{kind="like", '
            'outcome="counted"}).',
            registry=r,
        )
        self.late_records = Counter(
            "likeflow_late_records_total",
            "Creator events for a window already closed for their own source (or expired), "
            "dead-lettered with reason late, by source (input topic/partition).",
            ["source"],
            registry=r,
        )
        self.windows_closed = Counter(
            "likeflow_creator_windows_closed_total",
            "Creator windows closed by the event-time watermark and sent to the judge.",
            registry=r,
        )
        self.creator_changes = Counter(
            "likeflow_creator_standing_changes_total",
            "Creator demotions and recoveries.",
            ["change"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "likeflow_batch_duration_seconds",
            "Time to process one batch taken from a stream, by agent, seconds.",
            ["agent"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_backpressure = Histogram(
            "likeflow_batch_backpressure_seconds",
            "Time a fetched batch waited for its topic's outputs in flight to drain "
            "(LIKEFLOW_MAX_BATCHES_IN_FLIGHT), by topic; the fetch loop, and every topic, waits "
            "meanwhile, seconds.",
            ["topic"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._stage_children: dict[tuple[str, str], Any] = {}
        self.batch_stage = Histogram(
            "likeflow_batch_stage_seconds",
            "Where a batch's time goes, by topic and stage (docs/observability.md, 'Where a slow "
            "prompt spent its time'): fetch, age, room, process, changelog_ack, turn, send, "
            "outputs_ack, audit, redis, complete; commit (topic 'all'), seconds.",
            ["topic", "stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_records = Counter(
            "likeflow_batch_records_total",
            "Records handed to the batch handlers, by topic.",
            ["topic"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "likeflow_consumer_lag_records",
            "Log end offset minus the group's committed offset, for partitions this worker owns.",
            ["topic", "partition"],
            registry=r,
        )
        self.seconds_since_progress = Gauge(
            "likeflow_seconds_since_progress",
            "Longest time an owned input partition with lag has gone without its committed offset "
            "moving (0 when none is behind or during a rebalance); the stall watchdog restarts "
            "the worker at LIKEFLOW_STALL_TIMEOUT_S.",
            registry=r,
        )
        self.table_keys = Gauge(
            "likeflow_table_keys", "Keys held by this worker, by table.", ["table"], registry=r
        )
        self.partition_watermark = Gauge(
            "likeflow_watermark_timestamp_seconds",
            "Event-time watermark of a creator-events partition (the lowest clock of its non-idle "
            "sources minus the grace), as Unix time in seconds; `time() - this` is its age.",
            ["partition"],
            registry=r,
        )
        self.source_clock = Gauge(
            "likeflow_source_clock_timestamp_seconds",
            "Event-time clock of one input of the creator counters (likes/N, prompt-feedback/N): "
            "the highest ts it has reported to this worker's counting partitions, Unix seconds.",
            ["source"],
            registry=r,
        )
        self.source_idle = Gauge(
            "likeflow_source_idle",
            "1 while an input of the creator counters is idle (caught up and quiet: it does not "
            "hold windows open), else 0.",
            ["source"],
            registry=r,
        )
        self.creators_demoted = Gauge(
            "likeflow_creators_demoted", "Creators currently demoted (judge's view).", registry=r
        )
        self.platform_rate = Gauge(
            "likeflow_platform_rate_ratio",
            "Platform-wide rate over the retained closed windows (ctr, conversion, return_rate, "
            "complaint_rate).",
            ["rate"],
            registry=r,
        )
        self.like_to_prompt_latency = Histogram(
            "likeflow_like_to_prompt_latency_seconds",
            "Like event ts to prompt emission (event time to wall clock), seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.redis_write_latency = Histogram(
            "likeflow_redis_write_latency_seconds",
            "Time to write one batch of prompts to Redis, seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.redis_write_errors = Counter(
            "likeflow_redis_write_errors_total",
            "Failed Redis write attempts, by outcome (retried, gave_up).",
            ["outcome"],
            registry=r,
        )
        self.redis_pending = Gauge(
            "likeflow_redis_pending_writes",
            "Writes held in memory while Redis is unreachable, by store (prompts, quality); "
            "above LIKEFLOW_REDIS_MAX_PENDING the agent pauses until Redis answers.",
            ["store"],
            registry=r,
        )

    def observe_stage(self, topic: str, stage: str, seconds: float) -> None:
        """One batch's `stage` took `seconds` (an `likeflow.engine.OnStage`)."""
        child = self._stage_children.get((topic, stage))
        if child is None:
            # labels() takes a lock and builds a key per call: a dozen stages per batch.
            child = self._stage_children[(topic, stage)] = self.batch_stage.labels(topic, stage)
        child.observe(seconds)

    def preinitialise(self, input_topics: list[str], agents: list[str], count_sources: list[str]) -> None:
        """Create every bounded label combination at 0, so dashboards and alerts see series
        (a `rate()` over a counter that was never incremented would otherwise be empty)."""
        for source in count_sources:
            self.late_records.labels(source)
        for topic in input_topics:
            self.records_consumed.labels(topic)
            for dead_letter_reason in DeadLetterReason:
                self.dead_letters.labels(topic, dead_letter_reason.value)
        for outcome in ("retried", "gave_up"):
            self.redis_write_errors.labels(outcome)
        for store in ("prompts", "quality"):
            self.redis_pending.labels(store)
        for outcome in ("set", "removed", "stale", "refused"):
            self.mapping_updates.labels(outcome)
        for outcome in ("matched", "none", "no_creator"):
            self.content_matches.labels(outcome)
        for outcome in ("waiting", "joined", "expired", "refused"):
            self.mapping_wait_outcomes.labels(outcome)
        for control in ("consent", "erasure"):
            self.user_controls.labels(control)
            self.user_controls_stateless.labels(control)
        for topic in input_topics:
            self.dead_letters_refused.labels(topic)
        for kind in ENGAGEMENT_METRIC_KINDS:
            for engagement_outcome in ENGAGEMENT_OUTCOMES:
                self.user_engagements.labels(kind, engagement_outcome)
        for site in CLOCK_REPAIR_SITES:
            self.clock_repairs.labels(site)
        for change in ("demoted", "recovered"):
            self.creator_changes.labels(change)
        for reason in SKIP_REASONS:
            self.likes_skipped.labels(reason)
        for agent in agents:
            self.batch_duration.labels(agent)
        for rate in ("ctr", "conversion", "return_rate", "complaint_rate"):
            self.platform_rate.labels(rate)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe(a)` for every amount, with one update per bucket (a batch's prompts).

    Uses the histogram's buckets and sum (prometheus_client 0.26 internals; tests/unit/
    test_metrics.py fails if they change): `observe` takes a lock per call, once per prompt.
    """
    bounds: list[float] = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1
        total += amount
    if not any(counts):
        return
    histogram._sum.inc(total)
    for i, n in enumerate(counts):
        if n:
            histogram._buckets[i].inc(n)


# What can hold an event time from beyond now + skew (written before the limit existed):
# user states, the counters' partition clocks and count records, the judge's creator rows.
CLOCK_REPAIR_SITES = ("user_state", "counter_clock", "count_record", "creator_standing")
# Why a valid like produced no prompt: dropped before the decision, or the decision's reasons.
SKIP_REASONS = ("unlike", "no_mapping", *(r.value for r in NoPromptReason))
# The kinds and outcomes of `likeflow_user_engagements_total`: engagement events and routed orders.
ENGAGEMENT_METRIC_KINDS = (*ENGAGEMENT_KINDS, "order")
UNROUTABLE = "unroutable"
ENGAGEMENT_OUTCOMES = (*(r.value for r in Recorded), UNROUTABLE)
