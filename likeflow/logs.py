"""Log output: the text format, or one JSON object per line (`LIKEFLOW_LOG_FORMAT=json`)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Record-level messages name their record as topic[partition]@offset (house rule); the JSON
# format lifts the first one into fields so a log search can filter by partition or offset.
RECORD_POSITION = re.compile(r"(?P<topic>[A-Za-z0-9._-]+)\[(?P<partition>-?\d+)\]@(?P<offset>-?\d+)")
# Attributes every LogRecord has; anything else came in through `extra=` and is kept as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts` (ISO 8601 UTC, ms), `level`, `logger`, `message`, the
    record position (`topic`, `partition`, `offset`) when the message names one, `extra=`
    fields, and `exc_info` as text."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        seconds = time.gmtime(record.created)
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        position = RECORD_POSITION.search(message)
        if position:
            doc["topic"] = position["topic"]
            doc["partition"] = int(position["partition"])
            doc["offset"] = int(position["offset"])
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in doc:
                doc[name] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger at `level`, on stderr: the commands
    apply it, and with the JSON format Faust's worker is given it too (its own lines and its
    libraries' then come out as JSON; the text format keeps Faust's own worker output)."""
    formatter: dict[str, Any] = (
        {"()": "likeflow.logs.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"likeflow": formatter},
        "handlers": {
            "likeflow": {
                "class": "logging.StreamHandler",
                "formatter": "likeflow",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["likeflow"]},
        # aiokafka logs every metadata refresh at INFO; the worker shows Faust's own progress.
        "loggers": {"aiokafka": {"level": max(logging.WARNING, logging.getLevelName(level.upper()))}},
    }
