"""Content matching (issue 26): propose catalogue products for a video from what it shows and says."""

from __future__ import annotations

from likeflow.domain.matching.index import BM25_B, BM25_K1, FIELD_WEIGHTS, CatalogueIndex, IndexEntry
from likeflow.domain.matching.matcher import (
    DEFAULT_MIN_CONFIDENCE,
    LABEL_BOOST,
    LABEL_MIN_CONFIDENCE,
    Match,
    TermScore,
    explain,
    match,
)
from likeflow.domain.matching.merge import (
    MIN_ELIGIBLE_PRODUCTS,
    SourcedProduct,
    as_mapping,
    merge_with_mapping,
)
from likeflow.domain.matching.model import CatalogueEntry, ContentLike
from likeflow.domain.matching.segmenter import STOPWORDS, Segmenter, load_segmenter, normalise

__all__ = [
    "BM25_B",
    "BM25_K1",
    "DEFAULT_MIN_CONFIDENCE",
    "FIELD_WEIGHTS",
    "LABEL_BOOST",
    "LABEL_MIN_CONFIDENCE",
    "MIN_ELIGIBLE_PRODUCTS",
    "STOPWORDS",
    "CatalogueEntry",
    "CatalogueIndex",
    "ContentLike",
    "IndexEntry",
    "Match",
    "Segmenter",
    "SourcedProduct",
    "TermScore",
    "as_mapping",
    "explain",
    "load_segmenter",
    "match",
    "merge_with_mapping",
    "normalise",
]
