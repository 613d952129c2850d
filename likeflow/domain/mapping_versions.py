"""A video's mapping versions in event time: which products a like at a given `ts` joins.

Like a Kafka Streams versioned store (and Flink's temporal join): every `video-products`
update is a version valid from its `ts` until the next one, and a like joins the version valid
at the like's own `ts`, not whatever is newest when it is processed. So a replay of old likes
decides with the mappings the original decisions saw, and a mapping update published a second
after a like does not change that like's products.

Rules (docs/joins.md):

- A like older than the video's first held version joins that first version: a video's mapping
  is written after it is posted, often after its first likes.
- A removal (an update with no products and a `ts`) is a version too: a like at or after it
  has no products, one before it joins the version before. A tombstone (a null value, no `ts`)
  forgets every version: after compaction the topic holds nothing else of the video either.
- Versions are kept for `history_ms` of event time behind the video's newest version (the one
  valid at the start of that span is kept too), and at most `max_versions` per video.
- An update with the `ts` of a held version replaces it (a redelivery or correction).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

M = TypeVar("M")


class Unknown:
    """Nothing is known of a video: no version held (a like of it may wait for its mapping)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


@dataclass(frozen=True, slots=True)
class Version(Generic[M]):
    """The mapping valid from `ts` (epoch ms) on; `mapping` None: the video had no products."""

    ts: int
    mapping: M | None


def version_at(versions: Sequence[Version[M]], ts: int) -> Version[M] | None:
    """The version a like at `ts` joins (module doc); None when there is no version at all."""
    if not versions:
        return None
    i = bisect.bisect_right([v.ts for v in versions], ts)
    return versions[i - 1] if i else versions[0]


def insert(
    versions: list[Version[M]], version: Version[M], history_ms: int, max_versions: int
) -> list[Version[M]]:
    """`versions` (sorted by ts) with `version` added; returns the versions it pruned."""
    keys = [v.ts for v in versions]
    i = bisect.bisect_left(keys, version.ts)
    if i < len(versions) and versions[i].ts == version.ts:
        versions[i] = version
    else:
        versions.insert(i, version)
    return prune(versions, history_ms, max_versions)


def prune(versions: list[Version[M]], history_ms: int, max_versions: int) -> list[Version[M]]:
    """Drop versions superseded before the history span, then the oldest beyond `max_versions`;
    returns them. The version valid at the span's start stays (a like there still joins it)."""
    if not versions:
        return []
    cut = versions[-1].ts - history_ms
    # Versions that end at or before the cut: every one but the last one starting at or before it.
    keep_from = max(0, bisect.bisect_right([v.ts for v in versions], cut) - 1)
    keep_from = max(keep_from, len(versions) - max_versions)
    dropped = versions[:keep_from]
    del versions[:keep_from]
    return dropped
