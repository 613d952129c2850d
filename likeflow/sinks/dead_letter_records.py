"""Dead-letter record layout: the original key, value and headers, plus headers naming the reason."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER, is_pseudonym
from streams.events import CONTRACT_HEADERS

HEADER_PREFIX = "likeflow.dlq."
MAX_ERROR_BYTES = 1024


def original_headers(headers: Any) -> list[tuple[str, bytes]]:
    """Normalise a Kafka message's headers (list of pairs, mapping or None) to a list of pairs."""
    if not headers:
        return []
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def dead_letter_headers(
    headers: Any, *, reason: str, error: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The original headers followed by `likeflow.dlq.*` headers: reason, error and source."""
    return original_headers(headers) + [
        *CONTRACT_HEADERS,
        (HEADER_PREFIX + "reason", reason.encode()),
        (HEADER_PREFIX + "error", error.encode("utf-8", "replace")[:MAX_ERROR_BYTES]),
        (HEADER_PREFIX + "topic", topic.encode()),
        (HEADER_PREFIX + "partition", str(partition).encode()),
        (HEADER_PREFIX + "offset", str(offset).encode()),
    ]


def without_raw_user_id(
    key: bytes | None, value: bytes | None, pseudonymize: Callable[[str], str]
) -> tuple[bytes | None, bytes | None, bool]:
    """(key, value, changed) of a dead letter from a topic keyed by user id, with the raw id
    replaced by its pseudonym wherever it can be found.

    The key is the user id by contract. A value that parses as a JSON object gets its `user_id`
    field replaced (every other byte of meaning is kept, for repair and re-publishing); a value
    that does not parse gets the key's id replaced where it occurs as a JSON string. What cannot be found
    (a broken record with no key, an id spelt differently) stays as received (docs/privacy.md).
    """
    raw_key = _text(key)
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
