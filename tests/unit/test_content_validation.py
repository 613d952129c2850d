"""`video-content` and `product-catalogue` decoders: a model, a removal or a reason, never an exception."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.content import (
    CatalogueProduct,
    CatalogueRemoval,
    ContentLimits,
    VideoContent,
    decode_catalogue_product,
    decode_video_content,
)
from streams.events import DeadLetterReason as R
from streams.events import Invalid, Product
from tests.factories import BASE_TS, LIMITS


def content_json(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "video_id": "v1",
        "creator_id": "c1",
        "caption": "YSL小金条 #口红 绝绝子💄\n第二行",
        "hashtags": ["#口红", "好物分享"],
        "labels": [{"label": "口红", "confidence": 0.92}, {"label": "ysl", "confidence": 1}],
        "ts": BASE_TS,
    }
    data.update(fields)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def product_json(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "product_id": "p1",
        "title": "YSL 圣罗兰 小金条口红 哑光 #1966",
        "brand": "YSL 圣罗兰",
        "category": "美妆护肤",
        "attributes": {"色号": "1966", "质地": "哑光"},
        "price_cents": 35000,
        "certified": True,
        "stock": 12,
        "ts": BASE_TS,
    }
    data.update(fields)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def test_valid_video_content() -> None:
    result = decode_video_content(b"v1", content_json(), LIMITS)
    assert result == VideoContent(
        "v1",
        "YSL小金条 #口红 绝绝子💄\n第二行",
        ("口红", "好物分享"),
        (("口红", 0.92), ("ysl", 1.0)),
        BASE_TS,
        "c1",
    )


def test_video_content_optional_fields() -> None:
    value = content_json(creator_id=..., hashtags=..., labels=..., caption="")
    assert decode_video_content(b"v1", value, LIMITS) == VideoContent("v1", "", (), (), BASE_TS, None)


def test_video_content_round_trips_through_its_dict() -> None:
    result = decode_video_content(b"v1", content_json(), LIMITS)
    assert isinstance(result, VideoContent)
    assert VideoContent.from_dict(result.to_dict()) == result
    assert decode_video_content(b"v1", orjson.dumps(result.to_dict()), LIMITS) == result


SMALL = ContentLimits(max_caption_chars=10, max_hashtags=2, max_labels=2, max_attributes=2, max_brand_chars=8)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"v1", None, R.MISSING_FIELD),
        (b"v1", b"{", R.MALFORMED_JSON),
        (b"v1", b"[]", R.NOT_AN_OBJECT),
        (b"v1", b" " * (LIMITS.max_record_bytes + 1), R.OVERSIZED),
        (b"v" * (LIMITS.max_key_bytes + 1), content_json(), R.OVERSIZED),
        (b"v2", content_json(), R.KEY_MISMATCH),
        (None, content_json(), R.KEY_MISMATCH),
        (b"\xff", content_json(), R.KEY_MISMATCH),
        (b"v1", content_json(video_id=...), R.MISSING_FIELD),
        (b"v1", content_json(video_id="v" * 129), R.INVALID_VALUE),
        (b"v1", content_json(video_id="v\x00"), R.INVALID_VALUE),
        (b"v1", content_json(creator_id="c{1}"), R.INVALID_VALUE),
        (b"v1", content_json(creator_id=5), R.WRONG_TYPE),
        (b"v1", content_json(ts=...), R.MISSING_FIELD),
        (b"v1", content_json(ts=1_795_000_000), R.INVALID_VALUE),
        (b"v1", content_json(ts=LIMITS.max_ts + 1), R.FUTURE_TS),
        (b"v1", content_json(ts=1.5e12), R.WRONG_TYPE),
        (b"v1", content_json(caption=...), R.MISSING_FIELD),
        (b"v1", content_json(caption=3), R.WRONG_TYPE),
        (b"v1", content_json(caption="x" * 2201), R.INVALID_VALUE),
        (b"v1", content_json(caption="bidi \u202e override"), R.INVALID_VALUE),
        (b"v1", content_json(caption="bell \x07"), R.INVALID_VALUE),
        (b"v1", content_json(hashtags="#口红"), R.WRONG_TYPE),
        (b"v1", content_json(hashtags=["a"] * 31), R.INVALID_VALUE),
        (b"v1", content_json(hashtags=[7]), R.WRONG_TYPE),
        (b"v1", content_json(hashtags=[""]), R.INVALID_VALUE),
        (b"v1", content_json(hashtags=["#"]), R.INVALID_VALUE),
        (b"v1", content_json(hashtags=["x" * 65]), R.INVALID_VALUE),
        (b"v1", content_json(hashtags=["zero\u200bwidth"]), R.INVALID_VALUE),
        (b"v1", content_json(labels={"口红": 0.9}), R.WRONG_TYPE),
        (b"v1", content_json(labels=[["口红", 0.9]]), R.WRONG_TYPE),
        (b"v1", content_json(labels=[{"label": "a", "confidence": 0.5}] * 51), R.INVALID_VALUE),
        (b"v1", content_json(labels=[{"confidence": 0.5}]), R.MISSING_FIELD),
        (b"v1", content_json(labels=[{"label": "x" * 65, "confidence": 0.5}]), R.INVALID_VALUE),
        (b"v1", content_json(labels=[{"label": "口红"}]), R.MISSING_FIELD),
        (b"v1", content_json(labels=[{"label": "口红", "confidence": "0.9"}]), R.WRONG_TYPE),
        (b"v1", content_json(labels=[{"label": "口红", "confidence": True}]), R.WRONG_TYPE),
        (b"v1", content_json(labels=[{"label": "口红", "confidence": 1.01}]), R.INVALID_VALUE),
        (b"v1", content_json(labels=[{"label": "口红", "confidence": -0.1}]), R.INVALID_VALUE),
        (b"v1", content_json(labels=[{"label": "口红", "confidence": 2}]), R.INVALID_VALUE),
    ],
)
def test_bad_video_content_gets_a_reason(key: bytes | None, value: bytes | None, reason: R) -> None:
    result = decode_video_content(key, value, LIMITS)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result.error
    assert result.error


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (content_json(caption="x" * 11), R.INVALID_VALUE),
        (content_json(hashtags=["a", "b", "c"]), R.INVALID_VALUE),
        (content_json(labels=[{"label": "a", "confidence": 0.5}] * 3), R.INVALID_VALUE),
    ],
)
def test_content_limits_are_settable(value: bytes, reason: R) -> None:
    assert isinstance(
        decode_video_content(b"v1", content_json(caption="x" * 10), LIMITS, SMALL), VideoContent
    )
    result = decode_video_content(b"v1", value, LIMITS, SMALL)
    assert isinstance(result, Invalid) and result.reason == reason, result


def test_valid_catalogue_product() -> None:
    result = decode_catalogue_product(b"p1", product_json(), LIMITS)
    assert result == CatalogueProduct(
        "p1",
        "YSL 圣罗兰 小金条口红 哑光 #1966",
        "YSL 圣罗兰",
        "美妆护肤",
        (("色号", "1966"), ("质地", "哑光")),
        35000,
        True,
        12,
        BASE_TS,
    )
    assert isinstance(result, CatalogueProduct) and result.eligible
    assert result.to_product() == Product("p1", result.title, "美妆护肤", 35000, True, 12)


@pytest.mark.parametrize("attributes", [{"色号": "1966"}, ["哑光", "滋润"], {}, ...])
def test_catalogue_product_round_trips_both_attribute_shapes(attributes: Any) -> None:
    result = decode_catalogue_product(b"p1", product_json(attributes=attributes), LIMITS)
    assert isinstance(result, CatalogueProduct)
    assert CatalogueProduct.from_dict(result.to_dict()) == result
    if isinstance(attributes, list):
        assert result.attributes == (("", "哑光"), ("", "滋润"))
        assert result.to_dict()["attributes"] == attributes


def test_catalogue_tombstone_removes_the_product() -> None:
    assert decode_catalogue_product(b"p1", None, LIMITS) == CatalogueRemoval("p1")


def test_uncertified_or_sold_out_products_decode_but_are_not_eligible() -> None:
    for fields in ({"certified": False}, {"stock": 0}):
        result = decode_catalogue_product(b"p1", product_json(**fields), LIMITS)
        assert isinstance(result, CatalogueProduct) and not result.eligible


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, None, R.KEY_MISMATCH),
        (b"", None, R.KEY_MISMATCH),
        (b"p1", b"not json", R.MALFORMED_JSON),
        (b"p1", b"3", R.NOT_AN_OBJECT),
        (b"p1", b" " * (LIMITS.max_record_bytes + 1), R.OVERSIZED),
        (b"p2", product_json(), R.KEY_MISMATCH),
        (None, product_json(), R.KEY_MISMATCH),
        (b"p1", product_json(product_id=...), R.MISSING_FIELD),
        (b"p1", product_json(product_id="p\n1"), R.INVALID_VALUE),
        (b"p1", product_json(title=...), R.MISSING_FIELD),
        (b"p1", product_json(title=""), R.INVALID_VALUE),
        (b"p1", product_json(title="t" * 257), R.INVALID_VALUE),
        (b"p1", product_json(title="evil\u202etitle"), R.INVALID_VALUE),
        (b"p1", product_json(brand=...), R.MISSING_FIELD),
        (b"p1", product_json(brand=["YSL"]), R.WRONG_TYPE),
        (b"p1", product_json(brand="b" * 65), R.INVALID_VALUE),
        (b"p1", product_json(category="c" * 65), R.INVALID_VALUE),
        (b"p1", product_json(attributes="哑光"), R.WRONG_TYPE),
        (b"p1", product_json(attributes=[str(i) for i in range(33)]), R.INVALID_VALUE),
        (b"p1", product_json(attributes={"色号": 1966}), R.WRONG_TYPE),
        (b"p1", product_json(attributes={"色号": ""}), R.INVALID_VALUE),
        (b"p1", product_json(attributes={"": "1966"}), R.INVALID_VALUE),
        (b"p1", product_json(attributes={"n" * 129: "1966"}), R.INVALID_VALUE),
        (b"p1", product_json(attributes={"色\u200b号": "1966"}), R.INVALID_VALUE),
        (b"p1", product_json(attributes=["v" * 129]), R.INVALID_VALUE),
        (b"p1", product_json(attributes=[None]), R.MISSING_FIELD),
        (b"p1", product_json(price_cents=0), R.INVALID_VALUE),
        (b"p1", product_json(price_cents=12.5), R.WRONG_TYPE),
        (b"p1", product_json(price_cents=...), R.MISSING_FIELD),
        (b"p1", product_json(certified="yes"), R.WRONG_TYPE),
        (b"p1", product_json(certified=...), R.MISSING_FIELD),
        (b"p1", product_json(stock=-1), R.INVALID_VALUE),
        (b"p1", product_json(stock=True), R.WRONG_TYPE),
        (b"p1", product_json(ts=...), R.MISSING_FIELD),
        (b"p1", product_json(ts=LIMITS.max_ts + 1), R.FUTURE_TS),
        (b"p1", product_json(ts=17), R.INVALID_VALUE),
    ],
)
def test_bad_catalogue_products_get_a_reason(key: bytes | None, value: bytes | None, reason: R) -> None:
    result = decode_catalogue_product(key, value, LIMITS)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result.error
    assert result.error


def test_catalogue_attribute_limit_is_settable() -> None:
    result = decode_catalogue_product(b"p1", product_json(attributes=["a", "b", "c"]), LIMITS, SMALL)
    assert isinstance(result, Invalid) and result.reason == R.INVALID_VALUE
    result = decode_catalogue_product(b"p1", product_json(brand="b" * 9), LIMITS, SMALL)
    assert isinstance(result, Invalid) and result.reason == R.INVALID_VALUE
