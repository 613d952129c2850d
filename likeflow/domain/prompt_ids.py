"""Prompt ids that only likeflow can issue: feedback that names a prompt is checked against them."""

from __future__ import annotations

import hashlib
import hmac

from likeflow.domain.pseudonym import Pseudonymizer

# Fixed namespace of the id's first half: the same like and product always get the same id.
_NAMESPACE = bytes.fromhex("6f1d3c5e8a574b0e9a7e1f4c2b9d0a11")
NONCE_HEX = 16
TAG_HEX = 16
_HEX = frozenset("0123456789abcdef")


class PromptIds:
    """Issues and checks prompt ids: 32 lowercase hex digits, a nonce and a tag.

    The nonce (16 hex) is a SHA-1 digest of the like's `event_id` and the product: a redelivered
    or replayed like gets the same id, so consumers de-duplicate by it. The tag (16 hex, 64 bits)
    is an HMAC-SHA256, under a key only the workers hold, of the nonce with the prompt's creator,
    product and user pseudonym: feedback on `prompt-feedback` must name a prompt likeflow issued
    for that creator, product and user, or it is dead-lettered as `unknown_prompt` (a forged
    click for an invented prompt or another creator needs the key). Ids are printable
    characters only, so the 0x1f separator is unambiguous.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the prompt-id key must be at least 16 bytes")
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def issue(self, event_id: str, product_id: str, creator_id: str, user: str) -> str:
        """The id of the prompt for product `product_id` (of `creator_id`) that the like
        `event_id` of the pseudonymous `user` produces."""
        nonce = self.nonce(event_id, product_id)
        return nonce + self._tag(nonce, creator_id, product_id, user)

    @staticmethod
    def nonce(event_id: str, product_id: str) -> str:
        """The first half of the id of every prompt of the like `event_id` for `product_id`."""
        digest = hashlib.sha1(_NAMESPACE + f"{event_id}\x1f{product_id}".encode(), usedforsecurity=False)
        return digest.hexdigest()[:NONCE_HEX]

    def verify(self, prompt_id: str, creator_id: str, product_id: str, user: str) -> bool:
        """Whether `prompt_id` was issued for this creator, product and user pseudonym."""
        if len(prompt_id) != NONCE_HEX + TAG_HEX or not _HEX.issuperset(prompt_id):
            return False
        nonce = prompt_id[:NONCE_HEX]
        return hmac.compare_digest(prompt_id[NONCE_HEX:], self._tag(nonce, creator_id, product_id, user))

    def _tag(self, nonce: str, creator_id: str, product_id: str, user: str) -> str:
        keyed = self._keyed.copy()
        keyed.update(f"{nonce}\x1f{creator_id}\x1f{product_id}\x1f{user}".encode())
        return keyed.hexdigest()[:TAG_HEX]

    def __repr__(self) -> str:
        return "PromptIds(key=<hidden>)"


def is_legacy_id(prompt_id: str) -> bool:
    """Whether `prompt_id` has the shape of the ids versions before keyed ids issued: an RFC 4122
    UUIDv5 in hex (version nibble 5, variant 10xx). Such an id proves nothing; it is accepted
    only for feedback stamped before LIKEFLOW_LEGACY_PROMPT_IDS_UNTIL_MS."""
    return (
        len(prompt_id) == 32
        and _HEX.issuperset(prompt_id)
        and prompt_id[12] == "5"
        and prompt_id[16] in "89ab"
    )


def prompt_ids_for(pseudonymizer: Pseudonymizer) -> PromptIds:
    """The workers' prompt ids: keyed by a key derived from the pseudonym key, so the two rotate
    together (feedback for a prompt issued under the previous key is `unknown_prompt`)."""
    return PromptIds(pseudonymizer.derive("prompt-ids v1"))
