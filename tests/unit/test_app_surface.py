"""The Faust app takes its settings from config/ alone, and its web server serves only likeflow's pages."""

from __future__ import annotations

import secrets
from typing import cast

import pytest
from faust.transport.conductor import Conductor
from faust.types.enums import ProcessingGuarantee

from config import Settings
from likeflow.worker.app import create_app
from likeflow.worker.faust_web import Web

# What Faust would read from the process environment if it were allowed to.
FAUST_ENV = {
    "BROKER_URL": "kafka://other:9092",
    "BROKER": "kafka://other:9092",
    "PRODUCER_ACKS": "1",
    "CONSUMER_AUTO_OFFSET_RESET": "latest",
    "WEB_PORT": "7777",
    "STORE": "rocksdb://",
    "TOPIC_PARTITIONS": "99",
    "PROCESSING_GUARANTEE": "exactly_once",
}


def test_faust_environment_variables_do_not_override_likeflow_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in FAUST_ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings(user_key=secrets.token_hex(16), kafka_bootstrap="127.0.0.1:9092", web_port=6066)
    conf = create_app(settings).conf
    assert [str(url) for url in conf.broker] == ["kafka://127.0.0.1:9092"]
    assert conf.producer_acks == -1
    assert conf.consumer_auto_offset_reset == "earliest"
    assert conf.web_port == 6066
    assert conf.store.scheme == "memory"
    assert conf.topic_partitions == settings.partitions
    # Faust types this setting as its converter; the value read is the enum.
    assert cast(ProcessingGuarantee, conf.processing_guarantee) is ProcessingGuarantee.AT_LEAST_ONCE


def test_the_web_driver_mounts_none_of_faust_s_views() -> None:
    app = create_app(Settings(user_key=secrets.token_hex(16)))
    web = app.web
    assert isinstance(web, Web)
    assert web._enabled_blueprints() == []  # noqa: SLF001 - what Faust would mount
    flags = ("web_router_enabled", "web_tables_enabled", "web_graph_enabled", "web_stats_enabled")
    assert not any(getattr(app.conf, flag) for flag in flags)


def test_every_topic_the_worker_consumes_is_registered_as_consumed() -> None:
    """The registry's `consumed` flag (lag gauge, stall watchdog, metric series) matches what the
    app subscribes to: an agent or batch handler on an unregistered topic fails here."""
    from streams.topics import CONSUMED_TOPICS

    settings = Settings(user_key=secrets.token_hex(16), topic_prefix="t.")
    app = create_app(settings)
    subscribed = {name for agent in app.agents.values() for name in agent.channel.topics}
    conductor = app.topics
    assert isinstance(conductor, Conductor)  # the concrete class, whose topic set is typed
    subscribed |= {name for topic in conductor._topics for name in topic.topics}  # noqa: SLF001
    assert subscribed == {settings.topic(name) for name in CONSUMED_TOPICS}
