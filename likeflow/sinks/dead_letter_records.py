"""Dead-letter record layout: the original key, value and headers, plus headers naming the reason."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER, is_pseudonym
from streams.events import CONTRACT_HEADERS

HEADER_PREFIX = "likeflow.dlq."
MAX_ERROR_BYTES = 1024
# The original record's headers a dead letter keeps (name + value bytes, in order); the rest are
# dropped and counted in `likeflow.dlq.headers_dropped`. With the value and key limits this
# keeps every dead letter far below the brokers' 1 MiB record limit (config/settings.py).
MAX_ORIGINAL_HEADER_BYTES = 16 * 1024


def original_headers(headers: Any) -> list[tuple[str, bytes]]:
    """Normalise a Kafka message's headers (list of pairs, mapping or None) to a list of pairs."""
    if not headers:
        return []
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def dead_letter_headers(
    headers: Any, *, reason: str, error: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The original headers (up to `MAX_ORIGINAL_HEADER_BYTES`) followed by `likeflow.dlq.*`
    headers: reason, error and source."""
    kept: list[tuple[str, bytes]] = []
    size = 0
    original = original_headers(headers)
    for name, value in original:
        size += len(name.encode("utf-8", "replace")) + len(value)
        if size > MAX_ORIGINAL_HEADER_BYTES:
            break
        kept.append((name, value))
    if len(kept) < len(original):
        kept.append((HEADER_PREFIX + "headers_dropped", str(len(original) - len(kept)).encode()))
    return kept + [
        *CONTRACT_HEADERS,
        (HEADER_PREFIX + "reason", reason.encode()),
        (HEADER_PREFIX + "error", error.encode("utf-8", "replace")[:MAX_ERROR_BYTES]),
        (HEADER_PREFIX + "topic", topic.encode()),
        (HEADER_PREFIX + "partition", str(partition).encode()),
        (HEADER_PREFIX + "offset", str(offset).encode()),
    ]


def without_raw_user_id(
    key: bytes | None,
    value: bytes | None,
    pseudonymize: Callable[[str], str],
    *,
    key_is_user_id: bool = True,
) -> tuple[bytes | None, bytes | None, bool]:
    """(key, value, changed) of a dead letter from a topic whose records name a user, with the
    raw id replaced by its pseudonym wherever it can be found.

    With `key_is_user_id` (topics keyed by user id) the key is the user id by contract;
    otherwise (`prompt-feedback`, keyed by creator) the key is kept. A value that parses as a
    JSON object gets its `user_id` field replaced (every other byte of meaning is kept, for
    repair and re-publishing); a value that does not parse gets the key's id replaced where it
    occurs as a JSON string. What cannot be found (a broken record with no key, an id spelt
    differently) stays as received (docs/privacy.md).
    """
    raw_key = _text(key) if key_is_user_id else None
    new_key = key
    if raw_key and not is_pseudonym(raw_key):
        new_key = pseudonymize(raw_key).encode()
    new_value = value
    if value:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            user_id = obj.get("user_id")
            if isinstance(user_id, str) and user_id and not is_pseudonym(user_id):
                obj["user_id"] = pseudonymize(user_id)
                new_value = orjson.dumps(obj)
        elif obj is None and new_key is not key and raw_key:
            # Only as a whole JSON string, so a short id does not rewrite every word holding it.
            quoted = orjson.dumps(raw_key)
            new_value = value.replace(quoted, orjson.dumps(pseudonymize(raw_key)))
    return new_key, new_value, (new_key != key or new_value != value)


def pseudonymised_header(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` marked so the edge takes the record's user ids as pseudonyms if it is repaired
    and published again."""
    if any(name == PSEUDONYMISED_HEADER for name, _ in headers):
        return headers
    return headers + [(PSEUDONYMISED_HEADER, b"1")]


def _text(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def fitted(
    key: bytes | None, value: bytes | None, *, max_key_bytes: int, max_value_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, extra headers) of a dead letter whose key or value is over its limit: the
    first bytes of each, with the original size and SHA-256 in `likeflow.dlq.{key,value}_size`
    and `_sha256` headers, so the dead letter always fits the topic while the record can still be
    identified (a record this large cannot be repaired from its dead letter anyway)."""
    extra: list[tuple[str, bytes]] = []
    if key is not None and len(key) > max_key_bytes:
        extra += _cut("key", key)
        key = key[:max_key_bytes]
    if value is not None and len(value) > max_value_bytes:
        extra += _cut("value", value)
        value = value[:max_value_bytes]
    return key, value, extra


def _cut(part: str, data: bytes) -> list[tuple[str, bytes]]:
    return [
        (f"{HEADER_PREFIX}{part}_size", str(len(data)).encode()),
        (f"{HEADER_PREFIX}{part}_sha256", hashlib.sha256(data).hexdigest().encode()),
    ]
