"""Content matches in the join: the proposal record, a creator's mapping winning, `source` on prompts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import orjson
import pytest

from agents.testing import InProcess, in_process
from config import load_settings
from likeflow.domain.matching import CatalogueIndex, Segmenter, load_segmenter
from likeflow.domain.matching.proposal import propose
from likeflow.replicas.joined import JoinedMappings
from streams.content import CatalogueProduct, VideoContent
from streams.events import VideoMapping
from tests.factories import mapping_json
from tests.unit.loop import run

NOW = int(time.time() * 1000)
KEY = "unit-test-key-" + "0123456789abcdef" * 3
CATALOGUE = Path(__file__).parents[2] / "data" / "matching" / "catalogue.jsonl"


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return load_segmenter()


def catalogue() -> list[CatalogueProduct]:
    """The evaluation catalogue (data/matching/): realistic term statistics for BM25."""
    return [CatalogueProduct.from_dict(orjson.loads(line)) for line in CATALOGUE.read_text().splitlines()]


def content(caption: str, creator: str | None = "c-content") -> VideoContent:
    return VideoContent("cv1", caption, ("口红",), (("口红", 0.9),), NOW - 1000, creator)


def test_a_proposal_is_a_mapping_shaped_record_of_eligible_matches(segmenter: Segmenter) -> None:
    products = catalogue()
    index = CatalogueIndex.build(segmenter, products)
    record, found = propose("cv1", "c-content", NOW, content("ysl小金条1966 yyds 谁懂啊💄"), index)
    assert record is not None and found[0].product_id == "bea-001"
    eligible = {p.product_id for p in products if p.eligible}
    proposed = [p["product_id"] for p in record["products"]]
    assert proposed[0] == "bea-001" and set(proposed) <= eligible
    assert record["source"] == "content" and record["confidence"]["bea-001"] >= 0.4
    nothing, _ = propose("cv1", "c-content", NOW, content("今天天气真好"), index)
    assert nothing is None, "below the threshold nothing is proposed"


def proposal(video: str, *products: str, creator: str = "c-content") -> tuple[bytes, bytes]:
    items = [{"product_id": p, "title": "小金条口红", "category": "美妆护肤", "price_cents": 9900,
              "certified": True, "stock": 3} for p in products]  # fmt: skip
    body = orjson.loads(mapping_json(video, ts=NOW - 5000, products=items, creator_id=creator))
    return video.encode(), orjson.dumps(
        {**body, "source": "content", "confidence": {p: 0.8 for p in products}}
    )


def like(user: str, video: str) -> tuple[bytes, bytes]:
    body = {"event_id": f"{user}-{video}", "user_id": user, "video_id": video, "ts": NOW - 1000}
    return user.encode(), orjson.dumps(body)


def prompts(w: InProcess) -> list[dict[str, object]]:
    return [orjson.loads(s.value or b"") for s in w.sent("order-prompts")]


def test_a_content_match_fills_a_video_without_a_mapping_and_the_prompt_says_so() -> None:
    w = in_process(load_settings({}, user_key=KEY), proposals=[proposal("cv1", "ysl-1")])
    run(w.run("likes", [like("u1", "cv1")]))
    (prompt,) = prompts(w)
    assert (prompt["product_id"], prompt["source"], prompt["creator_id"]) == ("ysl-1", "content", "c-content")


def test_a_creators_mapping_wins_and_content_fills_only_when_none_is_eligible() -> None:
    mapped = (b"cv1", mapping_json("cv1", ts=NOW - 60_000))  # the creator's p1, eligible
    sold_out = (b"cv2", mapping_json("cv2", ts=NOW - 60_000, products=[
        {"product_id": "p-out", "title": "连衣裙", "category": "dress", "price_cents": 100, "certified": True,
         "stock": 0}]))  # fmt: skip
    w = in_process(
        load_settings({}, user_key=KEY),
        mappings=[mapped, sold_out],
        proposals=[proposal("cv1", "ysl-1"), proposal("cv2", "ysl-2")],
    )
    run(w.run("likes", [like("u1", "cv1"), like("u2", "cv2")]))
    found = {(p["video_id"], p["product_id"], p["source"]) for p in prompts(w)}
    assert found == {("cv1", "p1", "creator"), ("cv2", "ysl-2", "content")}
    joined = cast(JoinedMappings, w.ctx.video_mappings)
    filled = joined.at("cv2", NOW)
    assert isinstance(filled, VideoMapping) and filled.matched == {"ysl-2"}
    assert filled.creator_id == "c1", "the creator's video stays the creator's"


def test_a_like_waiting_for_its_mapping_is_woken_by_a_content_proposal() -> None:
    w = in_process(load_settings({}, user_key=KEY))
    run(w.run("likes", [like("u1", "cv9")]))
    assert not prompts(w)
    key, value = proposal("cv9", "ysl-9")
    cast(JoinedMappings, w.ctx.video_mappings).content.apply(key, value)
    run(w.tick())
    (prompt,) = prompts(w)
    assert (prompt["product_id"], prompt["source"]) == ("ysl-9", "content")
