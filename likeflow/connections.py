"""The one place Kafka and Redis clients get their address, TLS and credentials from settings
(and the pseudonymizer its key).

Every aiokafka producer, consumer and admin client is built with `kafka_client_kwargs`, the Faust
app with `faust_broker_credentials`, and every Redis client is `redis_client` (docs/security.md).
Passwords are read here, from the setting or its `_FILE`, when a client is built; they are never
logged, and error messages name the variable, not the value.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio.cluster import RedisCluster

from config import ConfigError, Settings
from config.secrets import read_secret
from likeflow.domain.audit import AuditError
from likeflow.domain.audit_tree import load_signing_key
from likeflow.domain.pseudonym import MIN_KEY_CHARS, Pseudonymizer
from likeflow.errors import LikeflowError

# Script calls in flight at once per store on Redis Cluster (each is one request to its slot's
# node); the cluster client's pool per node is sized for every store at once (redis_client below).
CLUSTER_CONCURRENCY = 64


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS context for the brokers (None for PLAINTEXT): verifies the broker's certificate and
    host name against `kafka_ssl_cafile` (or the system's CAs), TLS 1.2 at least."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def kafka_sasl_password(settings: Settings) -> str:
    """The SASL password from LIKEFLOW_KAFKA_SASL_PASSWORD or the file LIKEFLOW_KAFKA_SASL_PASSWORD_FILE."""
    return read_secret(settings.kafka_sasl_password, settings.kafka_sasl_password_file, "kafka_sasl_password")


def kafka_security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments (`security_protocol`, SASL and `ssl_context`)."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol != "PLAINTEXT":
        kwargs["ssl_context"] = kafka_ssl_context(settings)
    if protocol == "SASL_SSL":
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = kafka_sasl_password(settings)
    return kwargs


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for any aiokafka producer, consumer or admin client: brokers and security."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **kafka_security_kwargs(settings)}


def faust_broker_credentials(settings: Settings) -> Any:
    """`broker_credentials` for `faust.App` (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    # SASLCredentials with an ssl_context is SASL_SSL; its repr shows the user name only.
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=kafka_sasl_password(settings),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def redis_client(settings: Settings) -> aioredis.Redis:
    """A Redis client for `redis_url`: TLS verified against `redis_ssl_cafile` for rediss://,
    and the ACL user `redis_username` with its password when set."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password or settings.redis_password_file:
        kwargs["password"] = read_secret(
            settings.redis_password, settings.redis_password_file, "redis_password"
        )
    if settings.redis_url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = True
        kwargs["ssl_min_version"] = ssl.TLSVersion.TLSv1_2
        if settings.redis_ssl_cafile:
            kwargs["ssl_ca_certs"] = settings.redis_ssl_cafile
    if settings.redis_cluster:
        # The cluster client discovers the other nodes from this one and routes each command
        # by its key's slot; the stores then call each script per slot (docs/redis.md).
        # Pool per node: room for every store's concurrent script calls at once, or a burst
        # after a failover (fewer primaries) fails with MaxConnectionsError.
        pool = 4 * CLUSTER_CONCURRENCY
        return cast(aioredis.Redis, RedisCluster.from_url(settings.redis_url, max_connections=pool, **kwargs))
    client: aioredis.Redis = aioredis.from_url(settings.redis_url, **kwargs)
    return client


# Placeholder texts the docs and manifests ever showed in place of a user key, compared without
# case and anything but letters and digits (deploy/k8s/secret.yaml shipped the first one).
PLACEHOLDER_KEY_TEXTS = ("replaceme", "withatleast32randomcharacters")
# A key with fewer distinct characters than this is no random key ("aaaa…", "abab…").
MIN_KEY_DISTINCT_CHARS = 8
MAKE_A_KEY = (
    'make one with `make secrets` (local), or `python3 -c "import secrets; '
    'print(secrets.token_urlsafe(48))"` and store it in the Secret (docs/deploy.md)'
)


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The user-id pseudonymizer from the configured key (raises ConfigError saying what to set).

    Refuses a key that is a documented placeholder or has too few distinct characters: with a
    guessable key anyone can recompute every pseudonym from user ids (docs/privacy.md).
    """
    key = read_secret(settings.user_key, settings.user_key_file, "user_key", min_length=MIN_KEY_CHARS)
    source = (
        "LIKEFLOW_USER_KEY" if settings.user_key else f"LIKEFLOW_USER_KEY_FILE={settings.user_key_file!r}"
    )
    folded = "".join(c for c in key.lower() if c.isalnum())
    if any(text in folded for text in PLACEHOLDER_KEY_TEXTS):
        raise ConfigError(f"{source} holds the placeholder text of the docs, not a key: {MAKE_A_KEY}")
    if len(set(key)) < MIN_KEY_DISTINCT_CHARS:
        raise ConfigError(
            f"{source} holds a key of fewer than {MIN_KEY_DISTINCT_CHARS} distinct characters, not a "
            f"random key: {MAKE_A_KEY}"
        )
    return Pseudonymizer(key.encode("utf-8"), settings.user_key_version)


def audit_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The Ed25519 key that signs audit checkpoints (raises ConfigError saying what to set)."""
    text = read_secret(settings.audit_signing_key, settings.audit_signing_key_file, "audit_signing_key")
    try:
        return load_signing_key(text)
    except AuditError as exc:
        source = (
            "LIKEFLOW_AUDIT_SIGNING_KEY"
            if settings.audit_signing_key
            else f"LIKEFLOW_AUDIT_SIGNING_KEY_FILE={settings.audit_signing_key_file!r}"
        )
        raise ConfigError(
            f"{source}: {exc}; make one with `make secrets` (local) or "
            '`python3 -c "import secrets; print(secrets.token_hex(32))"`'
        ) from None


class MissingTopic(LikeflowError):
    """A topic a command reads does not exist: create it with `likeflow topics`."""


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of `topic`, sorted, once the consumer's metadata has them (up to ~5 s)."""
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
        await asyncio.sleep(0.1)
    raise MissingTopic(f"topic {topic!r} does not exist")
