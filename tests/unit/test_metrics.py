"""Metric helpers: a batch's observations land in the same buckets as one observe each."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from likeflow.metrics import LATENCY_BUCKETS_S, observe_many


def samples(h: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels}": s.value
        for m in h.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_equals_one_observe_each() -> None:
    amounts = [0.0, 0.001, 0.0011, 0.02, 0.5, 3.0, 12.0, 99.0, 0.0025]
    one = Histogram("a", "a", buckets=LATENCY_BUCKETS_S, registry=CollectorRegistry())
    for amount in amounts:
        one.observe(amount)
    many = Histogram("a", "a", buckets=LATENCY_BUCKETS_S, registry=CollectorRegistry())
    observe_many(many, amounts)
    observe_many(many, [])
    assert samples(many) == samples(one)
