"""JSON Schemas of contract v1, built from the event classes: `python -m streams.schemas` writes schemas/."""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import orjson

from likeflow.domain.pseudonym import PSEUDONYM_PATTERN
from likeflow.domain.quality.judging import VERDICT_REASONS
from likeflow.domain.quality.windows import COUNT_FIELDS
from streams.content import CONTENT_LIMITS, CatalogueProduct, VideoContent
from streams.engagement import UserEngagement
from streams.events import (
    ACTIONS,
    CONTRACT_HEADER,
    CONTRACT_VERSION,
    FEEDBACK_KINDS,
    PRICED_KINDS,
    CreatorEvent,
    DeadLetterReason,
    Like,
    Product,
    Prompt,
    UserConsent,
    UserErasure,
    VideoMapping,
)
from streams.validation import MAX_CATEGORY_CHARS, MAX_INT, MAX_TS_MS, MAX_WATCH_MS, MIN_TS_MS, InputLimits

# The schemas state the default limits (docs/settings.md, "Input limits"); a deployment's
# settings may differ, and the decoders apply those.
_LIMITS = InputLimits()

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://likeflow.example/schemas/v1/"
#: What the decoders check beyond these schemas (docs/consumers.md): each is a dead-letter reason
#: or a rule that JSON Schema cannot state about one record alone.
RULES_BEYOND_SCHEMA = {
    DeadLetterReason.OVERSIZED: "the record's size in bytes (LIKEFLOW_MAX_RECORD_BYTES)",
    DeadLetterReason.KEY_MISMATCH: "the record key must equal the key field (the key is not in the value)",
    DeadLetterReason.LATE: "event time against the counters' clock, not a property of the record",
    DeadLetterReason.MALFORMED_JSON: "JSON text itself: NaN/Infinity, invalid UTF-8, numbers beyond a "
    "double, nesting deeper than 1024 (a schema sees parsed values)",
    DeadLetterReason.WRONG_TYPE: "integers are written without a fraction or exponent (1.0 is not an "
    "integer here, though JSON Schema's `integer` accepts it)",
    DeadLetterReason.INVALID_VALUE: "product ids unique within a mapping; min_price_cents <= price_cents; "
    "ids of printable characters only (no control, format, surrogate or unassigned code points, no "
    "separator but the ASCII space) and creator ids without braces; titles and categories without "
    "control, format (bidi, zero-width; the emoji joiner U+200D is allowed) or surrogate characters",
    DeadLetterReason.FUTURE_TS: "ts at most LIKEFLOW_MAX_CLOCK_SKEW_S (300 s) ahead of the worker's clock",
    DeadLetterReason.UNKNOWN_PROMPT: "feedback's prompt_id must be one likeflow issued for its creator, "
    "product and user (docs/events.md)",
    DeadLetterReason.NOT_AN_AUDIT_ENTRY: "audit-log records only: written there by something other than "
    "likeflow's audit writer",
}

_ID = {"type": "string", "minLength": 1, "maxLength": _LIMITS.max_id_chars, "pattern": r"\S"}
_TS = {"type": "integer", "minimum": MIN_TS_MS, "maximum": MAX_TS_MS, "description": "epoch milliseconds"}
_STRING_LIMITS = {"title": _LIMITS.max_title_chars, "category": MAX_CATEGORY_CHARS, "text": None}
_MINIMUMS = {"price_cents": 1, "min_price_cents": 1}
_WATCH_MS = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_WATCH_MS,
    "description": "milliseconds watched (optional; docs/profile.md)",
}


def _field_schema(name: str, hint: Any) -> tuple[dict[str, Any], bool]:
    """(schema, nullable) of one dataclass field from its type hint and its name's rule."""
    nullable = False
    args = get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        nullable = True
        (hint,) = [a for a in args if a is not type(None)]
    if get_origin(hint) is Literal:
        return {"enum": list(get_args(hint))}, nullable
    if hint is str:
        if name in _STRING_LIMITS:
            limit = _STRING_LIMITS[name]
            base: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"\S"}
            return ({**base, "maxLength": limit} if limit else {"type": "string"}), nullable
        return dict(_ID), nullable
    if hint is bool:
        return {"type": "boolean"}, nullable
    if hint is float:
        return {"type": "number"}, nullable
    if hint is int:
        if name == "ts" or name.endswith("_ts"):
            return dict(_TS), nullable
        return {"type": "integer", "minimum": _MINIMUMS.get(name, 0), "maximum": MAX_INT}, nullable
    raise TypeError(f"no schema for field {name}: {hint!r}")


def object_schema(
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
    additional: bool = True,
) -> dict[str, Any]:
    """The schema of a dataclass's JSON object: a field without a default is required; one with
    a default may be absent or null (the decoders read null as absent)."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for spec in fields(cls):
        if spec.name in exclude or not spec.init:
            continue
        if overrides and spec.name in overrides:
            schema, nullable = overrides[spec.name], False
        else:
            schema, nullable = _field_schema(spec.name, hints[spec.name])
        optional = spec.default is not MISSING or spec.default_factory is not MISSING
        if optional or nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if not optional:
            required.append(spec.name)
        properties[spec.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": additional,
    }


def _document(name: str, description: str, schema: dict[str, Any], key: str | None) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": f"{BASE_ID}{name}.json",
        "title": name,
        "description": description
        + (f" Record key: `{key}` (UTF-8)." if key else "")
        + " Fields not listed are ignored (forward compatibility).",
        "x-likeflow-contract": CONTRACT_VERSION,
        **schema,
    }


def _feedback() -> dict[str, Any]:
    schema = object_schema(
        CreatorEvent, overrides={"kind": {"enum": list(FEEDBACK_KINDS)}, "amount_cents": _amount()}
    )
    # Orders carry their amount; a booking may carry its booked value; other kinds have none (or 0).
    schema["allOf"] = [
        {
            "if": {"properties": {"kind": {"const": "order"}}, "required": ["kind"]},
            "then": {"required": ["amount_cents"], "properties": {"amount_cents": {"type": "integer"}}},
        },
        {
            "if": {"properties": {"kind": {"enum": list(PRICED_KINDS)}}, "required": ["kind"]},
            "else": {"properties": {"amount_cents": {"enum": [0, None]}}},
        },
    ]
    return schema


def _amount() -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": _LIMITS.max_order_cents}


def _mapping() -> dict[str, Any]:
    product = object_schema(Product)
    return object_schema(
        VideoMapping,
        exclude=("matched",),
        overrides={"products": {"type": "array", "maxItems": _LIMITS.max_products, "items": product}},
    )


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit}


def _video_content() -> dict[str, Any]:
    c = CONTENT_LIMITS
    label = {
        "type": "object",
        "properties": {
            "label": {**_text(c.max_label_chars), "minLength": 1},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label", "confidence"],
    }
    return object_schema(
        VideoContent,
        overrides={
            "caption": _text(c.max_caption_chars),
            "hashtags": {"type": "array", "maxItems": c.max_hashtags, "items": _text(c.max_hashtag_chars)},
            "labels": {"type": "array", "maxItems": c.max_labels, "items": label},
        },
    )


def _catalogue_product() -> dict[str, Any]:
    c = CONTENT_LIMITS
    value = _text(c.max_attribute_chars)
    attributes = {
        "anyOf": [
            {"type": "object", "maxProperties": c.max_attributes, "additionalProperties": value},
            {"type": "array", "maxItems": c.max_attributes, "items": value},
        ]
    }
    return object_schema(
        CatalogueProduct,
        overrides={"brand": _text(c.max_brand_chars), "attributes": attributes},
    )


def _prompt() -> dict[str, Any]:
    user = {"type": "string", "pattern": PSEUDONYM_PATTERN.pattern, "description": "the user's pseudonym"}
    return object_schema(Prompt, overrides={"user_id": user})


def _quality() -> dict[str, Any]:
    counts = {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0} for k in COUNT_FIELDS},
        # `likes` is absent from a record judged before likes were counted, `bookings`, `trials`,
        # `cancellations` and `no_shows` from one judged before they were.
        "required": ["prompts", "clicks", "orders", "returns", "complaints", "gmv_cents"],
    }
    figure = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}]}
    business = {
        "type": "object",
        "description": "the horizon's business figures: likes, effective likes (those that got a "
        "prompt) and their share, GMV in yuan, per 10,000 likes and per 10,000 effective likes "
        "(null when there is nothing to divide by; docs/quality.md)",
        "properties": {
            k: figure
            for k in (
                "likes",
                "effective_likes",
                "effective_like_share",
                "gmv_yuan",
                "gmv_yuan_per_10k_likes",
                "gmv_yuan_per_10k_effective_likes",
            )
        },
    }
    rate = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}]}
    rates = {"type": "object", "additionalProperties": rate}
    return {
        "type": "object",
        "properties": {
            "creator_id": dict(_ID),
            "horizon_start": {"type": "integer", "description": "epoch milliseconds"},
            "horizon_end": {"type": "integer", "description": "epoch milliseconds"},
            "change": {"enum": ["demoted", "recovered", None]},
            "demoted": {"type": "boolean"},
            "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "recommendation_weight": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "the creator's standing for the feed's ranker: 1 full, lower when "
                "demoted; likeflow prompts this share of the creator's likes (docs/consumers.md)",
            },
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "demotion_reasons": {
                "type": "array",
                "items": {"enum": list(VERDICT_REASONS)},
                "description": "while demoted, the rates of its last bad judgment (else empty)",
            },
            "horizon": counts,
            "business": business,
            "smoothed": rates,
            "platform": rates,
        },
        "required": ["creator_id", "horizon_start", "horizon_end", "demoted", "weight"],
        "additionalProperties": True,
    }


def _dead_letter_headers() -> dict[str, Any]:
    text = {"type": "string"}
    number = {"type": "string", "pattern": r"^-?\d+$"}
    return {
        "type": "object",
        "description": "The headers of a dead letter as {name: UTF-8 text}: the original record's "
        "headers, then these. The key and value are the original record's (docs/events.md).",
        "properties": {
            "likeflow.dlq.reason": {"enum": [r.value for r in DeadLetterReason]},
            "likeflow.dlq.error": {**text, "maxLength": 1024},
            "likeflow.dlq.topic": text,
            "likeflow.dlq.partition": number,
            "likeflow.dlq.offset": number,
            "likeflow.pseudonymised": {"const": "1"},
            CONTRACT_HEADER: {"const": str(CONTRACT_VERSION)},
        },
        "required": [
            "likeflow.dlq.reason",
            "likeflow.dlq.error",
            "likeflow.dlq.topic",
            "likeflow.dlq.partition",
            "likeflow.dlq.offset",
        ],
        "additionalProperties": True,
    }


def schemas() -> dict[str, dict[str, Any]]:
    """File name (without .json) -> schema document, for every topic of the contract."""
    like = object_schema(Like, overrides={"action": {"enum": list(ACTIONS)}, "watch_ms": _WATCH_MS})
    return {
        "likes": _document("likes", "A user liked or unliked a video (input).", like, "user_id"),
        "video-products": _document(
            "video-products",
            "The products shown for a video (input, compacted; a null value removes the mapping, "
            "as does an empty products list).",
            _mapping(),
            "video_id",
        ),
        "user-consent": _document(
            "user-consent", "A user's prompt choices (input).", object_schema(UserConsent), "user_id"
        ),
        "user-erasure": _document(
            "user-erasure", "A request to erase a user (input).", object_schema(UserErasure), "user_id"
        ),
        "user-engagement": _document(
            "user-engagement",
            "A user commented on, shared or watched a video at length (input; docs/profile.md).",
            object_schema(UserEngagement, overrides={"watch_ms": _WATCH_MS}),
            "user_id",
        ),
        "prompt-feedback": _document(
            "prompt-feedback", "What became of a prompt (input).", _feedback(), "creator_id"
        ),
        "order-prompts": _document(
            "order-prompts",
            "A one-tap order prompt (output; header likeflow.contract). De-duplicate by prompt_id.",
            _prompt(),
            "the user's pseudonym",
        ),
        "creator-quality": _document(
            "creator-quality",
            "A creator's latest verdict over its horizon (output, compacted; header likeflow.contract).",
            _quality(),
            "creator_id",
        ),
        "video-content": _document(
            "video-content",
            "What a video shows and says: caption, hashtags and recognised labels (input, compacted).",
            _video_content(),
            "video_id",
        ),
        "product-catalogue": _document(
            "product-catalogue",
            "A product of the catalogue the content matcher proposes from (input, compacted; a null "
            "value removes the product).",
            _catalogue_product(),
            "product_id",
        ),
        "likeflow-dlq.headers": _document(
            "likeflow-dlq.headers", "Headers of a dead letter (output).", _dead_letter_headers(), None
        ),
    }


def write(directory: Path) -> list[Path]:
    """Write every schema to `directory`/<name>.json (sorted keys, 2-space indent); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in schemas().items():
        path = directory / f"{name}.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(written)
