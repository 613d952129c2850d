"""The content matcher on its labelled evaluation set: precision@1, coverage, footprint, time.

python -m likeflow.ops.match_eval [--sweep] [--misses]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from likeflow.domain.matching import (
    DEFAULT_MIN_CONFIDENCE,
    CatalogueIndex,
    Match,
    Segmenter,
    load_segmenter,
    match,
)
from streams.content import CatalogueProduct, VideoContent

DATA = Path(__file__).resolve().parents[2] / "data" / "matching"
CATALOGUE = DATA / "catalogue.jsonl"
EVAL_SET = DATA / "eval.jsonl"
#: The category of the evaluation set's videos that feature no catalogue product.
NO_PRODUCT = "无商品"


@dataclass(frozen=True, slots=True)
class LabelledVideo:
    """A video of the evaluation set: its content, category, and the correct product ids (empty:
    no product should be proposed)."""

    content: VideoContent
    category: str
    expected: frozenset[str]
    case: str

    @property
    def dev(self) -> bool:
        """The dev half (even video number) chose the threshold; the other half is held out."""
        return int(self.content.video_id[2:]) % 2 == 0


def load_catalogue(path: Path = CATALOGUE) -> list[CatalogueProduct]:
    with path.open(encoding="utf-8") as lines:
        return [CatalogueProduct.from_dict(json.loads(line)) for line in lines if line.strip()]


def load_videos(path: Path = EVAL_SET) -> list[LabelledVideo]:
    videos = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            row = json.loads(line)
            expected = frozenset() if row["expected"] == "none" else frozenset(row["expected"])
            videos.append(LabelledVideo(VideoContent.from_dict(row), row["category"], expected, row["case"]))
    return videos


@dataclass(slots=True)
class Tally:
    """Counts of one group of videos."""

    videos: int = 0
    proposed: int = 0
    answerable_proposed: int = 0  # a proposal where a correct answer exists
    correct: int = 0  # ... and the top proposal is one of them
    none_videos: int = 0
    none_silent: int = 0  # "none" videos with no proposal

    def add(self, video: LabelledVideo, top: Match | None) -> None:
        self.videos += 1
        if top is not None:
            self.proposed += 1
        if video.expected:
            if top is not None:
                self.answerable_proposed += 1
                self.correct += top.product_id in video.expected
        else:
            self.none_videos += 1
            self.none_silent += top is None

    @property
    def precision_at_1(self) -> float:
        return self.correct / self.answerable_proposed if self.answerable_proposed else 0.0

    @property
    def coverage(self) -> float:
        return self.proposed / self.videos if self.videos else 0.0

    @property
    def none_precision(self) -> float:
        return self.none_silent / self.none_videos if self.none_videos else 1.0


@dataclass(slots=True)
class Report:
    """The evaluation at one threshold: all videos, each half, each category."""

    min_confidence: float
    all: Tally = field(default_factory=Tally)
    dev: Tally = field(default_factory=Tally)
    held_out: Tally = field(default_factory=Tally)
    categories: dict[str, Tally] = field(default_factory=dict)
    misses: list[tuple[LabelledVideo, Match | None]] = field(default_factory=list)


def evaluate(
    videos: Iterable[LabelledVideo], index: CatalogueIndex, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> Report:
    """Match every video and count (precision@1 over videos with a proposal and a correct answer;
    coverage over all videos; none-precision over the "none" videos)."""
    report = Report(min_confidence)
    for video in videos:
        found = match(video.content, index, k=1, min_confidence=min_confidence)
        top = found[0] if found else None
        report.all.add(video, top)
        (report.dev if video.dev else report.held_out).add(video, top)
        report.categories.setdefault(video.category, Tally()).add(video, top)
        wrong = top is not None and top.product_id not in video.expected
        if wrong or (top is None and video.expected):
            report.misses.append((video, top))
    return report


@dataclass(frozen=True, slots=True)
class Footprint:
    """What loading costs: seconds, traced Python allocations and the RSS growth (bytes)."""

    segmenter_s: float
    index_s: float
    traced_bytes: int
    rss_bytes: int


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * 4096


def load_measured(products: Sequence[CatalogueProduct]) -> tuple[CatalogueIndex, Footprint]:
    """Load the process's segmenter (jieba's dictionary) and index `products`, timed and with the
    RSS growth; then the Python allocations of a second segmenter and index, traced (tracemalloc
    slows loading several times, so it is not on the timed one). Meaningful in a fresh process:
    the segmenter is loaded once per process."""
    gc.collect()
    rss = _rss()
    started = time.perf_counter()
    segmenter = load_segmenter()
    loaded = time.perf_counter()
    index = CatalogueIndex.build(segmenter, products)
    built = time.perf_counter()
    gc.collect()
    grown = _rss() - rss
    tracemalloc.start()
    traced_index = CatalogueIndex.build(Segmenter(), products)
    gc.collect()
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced_index
    return index, Footprint(loaded - started, built - loaded, traced, grown)


def time_per_video(videos: Sequence[LabelledVideo], index: CatalogueIndex, repeats: int = 5) -> float:
    """Microseconds per video of `match` (k=3), the best of `repeats` passes over all videos."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for video in videos:
            match(video.content, index, k=3)
        best = min(best, time.perf_counter() - started)
    return best / len(videos) * 1e6


def _row(name: str, t: Tally) -> str:
    return (
        f"{name:<10} {t.videos:>4} {t.proposed:>5} {t.coverage:>8.3f} {t.answerable_proposed:>5} "
        f"{t.precision_at_1:>7.3f} {t.none_videos:>5} {t.none_precision:>7.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sweep", action="store_true", help="precision and coverage at each threshold")
    parser.add_argument("--misses", action="store_true", help="print every wrong or missing proposal")
    args = parser.parse_args(argv)
    products = load_catalogue()
    videos = load_videos()
    index, footprint = load_measured(products)
    report = evaluate(videos, index)
    per_video = time_per_video(videos, index)
    print(
        f"catalogue {len(products)} products ({index.eligible_count} eligible), {len(videos)} videos "
        f"({sum(1 for v in videos if not v.expected)} 'none'); threshold {report.min_confidence}"
    )
    print(
        f"{'group':<10} {'n':>4} {'prop':>5} {'coverage':>8} {'ans':>5} {'p@1':>7} {'none':>5} {'none-p':>7}"
    )
    print(_row("all", report.all))
    print(_row("dev", report.dev))
    print(_row("held-out", report.held_out))
    for name, tally in sorted(report.categories.items()):
        print(_row(name, tally))
    print(
        f"load: jieba dictionary {footprint.segmenter_s:.2f} s, index {footprint.index_s * 1000:.1f} ms; "
        f"traced {footprint.traced_bytes / 2**20:.1f} MiB, RSS +{footprint.rss_bytes / 2**20:.1f} MiB"
    )
    print(f"match: {per_video:.0f} us per video (k=3, best of 5 passes)")
    if args.sweep:
        print(
            f"{'threshold':<10} {'dev p@1':>8} {'dev cov':>8} {'dev none':>9} {'all p@1':>8} {'all cov':>8}"
        )
        for step in range(0, 17):
            threshold = step * 0.05
            r = evaluate(videos, index, threshold)
            print(
                f"{threshold:<10.2f} {r.dev.precision_at_1:>8.3f} {r.dev.coverage:>8.3f} "
                f"{r.dev.none_precision:>9.3f} {r.all.precision_at_1:>8.3f} {r.all.coverage:>8.3f}"
            )
    if args.misses:
        for video, top in report.misses:
            got = f"{top.product_id} {top.title} ({top.confidence:.2f})" if top else "nothing"
            want = ", ".join(sorted(video.expected)) or "none"
            print(
                f"{video.content.video_id} [{video.case}] {video.content.caption!r}: got {got}; want {want}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
