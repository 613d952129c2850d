"""Builds the one Faust app from settings: topics, tables, sinks, agents and web views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import generate_latest

from agents import register_agents
from agents.context import PipelineContext, policies_from, pricing_from, quality_policies_from
from agents.retention import RetentionSweeper
from config import Settings
from config.secrets import read_secret
from likeflow import connections
from likeflow.audit_trail import WorkerAudit
from likeflow.creator_weights import CreatorWeights
from likeflow.domain.privacy import DAY_MS
from likeflow.domain.pseudonym import MIN_KEY_CHARS, Pseudonymizer
from likeflow.domain.stall import StallDetector
from likeflow.faust_recovery import SeekFirstTableManager, install_fetch_snapshot
from likeflow.metrics import Metrics
from likeflow.monitor import Monitor
from likeflow.quality_view import creator_quality
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.sinks.redis_prompts import RedisPromptStore
from likeflow.sinks.redis_quality import RedisQualityStore
from likeflow.video_mappings import VideoMappings
from likeflow.watchdog import StallWatchdog
from streams.topics import (
    CREATOR_EVENTS,
    CREATOR_QUALITY,
    CREATOR_WINDOWS,
    LIKES,
    PROMPT_FEEDBACK,
    VIDEO_PRODUCTS,
    declare_topics,
)
from tables import declare_tables

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
SOURCE_TOPICS = (
    LIKES,
    VIDEO_PRODUCTS,
    PROMPT_FEEDBACK,
    CREATOR_EVENTS,
    CREATOR_WINDOWS,
)
BATCH_AGENTS = ("prompt_likes", "count_creator_events", "judge_creators")
MONITOR_INTERVAL_S = 5.0


def create_app(settings: Settings) -> faust.App:
    """A fully wired Faust app; nothing runs until a worker starts it."""
    install_fetch_snapshot()
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_urls,
        broker_credentials=connections.faust_broker_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        # A new consumer group starts from the beginning of every topic, so a first deploy
        # processes mappings that were published before it.
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        # Faust's own recovery can drop input records fetched while it seeks to the committed
        # offsets, which freezes that partition's commits (likeflow/faust_recovery.py).
        TableManager=SeekFirstTableManager,
    )
    metrics = Metrics()
    topics = declare_topics(app, settings)
    tables = declare_tables(app, settings)
    guards, ranking = policies_from(settings)
    windows, judging = quality_policies_from(settings)
    redis_client = connections.redis_client(settings)
    weights = CreatorWeights()
    mappings = VideoMappings(settings.max_record_bytes)
    store = RedisPromptStore(
        redis_client,
        prefix=settings.redis_prefix,
        keep=settings.redis_prompts_keep,
        ttl_s=settings.redis_prompt_ttl_s,
        metrics=metrics,
        max_pending=settings.redis_max_pending,
    )
    audit = WorkerAudit(settings)
    ctx = PipelineContext(
        settings=settings,
        topics=topics,
        tables=tables,
        metrics=metrics,
        dead_letters=DeadLetterSink(topics.dead_letters, metrics),
        prompt_store=store,
        guards=guards,
        ranking=ranking,
        quality_store=RedisQualityStore(
            redis_client,
            prefix=settings.redis_prefix,
            metrics=metrics,
            max_pending=settings.redis_max_pending,
        ),
        windows=windows,
        judging=judging,
        video_mappings=mappings,
        pseudonymize=pseudonymizer(settings),
        pricing=pricing_from(settings),
        retention=RetentionSweeper(
            tables.user_state,
            settings.user_retention_days * DAY_MS,
            on_expired=metrics.users_expired.inc,
        ),
        audit=audit,
        creator_weight=weights,
    )
    register_agents(app, ctx)
    _connect_audit(app, audit)
    metrics.preinitialise([settings.topic(t) for t in SOURCE_TOPICS], list(BATCH_AGENTS))
    monitor = Monitor(
        app,
        connections.kafka_client_kwargs(settings),
        metrics,
        {name: getattr(tables, name) for name in tables.__dataclass_fields__},
        [settings.topic(t) for t in SOURCE_TOPICS],
    )
    app.timer(MONITOR_INTERVAL_S)(monitor.refresh)
    if settings.stall_timeout_s:
        watchdog = StallWatchdog(
            StallDetector(settings.stall_timeout_s),
            monitor,
            metrics.seconds_since_progress,
            excuse=_stall_excuse(app, mappings, metrics),
            max_sample_age_s=3 * MONITOR_INTERVAL_S,
        )
        app.timer(MONITOR_INTERVAL_S)(watchdog.check)

    async def follow_creator_weights() -> None:
        """Keep this worker's copy of every creator's ranking weight current."""
        await weights.follow(connections.kafka_client_kwargs(settings), settings.topic(CREATOR_QUALITY))

    async def follow_video_mappings() -> None:
        """Keep this worker's replica of every video's mapping current (the join side)."""
        await mappings.follow(connections.kafka_client_kwargs(settings), settings.topic(VIDEO_PRODUCTS))

    app.task(follow_creator_weights)
    app.task(follow_video_mappings)

    _register_web(app, ctx, weights, mappings)
    return app


def _stall_excuse(app: faust.App, mappings: VideoMappings, metrics: Metrics) -> Callable[[], str | None]:
    """Why no progress is expected right now (the watchdog waits), or None."""

    def excuse() -> str | None:
        if app.rebalancing:
            return "rebalancing or recovering tables"
        if not mappings.ready.is_set():
            return "video-products replica catching up"  # prompt_likes waits for it
        for store in ("prompts", "quality"):
            if metrics.registry.get_sample_value("likeflow_redis_pending_writes", {"store": store}):
                return "Redis writes held"  # the sinks retry; a restart would not help
        return None

    return excuse


def _connect_audit(app: faust.App, audit: WorkerAudit) -> None:
    async def forget_chains(app: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A revoked partition's chain may be extended by its next owner: re-read its head.
        revoked: set[Any] = args[0]
        audit.forget({tp.partition for tp in revoked})

    async def stop_audit(app: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        await audit.stop()

    # mode types its signal handlers with a Protocol mypy cannot match to a plain coroutine.
    app.on_partitions_revoked.connect(forget_chains)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(stop_audit)  # type: ignore[arg-type]


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The user-id pseudonymizer from the configured key (raises ConfigError saying what to set)."""
    key = read_secret(settings.user_key, settings.user_key_file, "user_key", min_length=MIN_KEY_CHARS)
    return Pseudonymizer(key.encode("utf-8"), settings.user_key_version)


def _register_web(
    app: faust.App, ctx: PipelineContext, weights: CreatorWeights, mappings: VideoMappings
) -> None:
    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        """Liveness and what this worker holds: assigned partitions and table sizes."""
        assigned = app.consumer.assignment() if app.consumer else set()
        return web.json(
            {
                "status": "ok",
                "app_id": ctx.settings.app_id,
                "assigned_partitions": len(assigned),
                "rebalancing": bool(app.rebalancing),
                "video_mappings": len(mappings),
                "video_mappings_ready": mappings.ready.is_set(),
                "tables": {
                    "user_state": len(ctx.tables.user_state.data),
                    "creator_counts": len(ctx.tables.creator_counts.data),
                    "creator_standing": len(ctx.tables.creator_standing.data),
                },
                "creator_weights": len(weights),
            }
        )

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        """Readiness for orchestrators: 200 once tables are recovered, the mapping replica has
        caught up and no rebalance is in progress; 503 with the reasons otherwise."""
        waiting = []
        if app.rebalancing:
            waiting.append("rebalancing or recovering tables")
        if not mappings.ready.is_set():
            waiting.append("video-products replica catching up")
        body = {"ready": not waiting, "waiting_for": waiting}
        return web.json(body, status=503 if waiting else 200)

    @app.page("/creators/{creator_id}/quality")
    async def quality(web: Any, request: Any, creator_id: str) -> Any:
        """A creator's window counts, rates, platform rates, score, weight and demotion state."""
        doc = await creator_quality(ctx.quality_store, creator_id)
        if doc is None:
            return web.json({"error": f"no quality data for creator {creator_id!r}"}, status=404)
        return web.json(doc)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus text exposition of this worker's metrics."""
        # aiohttp refuses a charset inside content_type; the exposition format is ASCII anyway.
        return web.bytes(generate_latest(ctx.metrics.registry), content_type=PROMETHEUS_TEXT)
