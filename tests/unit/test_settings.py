"""Settings come only from LIKEFLOW_* variables, and bad values name the variable."""

from __future__ import annotations

import re

import pytest

from config import ConfigError, Settings, load_settings, unknown_variables


def test_defaults_are_loopback() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.web_host, s.web_port) == ("127.0.0.1", 6066)


def test_variables_are_parsed_by_type() -> None:
    s = load_settings(
        {
            "LIKEFLOW_WEB_PORT": "7000",
            "LIKEFLOW_LANGUAGE": "en",
            "LIKEFLOW_AFFINITY_HALF_LIFE_HOURS": "12.5",
            "OTHER": "x",
        }
    )
    assert (s.web_port, s.language, s.affinity_half_life_hours) == (7000, "en", 12.5)


def test_kafka_urls_and_topic_prefix() -> None:
    s = load_settings({"LIKEFLOW_KAFKA_BOOTSTRAP": "a:1, b:2", "LIKEFLOW_TOPIC_PREFIX": "staging."})
    assert s.kafka_urls == ["kafka://a:1", "kafka://b:2"]
    assert s.topic("likes") == "staging.likes"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIKEFLOW_WEB_PORT": "http"}, "LIKEFLOW_WEB_PORT='http' is not a valid int"),
        ({"LIKEFLOW_WEB_PORT": "70000"}, "LIKEFLOW_WEB_PORT must be a TCP port"),
        ({"LIKEFLOW_LANGUAGE": "fr"}, "LIKEFLOW_LANGUAGE must be 'zh' or 'en'"),
        ({"LIKEFLOW_PARTITIONS": "0"}, "LIKEFLOW_PARTITIONS must be at least 1"),
        ({"LIKEFLOW_KAFKA_BOOTSTRAP": " , "}, "LIKEFLOW_KAFKA_BOOTSTRAP must list"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env)


def test_to_env_round_trips() -> None:
    s = load_settings({"LIKEFLOW_WEB_PORT": "7001", "LIKEFLOW_EVENING_PEAK_BOOST": "1.5"})
    assert load_settings(s.to_env()) == s


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIKEFLOW_LOG_LEVEL": "verbose"}, "LIKEFLOW_LOG_LEVEL must be one of debug, info"),
        (
            {"LIKEFLOW_QUALITY_PRIOR_STRENGTH": "nan"},
            "LIKEFLOW_QUALITY_PRIOR_STRENGTH must be a finite number",
        ),
        ({"LIKEFLOW_SESSION_TIMEOUT_S": "inf"}, "LIKEFLOW_SESSION_TIMEOUT_S must be a finite number"),
        ({"LIKEFLOW_QUALITY_PRIOR_STRENGTH": "-1"}, "LIKEFLOW_QUALITY_PRIOR_STRENGTH must be > 0"),
        ({"LIKEFLOW_TZ_OFFSET_MINUTES": "99999"}, "LIKEFLOW_TZ_OFFSET_MINUTES must be a UTC offset"),
        ({"LIKEFLOW_STORE": "bogus://"}, "LIKEFLOW_STORE must be one of memory://, rocksdict://"),
        ({"LIKEFLOW_APP_ID": "my app"}, "LIKEFLOW_APP_ID must be letters"),
        ({"LIKEFLOW_TOPIC_PREFIX": "a/b."}, "LIKEFLOW_TOPIC_PREFIX must be letters"),
        (
            {"LIKEFLOW_REDIS_PREFIX": "{lf}"},
            "LIKEFLOW_REDIS_PREFIX must be non-empty, without spaces, braces",
        ),
        ({"LIKEFLOW_EVENING_PEAK_BOOST": "0"}, "LIKEFLOW_EVENING_PEAK_BOOST must be > 0"),
        ({"LIKEFLOW_EVENING_PEAK_END_HOUR": "25"}, "LIKEFLOW_EVENING_PEAK_END_HOUR must be an hour 0-24"),
    ],
)
def test_values_that_cannot_work_are_refused(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_settings(env)


def test_a_peak_that_wraps_past_midnight_is_accepted() -> None:
    s = load_settings({"LIKEFLOW_EVENING_PEAK_START_HOUR": "22", "LIKEFLOW_EVENING_PEAK_END_HOUR": "2"})
    assert (s.evening_peak_start_hour, s.evening_peak_end_hour) == (22, 2)  # applied: test_ranking


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles() -> None:
    warnings = unknown_variables({"LIKEFLOW_PARTITONS": "8", "LIKEFLOW_WEB_PORT": "1", "LIKEFLOW_ZZZ": "1"})
    assert warnings == [
        "LIKEFLOW_PARTITONS is not a likeflow setting and is ignored (did you mean LIKEFLOW_PARTITIONS?)",
        "LIKEFLOW_ZZZ is not a likeflow setting and is ignored (docs/settings.md lists them)",
    ]
