"""Seeded synthetic data for the benchmark: Zipf-skewed videos, users, creators and products.

Not shared with `likeflow demo`'s catalogue on purpose: every recorded run in bench/results was
made with exactly this data (same seed, same draws), so changing it would break the before/after
comparisons; the demo's catalogue is for people to read (localised titles, offer kinds, a slow
feed) and may change freely.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("dress", "sneakers", "lipstick", "cookware", "earbuds", "snacks", "bags", "toys")


@dataclass(frozen=True, slots=True)
class DataSet:
    """Size of the generated data (defaults: the issue's full data set)."""

    likes: int = 1_000_000
    users: int = 200_000
    videos: int = 50_000
    creators: int = 5_000
    zipf_s: float = 1.1
    seed: int = 20261127


def mappings(ds: DataSet, ts: int) -> list[dict[str, Any]]:
    """One `video-products` record per video, 1-5 products each, ~5% uncertified or sold out."""
    rng = random.Random(ds.seed)
    out = []
    for v in range(ds.videos):
        products = [
            {
                "product_id": f"p{v}-{i}",
                "title": f"item {v}-{i}",
                "category": rng.choice(CATEGORIES),
                "price_cents": rng.randint(500, 99_900),
                "certified": rng.random() > 0.05,
                "stock": 0 if rng.random() < 0.05 else rng.randint(1, 500),
            }
            for i in range(rng.randint(1, 5))
        ]
        out.append({"video_id": f"v{v}", "creator_id": f"c{v % ds.creators}", "ts": ts, "products": products})
    return out


def likes(ds: DataSet, ts_start: int, ts_step_ms: float) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `ds.likes` likes: Zipf-popular videos (a few go viral), uniform users."""
    rng = random.Random(ds.seed + 1)
    weights = [1.0 / (rank**ds.zipf_s) for rank in range(1, ds.videos + 1)]
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    order = list(range(ds.videos))
    rng.shuffle(order)  # popularity rank -> video id
    for i in range(ds.likes):
        video = order[bisect.bisect_left(cumulative, rng.random() * total)]
        user = f"u{rng.randrange(ds.users)}"
        body = f'{{"event_id":"b{i}","user_id":"{user}","video_id":"v{video}","ts":{int(ts_start + i * ts_step_ms)}}}'
        yield user.encode(), body.encode()
