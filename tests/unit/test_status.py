"""The status view's arithmetic: rates between scrapes and quantiles from histogram buckets."""

from __future__ import annotations

import pytest

from likeflow.ops.status import parse, quantile, render, summarize

BEFORE = """
likeflow_records_consumed_total{topic="likes"} 100
likeflow_records_consumed_total{topic="creator-events"} 90
likeflow_prompts_emitted_total 50
likeflow_like_to_prompt_latency_seconds_bucket{le="0.01"} 10
likeflow_like_to_prompt_latency_seconds_bucket{le="0.1"} 40
likeflow_like_to_prompt_latency_seconds_bucket{le="+Inf"} 50
likeflow_like_to_prompt_latency_seconds_count 50
likeflow_like_to_prompt_latency_seconds_sum 1.0
"""
AFTER = """
likeflow_records_consumed_total{topic="likes"} 300
likeflow_records_consumed_total{topic="creator-events"} 280
likeflow_prompts_emitted_total 150
likeflow_like_to_prompt_latency_seconds_bucket{le="0.01"} 60
likeflow_like_to_prompt_latency_seconds_bucket{le="0.1"} 140
likeflow_like_to_prompt_latency_seconds_bucket{le="+Inf"} 150
likeflow_like_to_prompt_latency_seconds_count 150
likeflow_like_to_prompt_latency_seconds_sum 5.0
likeflow_consumer_lag_records{topic="likes",partition="0"} 5
likeflow_consumer_lag_records{topic="likes",partition="1"} 7
likeflow_dead_letters_total{topic="likes",reason="malformed_json"} 3
likeflow_dead_letters_total{topic="likes",reason="late"} 0
likeflow_creators_demoted 2
likeflow_platform_rate_ratio{rate="ctr"} 0.125
"""


def test_rates_lag_and_bad_input() -> None:
    s = summarize(parse(BEFORE), parse(AFTER), 2.0)
    assert s.likes_per_s == 100.0  # likes only, not creator-events
    assert s.prompts_per_s == 50.0
    assert (s.lag_total, s.lag_max) == (12, 7)
    assert s.dead_letters == {"malformed_json": 3}
    assert s.demoted == 2 and s.platform == {"ctr": 0.125}


def test_latency_quantiles_come_from_the_bucket_increase() -> None:
    s = summarize(parse(BEFORE), parse(AFTER), 2.0)
    # 100 new observations: 50 <= 10 ms, 50 in (10, 100] ms; interpolated within the bucket.
    assert s.latency_p50_s == pytest.approx(0.01)
    assert s.latency_p99_s == pytest.approx(0.01 + 0.09 * 49 / 50)


def test_quantile_interpolates_like_prometheus() -> None:
    assert quantile({0.1: 0, 0.2: 10, float("inf"): 10}, 0.5) == pytest.approx(0.15)
    assert quantile({}, 0.5) is None
    assert quantile({1.0: 0, float("inf"): 0}, 0.5) is None


def test_render_mentions_every_section() -> None:
    text = render(summarize(parse(BEFORE), parse(AFTER), 2.0), "http://w/metrics")
    for word in ("throughput", "latency", "lag", "dead letters", "demoted", "redis"):
        assert word in text


@pytest.mark.parametrize("prefix", ["", "prod.", "prod-", "team-a-", "likes-", "x"])
def test_rates_are_read_whatever_the_topic_prefix(prefix: str) -> None:
    def named(text: str) -> str:
        for name in ("creator-events", "likes"):  # creator-events first: it does not end in likes
            text = text.replace(f'topic="{name}"', f'topic="{prefix}{name}"')
        return text

    s = summarize(parse(named(BEFORE)), parse(named(AFTER)), 2.0)
    assert s.likes_per_s == 100.0
    assert s.lag_total == 12


def test_a_zero_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="> 0"):
        summarize(parse(BEFORE), parse(AFTER), 0)
