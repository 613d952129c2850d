"""Where a batch's time goes: deltas of the worker's likeflow_batch_stage_seconds histogram between two scrapes."""

from __future__ import annotations

import math
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any

FAMILY = "likeflow_batch_stage_seconds"
# The engine's stages and the handlers' (likeflow/engine/contract.py STAGES, StageTimer), in the
# order a batch meets them; a stage not listed here is reported after these.
ORDER = (
    "fetch",
    "age",
    "room",
    "process",
    "changelog_ack",
    "turn",
    "send",
    "outputs_ack",
    "audit",
    "redis",
    "complete",
    "commit",
)
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Histogram:
    """One (topic, stage) series: sum of the observations (seconds), their count (batches), and
    the cumulative count per bucket upper bound (seconds; math.inf for +Inf)."""

    sum: float = 0.0
    count: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            self.sum - earlier.sum,
            self.count - earlier.count,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )

    def quantile(self, q: float) -> float:
        """Approximate `q` quantile (seconds) as Prometheus' histogram_quantile computes it: linear
        within the bucket that holds rank q*count; the largest finite bound when it falls in +Inf."""
        if self.count <= 0:
            return math.nan
        rank, lower, below = q * self.count, 0.0, 0.0
        finite = sorted(le for le in self.buckets if le != math.inf)
        for le in finite:
            cum = self.buckets[le]
            if cum >= rank:
                return lower + (le - lower) * ((rank - below) / (cum - below)) if cum > below else le
            lower, below = le, cum
        return finite[-1] if finite else math.nan


Snapshot = dict[tuple[str, str], Histogram]


def scrape(port: int) -> str:
    """The worker's /metrics text (Prometheus exposition format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        text: str = resp.read().decode()
    return text


def parse(text: str) -> Snapshot:
    """The stage histogram's series in a /metrics text, by (topic, stage)."""
    out: Snapshot = {}
    for line in text.splitlines():
        if not line.startswith(FAMILY):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        series = out.setdefault((labels.get("topic", ""), labels.get("stage", "")), Histogram())
        value, suffix = float(match["value"]), match["name"][len(FAMILY) :]
        if suffix == "_sum":
            series.sum = value
        elif suffix == "_count":
            series.count = value
        elif suffix == "_bucket":
            series.buckets[math.inf if labels["le"] == "+Inf" else float(labels["le"])] = value
    return out


def snapshot(port: int) -> Snapshot:
    """The worker's stage histograms now."""
    return parse(scrape(port))


def breakdown(before: Snapshot, after: Snapshot, prefix: str = "") -> dict[str, dict[str, dict[str, Any]]]:
    """{topic: {stage: {"batches", "mean_ms", "p99_ms"}}} of the batches observed between the two
    snapshots (topic without `prefix`; "all" for the commit); mean and approximate p99 (from the
    buckets) of one batch's time in the stage, milliseconds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (topic, stage), series in sorted(after.items(), key=lambda kv: (kv[0][0], _rank(kv[0][1]))):
        delta = series.minus(before.get((topic, stage), Histogram()))
        if delta.count <= 0:
            continue
        out.setdefault(topic.removeprefix(prefix), {})[stage] = {
            "batches": int(delta.count),
            "mean_ms": delta.sum / delta.count * 1000,
            "p99_ms": delta.quantile(0.99) * 1000,
        }
    return out


def _p99(ms: float) -> str:
    """A p99 for the table: "≤ 1" when it falls in the first bucket (0-1 ms), where
    interpolation would only say "somewhere below 1 ms"."""
    return "≤ 1" if ms <= 1.0 else f"{ms:.0f}"


def _rank(stage: str) -> int:
    return ORDER.index(stage) if stage in ORDER else len(ORDER)


def markdown(stages: dict[str, dict[str, dict[str, Any]]], title: str) -> list[str]:
    """A table of one breakdown: a row per (topic, stage)."""
    if not stages:
        return []
    lines = [
        f"| {title}: topic | stage | batches | mean ms | ~p99 ms (buckets) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for topic, by_stage in stages.items():
        lines += [
            f"| {topic} | {stage} | {s['batches']} | {s['mean_ms']:.1f} | {_p99(s['p99_ms'])} |"
            for stage, s in by_stage.items()
        ]
    return lines
