"""Kafka over SASL_SSL (SCRAM-SHA-512) and Redis over TLS with an ACL user, all from settings.

Runs on a second broker and Redis that accept nothing else (tests/integration/secure_stack.py),
with a CA made here: topics are created, a worker turns a like into a prompt on Kafka and in
Redis, plaintext clients, wrong passwords and an untrusted CA are refused, and no secret shows
in the worker's log or the command's help and error output.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from config import Settings, load_settings
from likeflow.connections import kafka_client_kwargs, redis_client
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.integration.harness import WorkerProcess, free_port, produce, read_topic_until, run_cli
from tests.integration.secure_stack import USER, SecureStack, SecureStackUnavailable, start_secure_stack
from tests.integration.test_pipeline import item, like, video


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    try:
        stack = start_secure_stack(tmp_path_factory.mktemp("secure-stack"))
    except SecureStackUnavailable as exc:
        pytest.fail(str(exc))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def secure_settings(secure_stack: SecureStack, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The job's settings for the secured stack; the Kafka password from a file, Redis's from env."""
    secret_dir = tmp_path_factory.mktemp("secrets")
    kafka_password_file = secret_dir / "kafka-password"
    kafka_password_file.write_text(secure_stack.kafka_password + "\n")
    kafka_password_file.chmod(0o600)
    ns = f"it-sec-{uuid.uuid4().hex[:8]}"
    return load_settings(
        {},
        kafka_bootstrap=secure_stack.kafka_bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password_file=str(kafka_password_file),
        kafka_ssl_cafile=str(secure_stack.certs.ca),
        redis_url=secure_stack.redis_url,
        redis_username=USER,
        redis_password=secure_stack.redis_password,
        redis_ssl_cafile=str(secure_stack.certs.ca),
        topic_prefix=f"{ns}.",
        app_id=f"likeflow-{ns}",
        redis_prefix=f"likeflow-{ns}",
        web_port=free_port(),
        data_dir=str(tmp_path_factory.mktemp("secure-worker-data")),
        session_timeout_s=8.0,
        user_key=secrets.token_urlsafe(48),
    )


def secret_values(stack: SecureStack, settings: Settings) -> list[str]:
    return [stack.kafka_password, stack.redis_password, stack.certs.keystore_password, settings.user_key]


async def test_a_like_becomes_a_prompt_over_sasl_ssl_and_tls_redis(
    secure_stack: SecureStack, secure_settings: Settings, tmp_path: Path
) -> None:
    settings = secure_settings
    counts = await ensure_topics(settings)
    assert counts[settings.topic(LIKES)] == settings.partitions

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [video("sv1", [item("sp1")])])
        await produce(settings, settings.topic(LIKES), [like("SL1", "su1", "sv1", 1)])
        records = await read_topic_until(
            settings, settings.topic(ORDER_PROMPTS), lambda rs: len(rs) >= 1, 60, "the prompt"
        )
        assert len(records) == 1 and records[0].value is not None
        prompt = orjson.loads(records[0].value)
        assert (prompt["video_id"], prompt["product_id"]) == ("sv1", "sp1")

        client = redis_client(settings)
        try:
            keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:v2:prompts:*")]
            assert len(keys) == 1
            assert await client.zrange(keys[0], 0, -1) == [records[0].value]
        finally:
            await client.aclose()
        assert worker.alive()
    finally:
        worker.stop()

    log = worker.log_path.read_text(errors="replace")
    assert "Worker ready" in log
    for secret in secret_values(secure_stack, settings):
        assert secret not in log


async def test_cli_with_the_password_in_env_and_help_show_no_secret(
    secure_stack: SecureStack, secure_settings: Settings
) -> None:
    # The Kafka password as an env value this time, not a file.
    settings = dataclasses.replace(
        secure_settings, kafka_sasl_password=secure_stack.kafka_password, kafka_sasl_password_file=""
    )
    topics = await run_cli(settings, "topics")
    assert topics.returncode == 0, topics.stderr
    assert settings.topic(LIKES).encode() in topics.stdout
    outputs = [topics.stdout, topics.stderr]
    for args in (["--help"], ["worker", "--help"], ["topics", "--help"]):
        result = await run_cli(settings, *args)
        assert result.returncode == 0
        outputs += [result.stdout, result.stderr]
    for output in outputs:
        for secret in secret_values(secure_stack, settings):
            assert secret.encode() not in output


async def test_wrong_kafka_password_is_refused_and_not_shown(secure_settings: Settings) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    settings = dataclasses.replace(secure_settings, kafka_sasl_password=wrong, kafka_sasl_password_file="")
    result = await run_cli(settings, "topics", timeout_s=120)
    assert result.returncode == 1
    assert b"Authentication failed" in result.stderr  # aiokafka's log line
    assert b"refused topic setup" in result.stderr and b"Traceback" not in result.stderr
    assert wrong.encode() not in result.stderr + result.stdout


async def test_missing_password_file_is_a_configuration_error(
    secure_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(secure_settings, kafka_sasl_password_file=str(tmp_path / "absent"))
    result = await run_cli(settings, "topics")
    assert result.returncode == 2
    assert b"LIKEFLOW_KAFKA_SASL_PASSWORD_FILE=" in result.stderr


@pytest.mark.parametrize("client", ["plaintext", "untrusted CA"])
async def test_kafka_refuses_plaintext_and_an_untrusted_ca(
    secure_settings: Settings, secure_stack: SecureStack, client: str
) -> None:
    if client == "plaintext":
        kwargs = {"bootstrap_servers": secure_stack.kafka_bootstrap, "security_protocol": "PLAINTEXT"}
    else:
        # The system's CAs do not know the test CA: the broker's certificate must be rejected.
        kwargs = kafka_client_kwargs(dataclasses.replace(secure_settings, kafka_ssl_cafile=""))
    admin = AIOKafkaAdminClient(**kwargs, request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await admin.start()
        await admin.list_topics()
    await admin.close()


@pytest.mark.parametrize("case", ["plaintext", "no user", "wrong password", "untrusted CA"])
async def test_redis_refuses_what_is_not_tls_with_the_acl_user(
    secure_settings: Settings, secure_stack: SecureStack, case: str
) -> None:
    url = secure_stack.redis_url
    ca = str(secure_stack.certs.ca)
    client: aioredis.Redis
    if case == "plaintext":
        client = aioredis.from_url(url.replace("rediss://", "redis://"), username=USER, socket_timeout=5)
        expected: type[Exception] = redis.exceptions.ConnectionError
    elif case == "no user":
        client = aioredis.from_url(url, ssl_ca_certs=ca)
        expected = redis.exceptions.AuthenticationError
    elif case == "wrong password":
        client = aioredis.from_url(
            url, ssl_ca_certs=ca, username=USER, password="wrong-" + secrets.token_hex(8)
        )
        expected = redis.exceptions.AuthenticationError
    else:
        client = redis_client(dataclasses.replace(secure_settings, redis_ssl_cafile=""))
        expected = redis.exceptions.ConnectionError
    try:
        with pytest.raises(expected):
            await client.ping()
    finally:
        await client.aclose()
    # ...while the job's own client gets in.
    good = redis_client(secure_settings)
    try:
        assert await good.ping()
    finally:
        await good.aclose()
