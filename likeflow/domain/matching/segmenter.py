"""Text to terms: normalisation, script runs, jieba word segmentation, stopwords (docs/matching.md)."""

from __future__ import annotations

import functools
import logging
import threading
import unicodedata
from collections.abc import Iterable

import jieba

#: Words that carry no product meaning but would match catalogue text by accident: function
#: words and particles, pronouns, and the filler of creator captions. Short on purpose: a
#: caption word that no catalogue text holds scores nothing anyway (BM25 sums over terms
#: found in products), so only words that do occur in titles or attributes need to be here.
STOPWORDS: frozenset[str] = frozenset(
    {
        # particles, pronouns, function words
        *"的了是我你他她它这那也都就和很太啊呀吧呢吗哦嘛在有个给被让把还又之与及或",
        "一个",
        "这个",
        "那个",
        "这款",
        "一款",
        "真的",
        "我们",
        "你们",
        "大家",
        "今天",
        "什么",
        "可以",
        "没有",
        "就是",
        "还是",
        "不是",
        # caption filler
        "分享",
        "推荐",
        "好物",
        "种草",
        "拔草",
        "开箱",
        "同款",
        "网红",
        "爆款",
        "平替",
        "回购",
        "测评",
        "效果",
        "真实",
        "感受",
        "家人",
        "集美",
        "宝子",
        # Latin
        "the",
        "a",
        "an",
        "and",
        "of",
        "my",
        "i",
        "is",
        "so",
        "to",
        "in",
        "vlog",
        "ootd",
        "grwm",
        "yyds",
    }
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def normalise(text: str) -> str:
    """NFKC (full-width letters and digits to ASCII, compatibility forms folded), lower case,
    and Latin letters without their accents (é -> e)."""
    text = unicodedata.normalize("NFKC", text).lower()
    if text.isascii():
        return text
    out = []
    for char in text:
        if char.isascii() or _is_cjk(char):
            out.append(char)
            continue
        base = unicodedata.normalize("NFKD", char)
        stripped = "".join(c for c in base if not unicodedata.combining(c))
        out.append(stripped if stripped.isascii() and stripped.isalpha() else char)
    return "".join(out)


def script_runs(text: str) -> list[tuple[bool, str]]:
    """Split normalised text into runs of Han characters (True) and of ASCII letters and digits
    (False); everything else (spaces, punctuation, emoji, other scripts) separates runs, so
    "ysl小金条" gives ("ysl", "小金条")."""
    runs: list[tuple[bool, str]] = []
    start = 0
    kind: bool | None = None
    for index, char in enumerate(text):
        this: bool | None
        if _is_cjk(char):
            this = True
        elif char.isascii() and char.isalnum():
            this = False
        else:
            this = None
        if this != kind:
            if kind is not None:
                runs.append((kind, text[start:index]))
            start = index
            kind = this
    if kind is not None:
        runs.append((kind, text[start:]))
    return runs


def _latin_terms(run: str) -> list[str]:
    """An ASCII run, plus its letter and digit parts when it mixes them ("pocket3" -> pocket3,
    pocket, 3); single letters are dropped."""
    terms = [run] if len(run) > 1 or run.isdigit() else []
    parts: list[str] = []
    current = ""
    for char in run:
        if current and char.isdigit() != current[-1].isdigit():
            parts.append(current)
            current = ""
        current += char
    parts.append(current)
    if len(parts) > 1:
        terms.extend(p for p in parts if len(p) > 1 or p.isdigit())
    return terms


class Segmenter:
    """jieba (its default dictionary, about 350,000 words) plus user words from the catalogue,
    so brand names, categories and attribute values segment whole.

    One per process (`load_segmenter`): the dictionary takes about half a second and tens of MB
    to load (docs/matching.md has the measured figures). `add_words` is thread-safe; segmenting
    reads only.
    """

    def __init__(self) -> None:
        self._tokenizer = jieba.Tokenizer()
        self._tokenizer.initialize()
        self._user_words: set[str] = set()
        self._lock = threading.Lock()

    def add_words(self, words: Iterable[str]) -> list[str]:
        """Add catalogue words (brands, categories, attribute values); returns those new to the
        dictionary, whose earlier segmentations may differ (the index re-segments those
        products). Only words of two or more Han characters are added: Latin runs are split by
        script already."""
        new: list[str] = []
        with self._lock:
            for raw in words:
                for is_han, run in script_runs(normalise(raw)):
                    if not is_han or len(run) < 2 or run in self._user_words:
                        continue
                    self._user_words.add(run)
                    if self._tokenizer.FREQ.get(run, 0) > 0:
                        continue  # already a dictionary word
                    self._tokenizer.add_word(run)
                    new.append(run)
        return new

    def terms(self, text: str) -> list[str]:
        """The terms of `text`, in order, repeats kept, stopwords dropped: Latin runs whole (and
        their letter/digit parts), Han runs by jieba's search mode (a long word and the dictionary
        words inside it: "精华液" gives 精华, 精华液)."""
        out: list[str] = []
        for is_han, run in script_runs(normalise(text)):
            if is_han:
                words: Iterable[str] = self._tokenizer.cut_for_search(run, HMM=False)
            else:
                words = _latin_terms(run)
            out.extend(w for w in words if w not in STOPWORDS)
        return out

    @property
    def user_words(self) -> frozenset[str]:
        """The catalogue words added so far."""
        return frozenset(self._user_words)


@functools.cache
def load_segmenter() -> Segmenter:
    """The process's segmenter, loaded on first use (jieba's dictionary: ~0.5 s)."""
    jieba.setLogLevel(logging.WARNING)
    return Segmenter()
