"""Event models of contract v1 (docs/events.md): plain frozen dataclasses, no Faust imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson

#: The event contract's version (docs/consumers.md): every record the job publishes on a public
#: topic carries it in the `likeflow.contract` header; a consumer that sees a version it does not
#: know stops (or dead-letters) rather than guessing.
CONTRACT_VERSION = 1
CONTRACT_HEADER = "likeflow.contract"
CONTRACT_HEADERS: tuple[tuple[str, bytes], ...] = ((CONTRACT_HEADER, str(CONTRACT_VERSION).encode()),)
CONTRACT_HEADER_MAP: dict[str, bytes] = dict(CONTRACT_HEADERS)

Action = Literal["like", "unlike"]
Offer = Literal["order", "booking", "trial"]
# What a user did with a prompt (docs/events.md): a click; an offer taken (an `order`, a
# `booking` made, a `trial` claimed); one undone (a `return` of an order, a `cancellation` of a
# booking or trial, a `no_show` at a booked or claimed appointment); a `complaint`.
FeedbackKind = Literal["click", "order", "return", "complaint", "booking", "trial", "cancellation", "no_show"]
# "prompt" and "like" are not accepted on `prompt-feedback`: the job counts its own.
CreatorEventKind = Literal[
    "like", "prompt", "click", "order", "return", "complaint", "booking", "trial", "cancellation", "no_show"
]
ACTIONS: tuple[Action, ...] = ("like", "unlike")
OFFERS: tuple[Offer, ...] = ("order", "booking", "trial")
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = (
    "click",
    "order",
    "return",
    "complaint",
    "booking",
    "trial",
    "cancellation",
    "no_show",
)
#: The feedback kinds that carry `amount_cents` (what was transacted), counted into GMV: an
#: order's amount and a booking's booked value. A trial is free; an undoing subtracts nothing.
PRICED_KINDS: tuple[FeedbackKind, ...] = ("order", "booking")


def kept(encoded: bytes) -> bytes:
    """`encoded` (an orjson result) as bytes that may be kept for long.

    orjson writes into a 4 KiB buffer and returns it without shrinking the allocation, so every
    result kept in memory (a prompt in a user's state, a table value) would cost 4 KiB however
    short it is; a copy costs its own length.
    """
    return bytes(memoryview(encoded))


class DeadLetterReason(StrEnum):
    """Why a record went to the dead-letter topic; a small fixed set, safe as a metric label."""

    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_ENUM = "unknown_enum"
    KEY_MISMATCH = "key_mismatch"
    LATE = "late"
    # Stamped more than LIKEFLOW_MAX_CLOCK_SKEW_S ahead of the worker's clock.
    FUTURE_TS = "future_ts"
    # Feedback whose prompt_id was not issued by likeflow for this creator, product and user.
    UNKNOWN_PROMPT = "unknown_prompt"
    # An audit-log record that is not an entry of its chain (written there by something else).
    NOT_AN_AUDIT_ENTRY = "not_an_audit_entry"


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record that failed decoding: the reason (bounded set) and a human-readable error."""

    reason: DeadLetterReason
    error: str


@dataclass(slots=True)
class Like:
    """A user liked (or unliked) a video at `ts` (epoch ms). (Not frozen: built per record.)"""

    event_id: str
    user_id: str
    video_id: str
    ts: int
    action: Action = "like"
    # Milliseconds watched before the like, when the client knows (0 to 24 h); None: not sent.
    # Only weighs the like in the profile (docs/profile.md); not stored.
    watch_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """One product linked to a video; `price_cents` > 0, `stock` >= 0."""

    product_id: str
    title: str
    category: str
    price_cents: int
    certified: bool
    stock: int
    offer: Offer = "order"
    # The merchant's lowest acceptable price for campaigns; None: no discount allowed.
    min_price_cents: int | None = None

    @property
    def eligible(self) -> bool:
        """Certified (brand-certified and quality-checked) and in stock: may be offered."""
        return self.certified and self.stock > 0

    @property
    def floor_price_cents(self) -> int:
        """The lowest price a campaign may bring this product to (cents)."""
        return self.price_cents if self.min_price_cents is None else self.min_price_cents


@dataclass(frozen=True, slots=True)
class VideoMapping:
    """The products shown for a video, as of `ts` (epoch ms); newer `ts` wins."""

    video_id: str
    creator_id: str
    ts: int
    products: tuple[Product, ...]
    # The products a content match added (docs/matching.md); the rest are the creator's.
    matched: frozenset[str] = field(default=frozenset(), compare=False)
    # Derived once per mapping, not per like: each product category once, in product order (what
    # a like of the video adds to the user's profile), and the products that may be offered.
    categories: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    eligible: tuple[Product, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(dict.fromkeys(p.category for p in self.products)))
        object.__setattr__(self, "eligible", tuple(p for p in self.products if p.eligible))


@dataclass(frozen=True, slots=True)
class MappingRemoval:
    """The video no longer has products: a null value (tombstone) or an empty `products` list.

    `ts` is None for a tombstone, which removes the mapping whatever its age.
    """

    video_id: str
    ts: int | None


@dataclass(frozen=True, slots=True)
class UserConsent:
    """A user's choices as of `ts` (epoch ms): prompts at all, and prompts ranked on their profile."""

    user_id: str
    prompts: bool
    personalized: bool
    ts: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form kept in the user's state."""
        return {"prompts": self.prompts, "personalized": self.personalized, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class UserErasure:
    """A request at `ts` (epoch ms) to erase everything the job holds about a user."""

    user_id: str
    ts: int


# A prompt's `source`: its product is from the creator's own mapping, or a content match.
Source = Literal["creator", "content"]
CREATOR_SOURCE: Source = "creator"
CONTENT_SOURCE: Source = "content"


@dataclass(slots=True)
class Prompt:
    """The one-tap order prompt emitted to `order-prompts` and served from Redis.

    Treated as immutable once built; not `frozen` because a frozen dataclass's `__init__` costs
    ~3x more, once per emitted prompt.
    """

    prompt_id: str
    user_id: str
    video_id: str
    creator_id: str
    product_id: str
    title: str
    price_cents: int
    offer: Offer
    score: float
    text: str
    like_ts: int
    emitted_ts: int
    # Where the product came from: the creator's mapping, or a content match (docs/matching.md).
    source: Source = CREATOR_SOURCE

    def to_json(self) -> bytes:
        """The exact bytes written to Kafka and Redis (field order as in the contract)."""
        return orjson.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready form, fields in contract order (every field is a scalar)."""
        return {
            "prompt_id": self.prompt_id,
            "user_id": self.user_id,
            "video_id": self.video_id,
            "creator_id": self.creator_id,
            "product_id": self.product_id,
            "title": self.title,
            "price_cents": self.price_cents,
            "offer": self.offer,
            "score": self.score,
            "text": self.text,
            "like_ts": self.like_ts,
            "emitted_ts": self.emitted_ts,
            "source": self.source,
        }

    @classmethod
    def from_trusted(cls, data: dict[str, Any]) -> Prompt:
        """Rebuild from state kept by the job itself."""
        return cls(**data)


@dataclass(slots=True)
class CreatorEvent:
    """One countable fact about a creator's offers: a prompt the job emitted, or user feedback.

    Feedback comes from `prompt-feedback`; prompts are counted from what the job emitted, with
    `event_id` = "prompt:" + prompt_id so a re-sent prompt is counted once. (Not frozen: built
    per record; treated as immutable.)
    """

    event_id: str
    prompt_id: str
    creator_id: str
    product_id: str
    user_id: str
    kind: CreatorEventKind
    ts: int
    amount_cents: int = 0

    def to_json(self) -> bytes:
        """Compact orjson encoding for the internal `creator-events` topic."""
        return orjson.dumps(self)

    @classmethod
    def from_trusted(cls, data: dict[str, Any]) -> CreatorEvent:
        """Rebuild from the internal topic (already validated)."""
        return cls(**data)

    @classmethod
    def for_prompt(cls, prompt: Prompt) -> CreatorEvent:
        """The count event of an emitted prompt (in the window of the like's ts)."""
        prompt_id = prompt.prompt_id
        return cls(
            "prompt:" + prompt_id,
            prompt_id,
            prompt.creator_id,
            prompt.product_id,
            prompt.user_id,
            "prompt",
            prompt.like_ts,
        )

    @classmethod
    def for_like(cls, event_id: str, creator_id: str, user_id: str, ts: int) -> CreatorEvent:
        """The count event of a like the job decided on a creator's video (prompted or not):
        event_id "like:<event_id>"; counted once per like by the offset it comes with."""
        return cls("like:" + event_id, "", creator_id, "", user_id, "like", ts)

    @classmethod
    def prompt_count(
        cls, prompt_id: str, creator_id: str, product_id: str, user_id: str, like_ts: int
    ) -> CreatorEvent:
        """A prompt as a creator event: event_id "prompt:<prompt_id>", so re-sends count once."""
        return cls(f"prompt:{prompt_id}", prompt_id, creator_id, product_id, user_id, "prompt", like_ts)


LIKES_SOURCE = "likes"
FEEDBACK_SOURCE = "prompt-feedback"


def source_name(topic: str, partition: int) -> str:
    """The event-time source of a count record: an input partition, e.g. `likes/3`."""
    return f"{topic}/{partition}"


@dataclass(slots=True)
class CountRecord:
    """One record of the internal `creator-events` topic: what one input partition (the
    `source`) reports to one counting partition for one of its batches.

    `events` are the creator events of the batch that belong to this counting partition, in the
    source's order; `clocks[i]` is the source's event-time clock at `events[i]` (the highest
    `ts` of every record the source processed up to and including that one, whether or not it
    produced an event) and `offsets[i]` the offset in the source partition of the record it
    came from (for a re-sent prompt: the like that first produced it). `clock` is the source's
    clock at the end of the batch. `idle` says the source has caught up and received nothing
    for a while: until its next record it does not hold windows open (docs/quality.md).
    """

    source: str
    clock: int
    events: list[CreatorEvent]
    clocks: list[int]
    idle: bool = False
    offsets: list[int] = field(default_factory=list)

    def to_json(self) -> bytes:
        """Compact encoding: each event as an array of the `CreatorEvent` fields in order
        (docs/events.md); ~10x cheaper to encode than objects."""
        return orjson.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The compact JSON shape (`to_json`)."""
        return {
            "source": self.source,
            "clock": self.clock,
            "idle": self.idle,
            "events": [
                (
                    e.event_id,
                    e.prompt_id,
                    e.creator_id,
                    e.product_id,
                    e.user_id,
                    e.kind,
                    e.ts,
                    e.amount_cents,
                )
                for e in self.events
            ],
            "clocks": self.clocks,
            "offsets": self.offsets,
        }

    @classmethod
    def from_json(cls, raw: bytes) -> CountRecord:
        """Decode a record the job wrote itself (trusted: no validation beyond the shape)."""
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountRecord:
        """The record of a decoded `to_dict` shape."""
        return cls(
            data["source"],
            data["clock"],
            [CreatorEvent(*e) for e in data["events"]],
            data["clocks"],
            data.get("idle", False),
            data.get("offsets", []),
        )


@dataclass(slots=True)
class CountBatch:
    """One record of `creator-events` as written since count records were batched: the count
    records (`sections`) of every source one handler read in one batch, for one counting
    partition, in source order.

    One Kafka record per counting partition and batch, whatever the number of source
    partitions: with P partitions a handler that owns many of them writes at most P records per
    batch instead of one per source and counting partition (docs/capacity.md). The counters
    apply the sections in order, as consecutive records of their sources; an event is stamped
    with the record's offset and its index counted across the sections (docs/quality.md).
    """

    sections: list[CountRecord]

    @property
    def clock(self) -> int:
        """The highest source clock of the sections (epoch ms; the Kafka timestamp)."""
        return max((s.clock for s in self.sections), default=0)

    @property
    def events(self) -> int:
        """How many events the sections carry."""
        return sum(len(s.events) for s in self.sections)

    @property
    def key(self) -> bytes:
        """The Kafka key: the sources' topic, e.g. `likes` (the partition is chosen by the
        writer: the counting partition of the sections' events)."""
        return self.sections[0].source.rpartition("/")[0].encode() if self.sections else b""

    def to_json(self) -> bytes:
        """`{"sections": [count record, ...]}`, each in the compact `CountRecord` shape."""
        return orjson.dumps({"sections": [s.to_dict() for s in self.sections]})

    @classmethod
    def from_json(cls, raw: bytes) -> CountBatch:
        """Decode a record the job wrote itself; a single `CountRecord` (written before count
        records were batched, still on the topic after an upgrade) is a one-section batch."""
        data = orjson.loads(raw)
        if "sections" in data:
            return cls([CountRecord.from_dict(s) for s in data["sections"]])
        return cls([CountRecord.from_dict(data)])
