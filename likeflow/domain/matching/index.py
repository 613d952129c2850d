"""The in-memory catalogue index: eligible products' terms per field, BM25F scoring (docs/matching.md)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from likeflow.domain.matching.model import CatalogueEntry
from likeflow.domain.matching.segmenter import Segmenter, normalise

#: BM25 term-frequency saturation: the usual 1.2. Titles are short and rarely repeat a word, so
#: the value matters little; it keeps a title that says "锅" three times from outscoring one that
#: names the brand.
BM25_K1 = 1.2
#: BM25 length normalisation: the usual 0.75, so a long keyword-stuffed title is not favoured
#: over a short exact one.
BM25_B = 0.75
#: Field weights (BM25F: a term's frequency in each field is weighted, then saturated once).
#: The brand is what a caption names most reliably and is the strongest evidence; the title holds
#: the kind, series and nicknames; attributes (shade, size, flavour) decide between variants;
#: the category is broad (it separates kinds little) and counts least.
FIELD_WEIGHTS: Mapping[str, float] = {"title": 1.0, "brand": 2.0, "attributes": 0.8, "category": 0.3}
FIELDS: tuple[str, ...] = tuple(FIELD_WEIGHTS)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One product as indexed: its catalogue record and its terms per field (in `FIELDS` order)."""

    product: CatalogueEntry
    fields: tuple[tuple[str, ...], ...]

    @property
    def eligible(self) -> bool:
        """Certified and in stock: only these are scored."""
        return self.product.certified and self.product.stock > 0


def _attribute_values(product: CatalogueEntry) -> list[str]:
    return [value for _, value in product.attributes]


class CatalogueIndex:
    """Every catalogue product by id, and an inverted index of the eligible ones.

    `upsert` and `remove` apply one catalogue change at a time (a compacted topic's follower
    calls them per record); the statistics BM25 needs (document frequency, field lengths) are
    kept incrementally, over the eligible products only.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self._entries: dict[str, IndexEntry] = {}
        # term -> product_id -> term frequency per field
        self._postings: dict[str, dict[str, tuple[int, ...]]] = {}
        self._length_sums = [0] * len(FIELDS)
        self._eligible = 0

    @classmethod
    def build(cls, segmenter: Segmenter, products: Iterable[CatalogueEntry]) -> CatalogueIndex:
        """An index of `products`, the catalogue's words added to the segmenter first (so no
        product is segmented twice)."""
        products = list(products)
        segmenter.add_words(w for p in products for w in (p.brand, p.category, *_attribute_values(p)))
        index = cls(segmenter)
        for product in products:
            index._put(product)
        return index

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._entries

    @property
    def eligible_count(self) -> int:
        """How many products are eligible (scored)."""
        return self._eligible

    def get(self, product_id: str) -> IndexEntry | None:
        """The indexed product, eligible or not."""
        return self._entries.get(product_id)

    def upsert(self, product: CatalogueEntry) -> None:
        """Add or replace a product (a change of stock or certification moves it in or out of the
        eligible set). New catalogue words (a new brand) are added to the segmenter, and the
        products whose text holds them are re-segmented, so a product and a caption always
        segment alike."""
        new_words = self.segmenter.add_words((product.brand, product.category, *_attribute_values(product)))
        self._put(product)
        if new_words:
            for entry in list(self._entries.values()):
                if entry.product.product_id != product.product_id and _holds(entry.product, new_words):
                    self._put(entry.product)

    def remove(self, product_id: str) -> bool:
        """Remove a product (a catalogue tombstone); False if it was not there."""
        entry = self._entries.pop(product_id, None)
        if entry is None:
            return False
        self._unpost(entry)
        return True

    def _put(self, product: CatalogueEntry) -> None:
        old = self._entries.get(product.product_id)
        if old is not None:
            self._unpost(old)
        terms = self.segmenter.terms
        entry = IndexEntry(
            product,
            (
                tuple(terms(product.title)),
                tuple(terms(product.brand)),
                tuple(t for value in _attribute_values(product) for t in terms(value)),
                tuple(terms(product.category)),
            ),
        )
        self._entries[product.product_id] = entry
        if not entry.eligible:
            return
        self._eligible += 1
        counts = [Counter(field) for field in entry.fields]
        for i, field in enumerate(entry.fields):
            self._length_sums[i] += len(field)
        for term in set().union(*counts):
            self._postings.setdefault(term, {})[product.product_id] = tuple(c[term] for c in counts)

    def _unpost(self, entry: IndexEntry) -> None:
        if not entry.eligible:
            return
        self._eligible -= 1
        for i, field in enumerate(entry.fields):
            self._length_sums[i] -= len(field)
        for term in {t for field in entry.fields for t in field}:
            posting = self._postings.get(term)
            if posting is not None:
                posting.pop(entry.product.product_id, None)
                if not posting:
                    del self._postings[term]

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency over the eligible products (always > 0)."""
        df = len(self._postings.get(term, ()))
        n = self._eligible
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def score_term(self, term: str) -> dict[str, tuple[float, tuple[str, ...]]]:
        """Each eligible product holding `term`: its BM25F contribution (before the query weight)
        and the fields it was found in."""
        posting = self._postings.get(term)
        if not posting:
            return {}
        idf = self.idf(term)
        n = self._eligible
        averages = [s / n if n else 0.0 for s in self._length_sums]
        lengths = {pid: self._entries[pid].fields for pid in posting}
        out: dict[str, tuple[float, tuple[str, ...]]] = {}
        for pid, freqs in posting.items():
            weighted = 0.0
            found = []
            for i, tf in enumerate(freqs):
                if not tf:
                    continue
                found.append(FIELDS[i])
                norm = 1.0 - BM25_B + BM25_B * (len(lengths[pid][i]) / averages[i] if averages[i] else 1.0)
                weighted += FIELD_WEIGHTS[FIELDS[i]] * tf / norm
            out[pid] = (idf * weighted * (BM25_K1 + 1.0) / (BM25_K1 + weighted), tuple(found))
        return out


def _holds(product: CatalogueEntry, words: list[str]) -> bool:
    text = normalise(" ".join((product.title, product.brand, product.category, *_attribute_values(product))))
    return any(word in text for word in words)
