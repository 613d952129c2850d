"""Agent `judge_creators`: platform totals, smoothed creator rates and demotion, per closed window."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from likeflow.domain.quality.judging import (
    CreatorStanding,
    apply_verdict,
    judge_window,
    platform_document,
    window_applies,
)
from likeflow.domain.quality.windows import Counts
from likeflow.sinks.redis_quality import platform_key, standing_key
from streams.topics import CREATOR_WINDOWS
from tables import put_for_event

log = logging.getLogger(__name__)

PLATFORM_KEY = "__platform__"


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    table = ctx.tables.creator_standing
    metrics = ctx.metrics
    retention_ms = ctx.windows.retention_ms
    consumed = metrics.records_consumed.labels(ctx.settings.topic(CREATOR_WINDOWS))
    batch_seconds = metrics.batch_duration.labels("judge_creators")

    async def judge(event: Any, docs: list[tuple[str, int, dict[str, Any]]]) -> None:
        offset = event.message.offset
        closed = orjson.loads(event.message.value)
        creator_id, start = closed["creator_id"], closed["start_ms"]
        counts = Counts.from_dict(closed)
        row = table.get(creator_id) or {"standing": None, "last_offset": -1}
        platform = table.get(PLATFORM_KEY) or {"windows": {}, "last_offset": -1}
        to_platform, to_creator = window_applies(row, platform, offset, start)
        if to_platform:
            windows = platform["windows"]
            key = str(start)
            merged = Counts.from_dict(windows.get(key, {}))
            merged.add(counts)
            windows[key] = merged.to_dict()
            newest = max(int(k) for k in windows)
            platform = {
                "windows": {k: v for k, v in windows.items() if int(k) > newest - retention_ms},
                "last_offset": offset,
            }
            put_for_event(table, event, PLATFORM_KEY, platform)
        platform_doc, rates = platform_document(platform["windows"])
        for name, value in rates.to_dict().items():
            if value is not None:
                metrics.platform_rate.labels(name).set(value)
        docs.append((platform_key(ctx.quality_store.prefix), offset, platform_doc))

        if not to_creator:
            return
        standing = CreatorStanding.from_dict(row["standing"])
        verdict = judge_window(start, counts, rates, ctx.judging)
        change = apply_verdict(standing, verdict, ctx.judging)
        if not verdict.judged:
            # The row keeps the document last served (if any): `likeflow rebuild-redis` writes
            # it back at the version the judge used, so the rebuild and a live judge agree.
            put_for_event(
                table,
                event,
                creator_id,
                {**row, "standing": standing.to_dict(), "last_offset": offset, "last_window": start},
            )
            return
        record = {
            "creator_id": creator_id,
            "window_start": start,
            "window_end": closed["end_ms"],
            "change": change,
            "demoted": standing.demoted,
            "weight": standing.weight,
            "score": standing.score,
            "reasons": list(verdict.reasons),
            "window": counts.to_dict(),
            "smoothed": {
                "ctr": verdict.ctr,
                "return_rate": verdict.return_rate,
                "complaint_rate": verdict.complaint_rate,
            },
            "platform": rates.to_dict(),
        }
        served = {"version": offset, "doc": record}
        put_for_event(
            table,
            event,
            creator_id,
            {"standing": standing.to_dict(), "last_offset": offset, "last_window": start, "served": served},
        )
        # Compacted, keyed by creator: the latest verdict is every worker's ranking weight.
        await ctx.topics.creator_quality.send(key=creator_id.encode(), value=orjson.dumps(record))
        docs.append((standing_key(ctx.quality_store.prefix, creator_id), offset, record))
        if change is not None:
            metrics.creator_changes.labels(change).inc()
            log.info(
                "creator %s %s after window %d (score %.3f, weight %.3f, reasons %s)",
                creator_id,
                change,
                start,
                standing.score,
                standing.weight,
                ",".join(verdict.reasons) or "-",
            )

    async def judge_creators(stream: Any) -> None:
        async for events in stream.take_events(
            ctx.settings.batch_max, within=ctx.settings.batch_within_ms / 1000
        ):
            started = time.perf_counter()
            docs: list[tuple[str, int, dict[str, Any]]] = []
            for event in events:
                consumed.inc()
                await judge(event, docs)
            await ctx.quality_store.write(docs)
            batch_seconds.observe(time.perf_counter() - started)

    return app.agent(ctx.topics.creator_windows, name="judge_creators")(judge_creators)
