"""`likeflow status` of a worker whose topics carry LIKEFLOW_TOPIC_PREFIX, from the metrics it exposes."""

from __future__ import annotations

import secrets

import pytest
from prometheus_client import generate_latest

from config import Settings
from likeflow.metrics import Metrics
from likeflow.ops.status import Samples, parse, render, summarize, topic_prefix
from streams.topics import CONSUMED_TOPICS, CREATOR_EVENTS, LIKES, PROMPT_FEEDBACK, VIDEO_PRODUCTS

PREFIX = "it-x."


@pytest.fixture
def settings() -> Settings:
    return Settings(user_key=secrets.token_hex(16), topic_prefix=PREFIX)


@pytest.fixture
def metrics(settings: Settings) -> Metrics:
    """A worker's metrics as it starts: every consumed topic's series exists, at 0."""
    m = Metrics()
    m.preinitialise([settings.topic(t) for t in CONSUMED_TOPICS], [], [])
    return m


def scrape(metrics: Metrics) -> Samples:
    return parse(generate_latest(metrics.registry).decode())


def test_the_prefix_is_read_off_a_worker_that_has_consumed_nothing_yet(metrics: Metrics) -> None:
    assert topic_prefix(scrape(metrics)) == PREFIX


def test_the_rates_are_those_of_the_prefixed_topics(settings: Settings, metrics: Metrics) -> None:
    before = scrape(metrics)
    metrics.records_consumed.labels(settings.topic(LIKES)).inc(40)
    metrics.records_consumed.labels(settings.topic(PROMPT_FEEDBACK)).inc(10)
    metrics.records_consumed.labels(settings.topic(CREATOR_EVENTS)).inc(500)
    metrics.records_consumed.labels(settings.topic(VIDEO_PRODUCTS)).inc(7)
    metrics.prompts_emitted.inc(30)
    after = scrape(metrics)
    for prefix in (None, PREFIX):  # read off the scrape, or given
        s = summarize(before, after, 2.0, prefix)
        assert (s.likes_per_s, s.feedback_per_s, s.prompts_per_s) == (20.0, 5.0, 15.0)
    assert "likes in     20.0/s" in render(summarize(before, after, 2.0), "http://w/metrics")


def test_a_wrong_prefix_finds_no_topic_rather_than_another_one(settings: Settings, metrics: Metrics) -> None:
    before = scrape(metrics)
    metrics.records_consumed.labels(settings.topic(LIKES)).inc(40)
    after = scrape(metrics)
    assert summarize(before, after, 1.0, "").likes_per_s == 0.0
    assert summarize(before, after, 1.0, "it-").likes_per_s == 0.0


def test_lag_and_dead_letters_of_the_prefixed_topics_are_all_counted(
    settings: Settings, metrics: Metrics
) -> None:
    before = scrape(metrics)
    metrics.consumer_lag.labels(settings.topic(LIKES), "0").set(4)
    metrics.consumer_lag.labels(settings.topic(LIKES), "1").set(9)
    metrics.consumer_lag.labels(settings.topic(PROMPT_FEEDBACK), "0").set(2)
    metrics.dead_letters.labels(settings.topic(LIKES), "malformed_json").inc(2)
    metrics.dead_letters.labels(settings.topic(PROMPT_FEEDBACK), "malformed_json").inc(1)
    metrics.dead_letters.labels(settings.topic(PROMPT_FEEDBACK), "late").inc(5)
    s = summarize(before, scrape(metrics), 1.0)
    assert (s.lag_total, s.lag_max) == (15.0, 9.0)
    assert s.dead_letters == {"malformed_json": 3.0, "late": 5.0}, "the pre-created zero series are left out"


def consumed(*topics: str) -> Samples:
    return parse("".join(f'likeflow_records_consumed_total{{topic="{t}"}} 1\n' for t in topics))


@pytest.mark.parametrize("prefix", ["", "it-x.", "likes.", "it-likes-", "a.b_c-"])
def test_the_prefix_is_what_precedes_the_contract_names(prefix: str) -> None:
    topics = [prefix + t for t in CONSUMED_TOPICS]
    assert topic_prefix(consumed(*topics)) == prefix


def test_of_two_candidates_the_one_that_also_has_creator_events_is_the_prefix() -> None:
    assert topic_prefix(consumed("x.likes", "it-x.likes", "it-x.creator-events")) == "it-x."


def test_an_undecidable_prefix_or_no_likes_topic_falls_back_to_no_prefix() -> None:
    assert topic_prefix(consumed("a.likes", "b.likes")) == ""
    assert topic_prefix(consumed("it-x.prompt-feedback", "it-x.creator-events")) == ""
    assert topic_prefix(parse("")) == ""
