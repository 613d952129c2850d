"""`likeflow status`: a compact terminal view of one worker, computed from two /metrics scrapes."""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from streams.topics import CREATOR_EVENTS, LIKES, PROMPT_FEEDBACK

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]


def parse(text: str) -> Samples:
    """Prometheus text exposition -> {sample name: {sorted labels: value}}."""
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    """Fetch and parse a worker's /metrics."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - operator-given URL
        return parse(resp.read().decode())


def total(samples: Samples, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    """Sum of a metric's samples whose labels pass `where`."""
    return sum(v for labels, v in samples.get(name, {}).items() if where(dict(labels)))


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """Quantile from cumulative histogram buckets {upper bound: count}, like histogram_quantile."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for upper in bounds:
        if buckets[upper] >= rank:
            if math.isinf(upper):
                return lower
            within = buckets[upper] - below
            return lower + (upper - lower) * ((rank - below) / within if within else 0.0)
        lower, below = upper, buckets[upper]
    return None


def bucket_deltas(before: Samples, after: Samples, name: str) -> dict[float, float]:
    """Per-bucket increase of a histogram between two scrapes (summed over other labels)."""
    out: dict[float, float] = defaultdict(float)
    for labels, value in after.get(f"{name}_bucket", {}).items():
        le = float(dict(labels)["le"])
        out[le] += value - before.get(f"{name}_bucket", {}).get(labels, 0.0)
    return dict(out)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the status view shows; rates per second over the interval between two scrapes."""

    likes_per_s: float
    prompts_per_s: float
    feedback_per_s: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    lag_total: float
    lag_max: float
    dead_letters: dict[str, float]
    late_records: float
    demoted: float
    platform: dict[str, float]
    redis_errors: float


def topic_prefix(samples: Samples) -> str:
    """The worker's LIKEFLOW_TOPIC_PREFIX, read off the topics its metrics name.

    Every consumed topic is a contract name behind one prefix, so the prefix is what precedes
    `likes` in the topic whose name also precedes `creator-events` (any prefix, also one
    ending in `-`, as in `prod-likes`).
    """
    topics = {dict(labels).get("topic", "") for labels in samples.get("likeflow_records_consumed_total", {})}
    found = [t[: -len(LIKES)] for t in topics if t.endswith(LIKES)]
    for prefix in found:
        if prefix + CREATOR_EVENTS in topics:
            return prefix
    return found[0] if len(found) == 1 else ""


def summarize(before: Samples, after: Samples, interval_s: float, prefix: str | None = None) -> Snapshot:
    """Compute the view from two scrapes `interval_s` (> 0) seconds apart; `prefix` is the
    worker's topic prefix (None: read off the scrape)."""
    if interval_s <= 0:
        raise ValueError(f"the interval between scrapes must be > 0 s, not {interval_s}")
    if prefix is None:
        prefix = topic_prefix(after)

    def rate(name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
        return max(0.0, total(after, name, where) - total(before, name, where)) / interval_s

    def topic_is(name: str) -> Callable[[dict[str, str]], bool]:
        return lambda labels: labels.get("topic") == prefix + name

    latency = bucket_deltas(before, after, "likeflow_like_to_prompt_latency_seconds")
    lags = list(after.get("likeflow_consumer_lag_records", {}).values())
    dead: dict[str, float] = defaultdict(float)
    for labels, value in after.get("likeflow_dead_letters_total", {}).items():
        if value:
            dead[dict(labels)["reason"]] += value
    return Snapshot(
        likes_per_s=rate("likeflow_records_consumed_total", topic_is(LIKES)),
        prompts_per_s=rate("likeflow_prompts_emitted_total"),
        feedback_per_s=rate("likeflow_records_consumed_total", topic_is(PROMPT_FEEDBACK)),
        latency_p50_s=quantile(latency, 0.5),
        latency_p99_s=quantile(latency, 0.99),
        lag_total=sum(lags),
        lag_max=max(lags, default=0.0),
        dead_letters=dict(dead),
        late_records=total(after, "likeflow_late_records_total"),
        demoted=total(after, "likeflow_creators_demoted"),
        platform={dict(k)["rate"]: v for k, v in after.get("likeflow_platform_rate_ratio", {}).items()},
        redis_errors=total(after, "likeflow_redis_write_errors_total"),
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def render(s: Snapshot, url: str) -> str:
    """The compact text view."""
    dead = ", ".join(f"{r} {v:.0f}" for r, v in sorted(s.dead_letters.items())) or "none"
    platform = "  ".join(f"{k} {v:.3f}" for k, v in sorted(s.platform.items())) or "no closed window yet"
    return "\n".join(
        [
            f"likeflow worker {url}",
            f"  throughput  likes in {s.likes_per_s:8.1f}/s   prompts out {s.prompts_per_s:8.1f}/s   "
            f"feedback in {s.feedback_per_s:6.1f}/s",
            f"  latency     like->prompt p50 {_ms(s.latency_p50_s)}   p99 {_ms(s.latency_p99_s)}",
            f"  lag         {s.lag_total:.0f} records in all, max {s.lag_max:.0f} on one partition",
            f"  bad input   dead letters: {dead};  late records {s.late_records:.0f}",
            f"  quality     demoted creators {s.demoted:.0f};  platform {platform}",
            f"  redis       write errors {s.redis_errors:.0f}",
        ]
    )
