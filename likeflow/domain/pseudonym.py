"""User pseudonyms: a keyed HMAC-SHA256 of the user id, with the key version in front."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any

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

    __slots__ = ("_keyed", "_derive", "version", "_prefix", "_recent", "_max_recent")

    # Longer ids are not remembered: a user id has at most LIKEFLOW_MAX_ID_CHARS (default 128)
    # characters, and a dead letter's oversized key must not fill the cache.
    MAX_REMEMBERED_CHARS = 128

    def __init__(self, key: bytes, version: int, max_recent: int = 100_000) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the pseudonym key must be at least {MIN_KEY_CHARS} bytes")
        # The keyed HMAC state, copied per id: the key schedule is computed once, not per call.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self._derive = hmac.new(key, digestmod=hashlib.sha512)
        self.version = version
        self._prefix = f"v{version}."
        # Recently seen ids (an active user likes again within minutes): at most `max_recent`,
        # forgotten all at once when full. Held in memory only, like the records themselves.
        self._recent: dict[str, str] = {}
        self._max_recent = max_recent

    def __call__(self, user_id: str) -> str:
        pseudonym = self._recent.get(user_id)
        if pseudonym is None:
            keyed = self._keyed.copy()
            keyed.update(user_id.encode("utf-8"))
            pseudonym = self._prefix + keyed.hexdigest()[:DIGEST_HEX_CHARS]
            if len(user_id) <= self.MAX_REMEMBERED_CHARS:
                if len(self._recent) >= self._max_recent:
                    self._recent.clear()
                self._recent[user_id] = pseudonym
        return pseudonym

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` derived from the pseudonym key, for keys that rotate with
        it: HMAC-SHA512 of the purpose, a function pseudonyms (HMAC-SHA256) never compute, so no
        user id, not even a crafted one, has a pseudonym that reveals part of it."""
        keyed = self._derive.copy()
        keyed.update(purpose.encode())
        return keyed.digest()[:32]

    def __repr__(self) -> str:
        return f"Pseudonymizer(version={self.version}, key=<hidden>)"


def is_pseudonym(text: str) -> bool:
    """True when `text` has the pseudonym shape (`v1.` and 32 lowercase hex digits)."""
    return PSEUDONYM_PATTERN.match(text) is not None


#: Header of a record whose user ids are already pseudonyms: set on dead letters of user-keyed
#: topics (they keep no raw id), so a repaired dead letter published again is not pseudonymised
#: twice by the edge.
PSEUDONYMISED_HEADER = "likeflow.pseudonymised"


def edge_pseudonym(user_id: str, headers: Any, pseudonymize: Callable[[str], str]) -> str:
    """The pseudonym of a consumed record's `user_id`: computed from the raw id, or taken as is
    when the record carries `PSEUDONYMISED_HEADER` and the id has the pseudonym shape."""
    if headers and is_pseudonym(user_id):
        names = headers.keys() if isinstance(headers, Mapping) else (h[0] for h in headers)
        if PSEUDONYMISED_HEADER in names:
            return user_id
    return pseudonymize(user_id)


def archived_pseudonym(user_id: str, pseudonymize: Callable[[str], str]) -> str:
    """The pseudonym of a `user_id` read from an archive or a topic by an operator tool: taken as
    it is when it has the pseudonym shape (the job's own outputs, a dead letter), else computed.
    (Archives carry no headers; a raw id of the pseudonym shape would be taken as one.)"""
    return user_id if is_pseudonym(user_id) else pseudonymize(user_id)
