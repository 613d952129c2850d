"""Event models and decoders of `video-content` and `product-catalogue` (issue 26; docs/matching.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streams.events import DeadLetterReason, Invalid, Product
from streams.validation import (
    MAX_CATEGORY_CHARS,
    InputLimits,
    _bool,
    _check_key,
    _decode,
    _FieldError,
    _int,
    _key_text,
    _kind,
    _load_object,
    _str,
    _ts,
    text_problem,
)

R = DeadLetterReason


@dataclass(frozen=True, slots=True)
class ContentLimits:
    """What one `video-content` or `product-catalogue` record may hold, beyond `InputLimits`
    (record and key size, id and title length, ts bounds). Defaults fit what creators and
    merchants write; larger values are cut upstream, not here."""

    max_caption_chars: int = 2_200
    max_hashtags: int = 30
    max_hashtag_chars: int = 64
    max_labels: int = 50
    max_label_chars: int = 64
    max_brand_chars: int = 64
    max_attributes: int = 32
    max_attribute_chars: int = 128


CONTENT_LIMITS = ContentLimits()


@dataclass(frozen=True, slots=True)
class VideoContent:
    """What a video shows and says, as of `ts` (epoch ms): the creator's caption and hashtags
    (without the leading '#'), and the labels an upstream vision/ASR service recognised in it,
    each with its confidence in [0, 1]."""

    video_id: str
    caption: str
    hashtags: tuple[str, ...]
    labels: tuple[tuple[str, float], ...]
    ts: int
    creator_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the record value of `video-content`)."""
        data: dict[str, Any] = {
            "video_id": self.video_id,
            "caption": self.caption,
            "hashtags": list(self.hashtags),
            "labels": [{"label": label, "confidence": conf} for label, conf in self.labels],
            "ts": self.ts,
        }
        if self.creator_id is not None:
            data["creator_id"] = self.creator_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoContent:
        """Rebuild from a `to_dict` shape (trusted: the decoder is the check for outside input)."""
        return cls(
            video_id=data["video_id"],
            caption=data.get("caption", ""),
            hashtags=tuple(data.get("hashtags", ())),
            labels=tuple((item["label"], float(item["confidence"])) for item in data.get("labels", ())),
            ts=data["ts"],
            creator_id=data.get("creator_id"),
        )


@dataclass(frozen=True, slots=True)
class CatalogueProduct:
    """A product of the catalogue, as of `ts` (epoch ms); newer `ts` wins.

    `attributes` are (name, value) pairs: a record's object `{"色号": "999"}` gives
    `(("色号", "999"),)`; a record's list `["哑光", "滋润"]` gives names "" (`to_dict` writes
    back the shape it came in).
    """

    product_id: str
    title: str
    brand: str
    category: str
    attributes: tuple[tuple[str, str], ...]
    price_cents: int
    certified: bool
    stock: int
    ts: int

    @property
    def eligible(self) -> bool:
        """Certified and in stock: may be proposed (as `Product.eligible`)."""
        return self.certified and self.stock > 0

    def to_product(self) -> Product:
        """The product as the prompt path knows it (`streams.events.Product`; an `order` offer)."""
        return Product(
            self.product_id, self.title, self.category, self.price_cents, self.certified, self.stock
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the record value of `product-catalogue`)."""
        attributes: dict[str, str] | list[str]
        if self.attributes and all(name == "" for name, _ in self.attributes):
            attributes = [value for _, value in self.attributes]
        else:
            attributes = dict(self.attributes)
        return {
            "product_id": self.product_id,
            "title": self.title,
            "brand": self.brand,
            "category": self.category,
            "attributes": attributes,
            "price_cents": self.price_cents,
            "certified": self.certified,
            "stock": self.stock,
            "ts": self.ts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CatalogueProduct:
        """Rebuild from a `to_dict` shape (trusted: the decoder is the check for outside input)."""
        raw = data.get("attributes") or {}
        pairs = tuple(("", v) for v in raw) if isinstance(raw, list) else tuple(raw.items())
        return cls(
            product_id=data["product_id"],
            title=data["title"],
            brand=data["brand"],
            category=data["category"],
            attributes=pairs,
            price_cents=data["price_cents"],
            certified=data["certified"],
            stock=data["stock"],
            ts=data["ts"],
        )


@dataclass(frozen=True, slots=True)
class CatalogueRemoval:
    """The product left the catalogue: a null value (tombstone) on `product-catalogue`."""

    product_id: str


def decode_video_content(
    key: bytes | None, value: bytes | None, limits: InputLimits, content: ContentLimits = CONTENT_LIMITS
) -> VideoContent | Invalid:
    """Validate a `video-content` record (key: video_id); never raises on bad input."""

    def build() -> VideoContent:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; video content must be a JSON object")
        obj = _load_object(value, limits)
        video_id = _str(obj, "video_id", limits.max_id_chars)
        creator_id = None
        if obj.get("creator_id") is not None:
            creator_id = _str(obj, "creator_id", limits.max_id_chars, tag=True)
        result = VideoContent(
            video_id=video_id,
            caption=_caption(obj, content.max_caption_chars),
            hashtags=_hashtags(obj, content),
            labels=_labels(obj, content),
            ts=_ts(obj, limits),
            creator_id=creator_id,
        )
        _check_key(key_text, video_id, "video-content", "video_id")
        return result

    return _decode(build)


def decode_catalogue_product(
    key: bytes | None, value: bytes | None, limits: InputLimits, content: ContentLimits = CONTENT_LIMITS
) -> CatalogueProduct | CatalogueRemoval | Invalid:
    """Validate a `product-catalogue` record (key: product_id); a null value removes the product."""

    def build() -> CatalogueProduct | CatalogueRemoval:
        key_text = _key_text(key, limits)
        if value is None:
            if not key_text:
                raise _FieldError(R.KEY_MISMATCH, "tombstone without a key: cannot tell which product")
            return CatalogueRemoval(key_text)
        obj = _load_object(value, limits)
        product = CatalogueProduct(
            product_id=_str(obj, "product_id", limits.max_id_chars),
            title=_str(obj, "title", limits.max_title_chars, text=True),
            brand=_str(obj, "brand", content.max_brand_chars, text=True),
            category=_str(obj, "category", MAX_CATEGORY_CHARS, text=True),
            attributes=_attributes(obj, content),
            price_cents=_int(obj, "price_cents", 1),
            certified=_bool(obj, "certified"),
            stock=_int(obj, "stock", 0),
            ts=_ts(obj, limits),
        )
        _check_key(key_text, product.product_id, "product-catalogue", "product_id")
        return product

    return _decode(build)


def _caption(obj: dict[str, Any], max_chars: int) -> str:
    """The caption: a string, possibly empty, of at most `max_chars`; line breaks allowed (creators
    write captions over several lines), other control and format characters not."""
    value = obj.get("caption")
    if value is None:
        raise _FieldError(R.MISSING_FIELD, 'caption is required (use "" for none)')
    if type(value) is not str:
        raise _FieldError(R.WRONG_TYPE, f"caption must be a string, got {_kind(value)}")
    if len(value) > max_chars:
        raise _FieldError(R.INVALID_VALUE, f"caption is longer than {max_chars} characters")
    problem = text_problem(value.replace("\n", " "))
    if problem:
        raise _FieldError(R.INVALID_VALUE, f"caption {problem}")
    return value


def _list(obj: dict[str, Any], name: str, limit: int, what: str) -> list[Any]:
    raw = obj.get(name)
    if raw is None:
        return []
    if type(raw) is not list:
        raise _FieldError(R.WRONG_TYPE, f"{name} must be a list, got {_kind(raw)}")
    if len(raw) > limit:
        raise _FieldError(R.INVALID_VALUE, f"{name} has {len(raw)} {what}, limit {limit}")
    return raw


def _text(value: Any, name: str, max_chars: int) -> str:
    """One short non-empty text item, named `name` in errors (a hashtag, a label, an attribute)."""
    return _str({name: value}, name, max_chars, text=True).strip()


def _hashtags(obj: dict[str, Any], content: ContentLimits) -> tuple[str, ...]:
    raw = _list(obj, "hashtags", content.max_hashtags, "hashtags")
    tags = []
    for index, item in enumerate(raw):
        tag = _text(item, f"hashtags[{index}]", content.max_hashtag_chars).lstrip("#")
        if not tag:
            raise _FieldError(R.INVALID_VALUE, f"hashtags[{index}] is only '#'")
        tags.append(tag)
    return tuple(tags)


def _labels(obj: dict[str, Any], content: ContentLimits) -> tuple[tuple[str, float], ...]:
    raw = _list(obj, "labels", content.max_labels, "labels")
    labels = []
    for index, item in enumerate(raw):
        where = f"labels[{index}]."
        if type(item) is not dict:
            raise _FieldError(R.WRONG_TYPE, f"labels[{index}] must be an object {{label, confidence}}")
        label = _text(item.get("label"), where + "label", content.max_label_chars)
        confidence = item.get("confidence")
        if confidence is None:
            raise _FieldError(R.MISSING_FIELD, f"{where}confidence is required")
        if type(confidence) not in (int, float):
            raise _FieldError(R.WRONG_TYPE, f"{where}confidence must be a number, got {_kind(confidence)}")
        if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
            raise _FieldError(R.INVALID_VALUE, f"{where}confidence={confidence} is not in [0, 1]")
        labels.append((label, float(confidence)))
    return tuple(labels)


def _attributes(obj: dict[str, Any], content: ContentLimits) -> tuple[tuple[str, str], ...]:
    raw = obj.get("attributes")
    if raw is None:
        return ()
    if type(raw) is list:
        items: list[tuple[Any, Any]] = [("", v) for v in raw]
    elif type(raw) is dict:
        items = list(raw.items())
    else:
        raise _FieldError(R.WRONG_TYPE, f"attributes must be an object or a list, got {_kind(raw)}")
    if len(items) > content.max_attributes:
        raise _FieldError(
            R.INVALID_VALUE, f"attributes has {len(items)} entries, limit {content.max_attributes}"
        )
    pairs = []
    for index, (name, value) in enumerate(items):
        where = f"attributes[{index}]"
        if type(raw) is dict:
            where = f"attributes[{name!r}]"
            problem = text_problem(name) or ("is empty" if not name.strip() else None)
            if problem or len(name) > content.max_attribute_chars:
                raise _FieldError(R.INVALID_VALUE, f"{where} has a bad name: {problem or 'too long'}")
        pairs.append((name, _text(value, where, content.max_attribute_chars)))
    return tuple(pairs)
