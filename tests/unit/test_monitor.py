"""The lag gauge shows only partitions the worker owns: a rebalance removes the others' series."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from likeflow.metrics import Metrics
from likeflow.worker.monitor import Monitor


def lag_series(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.registry.collect()
        if family.name == "likeflow_consumer_lag_records"
        for s in family.samples
    }


def test_a_revoked_partition_s_lag_series_is_removed() -> None:
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(app=None, kafka={}, metrics=metrics, tables={}, source_topics=["likes"])
    monitor.show_lag("likes", 0, 10)
    monitor.show_lag("likes", 1, 500)
    monitor.forget_revoked({TopicPartition("likes", 1)})
    assert lag_series(metrics) == {("likes", "0"): 10}
    monitor.forget_revoked({TopicPartition("likes", 7)})  # never shown: nothing to remove
    assert lag_series(metrics) == {("likes", "0"): 10}
