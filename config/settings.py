"""Typed, validated settings built from `LIKEFLOW_*` environment variables."""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from likeflow.errors import EXIT_USAGE, LikeflowError

ENV_PREFIX = "LIKEFLOW_"
# A user's state is one record of the `user_state` changelog: it must stay below the brokers'
# default record limit (message.max.bytes, 1 MiB) with room for the batch's overhead.
MAX_STATE_RECORD_BYTES = 900_000

T = TypeVar("T")


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
STORES = ("memory://", "rocksdict://")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Kafka's legal characters for topic names and group ids.
KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]+")
# LIKEFLOW_INSTANCE_ID=@hostname: the worker's identity is its host name (Compose, `make run`).
HOSTNAME_IDENTITY = "@hostname"


class ConfigError(LikeflowError, ValueError):
    """A `LIKEFLOW_*` variable is set to a value likeflow cannot use; the message names it."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the job; the environment variable is `LIKEFLOW_` + the field name upper-cased."""

    # --- infrastructure ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    app_id: str = "likeflow"
    # Prefix for every topic name, so several environments can share a cluster.
    topic_prefix: str = ""
    # Partition count of every topic the job creates, and of `likes`: the user_state table is
    # co-partitioned with `likes` (Faust assigns the same partition numbers to one worker).
    partitions: int = 4
    # Replicas of every topic the job or Faust creates (inputs, outputs, changelogs, the audit
    # log), and the replicas that must have a write before acks=all succeeds. 1 for the
    # single-broker local stack; production: 3 and 2, so one broker's loss loses nothing.
    replication_factor: int = 1
    min_insync_replicas: int = 1
    # Where a worker keeps its tables: "memory://" (restored from the changelogs at every start)
    # or "rocksdict://" (on disk under `data_dir`, RocksDB via rocksdict; a restart replays only
    # the changelog records written since).
    store: str = "memory://"
    data_dir: str = ".run/worker-data"
    log_level: str = "info"
    # "text" (human-readable) or "json" (one object per line, Faust's own lines included).
    log_format: str = "text"
    # "uvloop" (libuv event loop: less per-callback overhead on the hot path) or "asyncio".
    event_loop: str = "uvloop"
    # A worker that stops heartbeating (crash, kill -9, long GC) keeps its partitions this long
    # before the group coordinator rebalances them to the others (Kafka's default is 45 s).
    session_timeout_s: float = 45.0
    # This worker's stable identity in the consumer group (Kafka static membership,
    # `group.instance.id`): restarted under the same identity within the session timeout, a
    # worker gets its partitions back at once, without a rebalance. Empty: a new member at every
    # start. The manifests set it to the pod or container name; never share one between workers.
    instance_id: str = ""
    # Standby copies of each table partition on other workers (Faust's standby replicas): a
    # worker that takes over a partition then has its state already (docs/deploy.md).
    standby_replicas: int = 1
    # A worker whose input partitions have lag but whose committed offsets have not moved for this
    # long (outside rebalances and recovery) exits with code 75 so that its supervisor restarts
    # it (likeflow/worker/watchdog.py). 0 turns the watchdog off. Generous on purpose: under a large
    # backlog one agent's partitions can go a minute or more without a commit while the worker
    # works, and restarting then only adds a recovery.
    stall_timeout_s: float = 300.0
    # SIGTERM: the worker finishes the batch in hand, commits and flushes, and exits within this
    # bound; past it, it exits at once with code 124 (uncommitted records are redelivered).
    shutdown_timeout_s: float = 30.0

    # --- security (docs/security.md) ---
    # "PLAINTEXT" (the local stack), "SASL_SSL" (SCRAM over TLS) or "SSL" (TLS, optionally with
    # a client certificate). Credentials never travel without TLS, so there is no SASL_PLAINTEXT.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_sasl_password_file: str = ""
    # PEM bundle of the CA that signed the brokers' certificates (empty: the system's CAs).
    kafka_ssl_cafile: str = ""
    # Client certificate and key (PEM) for brokers that require mutual TLS; both or neither.
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # TLS to Redis is a `rediss://` LIKEFLOW_REDIS_URL; the ACL user and password are separate
    # settings (a password inside the URL would be shown wherever the URL is).
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    redis_password_file: str = ""
    redis_ssl_cafile: str = ""

    # --- prompts ---
    language: str = "zh"
    repeat_window_hours: int = 24
    prompts_per_hour: int = 3
    dedupe_horizon_hours: int = 24
    affinity_half_life_hours: float = 168.0
    evening_peak_start_hour: int = 19
    evening_peak_end_hour: int = 23
    evening_peak_boost: float = 1.25
    # Local time of the audience, in minutes east of UTC (China Standard Time = 480).
    tz_offset_minutes: int = 480

    # --- creator quality (docs/quality.md) ---
    quality_window_minutes: int = 60
    quality_retention_hours: int = 168
    quality_grace_minutes: int = 60
    # Creators are judged on their closed windows of this trailing span (docs/quality.md).
    quality_horizon_hours: int = 168
    # An input partition of the counters that is caught up and has received nothing for this
    # long stops holding windows open until its next record (docs/quality.md, idle sources).
    quality_idle_after_s: float = 60.0
    feedback_dedupe_hours: int = 24
    quality_prior_strength: float = 20.0
    demotion_margin: float = 0.2
    demotion_min_prompts: int = 50
    demotion_min_orders: int = 20
    demote_after_windows: int = 3
    recover_after_windows: int = 3
    demoted_min_weight: float = 0.2

    # --- serving ---
    redis_prefix: str = "likeflow"
    # 1: LIKEFLOW_REDIS_URL is a node of a Redis Cluster; every store uses the cluster client
    # (keys carry hash tags so each script's keys share a slot; docs/redis.md).
    redis_cluster: int = 0
    redis_prompts_keep: int = 10
    redis_prompt_ttl_s: int = 86_400
    # While Redis is unreachable a worker holds up to this many writes per store in memory and
    # keeps consuming; above it the agent pauses until Redis answers (docs/redis.md).
    redis_max_pending: int = 100_000

    # --- privacy (docs/privacy.md) ---
    # The HMAC-SHA256 key that turns user ids into pseudonyms at the edge: LIKEFLOW_USER_KEY, or
    # a file named by LIKEFLOW_USER_KEY_FILE (`make secrets` creates a local one).
    user_key: str = field(default="", repr=False)
    user_key_file: str = ".run/secrets/user-key"
    # Written into every pseudonym ("v1." + hex); bump it together with a new key.
    user_key_version: int = 1
    # The Ed25519 key that signs the audit log's checkpoints (docs/audit.md): its 32-byte seed
    # as 64 hex digits (or a PKCS#8 PEM), LIKEFLOW_AUDIT_SIGNING_KEY or a file named by
    # LIKEFLOW_AUDIT_SIGNING_KEY_FILE (`make secrets` creates a local one). Auditors get the
    # public key (`likeflow audit public-key`).
    audit_signing_key: str = field(default="", repr=False)
    audit_signing_key_file: str = ".run/secrets/audit-signing-key"
    # Each audit writer signs its partitions' tree heads this often (wall clock, s), and on shutdown.
    audit_checkpoint_interval_s: float = 10.0
    # Every signed checkpoint is also written here as a file, for shipping to WORM storage;
    # empty: `<data_dir>/audit-checkpoints`.
    audit_checkpoint_dir: str = ""
    # Per-user state is dropped this long (event time) after the user's last activity.
    user_retention_days: int = 30
    # Time-of-day campaign: the same discount for everyone in [start, end) local hours,
    # never below a product's merchant floor (`min_price_cents`). 0 = no campaign.
    campaign_discount_pct: int = 0
    campaign_start_hour: int = 0
    campaign_end_hour: int = 0

    # --- input limits (docs/security.md, threat model) ---
    max_record_bytes: int = 65_536
    # Record keys longer than this are dead-lettered (a 128-character id is at most 512 bytes).
    max_key_bytes: int = 512
    max_id_chars: int = 128
    max_title_chars: int = 256
    max_products_per_mapping: int = 50
    # A record stamped more than this ahead of the worker's clock is dead-lettered (`future_ts`),
    # and no event-time clock (retention, counter sources, mapping versions) moves past now + it.
    max_clock_skew_s: float = 300.0
    # The largest `amount_cents` of an order on `prompt-feedback` (default ¥100,000).
    max_order_cents: int = 10_000_000
    # Memory (bytes, estimated) one worker's replica of `video-products` may hold; a mapping of a
    # new video beyond it is refused (counted, alerted at 80%).
    mappings_max_bytes: int = 256 * 1024 * 1024
    # A like whose video has no mapping yet waits this long (wall clock, s) for one, in a
    # changelogged table, before it is skipped as `no_mapping` (docs/joins.md). 0: no waiting.
    mapping_grace_s: float = 5.0
    # Likes one worker holds waiting for a mapping; beyond it a like is skipped at once.
    mapping_waits_max: int = 100_000
    # Content matching (docs/matching.md): follow `product-catalogue` and propose products for
    # `video-content` records (the segmenter costs ~60 MiB per worker). Off: proposals already on
    # `video-matches` still fill in.
    content_matching: bool = True
    # Rank products by the user's consumption level (docs/profile.md). Off: decisions depend on
    # the likes alone (a replay of likes decides exactly as the live run did).
    rank_by_consumption_level: bool = True
    # A content match below this confidence is not proposed (docs/matching.md: 0.4, chosen on the
    # evaluation set's development half).
    match_min_confidence: float = 0.4
    # Likes remembered per user within the dedupe horizon: more are skipped as `rate_limited`
    # before the user's state grows (bounds a user's changelog record).
    max_likes_per_user: int = 5_000
    # Decoded user states and counter rows kept per partition in memory (the rest are decoded
    # again from the store when needed).
    state_cache_keys: int = 100_000
    # Upgrade from a version before keyed prompt ids: feedback stamped at or before this time
    # (epoch ms) may name a prompt by its old, unkeyed id (a UUIDv5). 0: none is accepted.
    legacy_prompt_ids_until_ms: int = 0
    # A creator without a closed window for this long (event time) is forgotten: standing row,
    # Redis documents and its `creator-quality` record (a tombstone).
    creator_retention_days: int = 30

    # --- batching ---
    # Records per fetch (all partitions together) for the batch handlers, and per batch of the
    # low-volume agents.
    batch_max: int = 2000
    batch_within_ms: int = 10
    # How long the broker may hold a fetch that finds no new records (ms): the worst wait a
    # like can add before the worker sees it.
    fetch_max_wait_ms: int = 20
    # Batches of one topic whose outputs may be in flight while the next batch is processed.
    max_batches_in_flight: int = 32

    # --- tracing (docs/observability.md#tracing) ---
    # On: the like handler records OpenTelemetry spans for the likes whose `traceparent` header
    # is sampled, and for `trace_sample_ratio` of the others, and puts the like's trace context
    # on its prompt and dead letter. Off: no span, no header, one attribute check per batch.
    tracing: bool = False
    trace_sample_ratio: float = 0.0
    # OTLP/HTTP (protobuf) traces endpoint, e.g. http://collector:4318/v1/traces; empty: spans
    # are recorded and their context propagated, but exported nowhere.
    otlp_endpoint: str = ""

    def topic(self, name: str) -> str:
        """Full topic name for a contract name such as `likes`."""
        return f"{self.topic_prefix}{name}"

    def topic_configs(self, configs: Mapping[str, str] | None = None) -> dict[str, str]:
        """`configs` plus the durability every topic of the job gets (`min.insync.replicas`)."""
        return {**(configs or {}), "min.insync.replicas": str(self.min_insync_replicas)}

    @property
    def faust_store(self) -> str:
        """The Faust store URL of `store` (Faust's RocksDB store runs on rocksdict when installed)."""
        return "rocksdb://" if self.store == "rocksdict://" else self.store

    @property
    def kafka_urls(self) -> list[str]:
        """Broker list in Faust's `kafka://host:port` form."""
        return [f"kafka://{h.strip()}" for h in self.kafka_bootstrap.split(",") if h.strip()]

    def to_env(self) -> dict[str, str]:
        """These settings as `LIKEFLOW_*` variables (to start a worker process with them)."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def __post_init__(self) -> None:
        for spec in fields(self):
            if spec.type == "float":
                _check(math.isfinite(getattr(self, spec.name)), spec.name.upper(), "must be a finite number")
        _check(self.partitions >= 1, "PARTITIONS", "must be at least 1")
        _check(1 <= self.replication_factor <= 7, "REPLICATION_FACTOR", "must be 1-7 (3 in production)")
        _check(
            1 <= self.min_insync_replicas <= self.replication_factor,
            "MIN_INSYNC_REPLICAS",
            "must be 1 to LIKEFLOW_REPLICATION_FACTOR (2 with a factor of 3: one broker may be down)",
        )
        _check(self.log_level.lower() in LOG_LEVELS, "LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}")
        _check(self.log_format in ("text", "json"), "LOG_FORMAT", "must be 'text' or 'json'")
        _check(
            bool(KAFKA_NAME.fullmatch(self.app_id)),
            "APP_ID",
            "must be letters, digits, '.', '_' or '-' (it names the consumer group and changelog topics)",
        )
        _check(
            not self.instance_id
            or (len(self.instance_id) <= 200 and bool(KAFKA_NAME.fullmatch(self.instance_id))),
            "INSTANCE_ID",
            "must be empty or up to 200 letters, digits, '.', '_' or '-' (e.g. the pod name)",
        )
        _check(
            not self.topic_prefix or bool(KAFKA_NAME.fullmatch(self.topic_prefix)),
            "TOPIC_PREFIX",
            "must be letters, digits, '.', '_' or '-' (Kafka topic names)",
        )
        _check(
            bool(self.redis_prefix) and not set(self.redis_prefix) & set("{} \t\n*?[]"),
            "REDIS_PREFIX",
            "must be non-empty, without spaces, braces (Redis Cluster hash tags) or glob characters",
        )
        _check(bool(self.data_dir), "DATA_DIR", "must name a directory")
        _check(self.store in STORES, "STORE", f"must be one of {', '.join(STORES)}")
        _check(6 <= self.session_timeout_s <= 300, "SESSION_TIMEOUT_S", "must be 6-300 s (broker limits)")
        _check(
            self.stall_timeout_s == 0 or self.stall_timeout_s >= 10,
            "STALL_TIMEOUT_S",
            "must be 0 (off) or >= 10 s (offsets are sampled every 5 s)",
        )
        _check(self.shutdown_timeout_s >= 1, "SHUTDOWN_TIMEOUT_S", "must be >= 1 s")
        _check(0 <= self.standby_replicas <= 3, "STANDBY_REPLICAS", "must be 0-3")
        _check(1 <= self.web_port <= 65535, "WEB_PORT", "must be a TCP port (1-65535)")
        self._check_security()
        _check(self.language in ("zh", "en"), "LANGUAGE", "must be 'zh' or 'en'")
        _check(self.event_loop in ("uvloop", "asyncio"), "EVENT_LOOP", "must be 'uvloop' or 'asyncio'")
        _check(self.prompts_per_hour >= 0, "PROMPTS_PER_HOUR", "must be >= 0")
        _check(self.repeat_window_hours >= 0, "REPEAT_WINDOW_HOURS", "must be >= 0")
        _check(self.dedupe_horizon_hours >= 1, "DEDUPE_HORIZON_HOURS", "must be >= 1")
        _check(self.affinity_half_life_hours > 0, "AFFINITY_HALF_LIFE_HOURS", "must be > 0")
        for name in ("evening_peak_start_hour", "evening_peak_end_hour"):
            _check(0 <= getattr(self, name) <= 24, name.upper(), "must be an hour 0-24")
        _check(self.evening_peak_boost > 0, "EVENING_PEAK_BOOST", "must be > 0 (1 = no boost)")
        _check(
            -720 <= self.tz_offset_minutes <= 840,
            "TZ_OFFSET_MINUTES",
            "must be a UTC offset in minutes, -720 (UTC-12) to 840 (UTC+14); China is 480",
        )
        _check(self.quality_prior_strength > 0, "QUALITY_PRIOR_STRENGTH", "must be > 0 (prompts of weight)")
        _check(self.demotion_min_prompts >= 0, "DEMOTION_MIN_PROMPTS", "must be >= 0")
        _check(self.demotion_min_orders >= 0, "DEMOTION_MIN_ORDERS", "must be >= 0")
        _check(self.quality_window_minutes >= 1, "QUALITY_WINDOW_MINUTES", "must be >= 1")
        _check(
            self.quality_retention_hours * 60 >= self.quality_window_minutes,
            "QUALITY_RETENTION_HOURS",
            "must cover at least one window",
        )
        _check(self.quality_grace_minutes >= 0, "QUALITY_GRACE_MINUTES", "must be >= 0")
        _check(
            self.quality_horizon_hours * 60 >= self.quality_window_minutes,
            "QUALITY_HORIZON_HOURS",
            "must cover at least one window",
        )
        _check(self.quality_idle_after_s >= 1, "QUALITY_IDLE_AFTER_S", "must be >= 1 s")
        _check(self.feedback_dedupe_hours >= 1, "FEEDBACK_DEDUPE_HOURS", "must be >= 1")
        _check(0 < self.demotion_margin < 1, "DEMOTION_MARGIN", "must be between 0 and 1")
        _check(0 < self.demoted_min_weight <= 1, "DEMOTED_MIN_WEIGHT", "must be in (0, 1]")
        _check(self.demote_after_windows >= 1, "DEMOTE_AFTER_WINDOWS", "must be >= 1")
        _check(self.recover_after_windows >= 1, "RECOVER_AFTER_WINDOWS", "must be >= 1")
        _check(self.redis_cluster in (0, 1), "REDIS_CLUSTER", "must be 0 (one node) or 1 (Redis Cluster)")
        _check(self.redis_prompts_keep >= 1, "REDIS_PROMPTS_KEEP", "must be >= 1")
        _check(self.redis_max_pending >= 0, "REDIS_MAX_PENDING", "must be >= 0")
        _check(self.redis_prompt_ttl_s >= 1, "REDIS_PROMPT_TTL_S", "must be >= 1 second")
        _check(1 <= self.user_key_version <= 999, "USER_KEY_VERSION", "must be 1-999")
        _check(
            0.1 <= self.audit_checkpoint_interval_s <= 3600, "AUDIT_CHECKPOINT_INTERVAL_S", "must be 0.1-3600"
        )
        _check(self.user_retention_days >= 1, "USER_RETENTION_DAYS", "must be >= 1")
        _check(0 <= self.campaign_discount_pct < 100, "CAMPAIGN_DISCOUNT_PCT", "must be 0-99")
        for name in ("campaign_start_hour", "campaign_end_hour"):
            _check(0 <= getattr(self, name) <= 24, name.upper(), "must be an hour 0-24")
        self._check_limits()
        _check(self.batch_max >= 1, "BATCH_MAX", "must be >= 1")
        _check(self.batch_within_ms >= 1, "BATCH_WITHIN_MS", "must be >= 1 ms")
        _check(1 <= self.fetch_max_wait_ms <= 1500, "FETCH_MAX_WAIT_MS", "must be 1-1500 ms")
        _check(1 <= self.max_batches_in_flight <= 64, "MAX_BATCHES_IN_FLIGHT", "must be 1-64")
        _check(bool(self.kafka_urls), "KAFKA_BOOTSTRAP", "must list at least one host:port")
        self._check_tracing()

    def _check_tracing(self) -> None:
        _check(0 <= self.trace_sample_ratio <= 1, "TRACE_SAMPLE_RATIO", "must be 0-1 (0.01: one like in 100)")
        _check(
            self.tracing or self.trace_sample_ratio == 0,
            "TRACE_SAMPLE_RATIO",
            "is only used with LIKEFLOW_TRACING=true (tracing is off)",
        )
        _check(
            not self.otlp_endpoint or self.otlp_endpoint.startswith(("http://", "https://")),
            "OTLP_ENDPOINT",
            "must be empty or an http:// or https:// URL (OTLP/HTTP, e.g. http://collector:4318/v1/traces)",
        )

    def _check_limits(self) -> None:
        # Dead letters carry the original value (at most this), its key and headers plus ~1.5 KiB
        # of likeflow.dlq.* headers: they must stay under the brokers' 1 MiB record limit.
        _check(1024 <= self.max_record_bytes <= 900_000, "MAX_RECORD_BYTES", "must be 1024-900000")
        _check(16 <= self.max_key_bytes <= 4096, "MAX_KEY_BYTES", "must be 16-4096")
        _check(8 <= self.max_id_chars <= 1024, "MAX_ID_CHARS", "must be 8-1024")
        _check(
            self.max_key_bytes >= 4 * self.max_id_chars,
            "MAX_KEY_BYTES",
            "must be >= 4 x LIKEFLOW_MAX_ID_CHARS (a user id of that many characters, in UTF-8)",
        )
        _check(16 <= self.max_title_chars <= 4096, "MAX_TITLE_CHARS", "must be 16-4096")
        _check(1 <= self.max_products_per_mapping <= 500, "MAX_PRODUCTS_PER_MAPPING", "must be 1-500")
        _check(1 <= self.max_clock_skew_s <= 86_400, "MAX_CLOCK_SKEW_S", "must be 1-86400 s")
        _check(1 <= self.max_order_cents <= 2**53, "MAX_ORDER_CENTS", "must be 1 to 2^53")
        _check(self.mappings_max_bytes >= 1024 * 1024, "MAPPINGS_MAX_BYTES", "must be >= 1 MiB")
        _check(0 <= self.mapping_grace_s <= 600, "MAPPING_GRACE_S", "must be 0-600 s")
        _check(self.mapping_waits_max >= 1, "MAPPING_WAITS_MAX", "must be >= 1")
        _check(0 < self.match_min_confidence <= 1, "MATCH_MIN_CONFIDENCE", "must be in (0, 1]")
        _check(self.max_likes_per_user >= 1, "MAX_LIKES_PER_USER", "must be >= 1")
        _check(self.state_cache_keys >= 100, "STATE_CACHE_KEYS", "must be >= 100")
        _check(
            self.creator_retention_days * 24 >= self.quality_horizon_hours,
            "CREATOR_RETENTION_DAYS",
            "must cover LIKEFLOW_QUALITY_HORIZON_HOURS (a creator is judged over that span)",
        )
        _check(self.legacy_prompt_ids_until_ms >= 0, "LEGACY_PROMPT_IDS_UNTIL_MS", "must be epoch ms or 0")
        worst = self.user_state_worst_bytes
        _check(
            worst <= MAX_STATE_RECORD_BYTES,
            "MAX_LIKES_PER_USER",
            f"with LIKEFLOW_PROMPTS_PER_HOUR, LIKEFLOW_MAX_ID_CHARS and LIKEFLOW_MAX_TITLE_CHARS allows a "
            f"user state of {worst} bytes, above the {MAX_STATE_RECORD_BYTES}-byte changelog record limit: "
            "lower them",
        )

    @property
    def user_state_worst_bytes(self) -> int:
        """The largest changelog record one user's state can need under these settings (bytes).

        `seen` holds at most `max_likes_per_user` entries of at most 60 bytes (an ASCII id of up to
        40 characters or a 25-character digest, and its ts); `sent` at most `prompts_per_hour`
        prompts per clock hour of the guard horizon plus one, each at most a prompt whose six ids
        and title (twice: its copy repeats it) take 4 bytes a character (UTF-8: orjson escapes
        nothing but quotes and backslashes, and ids and titles hold no control character); the
        profile at most 32 categories of 64 characters.
        """
        horizon_hours = max(self.repeat_window_hours, self.dedupe_horizon_hours, 1) + 1
        prompt = 4 * (6 * self.max_id_chars + 2 * self.max_title_chars) + 600
        profile = 32 * (4 * 64 + 40)
        return 256 + 60 * self.max_likes_per_user + self.prompts_per_hour * horizon_hours * prompt + profile

    def _check_security(self) -> None:
        protocol = self.kafka_security_protocol
        _check(
            protocol in KAFKA_SECURITY_PROTOCOLS,
            "KAFKA_SECURITY_PROTOCOL",
            f"must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)} (credentials only travel over TLS)",
        )
        _check(
            self.kafka_sasl_mechanism in KAFKA_SASL_MECHANISMS,
            "KAFKA_SASL_MECHANISM",
            f"must be one of {', '.join(KAFKA_SASL_MECHANISMS)}",
        )
        has_password = bool(self.kafka_sasl_password or self.kafka_sasl_password_file)
        if protocol == "SASL_SSL":
            _check(bool(self.kafka_sasl_username), "KAFKA_SASL_USERNAME", "must be set for SASL_SSL")
            _check(
                has_password,
                "KAFKA_SASL_PASSWORD_FILE",
                "(or LIKEFLOW_KAFKA_SASL_PASSWORD) must be set for SASL_SSL",
            )
        else:
            _check(
                not (self.kafka_sasl_username or has_password),
                "KAFKA_SASL_USERNAME",
                f"and the SASL password are only used with LIKEFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
                f"(it is {protocol})",
            )
        if protocol == "PLAINTEXT":
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                _check(
                    not getattr(self, name),
                    name.upper(),
                    "is only used with LIKEFLOW_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL (it is PLAINTEXT)",
                )
        _check(
            bool(self.kafka_ssl_certfile) == bool(self.kafka_ssl_keyfile),
            "KAFKA_SSL_CERTFILE",
            "and LIKEFLOW_KAFKA_SSL_KEYFILE must be set together",
        )
        scheme, _, rest = self.redis_url.partition("://")
        _check(
            scheme in ("redis", "rediss") and bool(rest),
            "REDIS_URL",
            "must be redis://host:port/db or rediss://host:port/db (TLS)",
        )
        userinfo = rest.split("/", 1)[0].rpartition("@")[0]
        _check(
            ":" not in userinfo,
            "REDIS_URL",
            "must not contain a password: use LIKEFLOW_REDIS_PASSWORD_FILE (or LIKEFLOW_REDIS_PASSWORD)",
        )
        if scheme == "redis":
            _check(
                not (self.redis_password or self.redis_password_file),
                "REDIS_PASSWORD",
                "is only sent over TLS: make LIKEFLOW_REDIS_URL rediss://",
            )
            _check(
                not self.redis_ssl_cafile,
                "REDIS_SSL_CAFILE",
                "is only used with a rediss:// LIKEFLOW_REDIS_URL",
            )


def _check(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{ENV_PREFIX}{name} {rule}")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _bool,
}


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The process environment plus `overrides`: for starting a worker as a child process."""
    return {**os.environ, **overrides}


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each `LIKEFLOW_*` variable that is not a setting (a typo is otherwise
    silently ignored), with the closest setting's name when there is one."""
    env = os.environ if environ is None else environ
    known = [f.name.upper() for f in fields(Settings)]
    out = []
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX) and v[len(ENV_PREFIX) :] not in known):
        # Compare without the shared prefix, or every name would look alike.
        close = difflib.get_close_matches(var[len(ENV_PREFIX) :], known, n=1)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else " (docs/settings.md lists them)"
        out.append(f"{var} is not a likeflow setting and is ignored{hint}")
    return out


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from `environ` (default: the process environment), then `overrides`.

    Raises ConfigError naming the variable when a value does not parse or breaks a rule.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in fields(Settings):
        var = ENV_PREFIX + spec.name.upper()
        if var not in env:
            continue
        parse = _PARSERS[str(spec.type)]
        try:
            values[spec.name] = parse(env[var])
        except ValueError as exc:
            raise ConfigError(f"{var}={env[var]!r} is not a valid {spec.type}: {exc}") from exc
    values.update(overrides)
    if values.get("instance_id") == HOSTNAME_IDENTITY:
        # The container's or machine's host name: stable across restarts of one Compose
        # container (or one machine), different between the replicas of a scaled service.
        values["instance_id"] = socket.gethostname()
    return Settings(**values)
