"""How much each kind of engagement adds to the user's decayed category affinity (docs/profile.md)."""

from __future__ import annotations

# A like without `watch_ms` adds 1.0, as every like always has: profiles built before watch
# time was known, and the thresholds set on them (copy, tags), keep their meaning.
LIKE_WEIGHT = 1.0
# A like with `watch_ms` adds LIKE_MIN_WEIGHT (liked at once, barely watched) up to
# LIKE_MAX_WEIGHT (watched LIKE_FULL_WATCH_MS or more), linearly; half-way (30 s) is a plain like.
LIKE_MIN_WEIGHT = 0.5
LIKE_MAX_WEIGHT = 1.5
LIKE_FULL_WATCH_MS = 60_000
# A long watch (the platform's call: watched well beyond the usual, without a like) adds
# LONG_WATCH_MIN_WEIGHT, up to LONG_WATCH_MAX_WEIGHT when `watch_ms` reaches
# LONG_WATCH_FULL_MS: never more than a plain like, since nothing was said.
LONG_WATCH_MIN_WEIGHT = 0.5
LONG_WATCH_MAX_WEIGHT = 1.0
LONG_WATCH_FULL_MS = 180_000
# Said something: a comment weighs 1.5 likes, a share (recommending the video to others) 2.
# `watch_ms` does not change them.
COMMENT_WEIGHT = 1.5
SHARE_WEIGHT = 2.0


def _ramp(watch_ms: int, low: float, high: float, full_ms: int) -> float:
    """`low` at 0 ms rising linearly to `high` at `full_ms` (and beyond)."""
    return low + (high - low) * min(max(watch_ms, 0), full_ms) / full_ms


def like_weight(watch_ms: int | None) -> float:
    """What a like adds to each of its video's categories: 1.0 without `watch_ms` (ms the user
    watched before liking); with it, 0.5 for a like after 0 s, 1.0 after 30 s, 1.5 after 60 s or
    more (linear in between)."""
    if watch_ms is None:
        return LIKE_WEIGHT
    return _ramp(watch_ms, LIKE_MIN_WEIGHT, LIKE_MAX_WEIGHT, LIKE_FULL_WATCH_MS)


def engagement_weight(kind: str, watch_ms: int | None = None) -> float:
    """What one `user-engagement` event of `kind` adds to each of its video's categories:
    comment 1.5, share 2.0, long_watch 0.5 rising to 1.0 at 3 min of `watch_ms` (ms; absent:
    0.5). An unknown kind raises ValueError (the decoder admits only these three)."""
    if kind == "comment":
        return COMMENT_WEIGHT
    if kind == "share":
        return SHARE_WEIGHT
    if kind == "long_watch":
        if watch_ms is None:
            return LONG_WATCH_MIN_WEIGHT
        return _ramp(watch_ms, LONG_WATCH_MIN_WEIGHT, LONG_WATCH_MAX_WEIGHT, LONG_WATCH_FULL_MS)
    raise ValueError(f"unknown engagement kind {kind!r}")


#: Every engagement kind weighed here, in the order docs/profile.md lists them.
ENGAGEMENT_KINDS: tuple[str, ...] = ("comment", "share", "long_watch")
