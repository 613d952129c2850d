"""Topic setup on the real broker: replication settings applied, refused beyond the cluster, reported."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config import Settings, load_settings
from likeflow.connections import kafka_client_kwargs
from likeflow.errors import EXIT_FAILED
from likeflow.ops.topics import TopicSetupError, ensure_topics
from streams.topics import AUDIT_LOG, LIKES, ORDER_PROMPTS, TOPIC_SPECS
from tests.integration.harness import run_cli


async def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_, _, _, _, entries)] = response.resources
        return {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


async def test_every_topic_gets_min_insync_replicas_and_the_replication_factor(private: Settings) -> None:
    counts = await ensure_topics(private)
    assert set(counts) == {private.topic(s.name) for s in TOPIC_SPECS}
    for name in (LIKES, AUDIT_LOG):
        configs = await topic_configs(private, private.topic(name))
        assert configs["min.insync.replicas"] == str(private.min_insync_replicas)


async def test_a_factor_larger_than_the_cluster_is_refused_with_the_fix(private: Settings) -> None:
    wanted = load_settings(private.to_env(), replication_factor=3, min_insync_replicas=2)
    with pytest.raises(TopicSetupError, match=r"LIKEFLOW_REPLICATION_FACTOR=3 but the cluster .* 1 broker"):
        await ensure_topics(wanted)
    result = await run_cli(wanted, "topics", timeout_s=60)
    assert result.returncode == EXIT_FAILED
    assert b"lower the factor or add brokers" in result.stderr


async def test_existing_topics_that_differ_are_reported(private: Settings) -> None:
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(private))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(private.topic(ORDER_PROMPTS), 2, 1)])
    finally:
        await admin.close()
    warnings: list[str] = []
    await ensure_topics(private, warnings)
    assert warnings == [
        f"{private.topic(ORDER_PROMPTS)} has 2 partitions, the job creates it with {private.partitions} "
        "(the tables fed from it have LIKEFLOW_PARTITIONS partitions): recreate it with the workers "
        "stopped, or set LIKEFLOW_PARTITIONS to match"
    ]
    result = await run_cli(private, "topics", timeout_s=60)
    assert result.returncode == 0
    assert f"likeflow: warning: {warnings[0]}".encode() in result.stderr
