"""Builds the one Faust app from settings: topics, tables, sinks, agents and web views."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from prometheus_client import generate_latest

from agents import register_agents
from agents.batch_handlers import build_batch_handlers
from agents.context import PipelineContext
from agents.decoding import wall_clock_ms
from agents.idle_sources import IdleSources
from agents.retention import RetentionSweeper
from config import Settings
from likeflow import connections
from likeflow.domain.privacy import DAY_MS
from likeflow.domain.prompt_ids import prompt_ids_for
from likeflow.domain.stall import StallDetector
from likeflow.engine import (
    BatchRouter,
    ChangelogStore,
    KeyPartitioner,
    OutputProducer,
    SeekFirstTableManager,
    install_batch_transport,
    kafka_producer,
)
from likeflow.metrics import Metrics
from likeflow.policies import input_limits_from, policies_from, pricing_from, quality_policies_from
from likeflow.replicas.catalogue import CatalogueReplica
from likeflow.replicas.creator_weights import CreatorWeights
from likeflow.replicas.joined import JoinedMappings
from likeflow.replicas.video_mappings import VideoMappings
from likeflow.sinks.audit_log import WorkerAudit
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.sinks.quality_view import creator_quality
from likeflow.sinks.redis_prompts import RedisPromptStore
from likeflow.sinks.redis_quality import RedisQualityStore
from likeflow.tracing import LikeTracing
from likeflow.worker.faust_web import WEB_DRIVER_URL
from likeflow.worker.monitor import Monitor
from likeflow.worker.user_profile import user_profile
from likeflow.worker.watchdog import StallWatchdog
from streams.topics import (
    CO_PARTITIONED_TOPICS,
    CONSUMED_TOPICS,
    CREATOR_QUALITY,
    DEAD_LETTERS,
    LIKES,
    PRODUCT_CATALOGUE,
    PROMPT_FEEDBACK,
    USER_FIELD_TOPICS,
    VIDEO_MATCHES,
    VIDEO_PRODUCTS,
    declare_topics,
)
from tables import declare_tables
from tables.codecs import CreatorCountsCodec, ErasureLedgerCodec, UserStateCodec, WaitingLikeCodec

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
BATCH_AGENTS = (
    "prompt_likes",
    "route_feedback",
    "count_creator_events",
    "judge_creators",
    "record_engagement",
)
MONITOR_INTERVAL_S = 5.0
IDLE_CHECK_INTERVAL_S = 1.0
# Record batches of up to this many bytes per produce (Faust's default is 16 KiB: ~40 prompts).
PRODUCER_MAX_BATCH_BYTES = 512 * 1024


def create_app(settings: Settings) -> faust.App:
    """A fully wired Faust app; nothing runs until a worker starts it."""
    router = BatchRouter(
        max_in_flight=settings.max_batches_in_flight, fetch_max_wait_ms=settings.fetch_max_wait_ms
    )
    metrics = Metrics()

    def on_batch(topic: str, records: int, waited_s: float, processed_s: float) -> None:
        metrics.batch_backpressure.labels(topic).observe(waited_s)
        metrics.batch_records.labels(topic).inc(records)

    router.on_batch = on_batch
    router.on_stage = metrics.observe_stage
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_urls,
        broker_credentials=connections.faust_broker_credentials(settings),
        store=settings.faust_store,
        datadir=settings.data_dir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        # Faust's own topics (changelogs, the assignor's leader topic) replicated like ours.
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        # A new consumer group starts from the beginning of every topic, so a first deploy
        # processes mappings that were published before it.
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        # Faust reads its settings from the process environment too (BROKER_URL, PRODUCER_ACKS,
        # ...), and they would win over these: config/ is the only place that reads it.
        env={},
        debug=False,
        web_enabled=True,
        web=WEB_DRIVER_URL,
        web_transport="tcp:",
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        producer_acks=-1,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        broker_max_poll_records=settings.batch_max,
        broker_session_timeout=settings.session_timeout_s,
        # Static membership: restarted under the same identity, the worker gets its partitions
        # back without a rebalance (likeflow/engine/membership.py guards against duplicates).
        consumer_group_instance_id=settings.instance_id or None,
        # Faust's assignor hands a rejoining static member the assignment stored under its
        # identity and asserts that the URL in it is this worker's: name the worker by its
        # identity, not by its listening address (Faust's table router, which would route by it,
        # is off). Without an identity: Faust's default, the listening address.
        canonical_url=(
            f"http://{settings.instance_id}"
            if settings.instance_id
            else f"http://{settings.web_host}:{settings.web_port}"
        ),
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        # Faust's own recovery can drop input records fetched while it seeks to the committed
        # offsets, which freezes that partition's commits (likeflow/engine/recovery.py).
        TableManager=SeekFirstTableManager,
    )
    # The hot topics reach their handlers as fetched batches, not as Faust events.
    install_batch_transport(app, router)
    topics = declare_topics(app, settings)
    tables = declare_tables(app, settings)
    guards, ranking = policies_from(settings)
    windows, judging = quality_policies_from(settings)
    redis_client = connections.redis_client(settings)
    weights = CreatorWeights()
    limits = input_limits_from(settings)
    mappings = VideoMappings(
        limits,
        settings.mappings_max_bytes,
        on_refused=metrics.mapping_updates.labels("refused").inc,
        on_size=metrics.mappings_bytes.set,
    )
    metrics.mappings_max_bytes.set(settings.mappings_max_bytes)
    # The content matcher's proposals (a small share of videos: an eighth of the mapping cap).
    proposals = VideoMappings(limits, max(1024 * 1024, settings.mappings_max_bytes // 8))
    joined = JoinedMappings(mappings, proposals)
    catalogue = CatalogueReplica(limits) if settings.content_matching else None

    def producer() -> AIOKafkaProducer:
        """Faust's producer: the changelogs' (Faust's recovery reads what it wrote)."""
        return kafka_producer(app)

    # The outputs' own producer and connection (likeflow/engine/outputs.py OutputProducer).
    outputs = router.outputs = OutputProducer(
        **connections.kafka_client_kwargs(settings),
        client_id=f"{settings.app_id}-outputs",
        acks="all",
        # Retries neither duplicate nor reorder a partition's records (count records rely on it).
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=PRODUCER_MAX_BATCH_BYTES,
    )

    async def stop_outputs(app: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent after the consumer waited for every batch in flight: nothing is sent after this.
        await outputs.stop()

    app.on_before_shutdown.connect(stop_outputs)  # type: ignore[arg-type]

    def ceiling() -> int:
        return limits.at(wall_clock_ms()).max_ts

    user_states = ChangelogStore(
        tables.user_state,
        UserStateCodec(ceiling, metrics.clock_repairs.labels("user_state").inc),
        producer,
        max_cached=settings.state_cache_keys,
    )
    erasures = ChangelogStore(tables.erasure_ledger, ErasureLedgerCodec(), producer)
    mapping_waits = ChangelogStore(tables.mapping_waits, WaitingLikeCodec(), producer)
    creator_counts = ChangelogStore(
        tables.creator_counts, CreatorCountsCodec(), producer, max_cached=settings.state_cache_keys
    )
    store = RedisPromptStore(
        redis_client,
        prefix=settings.redis_prefix,
        keep=settings.redis_prompts_keep,
        ttl_s=settings.redis_prompt_ttl_s,
        metrics=metrics,
        max_pending=settings.redis_max_pending,
    )
    audit = WorkerAudit(settings)
    pseudonymize = connections.pseudonymizer(settings)
    retention = RetentionSweeper(
        user_states, settings.user_retention_days * DAY_MS, on_expired=metrics.users_expired.inc
    )
    tracing = LikeTracing.from_settings(settings, settings.topic(LIKES), pseudonymize)
    if tracing is not None:
        _connect_tracing(app, tracing)
    ctx = PipelineContext(
        settings=settings,
        topics=topics,
        tables=tables,
        metrics=metrics,
        dead_letters=DeadLetterSink(
            settings.topic(DEAD_LETTERS),
            # Dead-letter keys are whatever a client sent: a small cache of short keys only.
            KeyPartitioner(settings.partitions, max_keys=10_000, max_cached_bytes=64),
            metrics,
            user_keyed_topics=[settings.topic(name) for name in CO_PARTITIONED_TOPICS],
            pseudonymize=pseudonymize,
            user_field_topics=[settings.topic(name) for name in USER_FIELD_TOPICS],
            max_key_bytes=settings.max_key_bytes,
            max_value_bytes=settings.max_record_bytes,
        ),
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
        video_mappings=joined,
        pseudonymize=pseudonymize,
        pricing=pricing_from(settings),
        retention=retention,
        audit=audit,
        producer=outputs,
        user_states=user_states,
        limits=limits,
        erasures=erasures,
        prompt_ids=prompt_ids_for(pseudonymize),
        mapping_waits=mapping_waits,
        creator_weight=weights,
        catalogue=catalogue,
        tracing=tracing,
    )
    register_agents(app, ctx)
    _register_batch_handlers(app, ctx, router, creator_counts)
    _connect_audit(app, audit)
    metrics.preinitialise(
        [settings.topic(t) for t in CONSUMED_TOPICS], list(BATCH_AGENTS), list(windows.sources)
    )
    monitor = Monitor(
        app,
        connections.kafka_client_kwargs(settings),
        metrics,
        {
            "user_state": user_states,
            "erasure_ledger": erasures,
            "creator_counts": creator_counts,
            "creator_standing": tables.creator_standing.data,
            "mapping_waits": mapping_waits,
        },
        [settings.topic(t) for t in CONSUMED_TOPICS],
    )
    app.timer(MONITOR_INTERVAL_S)(monitor.refresh)

    async def forget_lag(app: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        monitor.forget_revoked(args[0])

    app.on_partitions_revoked.connect(forget_lag)  # type: ignore[arg-type]
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

    async def follow_video_matches() -> None:
        """Keep this worker's replica of the content matcher's proposals current."""
        await proposals.follow(connections.kafka_client_kwargs(settings), settings.topic(VIDEO_MATCHES))

    app.task(follow_creator_weights)
    app.task(follow_video_mappings)
    app.task(follow_video_matches)
    if catalogue is not None:
        follower = catalogue

        async def follow_catalogue() -> None:
            """Keep this worker's catalogue index current (the content matcher's side)."""
            await follower.follow(
                connections.kafka_client_kwargs(settings), settings.topic(PRODUCT_CATALOGUE)
            )

        app.task(follow_catalogue)

    _register_web(app, ctx, weights, mappings, creator_counts)
    return app


def _register_batch_handlers(
    app: faust.App, ctx: PipelineContext, router: BatchRouter, creator_counts: ChangelogStore[Any]
) -> None:
    """The hot topics' batch handlers, their subscriptions, and what a rebalance resets."""
    settings = ctx.settings
    built = build_batch_handlers(ctx, creator_counts)
    handlers = (
        (ctx.topics.likes, built.likes),
        (ctx.topics.prompt_feedback, built.feedback),
        (ctx.topics.creator_events, built.counting),
        (ctx.topics.user_engagement, built.engagement),
        (ctx.topics.user_orders, built.engagement),
    )
    for topic, handler in handlers:
        # Likes waiting for a mapping are decided on their partition's next fetch once due.
        due = built.likes.due_partitions if handler is built.likes else None
        router.register(topic.get_topic_name(), handler, due=due)
        app.topics.add(topic)  # subscribed (and co-partitioned by Faust's assignor) like an agent's
    for store in (ctx.user_states, ctx.erasures, creator_counts, ctx.mapping_waits):
        router.restore(store.changelog_topic, store.apply_changelog)

    async def forget_partitions(app: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent after every batch in flight finished and its offsets were committed: another
        # worker may own these partitions next, and what this one holds in memory is re-read.
        for held in (ctx.user_states, ctx.erasures, creator_counts, ctx.mapping_waits, ctx.retention):
            held.forget()
        for forget in built.forgetters():
            forget()

    app.on_partitions_revoked.connect(forget_partitions)  # type: ignore[arg-type]
    idle = IdleSources(
        ctx,
        lambda: app.consumer if app.consumer else None,
        {settings.topic(LIKES): built.like_sources, settings.topic(PROMPT_FEEDBACK): built.feedback_sources},
    )
    app.timer(IDLE_CHECK_INTERVAL_S)(idle.check)


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


def _connect_tracing(app: faust.App, tracing: LikeTracing) -> None:
    async def stop_tracing(app: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # After the last batch completed: its spans are ended. The export blocks (at most its
        # 10 s timeout), so it runs off the event loop.
        await asyncio.to_thread(tracing.shutdown)

    app.on_before_shutdown.connect(stop_tracing)  # type: ignore[arg-type]


def _register_web(
    app: faust.App,
    ctx: PipelineContext,
    weights: CreatorWeights,
    mappings: VideoMappings,
    creator_counts: ChangelogStore[Any],
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
                    "user_state": len(ctx.user_states),
                    "creator_counts": len(creator_counts),
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

    @app.page("/users/{user_id}/profile")
    async def profile(web: Any, request: Any, user_id: str) -> Any:
        """What the job holds about a user: consent, interest tags, top categories, consumption
        level (`likeflow profile`); 404 naming the partition when another worker holds it."""
        likes = ctx.settings.topic(LIKES)
        assigned = app.consumer.assignment() if app.consumer else set()
        owned = {tp.partition for tp in assigned if tp.topic == likes}
        status, body = user_profile(ctx, user_id, owned, rebalancing=bool(app.rebalancing))
        return web.json(body, status=status)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus text exposition of this worker's metrics."""
        # aiohttp refuses a charset inside content_type; the exposition format is ASCII anyway.
        return web.bytes(generate_latest(ctx.metrics.registry), content_type=PROMETHEUS_TEXT)
