"""The JSON log format: one object per line, the record position lifted into fields."""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Iterator

import orjson
import pytest

from likeflow.logs import JsonFormatter, logging_config


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("likeflow.sinks.dead_letters", logging.WARNING, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def test_a_record_level_line_carries_topic_partition_and_offset() -> None:
    line = JsonFormatter().format(record("dead letter %s[%d]@%d reason=%s", "it.likes", 3, 1207, "late"))
    doc = orjson.loads(line)
    assert doc["message"] == "dead letter it.likes[3]@1207 reason=late"
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("it.likes", 3, 1207)
    assert doc["level"] == "warning" and doc["logger"] == "likeflow.sinks.dead_letters"
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]


def test_extra_fields_and_exceptions_are_kept_and_lines_stay_single() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = record("oops", agent="prompt_likes")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = orjson.loads(line)
    assert doc["agent"] == "prompt_likes" and "ValueError: bad" in doc["exc_info"]
    assert "topic" not in doc


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """dictConfig changes the process's root logger: put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = logging.getLogger("aiokafka").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(quiet)


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.usefixtures("restored_logging")
def test_the_config_is_accepted_by_dictconfig(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(logging_config("info", log_format))
    logging.getLogger("faust.worker").info("Worker ready")
    logging.getLogger("aiokafka").info("metadata refresh")  # quieted to WARNING
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    if log_format == "json":
        assert orjson.loads(err[0])["message"] == "Worker ready"
    else:
        assert err[0].endswith("INFO faust.worker: Worker ready")
