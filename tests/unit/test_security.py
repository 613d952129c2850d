"""Security settings: validated with clear messages, secrets hidden, clients built with TLS and auth."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection

from config import ConfigError, Settings, load_settings
from likeflow.connections import faust_broker_credentials, kafka_client_kwargs, redis_client

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
