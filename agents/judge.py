"""Agent `judge_creators`: each creator judged over the trailing horizon of closed windows."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from likeflow.domain.quality.horizon import PlatformHorizon, apply_window, creator_totals
from likeflow.domain.quality.judging import CreatorStanding, apply_verdict, judge_horizon, platform_document
from likeflow.sinks.redis_keys import platform_key, standing_key
from streams.events import CONTRACT_HEADER_MAP
from streams.topics import CREATOR_WINDOWS
from tables import put_for_event

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    table = ctx.tables.creator_standing
    metrics = ctx.metrics
    policy = ctx.judging
    consumed = metrics.records_consumed.labels(ctx.settings.topic(CREATOR_WINDOWS))
    batch_seconds = metrics.batch_duration.labels("judge_creators")
    # The platform's sums are derived from the creators' rows: rebuilt after every rebalance
    # (the table was just recovered), then kept up to date window by window.
    horizon: list[PlatformHorizon] = []

    def forget_platform(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        horizon.clear()

    app.on_partitions_assigned.connect(forget_platform)  # type: ignore[arg-type]  # mode's stub is stricter than its runtime

    def platform() -> PlatformHorizon:
        if not horizon:
            rows = [v for v in list(table.data.values()) if isinstance(v, dict)]
            horizon.append(PlatformHorizon.rebuild(policy.horizon_ms, rows))
        return horizon[0]

    async def judge(event: Any, docs: list[tuple[str, int, dict[str, Any]]]) -> None:
        offset = event.message.offset
        closed = orjson.loads(event.message.value)
        creator_id = closed["creator_id"]
        row = table.get(creator_id) or {}
        windows = dict(row.get("windows") or {})
        platform_now = platform()
        applied = apply_window(
            windows,
            platform_now,
            start_ms=closed["start_ms"],
            end_ms=closed["end_ms"],
            counts=closed,
            revision=int(closed.get("revision", 1)),
        )
        if not applied:
            # A redelivered or re-sent revision (or a window already outside the horizon). If it
            # is a redelivery after a crash, the row may have reached the changelog while what was
            # derived from it did not: serve the row's last verdict again (idempotent).
            served = row.get("served")
            if served:
                await ctx.topics.creator_quality.send(
                    key=creator_id.encode(), value=orjson.dumps(served["doc"]), headers=CONTRACT_HEADER_MAP
                )
                docs.append(
                    (standing_key(ctx.quality_store.prefix, creator_id), served["version"], served["doc"])
                )
            return
        platform_doc, platform_rates = platform_document(platform_now.totals())
        for name, value in platform_rates.to_dict().items():
            if value is not None:
                metrics.platform_rate.labels(name).set(value)
        docs.append((platform_key(ctx.quality_store.prefix), offset, platform_doc))

        # The creator is judged on the horizon that ends with this window, against the platform
        # over the same span: each window closing is one judgment, in the creator's own order.
        end = int(closed["end_ms"])
        _, rates = platform_document(platform_now.totals(end))
        standing = CreatorStanding.from_dict(row.get("standing"))
        mine = creator_totals(windows, end, policy.horizon_ms)
        verdict = judge_horizon(end, mine, rates, policy)
        change = apply_verdict(standing, verdict, policy)
        # `last_offset`: the platform document's version when this row last changed it.
        new_row: dict[str, Any] = {"windows": windows, "standing": standing.to_dict(), "last_offset": offset}
        if not verdict.judged:
            # The row keeps the document last served (if any): `likeflow rebuild-redis` writes
            # it back at the version the judge used, so the rebuild and a live judge agree.
            if row.get("served"):
                new_row["served"] = row["served"]
            put_for_event(table, event, creator_id, new_row)
            return
        record = {
            "creator_id": creator_id,
            "horizon_start": end - policy.horizon_ms,
            "horizon_end": end,
            "change": change,
            "demoted": standing.demoted,
            "weight": standing.weight,
            "score": standing.score,
            "reasons": list(verdict.reasons),
            "horizon": mine.to_dict(),
            "smoothed": {
                "ctr": verdict.ctr,
                "return_rate": verdict.return_rate,
                "complaint_rate": verdict.complaint_rate,
            },
            "platform": rates.to_dict(),
        }
        new_row["served"] = {"version": offset, "doc": record}
        put_for_event(table, event, creator_id, new_row)
        # Compacted, keyed by creator: the latest verdict is every worker's ranking weight.
        await ctx.topics.creator_quality.send(
            key=creator_id.encode(), value=orjson.dumps(record), headers=CONTRACT_HEADER_MAP
        )
        docs.append((standing_key(ctx.quality_store.prefix, creator_id), offset, record))
        if change is not None:
            metrics.creator_changes.labels(change).inc()
            log.info(
                "creator %s %s at horizon end %d (score %.3f, weight %.3f, reasons %s)",
                creator_id,
                change,
                end,
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
