"""The reference of every setting: `python -m config.docs` writes docs/settings.md from `Settings`."""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields

from config.settings import ENV_PREFIX, Settings

# Section title -> {field name: what it does and what is allowed}. Names, types and defaults come
# from `Settings` itself; a test fails when a field has no entry here or docs/settings.md is stale.
SETTING_DOCS: dict[str, dict[str, str]] = {
    "Infrastructure": {
        "kafka_bootstrap": "Brokers, `host:port[,host:port]`.",
        "redis_url": "Redis that serves prompts and creator quality: `redis://host:port/db`, "
        "`rediss://` for TLS; never with a password in it.",
        "web_host": "Address of the worker's web server (`/health`, `/ready`, `/metrics`, "
        "`/creators/{id}/quality`, `/users/{id}/profile`). Compose sets `0.0.0.0` inside the container.",
        "web_port": "Port of the worker's web server, 1-65535.",
        "app_id": "Faust app id: the consumer group and the prefix of the changelog topics. "
        "Letters, digits, `.`, `_`, `-`.",
        "topic_prefix": "Prefix of every topic name, so several environments can share a cluster. "
        "Letters, digits, `.`, `_`, `-`.",
        "partitions": "Partitions of every topic the job creates; must equal the partition count of "
        "`likes` (the user-state table is co-partitioned with it; `likeflow topics` checks). >= 1.",
        "replication_factor": "Replicas of every topic the job or Faust creates (inputs, outputs, "
        "changelogs, the audit log); 1-7. 1 for the local single broker, 3 in production. "
        "`likeflow topics` refuses a factor larger than the cluster and reports topics that differ.",
        "min_insync_replicas": "`min.insync.replicas` of those topics: replicas that must have a write "
        "before it is acknowledged (`acks=all`); 1 to the replication factor, 2 with a factor of 3.",
        "store": "Table storage: `memory://` (restored from the changelogs at every start) or "
        "`rocksdict://` (RocksDB on disk per partition; a restart replays only the changelog tail).",
        "data_dir": "Where a worker keeps its RocksDB tables and local state.",
        "log_level": "`debug`, `info`, `warning`, `error` or `critical`.",
        "log_format": "`text` or `json` (one object per line with `ts`, `level`, `logger`, `message` "
        "and `topic`/`partition`/`offset` of the record a line is about; Faust's lines too).",
        "event_loop": "`uvloop` (less per-callback overhead on the hot path) or `asyncio`.",
        "session_timeout_s": "Seconds a worker that stopped heartbeating (crash, kill -9) keeps its "
        "partitions before the group rebalances them; 6-300 (broker limits). With "
        "`LIKEFLOW_INSTANCE_ID`, a worker restarted within it takes them back at once; one that "
        "stops for good (or is scaled down) leaves them idle this long.",
        "instance_id": "This worker's stable identity in the consumer group (static membership, "
        "`group.instance.id`): restarted under it within `LIKEFLOW_SESSION_TIMEOUT_S`, the worker "
        "gets its partitions back at once instead of after the session; empty: a new member at "
        "every start; `@hostname`: the host name (a Compose container's, stable across its "
        "restarts). The k8s manifests use the pod name, Compose and `make run` `@hostname`. A "
        "second live worker with the same identity makes the one it replaced exit with code 78.",
        "standby_replicas": "Standby copies of each table partition kept by other workers (Faust's "
        "standby replicas), 0-3: a worker taking over a partition then has its state already.",
        "stall_timeout_s": "Seconds an input partition may have lag without a committed offset moving "
        "before the worker exits with code 75 for its supervisor to restart it; 0 = off, else >= 10.",
        "shutdown_timeout_s": "SIGTERM: seconds for the graceful stop (batch in hand, commit, flush); "
        "past it the worker exits with code 124. >= 1.",
    },
    "Security (docs/security.md)": {
        "kafka_security_protocol": "`PLAINTEXT` (the local stack), `SASL_SSL` (SCRAM over TLS) or "
        "`SSL` (TLS, optionally mutual). Credentials never travel without TLS.",
        "kafka_sasl_mechanism": "`SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN` (with SASL_SSL only).",
        "kafka_sasl_username": "SASL user; required with SASL_SSL, refused otherwise.",
        "kafka_sasl_password": "SASL password; prefer the `_FILE` variant (never shown in logs).",
        "kafka_sasl_password_file": "File holding the SASL password.",
        "kafka_ssl_cafile": "PEM bundle of the CA that signed the brokers' certificates (empty: the "
        "system's CAs). SSL or SASL_SSL only.",
        "kafka_ssl_certfile": "Client certificate (PEM) for brokers that require mutual TLS; set "
        "together with the key.",
        "kafka_ssl_keyfile": "Client key (PEM) for mutual TLS; set together with the certificate.",
        "redis_username": "Redis ACL user.",
        "redis_password": "Redis password, only over `rediss://`; prefer the `_FILE` variant.",
        "redis_password_file": "File holding the Redis password (`rediss://` only).",
        "redis_ssl_cafile": "PEM bundle of the CA that signed Redis's certificate (`rediss://` only).",
    },
    "Prompts (docs/ranking.md)": {
        "language": "Offer copy language, `zh` or `en`.",
        "repeat_window_hours": "No repeat (user, product) prompt within this event-time window (h). >= 0.",
        "prompts_per_hour": "Prompts per user per clock hour. >= 0.",
        "dedupe_horizon_hours": "How long processed like ids are remembered (h); older likes are "
        "refused as too late. >= 1.",
        "affinity_half_life_hours": "Half-life of a user's category affinity (h). > 0.",
        "evening_peak_start_hour": "Local hour (0-24) the evening boost starts; may be later than the "
        "end hour to wrap past midnight (start = end: no boost).",
        "evening_peak_end_hour": "Local hour (0-24) the evening boost ends (exclusive).",
        "evening_peak_boost": "Score factor inside the evening hours (1 = none). > 0.",
        "tz_offset_minutes": "Audience's local time in minutes east of UTC, -720 to 840 "
        "(China Standard Time = 480).",
    },
    "Creator quality (docs/quality.md)": {
        "quality_window_minutes": "Size of a counting and serving window (min). >= 1.",
        "quality_retention_hours": "How long windows are kept (h, event time); at least one window.",
        "quality_grace_minutes": "How far behind its own input's clock a record may be before its "
        "closed window refuses it as `late` (min). >= 0.",
        "quality_horizon_hours": "Creators are judged over their closed windows of this trailing "
        "span (h); at least one window.",
        "quality_idle_after_s": "An input partition caught up and quiet this long stops holding "
        "windows open until its next record (s). >= 1.",
        "feedback_dedupe_hours": "How long feedback ids are remembered for de-duplication (h). >= 1.",
        "quality_prior_strength": "Weight, in prompts, of the platform average that a creator's rates "
        "are shrunk towards. > 0.",
        "demotion_margin": "A horizon is bad when a rate is this fraction worse than the platform's; "
        "between 0 and 1.",
        "demotion_min_prompts": "Prompts a horizon needs before it is judged. >= 0.",
        "demotion_min_orders": "Conversions (orders + bookings + trials) a horizon needs before its return "
        "and complaint rates count. >= 0.",
        "demote_after_windows": "Consecutive bad judgements before a creator is demoted. >= 1.",
        "recover_after_windows": "Consecutive good judgements before a demoted creator recovers. >= 1.",
        "demoted_min_weight": "Lowest recommendation weight of a demoted creator, in (0, 1]: the "
        "least share of its likes that still get a prompt.",
    },
    "Serving (docs/redis.md)": {
        "redis_prefix": "Prefix of every Redis key; no spaces, braces or glob characters.",
        "redis_cluster": "1: `LIKEFLOW_REDIS_URL` names a node of a Redis Cluster and every store "
        "uses redis-py's cluster client (keys are hash-tagged per user and creator); 0: one node.",
        "redis_prompts_keep": "Prompts kept per user in Redis. >= 1.",
        "redis_prompt_ttl_s": "TTL of a user's prompt list (s). >= 1.",
        "redis_max_pending": "Writes held in memory per store while Redis is unreachable; above it "
        "the agent pauses until Redis answers. >= 0.",
    },
    "Privacy (docs/privacy.md)": {
        "user_key": "The HMAC-SHA256 key that pseudonymises user ids at the edge (>= 32 characters); "
        "prefer the file.",
        "user_key_file": "File holding the key (`make secrets` creates the local one).",
        "user_key_version": "Written into every pseudonym (`v1.`); bump with a new key. 1-999.",
        "audit_signing_key": "The Ed25519 key that signs the audit log's checkpoints: its 32-byte "
        "seed as 64 hex digits, or a PKCS#8 PEM; prefer the file (docs/audit.md).",
        "audit_signing_key_file": "File holding the audit signing key (`make secrets` creates the "
        "local one).",
        "audit_checkpoint_interval_s": "How often each audit writer signs its partitions' tree heads "
        "(s, wall clock; also on shutdown). 0.1-3600.",
        "audit_checkpoint_dir": "Directory every signed checkpoint is also written to, one file each, "
        "for WORM storage; empty: `<data_dir>/audit-checkpoints`.",
        "user_retention_days": "Per-user state is deleted this long after the user's last activity "
        "(days, event time). >= 1.",
        "campaign_discount_pct": "A time-of-day discount for everyone alike, never below a product's "
        "`min_price_cents`; 0-99, 0 = no campaign.",
        "campaign_start_hour": "Local hour (0-24) the campaign starts; may wrap past midnight.",
        "campaign_end_hour": "Local hour (0-24) the campaign ends (exclusive).",
    },
    "Input limits (docs/security.md)": {
        "max_record_bytes": "Larger input records are dead-lettered as `oversized` (their dead letter "
        "keeps this much of the value, with its size and SHA-256). 1024-900000.",
        "max_key_bytes": "Larger record keys are dead-lettered as `oversized`; >= the id limit, 16-4096.",
        "max_id_chars": "Longest id (user, video, creator, product, event, prompt) in characters; 8-1024.",
        "max_title_chars": "Longest product title in characters; 16-4096.",
        "max_products_per_mapping": "Most products one `video-products` record may list; 1-500.",
        "max_clock_skew_s": "A record whose `ts` is more than this ahead of the worker's clock is "
        "dead-lettered as `future_ts`; no event-time clock moves past now + this (s). 1-86400.",
        "max_order_cents": "Largest `amount_cents` of an order or booking on `prompt-feedback`; larger is "
        "dead-lettered as `invalid_value`. 1 to 2^53.",
        "mappings_max_bytes": "Memory one worker's replica of `video-products` may hold (a mapping counts "
        "as its record's bytes + 256 per mapping and per product); the "
        'mapping of a new video beyond it is refused (`likeflow_mapping_updates_total{outcome="refused"}`, '
        "alert at 80%). >= 1 MiB.",
        "mapping_grace_s": "A like whose video has no mapping yet waits this long (wall clock, s) "
        "for one, held in the changelogged `mapping_waits` table, and is decided when it arrives; "
        "after it the like is skipped as `no_mapping`. 0 turns waiting off. 0-600.",
        "mapping_waits_max": "Likes one worker holds waiting for a mapping "
        "(`likeflow_likes_waiting`); beyond it a like of an unmapped video is skipped as "
        '`no_mapping` at once (`likeflow_mapping_waits_total{outcome="refused"}`). >= 1.',
        "rank_by_consumption_level": "Multiply the fit of a product's price to the user's consumption "
        "level (their own orders) into the score ([profile.md](profile.md)). The level comes from "
        "`prompt-feedback` orders, so a decision then depends on when a user's orders reached their "
        "state relative to their likes; off, decisions depend on the likes alone.",
        "content_matching": "Follow `product-catalogue` and propose products for `video-content` "
        "records ([matching.md](matching.md)); costs ~60 MiB per worker (the segmenter). Off: "
        "proposals already on `video-matches` still fill in.",
        "match_min_confidence": "Content matches below this confidence are not proposed (0.4: "
        "precision@1 0.909 on the evaluation set, docs/matching.md). (0, 1].",
        "max_likes_per_user": "Likes remembered per user within the dedupe horizon; more are skipped "
        "as `rate_limited` before the state grows. Checked with the prompt cap and id and title "
        "limits: a user's state must fit one changelog record (900 kB). >= 1.",
        "state_cache_keys": "Decoded user states and counter rows kept in memory per partition; the "
        "rest are decoded from the store again when needed. >= 100.",
        "legacy_prompt_ids_until_ms": "Upgrading from a version with unkeyed prompt ids: feedback "
        "stamped at or before this time (epoch ms) may name a prompt by its old id (a UUIDv5), "
        "unchecked, until the worker's clock passes it; set it to the upgrade time plus a day. 0 = none.",
        "creator_retention_days": "A creator without a closed window for this long (event time) is "
        "forgotten: its standing, Redis documents and `creator-quality` record. >= 1.",
    },
    "Batching": {
        "batch_max": "Records per fetch for the batch handlers, and per batch of the low-volume "
        "agents. >= 1.",
        "batch_within_ms": "How long a low-volume agent's batch may wait to fill (ms). >= 1.",
        "fetch_max_wait_ms": "How long the broker may hold a fetch that finds nothing new (ms): the "
        "worst wait a like adds before the worker sees it. 1-1500.",
        "max_batches_in_flight": "Batches of one topic whose outputs may still be completing while "
        "the next is decided. 1-64.",
    },
    "Tracing (docs/observability.md#tracing)": {
        "tracing": "OpenTelemetry spans of the like handler's decisions (`like` with `decode`, `join`, "
        "`decide`, `outputs`) and a `traceparent` header on the prompt and dead letter of every "
        "traced like. A like is traced when its own `traceparent` header is sampled (one that is "
        "not sampled is not traced: the upstream decision stands), or, without one, with the "
        "probability `LIKEFLOW_TRACE_SAMPLE_RATIO`. Off: no span and no header (one check per batch).",
        "trace_sample_ratio": "Share of the likes without a `traceparent` header that start a trace, "
        "0-1 (0: only likes whose header is sampled; the cost of 0.01 and 1: docs/observability.md). "
        "Only with `LIKEFLOW_TRACING=true`.",
        "otlp_endpoint": "Where spans are exported, OTLP over HTTP (protobuf), e.g. "
        "`http://collector:4318/v1/traces`; batched and sent off the hot path by the SDK's "
        "`BatchSpanProcessor`. Empty: spans are recorded and their context propagated, but not exported.",
    },
}

_SECRETS = {"kafka_sasl_password", "redis_password", "user_key", "audit_signing_key"}


def render() -> str:
    """docs/settings.md as Markdown: one table per section, in the order of `SETTING_DOCS`."""
    defaults = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
    types = {f.name: str(f.type) for f in fields(Settings)}
    lines = [
        "# Settings",
        "",
        "<!-- Generated by `make docs` (python -m config.docs) from config/settings.py and",
        "     config/docs.py; edit those, not this file. -->",
        "",
        "Every setting is an environment variable `LIKEFLOW_<NAME>`, read only by `config/`. A value",
        "that cannot work stops the command with the variable's name and what is allowed (exit 2);",
        "an unknown `LIKEFLOW_*` name is reported as a warning with the closest setting.",
    ]
    for section, docs in SETTING_DOCS.items():
        lines += ["", f"## {section}", "", "| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        for name, text in docs.items():
            default = defaults[name]
            shown = "(secret)" if name in _SECRETS else (f"`{default}`" if default != "" else "empty")
            lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {types[name]} | {shown} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
