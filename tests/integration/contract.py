"""Every record the integration tests produce or consume is checked against schemas/ (contract v1)."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from config import Settings
from likeflow.policies import input_limits_from
from streams.events import CONTRACT_HEADER, CONTRACT_VERSION, Invalid
from streams.topics import DEAD_LETTERS, SPECS_BY_NAME

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
OUTPUTS = ("order-prompts", "creator-quality")
_checked: set[tuple[str, int, int]] = set()


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((SCHEMAS / f"{name}.json").read_bytes()))


def contract_name(settings: Settings, topic: str) -> str:
    prefix = settings.topic_prefix
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic


def check_produced(settings: Settings, topic: str, key: bytes | None, value: bytes | None) -> None:
    """A record a test publishes to an input: if the job's decoder accepts it, so must the schema."""
    name = contract_name(settings, topic)
    spec = SPECS_BY_NAME.get(name)
    if spec is None or spec.replay is None or value is None or not (SCHEMAS / f"{name}.json").exists():
        return
    decode = spec.replay[0]
    if isinstance(decode(key, value, input_limits_from(settings).at(int(time.time() * 1000))), Invalid):
        return
    errors = [e.message for e in validator(name).iter_errors(orjson.loads(value))]
    assert not errors, f"{name}: the decoder accepts what schemas/{name}.json refuses: {errors} in {value!r}"


def check_consumed(settings: Settings, topic: str, record: Any) -> None:
    """A record a test reads from an output of the contract: schema-valid, with the version header."""
    name = contract_name(settings, topic)
    if name not in (*OUTPUTS, DEAD_LETTERS):
        return
    position = (topic, record.partition, record.offset)
    if position in _checked:
        return
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    assert headers.get(CONTRACT_HEADER) == str(CONTRACT_VERSION), f"{name} record without the contract header"
    if name == DEAD_LETTERS:
        document: Any = headers
        schema = "likeflow-dlq.headers"
    elif record.value is None:
        return  # a tombstone of the compacted creator-quality
    else:
        document, schema = orjson.loads(record.value), name
    errors = [e.message for e in validator(schema).iter_errors(document)]
    assert not errors, f"{topic}[{record.partition}]@{record.offset} breaks schemas/{schema}.json: {errors}"
    _checked.add(position)
