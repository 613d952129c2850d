"""Security settings: validated with clear messages, secrets hidden, clients built with TLS and auth."""

from __future__ import annotations

import logging
import secrets
import ssl
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection

from config import ConfigError, Settings, load_settings
from likeflow.connections import (
    faust_broker_credentials,
    kafka_client_kwargs,
    kafka_sasl_password,
    pseudonymizer,
    redis_client,
)
from likeflow.domain.pseudonym import Pseudonymizer

PASSWORD = "pw-" + secrets.token_hex(12)


def sasl_settings(tmp_path: Path, **overrides: str) -> Settings:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    env = {
        "LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LIKEFLOW_KAFKA_SASL_USERNAME": "likeflow",
        "LIKEFLOW_KAFKA_SASL_PASSWORD_FILE": str(secret),
        **overrides,
    }
    return load_settings(env)


def test_defaults_are_plaintext_on_loopback() -> None:
    s = Settings()
    assert kafka_client_kwargs(s) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(s) is None
    assert s.web_host == "127.0.0.1"


def test_web_and_metrics_bind_to_loopback_by_default() -> None:
    from likeflow.worker.app import create_app

    # /metrics is served by the same web server as /health.
    app = create_app(Settings(user_key=secrets.token_hex(16)))
    assert (app.conf.web_bind, app.conf.web_host) == ("127.0.0.1", "127.0.0.1")


def test_sasl_ssl_client_arguments(tmp_path: Path) -> None:
    kwargs = kafka_client_kwargs(sasl_settings(tmp_path))
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "likeflow",
        "sasl_plain_password": PASSWORD,  # read from the file, surrounding whitespace stripped
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_faust_credentials_are_sasl_ssl_scram_and_hide_the_password(tmp_path: Path) -> None:
    creds = faust_broker_credentials(sasl_settings(tmp_path))
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert creds.password == PASSWORD
    assert PASSWORD not in repr(creds)


def test_ssl_only_has_no_sasl() -> None:
    s = load_settings({"LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SSL"})
    kwargs = kafka_client_kwargs(s)
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    assert faust_broker_credentials(s).protocol.value == "SSL"


def test_password_never_in_repr_and_travels_to_children_only_by_env(tmp_path: Path) -> None:
    s = load_settings(
        {
            "LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LIKEFLOW_KAFKA_SASL_USERNAME": "likeflow",
            "LIKEFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
            "LIKEFLOW_REDIS_URL": "rediss://127.0.0.1:6380/0",
            "LIKEFLOW_REDIS_PASSWORD": PASSWORD + "r",
        }
    )
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)
    assert load_settings(s.to_env()) == s


def test_missing_password_file_names_the_variable(tmp_path: Path) -> None:
    s = sasl_settings(tmp_path, LIKEFLOW_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="LIKEFLOW_KAFKA_SASL_PASSWORD_FILE=.* does not exist"):
        kafka_client_kwargs(s)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        (
            {"LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LIKEFLOW_KAFKA_SASL_PASSWORD": "x"},
            "KAFKA_SASL_USERNAME must be set for SASL_SSL",
        ),
        (
            {"LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LIKEFLOW_KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_PASSWORD_FILE .*must be set for SASL_SSL",
        ),
        ({"LIKEFLOW_KAFKA_SASL_USERNAME": "u"}, "only used with LIKEFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
        ({"LIKEFLOW_KAFKA_SSL_CAFILE": "/ca.pem"}, "KAFKA_SSL_CAFILE is only used with"),
        (
            {"LIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "LIKEFLOW_KAFKA_SSL_CERTFILE": "/c.pem"},
            "KAFKA_SSL_CERTFILE and LIKEFLOW_KAFKA_SSL_KEYFILE must be set together",
        ),
        ({"LIKEFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"}, "KAFKA_SASL_MECHANISM must be one of"),
        ({"LIKEFLOW_REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL must be redis://"),
        (
            {"LIKEFLOW_REDIS_URL": "rediss://u:hunter2@127.0.0.1:6379/0"},
            "REDIS_URL must not contain a password",
        ),
        ({"LIKEFLOW_REDIS_PASSWORD": "hunter2"}, "REDIS_PASSWORD is only sent over TLS"),
        ({"LIKEFLOW_REDIS_SSL_CAFILE": "/ca.pem"}, "REDIS_SSL_CAFILE is only used with a rediss://"),
    ],
)
def test_bad_security_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        load_settings(env)
    assert "hunter2" not in str(info.value)


async def test_redis_client_uses_tls_and_the_acl_user(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD)
    s = load_settings(
        {
            "LIKEFLOW_REDIS_URL": "rediss://127.0.0.1:6380/0",
            "LIKEFLOW_REDIS_USERNAME": "likeflow",
            "LIKEFLOW_REDIS_PASSWORD_FILE": str(secret),
            "LIKEFLOW_REDIS_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    client = redis_client(s)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    kw = pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["ssl_ca_certs"]) == ("likeflow", PASSWORD, "/etc/ca.pem")
    assert (kw["ssl_cert_reqs"], kw["ssl_check_hostname"]) == ("required", True)
    await client.aclose()


async def test_plain_redis_by_default() -> None:
    client = redis_client(Settings())
    assert client.connection_pool.connection_class is not SSLConnection
    assert "password" not in client.connection_pool.connection_kwargs
    await client.aclose()


PLACEHOLDER = "REPLACE-ME-with-at-least-32-random-characters"  # what deploy/k8s/secret.yaml shipped


@pytest.mark.parametrize(
    "key",
    [
        PLACEHOLDER,
        PLACEHOLDER.lower(),
        "replace_me_" + secrets.token_hex(16),
        secrets.token_hex(8) + " Replace Me " + secrets.token_hex(8),
        "with-at-least-32-random-characters-" + secrets.token_hex(4),
    ],
)
def test_the_documented_placeholder_key_is_refused(tmp_path: Path, key: str) -> None:
    key_file = tmp_path / "user-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    for settings in (Settings(user_key=key), Settings(user_key_file=str(key_file))):
        with pytest.raises(ConfigError, match="placeholder") as info:
            pseudonymizer(settings)
        message = str(info.value)
        assert "make secrets" in message and "secrets.token_urlsafe(48)" in message
        assert key not in message, "the message never shows the key"


@pytest.mark.parametrize("key", ["k" * 48, "ab" * 20, "0123456" * 6])
def test_a_key_of_few_distinct_characters_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="fewer than 8 distinct characters") as info:
        pseudonymizer(Settings(user_key=key))
    assert "LIKEFLOW_USER_KEY" in str(info.value) and key not in str(info.value)


def test_a_random_key_is_accepted() -> None:
    key = secrets.token_urlsafe(48)
    assert pseudonymizer(Settings(user_key=key))("u1") == Pseudonymizer(key.encode(), 1)("u1")
    assert pseudonymizer(Settings(user_key="01234567" * 4))("u1").startswith("v1.")


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o600, False), (0o400, False), (0o640, False), (0o440, False), (0o644, True), (0o660, True),
     (0o604, True), (0o602, True), (0o601, True), (0o666, True)],
)  # fmt: skip
def test_a_secrets_file_others_can_reach_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    secret = tmp_path / f"password-{mode:o}"
    secret.write_text(PASSWORD)
    secret.chmod(mode)
    caplog.set_level(logging.WARNING, logger="config.secrets")
    settings = sasl_settings(tmp_path, LIKEFLOW_KAFKA_SASL_PASSWORD_FILE=str(secret))
    assert kafka_sasl_password(settings) == PASSWORD  # read all the same
    kafka_sasl_password(settings)  # once per file
    lines = [r.getMessage() for r in caplog.records if r.name == "config.secrets"]
    if warned:
        assert len(lines) == 1, lines
        assert str(secret) in lines[0] and f"chmod 600 {secret}" in lines[0]
        assert "LIKEFLOW_KAFKA_SASL_PASSWORD_FILE" in lines[0] and PASSWORD not in lines[0]
    else:
        assert lines == []
