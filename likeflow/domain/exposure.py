"""Demotion a user sees: a creator's likes get a prompt for a share equal to its recommendation weight."""

from __future__ import annotations

import hashlib

DAY_MS = 86_400_000
_SPAN = float(1 << 64)


def exposure_point(user_id: str, video_id: str, ts: int) -> float:
    """A stable point in [0, 1) for (user pseudonym, video, UTC day of epoch-ms `ts`).

    BLAKE2b of the three (ids are printable text, so the NUL separators are unambiguous): the
    same like, redelivered or replayed on any worker, lands on the same point, and points are
    uniform over users, videos and days."""
    key = f"{user_id}\0{video_id}\0{ts // DAY_MS}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SPAN


def prompt_shown(weight: float, user_id: str, video_id: str, ts: int) -> bool:
    """Whether a like of `user_id` on `video_id` at `ts` may get a prompt, for a creator whose
    recommendation weight is `weight` (1 = full standing: always; 0: never; in between, for a
    share of likes equal to the weight, chosen by `exposure_point`). No hashing at full standing."""
    if weight >= 1.0:
        return True
    if not weight > 0.0:  # 0, below, or NaN
        return False
    return exposure_point(user_id, video_id, ts) < weight
