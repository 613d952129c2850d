"""The content matcher: segmentation, the catalogue index, BM25 ordering, labels, confidence, merge."""

from __future__ import annotations

from dataclasses import replace

import pytest

from likeflow.domain.matching import (
    DEFAULT_MIN_CONFIDENCE,
    CatalogueIndex,
    Segmenter,
    explain,
    load_segmenter,
    match,
    merge_with_mapping,
    normalise,
)
from likeflow.domain.matching.merge import as_mapping
from likeflow.domain.matching.segmenter import script_runs
from streams.content import CatalogueProduct, VideoContent
from streams.events import Product
from tests.factories import BASE_TS, mapping, product


@pytest.fixture(scope="session")
def segmenter() -> Segmenter:
    """jieba's dictionary loads once per test session (~0.5 s), as once per worker process."""
    return load_segmenter()


def item(
    product_id: str, title: str, brand: str, category: str = "美妆护肤", **fields: object
) -> CatalogueProduct:
    data: dict[str, object] = {
        "product_id": product_id,
        "title": title,
        "brand": brand,
        "category": category,
        "attributes": {},
        "price_cents": 9900,
        "certified": True,
        "stock": 10,
        "ts": BASE_TS,
    }
    data.update(fields)
    return CatalogueProduct.from_dict(data)


CATALOGUE = [
    item("ysl-1", "YSL圣罗兰 小金条 哑光口红", "YSL 圣罗兰", attributes={"色号": "1966"}),
    item("ysl-2", "YSL圣罗兰 小金条 哑光口红", "YSL 圣罗兰", attributes={"色号": "21"}),
    item("pd-1", "完美日记 小细跟 丝绒口红", "完美日记 Perfect Diary"),
    item("el-1", "雅诗兰黛 特润修护肌活精华露 小棕瓶 50ml", "雅诗兰黛 Estée Lauder"),
    item("midea-1", "美的 可视空气炸锅 5.5L 家用", "美的 Midea", "厨房电器"),
    item("bear-1", "小熊 空气炸锅 4L", "小熊 Bear", "厨房电器"),
    item("fake-1", "网红空气炸锅 家用大容量 8L", "厨宝乐", "厨房电器", certified=False),
    item("gone-1", "九阳 空气炸锅 4.5L", "九阳 Joyoung", "厨房电器", stock=0),
]


@pytest.fixture
def index(segmenter: Segmenter) -> CatalogueIndex:
    return CatalogueIndex.build(segmenter, CATALOGUE)


def video(
    caption: str, hashtags: tuple[str, ...] = (), labels: tuple[tuple[str, float], ...] = ()
) -> VideoContent:
    return VideoContent("v1", caption, hashtags, labels, BASE_TS)


# --- normalisation and segmentation ---


def test_normalise_folds_width_case_and_accents() -> None:
    assert normalise("ＹＳＬ Estée ＬＡＵＤＥＲ １９６６") == "ysl estee lauder 1966"


def test_mixed_scripts_split_and_emoji_punctuation_separate() -> None:
    assert script_runs(normalise("ysl小金条💄，绝绝子!!YYDS")) == [
        (False, "ysl"),
        (True, "小金条"),
        (True, "绝绝子"),
        (False, "yyds"),
    ]


def test_terms_drop_stopwords_keep_brands_whole(segmenter: Segmenter) -> None:
    CatalogueIndex.build(segmenter, CATALOGUE)  # adds the catalogue's brands as user words
    terms = segmenter.terms("家人们谁懂啊！这个雅诗兰黛的精华液真的绝绝子✨ #种草 yyds")
    assert "雅诗兰黛" in terms
    assert {"精华", "精华液"} <= set(terms), "search mode: the long word and the words inside it"
    assert not {"的", "这个", "真的", "种草", "yyds"} & set(terms)


def test_latin_runs_keep_their_letter_and_digit_parts(segmenter: Segmenter) -> None:
    assert segmenter.terms("pocket3 AF1 x") == ["pocket3", "pocket", "3", "af1", "af", "1"]


def test_catalogue_words_segment_whole(segmenter: Segmenter) -> None:
    # (a word no other test or catalogue adds: the segmenter is the process's one)
    assert "柚曼橘" not in segmenter.terms("柚曼橘味")
    assert "柚曼橘" in segmenter.add_words(["元气森林 柚曼橘"])
    assert "柚曼橘" in segmenter.terms("柚曼橘味")
    assert segmenter.add_words(["柚曼橘"]) == [], "added once"


# --- the index ---


def test_only_certified_in_stock_products_are_scored(index: CatalogueIndex) -> None:
    assert len(index) == 8 and index.eligible_count == 6
    found = match(video("网红空气炸锅 8L 九阳"), index, k=10, min_confidence=0.0)
    assert {m.product_id for m in found} == {"midea-1", "bear-1"}


def test_upsert_moves_a_product_in_and_out_of_the_eligible_set(index: CatalogueIndex) -> None:
    restocked = replace(CATALOGUE[7], stock=3)
    index.upsert(restocked)
    assert index.eligible_count == 7
    assert match(video("九阳空气炸锅"), index, k=1, min_confidence=0.0)[0].product_id == "gone-1"
    index.upsert(replace(restocked, stock=0))
    assert index.eligible_count == 6
    assert all(m.product_id != "gone-1" for m in match(video("九阳空气炸锅"), index, k=5, min_confidence=0.0))


def test_upsert_replaces_the_old_text(index: CatalogueIndex) -> None:
    index.upsert(replace(CATALOGUE[5], title="小熊 电饭煲 3L"))
    assert index.eligible_count == 6
    assert all(m.product_id != "bear-1" for m in match(video("空气炸锅"), index, k=5, min_confidence=0.0))
    assert match(video("小熊电饭煲"), index, k=1, min_confidence=0.0)[0].product_id == "bear-1"


def test_remove_and_re_add(index: CatalogueIndex) -> None:
    assert index.remove("midea-1") and not index.remove("midea-1")
    assert "midea-1" not in index and index.eligible_count == 5
    found = match(video("美的空气炸锅"), index, k=5, min_confidence=0.0)
    assert all(m.product_id != "midea-1" for m in found)
    index.upsert(CATALOGUE[4])
    assert match(video("美的空气炸锅"), index, k=1, min_confidence=0.0)[0].product_id == "midea-1"


def test_a_new_brand_re_segments_the_products_that_hold_it(segmenter: Segmenter) -> None:
    index = CatalogueIndex.build(segmenter, [item("a", "蕉芙蕾 冰丝防晒衣", "某品牌", "服装")])
    index.upsert(item("b", "蕉芙蕾 防晒帽", "蕉芙蕾", "服装"))
    entry = index.get("a")
    assert entry is not None and "蕉芙蕾" in entry.fields[0]


def test_an_empty_index_matches_nothing(segmenter: Segmenter) -> None:
    assert match(video("空气炸锅"), CatalogueIndex(segmenter)) == []


# --- ranking, labels, confidence, explanation ---


def test_bm25_prefers_the_product_that_matches_more_and_rarer_terms(index: CatalogueIndex) -> None:
    found = match(video("美的空气炸锅 yyds"), index, k=3, min_confidence=0.0)
    assert [m.product_id for m in found[:2]] == ["midea-1", "bear-1"]
    assert found[0].score > found[1].score > 0


def test_a_rare_term_outweighs_a_common_one(index: CatalogueIndex) -> None:
    # "口红" is in three titles, "丝绒" in one.
    assert match(video("丝绒口红"), index, k=1, min_confidence=0.0)[0].product_id == "pd-1"


def test_the_attribute_value_decides_between_variants(index: CatalogueIndex) -> None:
    assert match(video("YSL小金条 色号21"), index, k=1, min_confidence=0.0)[0].product_id == "ysl-2"


def test_a_label_breaks_a_tie_and_its_confidence_sets_its_weight(index: CatalogueIndex) -> None:
    caption = "跟风买的这个 太好用了"
    assert match(video(caption), index, min_confidence=0.0) == []
    sure = match(video(caption, labels=(("小熊", 0.9),)), index, k=1, min_confidence=0.0)
    unsure = match(video(caption, labels=(("小熊", 0.6),)), index, k=1, min_confidence=0.0)
    assert sure[0].product_id == unsure[0].product_id == "bear-1"
    assert sure[0].score > unsure[0].score
    term = sure[0].terms[0]
    assert term.sources == ("label 小熊@0.90",) and term.weight == pytest.approx(0.6 * 0.9)


def test_labels_below_the_minimum_confidence_are_ignored(index: CatalogueIndex) -> None:
    assert match(video("跟风买的", labels=(("小熊", 0.49),)), index, min_confidence=0.0) == []


def test_a_label_boosts_a_term_the_caption_also_has(index: CatalogueIndex) -> None:
    plain = match(video("空气炸锅"), index, k=1, min_confidence=0.0)[0]
    boosted = match(video("空气炸锅", labels=(("空气炸锅", 0.8),)), index, k=1, min_confidence=0.0)[0]
    assert boosted.score > plain.score


def test_hashtags_count_like_the_caption(index: CatalogueIndex) -> None:
    from_tag = match(video("绝绝子", hashtags=("美的", "空气炸锅")), index, k=1, min_confidence=0.0)[0]
    assert from_tag.product_id == "midea-1"
    assert {s for t in from_tag.terms for s in t.sources} == {"hashtag"}


def test_confidence_is_in_unit_range_and_higher_for_a_clear_winner(index: CatalogueIndex) -> None:
    clear = match(video("美的 midea 可视空气炸锅"), index, k=1, min_confidence=0.0)[0]
    vague = match(video("空气炸锅"), index, k=1, min_confidence=0.0)[0]
    assert 0.0 <= vague.confidence < clear.confidence <= 1.0
    assert clear.confidence >= DEFAULT_MIN_CONFIDENCE > vague.confidence
    assert match(video("空气炸锅"), index) == [], "below the default threshold: no proposal"


def test_same_brand_variants_do_not_lower_each_others_confidence(index: CatalogueIndex) -> None:
    both = match(video("YSL小金条"), index, k=2, min_confidence=0.0)
    assert {m.product_id for m in both} == {"ysl-1", "ysl-2"}
    assert both[0].confidence == both[1].confidence > 0
    # two brands close: the rival lowers the winner's confidence towards strength / 2
    close = match(video("空气炸锅"), index, k=2, min_confidence=0.0)
    strength = close[0].score / (close[0].score + 6.0)
    assert strength / 2 < close[0].confidence < 0.6 * strength


def test_k_limits_and_ties_break_by_product_id(index: CatalogueIndex) -> None:
    found = match(video("YSL小金条"), index, k=1, min_confidence=0.0)
    assert [m.product_id for m in found] == ["ysl-1"]


def test_explanation_names_each_term_its_contribution_and_fields(index: CatalogueIndex) -> None:
    found = match(video("美的空气炸锅", labels=(("空气炸锅", 0.9),)), index, k=1, min_confidence=0.0)[0]
    assert sum(t.contribution for t in found.terms) == pytest.approx(found.score, rel=1e-6)
    assert found.terms == tuple(sorted(found.terms, key=lambda t: -t.contribution))
    brand = next(t for t in found.terms if t.term == "美的")
    assert "brand" in brand.fields and brand.sources == ("caption",)
    lines = explain(found)
    assert lines[0].startswith("midea-1  美的 可视空气炸锅 5.5L 家用  [美的 Midea]  score ")
    assert any(line.strip().startswith("美的") and "in title, brand" in line for line in lines[1:])
    assert any("label 空气炸锅@0.90" in line for line in lines[1:])


# --- the creator's mapping wins ---


def test_a_creator_mapping_with_an_eligible_product_is_kept_alone(index: CatalogueIndex) -> None:
    found = match(video("美的 midea 可视空气炸锅"), index)
    merged = merge_with_mapping(mapping("v1", product("p1")), found, index)
    assert [(s.product.product_id, s.source) for s in merged] == [("p1", "creator")]


def test_content_fills_a_video_without_a_mapping(index: CatalogueIndex) -> None:
    found = match(video("美的 midea 可视空气炸锅"), index)
    merged = merge_with_mapping(None, found, index)
    assert [(s.product.product_id, s.source) for s in merged] == [("midea-1", "content")]
    assert merged[0].confidence == found[0].confidence
    assert merged[0].product == Product("midea-1", "美的 可视空气炸锅 5.5L 家用", "厨房电器", 9900, True, 10)
    built = as_mapping("v1", "c1", BASE_TS, merged)
    assert built is not None and built.eligible == (merged[0].product,)
    assert as_mapping("v1", "c1", BASE_TS, ()) is None


def test_content_fills_a_mapping_whose_products_are_not_eligible(index: CatalogueIndex) -> None:
    found = match(video("美的 midea 可视空气炸锅"), index)
    sold_out = mapping("v1", product("p1", stock=0), product("p2", certified=False))
    merged = merge_with_mapping(sold_out, found, index)
    assert [(s.product.product_id, s.source) for s in merged] == [
        ("p1", "creator"),
        ("p2", "creator"),
        ("midea-1", "content"),
    ]


def test_fill_up_to_n_eligible_without_repeating_a_mapped_product(index: CatalogueIndex) -> None:
    found = match(video("YSL小金条 美的空气炸锅"), index, k=5, min_confidence=0.0)
    assert found[0].product_id in {"ysl-1", "ysl-2", "midea-1"}
    ysl = mapping("v1", product("ysl-1", stock=0))
    merged = merge_with_mapping(ysl, found, index, min_eligible=2)
    assert merged[0].source == "creator" and merged[0].product.product_id == "ysl-1"
    content = [s.product.product_id for s in merged if s.source == "content"]
    assert len(content) == 2 and "ysl-1" not in content


def test_a_match_that_became_ineligible_is_not_merged(index: CatalogueIndex) -> None:
    found = match(video("美的 midea 可视空气炸锅"), index)
    index.upsert(replace(CATALOGUE[4], stock=0))
    assert merge_with_mapping(None, found, index) == ()
