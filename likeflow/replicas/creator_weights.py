"""Every worker's view of all creators' ranking weights, read from the compacted `creator-quality`."""

from __future__ import annotations

import logging

import orjson

from likeflow.replicas.compacted import CompactedFollower

log = logging.getLogger(__name__)


class CreatorWeights(CompactedFollower):
    """creator_id -> weight in (0, 1]; unknown creators weigh 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self._weights: dict[str, float] = {}

    def __call__(self, creator_id: str) -> float:
        return self._weights.get(creator_id, 1.0)

    def __len__(self) -> int:
        return len(self._weights)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one `creator-quality` record (a null value forgets the creator)."""
        if key is None:
            return
        creator_id = key.decode("utf-8", "replace")
        if value is None:
            self._weights.pop(creator_id, None)
            return
        try:
            self._weights[creator_id] = float(orjson.loads(value)["weight"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable creator-quality record for %s", creator_id)
