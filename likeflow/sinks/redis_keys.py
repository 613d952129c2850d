"""Every Redis key and hash field likeflow writes, in one place (docs/redis.md has the layout).

The user's pseudonym or the creator id is the key's Redis Cluster hash tag (`{...}`): every key
one script call touches lies in one slot.
"""

from __future__ import annotations

# Key layout version (docs/redis.md). v2: the user or creator id is a Redis Cluster hash tag
# (`{...}`), so every key a script touches lies in one slot.
KEYS_VERSION = "v2"


def prompts_key(prefix: str, user_id: str) -> str:
    """Redis key of a user's prompts: `<prefix>:v2:prompts:{<pseudonym>}` (docs/redis.md)."""
    return f"{prefix}:{KEYS_VERSION}:prompts:{{{user_id}}}"


def erased_key(prefix: str, user_id: str) -> str:
    """Redis key of a user's erasure marker (the ts of their latest erasure request); same slot
    as the user's prompts, which the upsert script reads it with."""
    return f"{prefix}:{KEYS_VERSION}:erased:{{{user_id}}}"


def windows_key(prefix: str, creator_id: str, namespace: str = "") -> str:
    """Redis hash of a creator's windows (docs/redis.md); `namespace` selects a backfill shadow.
    The creator id is the hash tag: a creator's live and shadow hashes share a cluster slot."""
    shadow = f"shadow:{namespace}:" if namespace else ""
    return f"{prefix}:{KEYS_VERSION}:{shadow}creator:{{{creator_id}}}:windows"


def standing_key(prefix: str, creator_id: str) -> str:
    """Redis key of a creator's score, weight and demotion state."""
    return f"{prefix}:{KEYS_VERSION}:creator:{{{creator_id}}}:standing"


def platform_key(prefix: str) -> str:
    """Redis key of the platform totals and rates."""
    return f"{prefix}:{KEYS_VERSION}:platform"


def window_field(start_ms: int) -> str:
    """Hash field of one window."""
    return f"w:{start_ms}"
