"""Per-user state kept in a table: processed likes, recent prompts and the interest profile."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from likeflow.domain.affinity import Affinity
from streams.events import Prompt

# ASCII event ids up to this long are remembered as they are (a UUID is 36); longer or non-ASCII
# ones (up to 4 bytes a character in the changelog's UTF-8) as a digest, so that a user's `seen`
# costs at most ~60 bytes per like whatever ids a client sends.
SEEN_ID_CHARS = 40


def seen_key(event_id: str) -> str:
    """How `event_id` is remembered in `UserState.seen`: itself, or "#" and a 96-bit BLAKE2b
    digest of it when longer than `SEEN_ID_CHARS` or not ASCII (collisions only ever make one
    user's like a duplicate of another of the same user's likes, at odds of ~2^-96)."""
    if len(event_id) <= SEEN_ID_CHARS and event_id.isascii():
        return event_id
    return "#" + hashlib.blake2b(event_id.encode(), digest_size=12).hexdigest()


@dataclass(slots=True)
class SentPrompt:
    """A prompt the job emitted, with the like event that caused it.

    `raw` is the prompt's exact JSON as it was sent: a redelivered like re-sends these bytes,
    and the state's changelog embeds them as they are. The guards read `product_id` and
    `like_ts`; the full `Prompt` is decoded only when needed.
    """

    event_id: str
    product_id: str
    like_ts: int
    raw: bytes
    # The offset of the like in its `likes` partition (-1: unknown): a re-sent prompt is
    # reported to the counters at the like that first produced it (docs/quality.md).
    offset: int = -1

    @classmethod
    def of(cls, event_id: str, prompt: Prompt, raw: bytes | None = None, offset: int = -1) -> SentPrompt:
        """`prompt`, emitted for the like `event_id` (`raw`: its JSON, if already encoded)."""
        return cls(
            event_id, prompt.product_id, prompt.like_ts, raw if raw is not None else prompt.to_json(), offset
        )

    @property
    def prompt(self) -> Prompt:
        """The prompt decoded from `raw`."""
        return Prompt.from_trusted(orjson.loads(self.raw))


@dataclass(frozen=True, slots=True)
class ConsentState:
    """The user's latest choices (from `user-consent`) and their ts (epoch ms)."""

    prompts: bool
    personalized: bool
    ts: int


@dataclass(slots=True)
class UserState:
    """Everything the prompt decision needs about one user, in event time (epoch ms).

    `seen` maps the event_id (`seen_key`) of every like processed within the dedupe horizon to
    its ts, so a redelivered like (Kafka at-least-once, producer retries) changes nothing; it
    holds at most `GuardPolicy.max_likes_per_user` entries; `sent` holds the
    prompts emitted within the guard horizon, so a redelivered like gets its original prompt
    back byte for byte. `high_ts` is the highest like ts seen: the user's own event-time clock,
    which drives pruning so that replays prune exactly like the live run did. `consent` is the
    user's latest choice (None: never stated, prompts and personalisation on); `erased_ts` the
    ts of the user's latest erasure request: likes up to it are ignored (docs/privacy.md).
    """

    seen: dict[str, int] = field(default_factory=dict)
    sent: list[SentPrompt] = field(default_factory=list)
    affinity: Affinity = field(default_factory=dict)
    high_ts: int = 0
    consent: ConsentState | None = None
    erased_ts: int = 0
    # The `likes` offset of each like in `seen` (same keys; a like remembered before offsets were
    # kept has none). A duplicate at the offset its like was recorded at is that record
    # redelivered, one at another offset a copy sent again upstream (docs/quality.md, likes).
    seen_offsets: dict[str, int] = field(default_factory=dict)
    # The user's own orders by price band: band -> (decayed order count, ref ts), the shape of
    # `affinity` (docs/profile.md, consumption level). Written only when not empty, so a state
    # without orders keeps its bytes; forgotten with the profile on refusal.
    price_bands: Affinity = field(default_factory=dict)

    def erased(self, like_ts: int) -> bool:
        """Whether a like at `like_ts` (epoch ms) is covered by the user's latest erasure request:
        at or before it. The Redis upsert script applies the same rule to the erasure marker."""
        return like_ts <= self.erased_ts

    def served_prompts(self) -> list[Prompt]:
        """The prompts this state says are served: those still in `sent`, except any liked before
        the latest erasure (the worker deletes those and never writes them again)."""
        return [s.prompt for s in self.sent if not self.erased(s.prompt.like_ts)]

    def sent_for(self, event_id: str) -> SentPrompt | None:
        """The prompt that the like `event_id` produced, if it produced one still held."""
        for sent in self.sent:
            if sent.event_id == event_id:
                return sent
        return None

    def prompt_for(self, event_id: str) -> Prompt | None:
        """`sent_for(event_id)`'s prompt, decoded."""
        sent = self.sent_for(event_id)
        return None if sent is None else sent.prompt

    def remembers(self, event_id: str) -> bool:
        """Whether the like `event_id` was processed within the dedupe horizon. (A state written
        before long ids were digested holds them as they are: both forms are looked up.)"""
        key = seen_key(event_id)
        return key in self.seen or (key is not event_id and event_id in self.seen)

    def remember(self, event_id: str, ts: int, offset: int = -1) -> None:
        """Note the like `event_id` at `ts` (epoch ms), read at `offset` (-1: unknown), as processed."""
        key = seen_key(event_id)
        self.seen[key] = ts
        if offset >= 0:
            self.seen_offsets[key] = offset

    def recorded_at(self, event_id: str, offset: int) -> bool:
        """Whether the like `event_id` was recorded from the record at `offset` (so a duplicate
        at it is that record redelivered, not a copy sent again)."""
        return offset >= 0 and self.seen_offsets.get(seen_key(event_id)) == offset

    def clamp_times(self, max_ts: int) -> bool:
        """Bring every event time held above `max_ts` (epoch ms; the worker's clock plus the
        allowed skew) down to it; True when something changed.

        A state written before future timestamps were refused at the edge may hold one (a like
        stamped in year 9999 makes every later like `too_late`, a consent or erasure stamped so
        can never be superseded, and the user never expires): the worker repairs it when it loads
        the state (docs/security.md)."""
        changed = False
        if self.high_ts > max_ts:
            self.high_ts, changed = max_ts, True
        if self.erased_ts > max_ts:
            self.erased_ts, changed = max_ts, True
        if self.consent is not None and self.consent.ts > max_ts:
            self.consent = ConsentState(self.consent.prompts, self.consent.personalized, max_ts)
            changed = True
        if any(ts > max_ts for ts in self.seen.values()):
            self.seen = {e: min(ts, max_ts) for e, ts in self.seen.items()}
            changed = True
        for category, (score, ref) in list(self.affinity.items()):
            if ref > max_ts:
                self.affinity[category] = (score, max_ts)
                changed = True
        # A prompt keeps its bytes, its like time included: one liked beyond the ceiling is junk
        # (that like would be dead-lettered now) and is dropped rather than re-timed.
        if any(sent.like_ts > max_ts for sent in self.sent):
            self.sent = [sent for sent in self.sent if sent.like_ts <= max_ts]
            changed = True
        return changed

    @property
    def last_active_ts(self) -> int:
        """The user's latest event time known here (epoch ms): like, consent or erasure."""
        consent_ts = self.consent.ts if self.consent else 0
        return max(self.high_ts, consent_ts, self.erased_ts)

    @staticmethod
    def last_active_of(data: dict[str, Any]) -> int:
        """`last_active_ts` of a stored state without rebuilding it (for retention sweeps)."""
        consent = data.get("consent")
        consent_ts = int(consent["ts"]) if consent else 0
        return max(int(data.get("high_ts", 0)), consent_ts, int(data.get("erased_ts", 0)))

    def to_json(self) -> bytes:
        """The table's (and its changelog's) bytes: the `to_dict` shape, prompts as sent."""
        consent = self.consent
        return orjson.dumps(
            {
                "seen": self.seen,
                "sent": [
                    {"event_id": s.event_id, "offset": s.offset, "prompt": orjson.Fragment(s.raw)}
                    for s in self.sent
                ],
                "affinity": self.affinity,
                "high_ts": self.high_ts,
                "consent": None
                if consent is None
                else {"prompts": consent.prompts, "personalized": consent.personalized, "ts": consent.ts},
                "erased_ts": self.erased_ts,
                # Aligned with `seen` (-1: not known), ~6 bytes a like instead of a second id.
                "seen_offsets": [offsets.get(k, -1) for k in self.seen]
                if (offsets := self.seen_offsets)
                else [],
                **({"price_bands": self.price_bands} if self.price_bands else {}),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `to_json` encodes)."""
        data: dict[str, Any] = orjson.loads(self.to_json())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserState:
        """Rebuild from the table; None (a user never seen) gives an empty state."""
        if not data:
            return cls()
        consent = data.get("consent")
        return cls(
            seen=dict(data["seen"]),
            sent=[_sent(s) for s in data["sent"]],
            affinity={c: (float(s), int(r)) for c, (s, r) in data["affinity"].items()},
            high_ts=int(data["high_ts"]),
            consent=ConsentState(**consent) if consent else None,
            erased_ts=int(data.get("erased_ts", 0)),
            seen_offsets=_offsets(data["seen"], data.get("seen_offsets")),
            price_bands={b: (float(n), int(r)) for b, (n, r) in data.get("price_bands", {}).items()},
        )


def _offsets(seen: dict[str, int], aligned: list[int] | None) -> dict[str, int]:
    """`seen_offsets` from its stored form: a list aligned with `seen` (absent: none known)."""
    if not aligned:
        return {}
    return {key: offset for key, offset in zip(seen, aligned, strict=False) if offset >= 0}


def _sent(stored: dict[str, Any]) -> SentPrompt:
    prompt = stored["prompt"]
    # orjson re-encodes a decoded prompt to the same bytes (field order and float text are kept).
    return SentPrompt(
        stored["event_id"],
        prompt["product_id"],
        int(prompt["like_ts"]),
        orjson.dumps(prompt),
        stored.get("offset", -1),
    )
