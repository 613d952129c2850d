"""Per-user state kept in a Faust table: processed likes, recent prompts and the interest profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from likeflow.domain.affinity import Affinity
from streams.events import Prompt


@dataclass(frozen=True, slots=True)
class SentPrompt:
    """A prompt the job emitted, with the like event that caused it."""

    event_id: str
    prompt: Prompt


@dataclass(frozen=True, slots=True)
class ConsentState:
    """The user's latest choices (from `user-consent`) and their ts (epoch ms)."""

    prompts: bool
    personalized: bool
    ts: int


@dataclass(slots=True)
class UserState:
    """Everything the prompt decision needs about one user, in event time (epoch ms).

    `seen` maps the event_id of every like processed within the dedupe horizon to its ts, so a
    redelivered like (Kafka at-least-once, producer retries) changes nothing; `sent` holds the
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

    def prompt_for(self, event_id: str) -> Prompt | None:
        """The prompt that the like `event_id` produced, if it produced one still held."""
        for sent in self.sent:
            if sent.event_id == event_id:
                return sent.prompt
        return None

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the table and its changelog."""
        data: dict[str, Any] = {
            "seen": self.seen,
            "sent": [{"event_id": s.event_id, "prompt": s.prompt.to_dict()} for s in self.sent],
            "affinity": {c: [s, r] for c, (s, r) in self.affinity.items()},
            "high_ts": self.high_ts,
        }
        if self.consent is not None:
            c = self.consent
            data["consent"] = {"prompts": c.prompts, "personalized": c.personalized, "ts": c.ts}
        if self.erased_ts:
            data["erased_ts"] = self.erased_ts
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserState:
        """Rebuild from the table; None (a user never seen) gives an empty state."""
        if not data:
            return cls()
        return cls(
            seen=dict(data["seen"]),
            sent=[SentPrompt(s["event_id"], Prompt.from_trusted(s["prompt"])) for s in data["sent"]],
            affinity={c: (float(s), int(r)) for c, (s, r) in data["affinity"].items()},
            high_ts=int(data["high_ts"]),
            consent=ConsentState(**data["consent"]) if data.get("consent") else None,
            erased_ts=int(data.get("erased_ts", 0)),
        )
