"""Agent `judge_creators`: each creator judged over the trailing horizon of closed windows."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from likeflow.domain.quality.creator_rows import expired_creators, repair_row, sweep_due
from likeflow.domain.quality.horizon import PlatformHorizon, apply_window, creator_totals
from likeflow.domain.quality.judging import CreatorStanding, apply_verdict, judge_horizon, platform_document
from likeflow.domain.quality.windows import business
from likeflow.engine import delete_for_event, put_for_event
from likeflow.sinks.redis_keys import platform_key, standing_key
from streams.events import CONTRACT_HEADER_MAP
from streams.topics import CREATOR_WINDOWS

log = logging.getLogger(__name__)

DAY_MS = 24 * 3_600_000


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests).

    Nothing beyond the time ceiling (the worker's clock plus LIKEFLOW_MAX_CLOCK_SKEW_S, read
    once per batch) is used: rows an earlier version wrote with windows beyond it are repaired
    when the table is loaded (`likeflow_clock_repairs_total{what="creator_standing"}`), and such
    a window still on `creator-windows` is skipped. About once per hour of the judge's clock
    (the highest window end applied), creators without a window for
    LIKEFLOW_CREATOR_RETENTION_DAYS are forgotten (`sweep`).
    """
    table = ctx.tables.creator_standing
    metrics = ctx.metrics
    policy = ctx.judging
    retention_ms = ctx.settings.creator_retention_days * DAY_MS
    consumed = metrics.records_consumed.labels(ctx.settings.topic(CREATOR_WINDOWS))
    batch_seconds = metrics.batch_duration.labels("judge_creators")
    repairs = metrics.clock_repairs.labels("creator_standing")
    # The platform's sums are derived from the creators' rows: rebuilt after every rebalance
    # (the table was just recovered), then kept up to date window by window.
    horizon: list[PlatformHorizon] = []
    # The judge's clock when it last looked for creators to forget (none yet after a rebalance:
    # the first batch looks).
    swept: list[int] = []

    def forget_platform(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        horizon.clear()
        swept.clear()

    app.on_partitions_assigned.connect(forget_platform)  # type: ignore[arg-type]  # mode's stub is stricter than its runtime

    def platform(event: Any, ceiling: int) -> PlatformHorizon:
        if not horizon:
            # The table as recovered: repair rows from beyond the ceiling first (and write the
            # repair, so the changelog and `likeflow rebuild-redis` have it too).
            rows = []
            for key, value in list(table.data.items()):
                if not isinstance(value, dict):
                    continue
                repaired = repair_row(value, ceiling)
                if repaired is not None:
                    log.warning(
                        "creator_standing row of %s held times beyond %d (now + max clock skew), "
                        "written by an earlier version: repaired",
                        key,
                        ceiling,
                    )
                    repairs.inc()
                    put_for_event(table, event, key, repaired)
                    value = repaired
                rows.append(value)
            horizon.append(PlatformHorizon.rebuild(policy.horizon_ms, rows, ceiling))
        return horizon[0]

    async def judge(event: Any, docs: list[tuple[str, int, dict[str, Any]]], ceiling: int) -> None:
        offset = event.message.offset
        closed = orjson.loads(event.message.value)
        creator_id = closed["creator_id"]
        platform_now = platform(event, ceiling)
        if int(closed["start_ms"]) > ceiling:
            # Closed by an earlier version that let a future-stamped record move the counters'
            # clocks: never applied (it would move the judge's clock, and the platform's, there).
            log.warning(
                "skipping the window of %s starting at %d, beyond %d (now + max clock skew)",
                creator_id,
                closed["start_ms"],
                ceiling,
            )
            repairs.inc()
            return
        row = table.get(creator_id) or {}
        windows = dict(row.get("windows") or {})
        applied = apply_window(
            windows,
            platform_now,
            start_ms=closed["start_ms"],
            end_ms=closed["end_ms"],
            counts=closed,
            revision=int(closed.get("revision", 1)),
            ceiling=ceiling,
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
            # For the feed's ranker, and the share of the creator's likes that get a prompt
            # (likeflow.domain.exposure): the same number as `weight`, in [0, 1].
            "recommendation_weight": standing.weight,
            "score": standing.score,
            "reasons": list(verdict.reasons),
            # What keeps a demoted creator demoted: the reasons of its last bad judgment.
            "demotion_reasons": list(standing.reasons) if standing.demoted else [],
            "horizon": mine.to_dict(),
            "business": business(mine),
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

    async def sweep(
        event: Any, docs: list[tuple[str, int, dict[str, Any]]], ceiling: int
    ) -> tuple[list[str], int]:
        """Forget the creators whose newest window ended more than the retention before the
        judge's clock, once per hour of it; returns them and that cutoff (epoch ms; their Redis
        keys go after `docs`).

        Order, for a crash at any point: the `creator-quality` tombstones are acknowledged
        before the rows are deleted, so a crash in between finds the rows again and repeats
        the (idempotent) tombstones; a row is never gone while its verdict stays."""
        platform_now = platform(event, ceiling)
        clock = platform_now.clock
        cutoff = clock - retention_ms
        if not sweep_due(clock, swept[0] if swept else None):
            return [], cutoff
        swept[:] = [clock]
        rows = [(k, v) for k, v in list(table.data.items()) if isinstance(v, dict)]
        gone = expired_creators(rows, clock, retention_ms)
        if not gone:
            return [], cutoff
        # Tombstones: every worker's CreatorWeights replica forgets the weight, and compaction
        # removes the creator's verdicts from the topic.
        sent = [
            await ctx.topics.creator_quality.send(key=c.encode(), value=None, headers=CONTRACT_HEADER_MAP)
            for c in gone
        ]
        await asyncio.gather(*sent)
        for creator_id in gone:
            platform_now.forget((table.data.get(creator_id) or {}).get("windows") or {})
            delete_for_event(table, event, creator_id)
        platform_doc, _ = platform_document(platform_now.totals())
        docs.append((platform_key(ctx.quality_store.prefix), event.message.offset, platform_doc))
        metrics.creators_expired.inc(len(gone))
        log.info(
            "forgot %d creators without a window since %d (judge clock %d, retention %d days)",
            len(gone),
            cutoff,
            clock,
            ctx.settings.creator_retention_days,
        )
        return gone, cutoff

    async def judge_creators(stream: Any) -> None:
        async for events in stream.take_events(
            ctx.settings.batch_max, within=ctx.settings.batch_within_ms / 1000
        ):
            started = time.perf_counter()
            ceiling = ctx.limits.at(int(time.time() * 1000)).max_ts
            docs: list[tuple[str, int, dict[str, Any]]] = []
            for event in events:
                consumed.inc()
                await judge(event, docs, ceiling)
            gone, cutoff = await sweep(events[-1], docs, ceiling) if events else ([], 0)
            await ctx.quality_store.write(docs)
            if gone:
                # After this batch's documents: a creator judged in it and forgotten by the
                # sweep (its partition lagged by more than the retention) ends forgotten.
                await ctx.quality_store.forget_creators(gone, cutoff)
            batch_seconds.observe(time.perf_counter() - started)

    return app.agent(ctx.topics.creator_windows, name="judge_creators")(judge_creators)
