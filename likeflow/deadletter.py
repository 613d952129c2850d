"""Dead-letter record layout: the original key, value and headers, plus headers naming the reason."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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
        (HEADER_PREFIX + "reason", reason.encode()),
        (HEADER_PREFIX + "error", error.encode("utf-8", "replace")[:MAX_ERROR_BYTES]),
        (HEADER_PREFIX + "topic", topic.encode()),
        (HEADER_PREFIX + "partition", str(partition).encode()),
        (HEADER_PREFIX + "offset", str(offset).encode()),
    ]
