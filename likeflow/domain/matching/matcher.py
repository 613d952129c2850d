"""Rank eligible products for a video's content, with a confidence and the terms that scored."""

from __future__ import annotations

from dataclasses import dataclass

from likeflow.domain.matching.index import CatalogueIndex
from likeflow.domain.matching.model import ContentLike

#: Under this confidence no product is proposed: `match` leaves it out. Chosen on the dev half
#: of the evaluation set: the lowest threshold (most coverage) of a 0.05 grid at which
#: precision@1 there is at least 0.9; then reported on both halves (docs/matching.md, "Threshold").
DEFAULT_MIN_CONFIDENCE = 0.4
#: A recognised label adds `LABEL_BOOST × confidence` to the query weight of each of its terms
#: (a caption or hashtag term weighs 1): what the video shows counts, a little less than what
#: its creator wrote, and an unsure label less than a sure one.
LABEL_BOOST = 0.6
#: Labels below this confidence are ignored: vision and ASR services report many weak guesses.
LABEL_MIN_CONFIDENCE = 0.5
#: A single Han character (a word jieba could not join to its neighbours: 小, 瓶, 子) says little
#: on its own; its query weight is scaled by this.
SINGLE_CHAR_WEIGHT = 0.3
#: The score at which a product's strength is 0.5 (strength = score / (score + SCORE_HALF)):
#: about one rare term found in the brand and the title.
SCORE_HALF = 6.0


@dataclass(frozen=True, slots=True)
class TermScore:
    """One query term's part in a product's score: its query weight, its contribution (weight ×
    BM25F), the product fields it was found in, and where the term came from (caption, hashtag,
    label with its confidence)."""

    term: str
    weight: float
    contribution: float
    fields: tuple[str, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Match:
    """A proposed product: its score, confidence in [0, 1] and the terms that made the score,
    largest contribution first."""

    product_id: str
    score: float
    confidence: float
    terms: tuple[TermScore, ...]
    title: str
    brand: str


@dataclass(frozen=True, slots=True)
class _QueryTerm:
    weight: float
    sources: tuple[str, ...]


def query_terms(content: ContentLike, index: CatalogueIndex) -> dict[str, _QueryTerm]:
    """The weighted query of a video: each distinct caption and hashtag term weighs 1, labels at
    or above `LABEL_MIN_CONFIDENCE` add `LABEL_BOOST × confidence` to each of their terms, and a
    single Han character is scaled by `SINGLE_CHAR_WEIGHT`."""
    segment = index.segmenter.terms
    weights: dict[str, float] = {}
    sources: dict[str, list[str]] = {}
    for source, text in [("caption", content.caption)] + [("#" + tag, tag) for tag in content.hashtags]:
        for term in segment(text):
            weights[term] = 1.0
            sources.setdefault(term, []).append("caption" if source == "caption" else "hashtag")
    for label, confidence in content.labels:
        if confidence < LABEL_MIN_CONFIDENCE:
            continue
        for term in dict.fromkeys(segment(label)):
            weights[term] = weights.get(term, 0.0) + LABEL_BOOST * confidence
            sources.setdefault(term, []).append(f"label {label}@{confidence:.2f}")
    return {
        term: _QueryTerm(
            weight * (SINGLE_CHAR_WEIGHT if len(term) == 1 and not term.isascii() else 1.0),
            tuple(dict.fromkeys(sources[term])),
        )
        for term, weight in weights.items()
    }


def match(
    content: ContentLike, index: CatalogueIndex, k: int = 3, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> list[Match]:
    """The `k` best eligible products for `content` whose confidence is at least `min_confidence`
    (0 for every scored product), best first; [] when none is.

    confidence = strength × (0.5 + 0.5 × separation), where strength = score / (score +
    SCORE_HALF) grows with the evidence, and separation = (score − best score of another brand)
    / score, in [0, 1], is how clearly this product's brand wins over the competing explanation.
    Products of the same brand (shades, sizes) do not lower each other's confidence: any of them
    is a fair proposal when the caption does not tell them apart.
    """
    totals: dict[str, float] = {}
    parts: dict[str, list[TermScore]] = {}
    for term, query in query_terms(content, index).items():
        for pid, (bm25, fields) in index.score_term(term).items():
            contribution = query.weight * bm25
            totals[pid] = totals.get(pid, 0.0) + contribution
            parts.setdefault(pid, []).append(
                TermScore(term, query.weight, contribution, fields, query.sources)
            )
    if not totals:
        return []
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    best_by_brand: dict[str, float] = {}
    for pid, score in ranked:
        brand = _brand(index, pid)
        best_by_brand.setdefault(brand, score)
    brands = sorted(best_by_brand.items(), key=lambda item: -item[1])
    matches: list[Match] = []
    for pid, score in ranked:
        if len(matches) == k:
            break
        brand = _brand(index, pid)
        rival = next((s for b, s in brands if b != brand), 0.0)
        separation = max(0.0, (score - rival) / score) if score > 0 else 0.0
        confidence = score / (score + SCORE_HALF) * (0.5 + 0.5 * separation)
        if confidence < min_confidence:
            continue
        entry = index.get(pid)
        if entry is None:  # pragma: no cover - scored products are indexed
            continue
        terms = tuple(sorted(parts[pid], key=lambda t: (-t.contribution, t.term)))
        matches.append(
            Match(pid, round(score, 6), round(confidence, 6), terms, entry.product.title, entry.product.brand)
        )
    return matches


def _brand(index: CatalogueIndex, product_id: str) -> str:
    entry = index.get(product_id)
    return entry.product.brand if entry is not None else ""


def explain(found: Match) -> list[str]:
    """Lines for `likeflow match <video_id>`: the product, its score and confidence, then each
    term's contribution, the fields it matched and where it came from."""
    lines = [
        f"{found.product_id}  {found.title}  [{found.brand}]  score {found.score:.3f}  "
        f"confidence {found.confidence:.3f}"
    ]
    lines.extend(
        f"    {t.term:<12} +{t.contribution:7.3f}  (weight {t.weight:.2f}; in {', '.join(t.fields)}; "
        f"from {', '.join(t.sources)})"
        for t in found.terms
    )
    return lines
