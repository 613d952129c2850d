"""User pseudonyms: a keyed HMAC-SHA256 of the user id, with the key version in front."""

from __future__ import annotations

import hashlib
import hmac
import re

# 128 bits of the HMAC: collision-free for any realistic user count, half the bytes of the full
# digest in every state entry, Redis key and record.
DIGEST_HEX_CHARS = 32
PSEUDONYM_PATTERN = re.compile(r"^v[1-9][0-9]{0,2}\.[0-9a-f]{32}$")
MIN_KEY_CHARS = 32


class Pseudonymizer:
    """Turns a raw user id into `v<version>.<hex>`; the same id and key always give the same pseudonym.

    Without the key a pseudonym cannot be linked to a user id (HMAC, not a plain hash: user ids
    are guessable, so an unkeyed hash could be reversed by trying them all). The version says
    which key made it, so a key rotation shows in the data instead of silently splitting users.
    """

    __slots__ = ("_key", "version", "_prefix")

    def __init__(self, key: bytes, version: int) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the pseudonym key must be at least {MIN_KEY_CHARS} bytes")
        self._key = key
        self.version = version
        self._prefix = f"v{version}."

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return self._prefix + digest[:DIGEST_HEX_CHARS]

    def __repr__(self) -> str:
        return f"Pseudonymizer(version={self.version}, key=<hidden>)"


def is_pseudonym(text: str) -> bool:
    """True when `text` has the pseudonym shape (`v1.` and 32 lowercase hex digits)."""
    return PSEUDONYM_PATTERN.match(text) is not None
