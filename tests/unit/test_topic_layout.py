"""`likeflow topics` says which existing topics differ from the settings, and how to fix them."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings
from likeflow.ops.topics import layout_problems
from streams.topics import CREATOR_WINDOWS, LIKES, ORDER_PROMPTS, TOPIC_SPECS


def test_replication_settings_are_checked_against_each_other() -> None:
    settings = load_settings({"LIKEFLOW_REPLICATION_FACTOR": "3", "LIKEFLOW_MIN_INSYNC_REPLICAS": "2"})
    assert settings.topic_configs({"cleanup.policy": "compact"}) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }
    with pytest.raises(ConfigError, match="LIKEFLOW_MIN_INSYNC_REPLICAS"):
        load_settings({"LIKEFLOW_REPLICATION_FACTOR": "1", "LIKEFLOW_MIN_INSYNC_REPLICAS": "2"})
    with pytest.raises(ConfigError, match="LIKEFLOW_REPLICATION_FACTOR"):
        load_settings({"LIKEFLOW_REPLICATION_FACTOR": "0"})


def test_a_topic_that_matches_the_settings_is_not_reported() -> None:
    settings = load_settings({"LIKEFLOW_REPLICATION_FACTOR": "3", "LIKEFLOW_MIN_INSYNC_REPLICAS": "2"})
    partitions = {settings.topic(s.name): s.partition_count(settings) for s in TOPIC_SPECS}
    replicas = dict.fromkeys(partitions, 3)
    assert layout_problems(settings, partitions, replicas) == []


def test_under_replicated_and_mispartitioned_topics_are_reported_with_the_fix() -> None:
    settings = load_settings({"LIKEFLOW_REPLICATION_FACTOR": "3", "LIKEFLOW_MIN_INSYNC_REPLICAS": "2"})
    partitions = {settings.topic(s.name): s.partition_count(settings) for s in TOPIC_SPECS}
    replicas = dict.fromkeys(partitions, 3)
    replicas[settings.topic(LIKES)] = 1
    partitions[settings.topic(ORDER_PROMPTS)] = 8
    partitions[settings.topic(CREATOR_WINDOWS)] = 2
    problems = layout_problems(settings, partitions, replicas)
    assert len(problems) == 3
    assert problems[0].startswith("likes has replication factor 1, LIKEFLOW_REPLICATION_FACTOR is 3")
    assert "kafka-reassign-partitions.sh" in problems[0]
    assert any(p.startswith("order-prompts has 8 partitions, the job creates it with 4") for p in problems)
    assert any("one judge must see every creator" in p for p in problems)
