"""Every worker's view of all creators' ranking weights, read from the compacted `creator-quality`."""

from __future__ import annotations

import logging
import math

import orjson

from likeflow.replicas.compacted import CompactedFollower

log = logging.getLogger(__name__)


class CreatorWeights(CompactedFollower):
    """creator_id -> weight in (0, 1]; unknown creators weigh 1.0.

    The weight multiplies every prompt score of the creator and is the share of its likes that
    get a prompt (`likeflow.domain.exposure`; the record's `recommendation_weight` is the same
    number). A record whose weight is not a finite number in (0, 1] is ignored with a warning
    (the creator keeps its previous weight): a weight of 0, below 0, above 1, or not a number
    would silence the creator, invert its ranking or let it outrank everyone; the judge never
    writes one (its floor is LIKEFLOW_DEMOTED_MIN_WEIGHT > 0)."""

    def __init__(self) -> None:
        super().__init__()
        self._weights: dict[str, float] = {}

    def __call__(self, creator_id: str) -> float:
        return self._weights.get(creator_id, 1.0)

    def __len__(self) -> int:
        return len(self._weights)

    def apply(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Apply one `creator-quality` record (a null value forgets the creator)."""
        if key is None:
            return
        creator_id = key.decode("utf-8", "replace")
        if value is None:
            self._weights.pop(creator_id, None)
            return
        try:
            raw = orjson.loads(value)["weight"]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise TypeError(f"weight is {type(raw).__name__}")
            weight = float(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            log.warning("ignoring unreadable creator-quality record for %s", creator_id)
            return
        if not (math.isfinite(weight) and 0.0 < weight <= 1.0):
            log.warning(
                "ignoring creator-quality record for %s: weight %r is not in (0, 1]", creator_id, weight
            )
            return
        self._weights[creator_id] = weight
