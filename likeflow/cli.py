"""The `likeflow` command: worker, topics, status, replay, dlq, backfill, reset-offsets, audit, demo, ..."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import logging.config
import platform
import sys
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

import likeflow
from config import ConfigError, Settings, load_settings, unknown_variables
from likeflow.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE, LikeflowError
from likeflow.logs import logging_config
from streams.events import CONTRACT_VERSION
from streams.topics import BACKFILL_SOURCES, DEAD_LETTERS, DLQ_REPLAYS, REPLAYABLE_TOPICS

if TYPE_CHECKING:
    from likeflow.ops.dlq import ReplayResult
    from likeflow.ops.dlq_records import DeadLetter, Filter
    from likeflow.ops.replay import TopicCopy

log = logging.getLogger(__name__)


class NotConfirmed(LikeflowError):
    """A command that changes what the job reads or serves was not confirmed (no --yes, or no
    at the prompt): nothing was changed; the message says how to confirm."""

    exit_code = EXIT_USAGE


# Generation thresholds of the cyclic garbage collector in a worker (Python's default: 700, 10, 10).
GC_THRESHOLDS = (100_000, 50, 100)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from likeflow.ops.topics import ensure_topics
    from likeflow.worker.app import create_app
    from likeflow.worker.shutdown import arm_hard_exit

    if settings.event_loop == "uvloop":
        import uvloop

        # Before the first loop is created: Faust's worker and the topic check below use it.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Faust creates its own changelog topics, but the contract's external topics must exist
    # (the broker does not auto-create) before the consumer subscribes.
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    # A worker holds every user state and counter row in memory as Python objects; the cyclic
    # garbage collector's default thresholds make it walk them all several times a second.
    # Objects that exist now (modules, the app) are never collected; later ones far less often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # Faust's terminal spinner sets the root logger to DEBUG so that it spins on every
            # record; every debug call on the hot path then builds a LogRecord (~4% of CPU).
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        def _schedule_shutdown(self, signal: Any) -> None:
            # SIGTERM and SIGINT: Faust's graceful stop, bounded (likeflow/worker/shutdown.py).
            if not self._signal_stop_time:
                arm_hard_exit(settings.shutdown_timeout_s)
            super()._schedule_shutdown(signal)

    worker = Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=args.quiet,
        # JSON: Faust's worker configures logging with ours, so its own lines are JSON too.
        logging_config=logging_config(settings.log_level, "json") if settings.log_format == "json" else None,
    )
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT; never returns normally
    return 0


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.topics import ensure_topics

    warnings: list[str] = []
    counts = asyncio.run(ensure_topics(settings, warnings))
    for name, partitions in sorted(counts.items()):
        print(f"{name}\t{partitions} partitions")
    for warning in warnings:
        print(f"likeflow: warning: {warning}", file=sys.stderr)
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.demo import DemoOptions, run_demo
    from likeflow.ops.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    opts = DemoOptions(
        videos=args.videos,
        users=args.users,
        rate=args.rate,
        duration_s=args.duration,
        bad_ratio=args.bad_ratio,
        seed=args.seed,
    )
    try:
        view = asyncio.run(run_demo(settings, opts))
    except KeyboardInterrupt:
        print("\n[demo] stopped", flush=True)
        return 0
    print(view.summary(), flush=True)
    return 0


def _cmd_creator(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from likeflow.connections import redis_client
    from likeflow.metrics import Metrics
    from likeflow.sinks.quality_view import creator_quality
    from likeflow.sinks.redis_quality import RedisQualityStore

    async def read() -> dict[str, object] | None:
        client = redis_client(settings)
        try:
            store = RedisQualityStore(client, prefix=settings.redis_prefix, metrics=Metrics())
            return await creator_quality(store, args.creator_id)
        finally:
            await client.aclose()

    doc = asyncio.run(read())
    if doc is None:
        print(f"likeflow: no quality data for creator {args.creator_id!r}", file=sys.stderr)
        return 1
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_match(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from likeflow.ops.match import explain_video, render

    try:
        doc = asyncio.run(explain_video(settings, args.video_id))
    except LookupError as exc:
        print(f"likeflow: {exc.args[0]}", file=sys.stderr)
        return 1
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() if args.json else render(doc))
    return 0


def _cmd_pseudonym(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.connections import pseudonymizer
    from likeflow.sinks.redis_keys import prompts_key

    pseudonym = pseudonymizer(settings)(args.user_id)
    print(f"{pseudonym}\t{prompts_key(settings.redis_prefix, pseudonym)}")
    return 0


def _cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    import orjson

    base = (args.url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
    url = f"{base}/users/{urllib.parse.quote(args.user_id, safe='')}/profile"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:  # noqa: S310 - an operator's URL
            doc = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            error = orjson.loads(exc.read()).get("error", exc.reason)
        except (orjson.JSONDecodeError, AttributeError):
            error = exc.reason
        print(f"likeflow: the worker at {base} answered {exc.code}: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.code == 503 else EXIT_FAILED
    except OSError as exc:
        print(f"likeflow: no worker answers at {base} ({exc}); start one with `make run`", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from likeflow.ops.status import render, scrape, summarize

    url = args.url or f"http://{settings.web_host}:{settings.web_port}/metrics"
    try:
        before = scrape(url)
    except OSError as exc:
        print(f"likeflow: no worker answers at {url} ({exc}); start one with `make run`", file=sys.stderr)
        return 1
    try:
        while True:
            time.sleep(args.interval)
            after = scrape(url)
            print(render(summarize(before, after, args.interval), url), flush=True)
            if not args.watch:
                return 0
            print(flush=True)
            before = after
    except KeyboardInterrupt:
        return 0


def _positive(text: str) -> float:
    """An argument that must be a number > 0 (a rate, an interval)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text}")
    return value


def _not_negative(text: str) -> float:
    """An argument that must be a finite number >= 0 (a duration where 0 means no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text}")
    return value


def _time_arg(text: str) -> int:
    from likeflow.ops.timearg import parse_time_ms

    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _offsets_arg(text: str) -> tuple[int, int]:
    from likeflow.ops.dlq_records import parse_offsets

    try:
        return parse_offsets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_replay_file(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from likeflow.ops.replay import replay_files

    result = asyncio.run(
        replay_files(
            settings,
            [Path(p) for p in args.paths],
            args.topic,
            rate=args.rate,
            dry_run=args.dry_run,
            strict=args.strict,
        )
    )
    for problem in result.problems[:20]:
        print(f"invalid: {problem}", file=sys.stderr)
    if result.invalid > 20:
        print(f"invalid: ... and {result.invalid - 20} more (each one dead-lettered)", file=sys.stderr)
    verb = "valid (dry run, nothing sent)" if args.dry_run else "sent"
    erased = f", {result.erased} of users erased since left out" if result.erased else ""
    print(f"{result.sent} {verb}, {result.invalid} invalid{erased}, {result.elapsed_s:.1f} s")
    if not result.sent:
        print("likeflow: no valid record in the archives; nothing was replayed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_replay_topic(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.replay import copy_topic_range, copy_topics

    # The destinations are live inputs of the job: a copy cannot be taken back.
    _, dest = copy_topics(settings, args.source, args.dest)
    asks = not (args.yes or args.dry_run)
    if asks and not _interactive():
        raise NotConfirmed(
            f"replay topic writes to the live input topic {dest!r} and cannot be undone; pass --yes "
            "to copy, or run it with --dry-run first to see what would be copied"
        )

    def confirm(found: TopicCopy) -> bool:
        _print_copy(found, args.since, args.until)
        try:
            answer = input(f"copy these {found.total} records to {found.dest}? [y/N] ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    result = asyncio.run(
        copy_topic_range(
            settings,
            args.source,
            args.dest,
            args.since,
            args.until,
            dry_run=args.dry_run,
            confirm=confirm if asks else None,
        )
    )
    if asks and not result.sent:
        raise NotConfirmed(f"not confirmed: nothing was copied to {dest!r}")
    _print_copy(result, args.since, args.until)
    return 0


def _print_copy(result: TopicCopy, since_ms: int, until_ms: int) -> None:
    """The per-partition and total lines of `replay topic` (what it copied, or would copy)."""
    verb = "records copied" if result.sent else "records in range (not sent)"
    for partition, count in sorted(result.in_range.items()):
        print(f"{result.source}[{partition}]\t{count} {verb}")
    window = f"[{_iso_ms(since_ms)}, {_iso_ms(until_ms)})"
    if result.sent:
        print(f"total\t{result.total} records of {window} copied to {result.dest}")
    else:
        print(f"total\t{result.total} records of {window} would be copied to {result.dest}; nothing sent")


def _iso_ms(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _interactive() -> bool:
    """True when a person can answer a question: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


def _dlq_filter(settings: Settings, args: argparse.Namespace) -> Filter:
    from likeflow.ops.dlq_records import Filter
    from streams.topics import SPECS_BY_NAME

    topics = {settings.topic(t) if t in SPECS_BY_NAME else t for t in args.topic or ()}
    return Filter(
        reasons=frozenset(args.reason or ()),
        source_topics=frozenset(topics),
        since_ms=args.since,
        until_ms=args.until,
        partition=args.partition,
        offsets=args.offset,
    )


def _dead_letters(settings: Settings, args: argparse.Namespace) -> list[DeadLetter]:
    from likeflow.ops.dlq import read_dead_letters

    return asyncio.run(read_dead_letters(settings, _dlq_filter(settings, args)))


def _cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.dlq import read_ledger
    from likeflow.ops.dlq_records import age_text, summarise

    letters = _dead_letters(settings, args)
    groups = summarise(letters, asyncio.run(read_ledger(settings)))
    now = int(time.time() * 1000)
    print("source topic\treason\tcount\treplayed\toldest\tnewest")
    for (topic, reason), group in groups.items():
        oldest, newest = group.oldest_ms or now, group.newest_ms or now
        print(
            f"{topic}\t{reason}\t{group.count}\t{group.replayed}\t{age_text(now - oldest)} ago\t"
            f"{age_text(now - newest)} ago"
        )
    replayed = sum(g.replayed for g in groups.values())
    print(f"total\t{len(letters)} dead letters on {settings.topic(DEAD_LETTERS)}, {replayed} replayed")
    return 0


def _cmd_dlq_show(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.dlq_records import export_line

    letters = _dead_letters(settings, args)
    shown = letters[: args.limit] if args.limit else letters
    for letter in shown:
        if args.json:
            print(export_line(letter).decode())
            continue
        source = f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
        print(f"{letter.coordinates}\t{_iso_ms(letter.timestamp_ms)}\tfrom {source}\treason {letter.reason}")
        print(f"  error: {letter.error}")
        print(f"  key: {_shown(letter.key, args.max_bytes)}")
        print(f"  value: {_shown(letter.value, args.max_bytes)}")
        for name, value in letter.headers:
            print(f"  header {name}: {_shown(value, args.max_bytes)}")
    if len(shown) < len(letters):
        print(f"... {len(letters) - len(shown)} more (--limit 0 shows all)", file=sys.stderr)
    print(f"{len(letters)} dead letters match", file=sys.stderr)
    return 0


def _shown(data: bytes | None, limit: int) -> str:
    """Bytes for a terminal: text with escapes, cut at `limit` bytes (0: no cut)."""
    if data is None:
        return "(null)"
    cut = data[:limit] if limit else data
    text = repr(cut.decode("utf-8", "backslashreplace"))[1:-1]
    return text + (f" ... ({len(data)} bytes)" if len(cut) < len(data) else "")


def _cmd_dlq_export(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from likeflow.ops.dlq_records import export_line

    letters = _dead_letters(settings, args)
    lines = b"".join(export_line(letter) + b"\n" for letter in letters)
    if args.output == "-":
        sys.stdout.write(lines.decode())
    else:
        Path(args.output).write_bytes(lines)
    print(
        f"{len(letters)} dead letters exported{'' if args.output == '-' else ' to ' + args.output}; edit "
        "`key`, `value` (and `headers`), then `likeflow dlq replay --from-file`",
        file=sys.stderr,
    )
    return 0


def _cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from likeflow.ops.dlq import replay
    from likeflow.ops.dlq_records import ExportFormatError, ReplayItem, parse_export_line

    filtered = any(
        v is not None and v != []
        for v in (args.reason, args.topic, args.since, args.until, args.partition, args.offset)
    )
    if args.from_file and filtered:
        raise DlqUsageError(
            "--from-file replays the file's records: give no --reason/--topic/... filter with it"
        )
    asks = not (args.yes or args.dry_run)
    if asks and not _interactive():
        raise NotConfirmed(
            "dlq replay writes to the live input topics and cannot be undone; run it with --dry-run "
            "first to see what would be sent, then with --yes to send"
        )
    if args.from_file:
        items = []
        for number, line in enumerate(Path(args.from_file).read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(parse_export_line(line))
            except ExportFormatError as exc:
                raise DlqUsageError(f"{args.from_file}:{number}: {exc}") from None
    else:
        items = [ReplayItem.of(letter) for letter in _dead_letters(settings, args)]

    def confirm(plan: ReplayResult) -> bool:
        _print_plan(plan)
        try:
            answer = input(f"send these {plan.count('send')} records? [y/N] ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    result = asyncio.run(
        replay(settings, items, force=args.force, dry_run=args.dry_run, confirm=confirm if asks else None)
    )
    if not asks or result.executed:
        _print_plan(result)
    sent, skipped, refused = len(result.sent), result.count("skip"), result.count("refuse")
    if result.executed:
        print(
            f"sent {sent} of {len(result.planned)} records (run {result.run_id}, ledger "
            f"{settings.topic(DLQ_REPLAYS)}); {skipped} skipped as already replayed, {refused} refused"
        )
    else:
        would = result.count("send")
        why = "dry run" if args.dry_run else ("nothing to send" if not would else "not confirmed")
        print(
            f"{why}: {would} of {len(result.planned)} records would be sent, {skipped} skipped as "
            f"already replayed, {refused} refused; nothing sent"
        )
        if asks and would:
            raise NotConfirmed("not confirmed: nothing was replayed")
    return EXIT_FAILED if refused else 0


def _print_plan(result: ReplayResult) -> None:
    """One line per record of a replay: send/skip/refuse, the dead letter, where it goes, why."""
    sent = {id(p): (partition, offset) for p, partition, offset in result.sent}
    for planned in result.planned:
        item = planned.item
        where = f"{item.topic}[{item.partition}]"
        if id(planned) in sent:
            where += f"@{sent[id(planned)][1]}"
        edited = " edited" if item.edited else ""
        line = f"{planned.outcome}\t{item.dlq}\t-> {where}\t{item.reason}{edited}"
        if planned.problems:
            line += f"\t{', '.join(planned.problems)}"
        if planned.forced:
            line += f"\tforced: {', '.join(planned.forced)}"
        if planned.details and (not planned.send or planned.forced):
            line += f" ({'; '.join(planned.details)})"
        print(line)


class DlqUsageError(LikeflowError):
    """Arguments of `dlq` that do not go together, or an export file that cannot be read."""

    exit_code = EXIT_USAGE


def _cmd_reset_offsets(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.replay import reset_offsets

    moves = asyncio.run(reset_offsets(settings, args.to_datetime, dry_run=args.dry_run))
    for m in moves:
        before = "none" if m.before is None else str(m.before)
        print(f"{m.topic}[{m.partition}]\t{before} -> {m.after}")
    print(("would move" if args.dry_run else "moved") + f" consumer group {settings.app_id!r}")
    return 0


def _cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from likeflow.connections import pseudonymizer, redis_client
    from likeflow.domain.prompt_ids import prompt_ids_for
    from likeflow.metrics import Metrics
    from likeflow.ops.backfill import (
        ErasureFilter,
        IssuedPrompts,
        Recomputation,
        SourcedEvent,
        SourcedRecord,
        carry_live_likes,
        diff,
        file_events,
        live_windows,
        namespace_for,
        topic_events,
    )
    from likeflow.ops.erasures import read_erasure_ledger
    from likeflow.policies import input_limits_from, quality_policies_from
    from likeflow.sinks.redis_quality import RedisQualityStore
    from streams.topics import CREATOR_EVENTS

    policy, _ = quality_policies_from(settings)
    sources = args.from_files or [f"topic:{settings.topic(args.from_topic)}"]
    namespace = namespace_for(args.since, args.until, sources)

    async def run() -> int:
        invalid: list[str] = []
        ledger = await read_erasure_ledger(settings)
        # Count records of `creator-events` were checked when the job wrote them; feedback and
        # prompts are checked here as the live job checks them (the pseudonym key is needed).
        counts_only = args.from_topic == CREATOR_EVENTS
        key = pseudonymizer(settings) if ledger or not counts_only else None
        erasures = ErasureFilter(ledger, key or str)
        issued = (
            None
            if key is None or counts_only
            else IssuedPrompts(prompt_ids_for(key), key, settings.legacy_prompt_ids_until_ms)
        )

        def admitted(item: SourcedEvent | SourcedRecord) -> SourcedEvent | SourcedRecord | None:
            kept = erasures.keep(item)
            return kept if kept is None or issued is None else issued.keep(kept)

        run = Recomputation(
            partitions=settings.partitions,
            since_ms=args.since,
            until_ms=args.until,
            policy=policy,
            namespace=namespace,
            ceiling=input_limits_from(settings).at(int(time.time() * 1000)).max_ts,
        )
        read = 0
        if args.from_files:
            print("[backfill] reading the archives and recomputing with the live engine", flush=True)
            limits = input_limits_from(settings).at(int(time.time() * 1000))
            for item in file_events([Path(p) for p in args.from_files], limits, invalid):
                read += 1
                if kept := admitted(item):
                    run.apply(kept)
        else:
            print(f"[backfill] reading {args.from_topic} and recomputing with the live engine", flush=True)
            async for record in topic_events(settings, settings.topic(args.from_topic), invalid):
                read += 1
                if kept := admitted(record):
                    run.apply(kept)
        result = run.finish()
        left_out = f", {erasures.left_out} of users erased since left out" if erasures.left_out else ""
        refused = (
            f", {issued.refused} naming no prompt likeflow issued (unknown_prompt)"
            if issued and issued.refused
            else ""
        )
        print(f"[backfill] {read} events read{left_out}{refused}", flush=True)
        for problem in invalid[:20]:
            print(f"invalid: {problem}", file=sys.stderr)
        client = redis_client(settings)
        try:
            store = RedisQualityStore(client, prefix=settings.redis_prefix, metrics=Metrics())
            creators = sorted(set(result.windows) | set(await store.creators()))
            live = await live_windows(store, creators, args.since, args.until)
            if not counts_only:
                carry_live_likes(live, result.windows)
            await store.write_shadow(
                namespace, {c: result.windows.get(c, {}) for c in creators}, policy.size_ms
            )
            changes = diff(live, result.windows)
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())) or "none"
            n_windows = sum(len(w) for w in result.windows.values())
            print(
                f"[backfill] shadow namespace {namespace}: {n_windows} windows "
                f"of {len(result.windows)} creators ({outcomes}; {result.out_of_range} outside the range; "
                f"{len(invalid)} invalid)"
            )
            for change in changes:
                print(f"  differs: {change.describe()}")
            affected = sorted({c.creator_id for c in changes})
            print(f"[backfill] {len(changes)} windows of {len(affected)} creators differ from live")
            if args.swap:
                # Serving's windows of the range are replaced (or removed, for a creator with
                # none recomputed) for every creator: say what, and only go on with --yes.
                live_count = sum(len(w) for w in live.values())
                print(
                    f"[backfill] --swap replaces the served windows in [{_iso_ms(args.since)}, "
                    f"{_iso_ms(args.until)}) of {len(creators)} creators ({live_count} windows of "
                    f"{len(live)} creators served now) with the {n_windows} windows of shadow "
                    f"namespace {namespace}",
                    flush=True,
                )
                if not args.yes:
                    raise NotConfirmed(
                        "--swap changes what is served and has no undo: nothing was swapped; re-run "
                        "the same command with --yes to swap"
                    )
                swapped = await store.swap(namespace, creators, args.since, args.until)
                print(f"[backfill] swapped: serving now shows the recomputed windows of {swapped} creators")
        finally:
            await client.aclose()
        return 0

    return asyncio.run(run())


def _cmd_rebuild_redis(settings: Settings, args: argparse.Namespace) -> int:
    from likeflow.ops.rebuild import rebuild_redis
    from likeflow.progress import Progress

    bars: dict[str, Progress] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what not in bars:
            for bar in bars.values():
                bar.finish()
            bars.clear()
            bars[what] = Progress(total, f"[rebuild-redis] {what}")
        bars[what].update(done, done)

    print(
        f"[rebuild-redis] reading the {settings.app_id} table changelogs into Redis prefix "
        f"{settings.redis_prefix!r}",
        flush=True,
    )
    report = asyncio.run(rebuild_redis(settings, progress=progress))
    for bar in bars.values():
        bar.finish()
    print(f"[rebuild-redis] {report.summary()}", flush=True)
    return 0


def _public_key(settings: Settings, given: str | None) -> bytes:
    """The audit public key: `--public-key` (64 hex digits, or a file holding them), else the
    one of the configured signing key."""
    from pathlib import Path

    from likeflow.connections import audit_signing_key
    from likeflow.domain.audit_proof import ProofError, parse_public_key
    from likeflow.domain.audit_tree import public_key_bytes

    if given is None:
        return public_key_bytes(audit_signing_key(settings))
    text = Path(given).read_text() if Path(given).is_file() else given
    try:
        return parse_public_key(text)
    except ProofError as exc:
        raise ConfigError(f"--public-key: {exc}") from None


def _cmd_audit_public_key(settings: Settings, args: argparse.Namespace) -> int:
    print(_public_key(settings, None).hex())
    return 0


def _cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from likeflow.ops.audit_verify import checkpoints_in, verify_topic
    from streams.topics import AUDIT_LOG

    topic = args.topic or settings.topic(AUDIT_LOG)
    exported = checkpoints_in(Path(args.checkpoint_dir)) if args.checkpoint_dir else []
    results = asyncio.run(
        verify_topic(
            settings,
            topic,
            checkpoints=exported,
            checkpoint_topic=args.checkpoint_topic,
            log_name=args.log_name,
            public_key=_public_key(settings, args.public_key),
        )
    )
    for partition, result in results.items():
        v1 = f"{result.v1.count} v1 entries\t" if result.v1.count else ""
        tree = f"tree size {result.size} root {result.root}" if result.batches else "no v2 records"
        signed = f"\tsigned up to {result.signed_size} by {result.checkpoints} checkpoints"
        foreign = f"\t{result.foreign_count} foreign records skipped" if result.foreign_count else ""
        print(f"{topic}[{partition}]\t{v1}{result.batches} batches verified\t{tree}{signed}{foreign}")
    for partition, result in results.items():
        for record in result.foreign:
            print(
                f"foreign record: {topic}[{partition}]@{record.offset}: not an audit entry ({record.reason})"
            )
        if result.foreign_count > len(result.foreign):
            print(f"foreign record: {topic}[{partition}]: {result.foreign_count - len(result.foreign)} more")
    breaks = [(p, r.first_break) for p, r in results.items() if r.first_break is not None]
    for partition, brk in breaks:
        where = f"@{brk.offset}" if brk.offset >= 0 else " (checkpoints)"
        print(f"first break: {topic}[{partition}]{where}: {brk.reason.value} ({brk.detail})")
    total = sum(r.count for r in results.values())
    foreign_total = sum(r.foreign_count for r in results.values())
    with_foreign = sum(1 for r in results.values() if r.foreign_count)
    if breaks:
        print(f"BROKEN: {len(breaks)} of {len(results)} partition logs", file=sys.stderr)
    if foreign_total:
        print(
            f"FOREIGN: {foreign_total} records that are not audit entries in {with_foreign} of "
            f"{len(results)} partitions (skipped; the logs were verified across them). Only the "
            "workers may write to the audit log: find out who wrote them (docs/audit.md)",
            file=sys.stderr,
        )
    if breaks or foreign_total:
        if not breaks:
            print(f"intact apart from the foreign records: {total} records in {len(results)} partition logs")
        return EXIT_FAILED
    checked = sum(r.checkpoints for r in results.values())
    print(f"intact: {total} records in {len(results)} partition logs, {checked} signed checkpoints match")
    return 0


def _cmd_audit_prove(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from likeflow.ops.audit_verify import prove

    doc = asyncio.run(prove(settings, args.prompt_id, args.topic, args.checkpoint_topic))
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_audit_consistency(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    import orjson

    from likeflow.domain.audit_tree import decode_checkpoint
    from likeflow.ops.audit_verify import consistency

    first = decode_checkpoint(Path(args.first).read_bytes())
    second = decode_checkpoint(Path(args.second).read_bytes()) if args.second else None
    doc = asyncio.run(consistency(settings, first, second, args.checkpoint_topic))
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help docs)."""
    parser = argparse.ArgumentParser(
        prog="likeflow",
        description="Turns likes into one-tap order prompts. Settings come from LIKEFLOW_* "
        "environment variables (see README).",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"likeflow {likeflow.__version__} (contract v{CONTRACT_VERSION}, faust-streaming "
        f"{metadata.version('faust-streaming')}, Python {platform.python_version()})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the long-lived Faust worker")
    worker.add_argument("--quiet", action="store_true", help="no startup banner")
    worker.set_defaults(func=_cmd_worker)

    topics = sub.add_parser("topics", help="create the contract's topics (idempotent)")
    topics.set_defaults(func=_cmd_topics)

    status = sub.add_parser("status", help="live view of a worker from its /metrics")
    status.add_argument("--url", help="metrics URL (default: the LIKEFLOW_WEB_HOST/PORT worker)")
    status.add_argument("--interval", type=_positive, default=2.0, help="seconds between scrapes (default 2)")
    status.add_argument("--watch", action="store_true", help="keep refreshing until Ctrl-C")
    status.set_defaults(func=_cmd_status)

    replay = sub.add_parser("replay", help="publish archives or copy a time range between topics")
    replay_sub = replay.add_subparsers(dest="replay_command", required=True)
    rfile = replay_sub.add_parser("file", help="publish JSON-lines archives (plain or .gz) to a topic")
    rfile.add_argument("paths", nargs="+", metavar="PATH")
    rfile.add_argument("--topic", required=True, choices=REPLAYABLE_TOPICS)
    rfile.add_argument("--rate", type=_positive, help="at most N records per second (default: no limit)")
    rfile.add_argument("--dry-run", action="store_true", help="validate only; send nothing")
    rfile.add_argument("--strict", action="store_true", help="stop at the first invalid line (exit 1)")
    rfile.set_defaults(func=_cmd_replay_file)
    rtopic = replay_sub.add_parser(
        "topic", help="copy records in [--since, --until) from a topic to a replayable input topic"
    )
    rtopic.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="SRC",
        help="a contract topic name (the topic prefix is added) or the full name of another (archive) topic",
    )
    rtopic.add_argument(
        "--to",
        dest="dest",
        required=True,
        choices=REPLAYABLE_TOPICS,
        help="the input topic to write to (contract name; the topic prefix is added)",
    )
    rtopic.add_argument("--since", type=_time_arg, required=True, help="ISO-8601 or epoch ms (inclusive)")
    rtopic.add_argument("--until", type=_time_arg, required=True, help="ISO-8601 or epoch ms (exclusive)")
    rtopic.add_argument(
        "--dry-run", action="store_true", help="read and count what would be copied; send nothing"
    )
    rtopic.add_argument(
        "--yes", action="store_true", help="copy without asking (needed when stdin is not a terminal)"
    )
    rtopic.set_defaults(func=_cmd_replay_topic)

    dlq = sub.add_parser(
        "dlq",
        help="inspect dead letters by reason, export them to edit, replay repaired ones (docs/operations.md)",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)

    def dlq_filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reason", action="append", help="only this reason (repeatable), e.g. malformed_json")
        p.add_argument(
            "--topic", action="append", help="only dead letters from this topic (contract name; repeatable)"
        )
        p.add_argument("--since", type=_time_arg, help="dead-lettered at or after (ISO-8601 or epoch ms)")
        p.add_argument("--until", type=_time_arg, help="dead-lettered before (ISO-8601 or epoch ms)")
        p.add_argument("--partition", type=int, help="only this partition of the dead-letter topic")
        p.add_argument("--offset", type=_offsets_arg, help="only these dead-letter offsets: N or N-M")

    dlist = dlq_sub.add_parser("list", help="count dead letters by source topic and reason, with their age")
    dlq_filters(dlist)
    dlist.set_defaults(func=_cmd_dlq_list)
    dshow = dlq_sub.add_parser("show", help="print dead letters with their headers")
    dlq_filters(dshow)
    dshow.add_argument("--limit", type=int, default=20, help="at most N records (default 20; 0: all)")
    dshow.add_argument(
        "--max-bytes", type=int, default=1024, help="cut keys and values at N bytes (0: never)"
    )
    dshow.add_argument("--json", action="store_true", help="print them as export lines")
    dshow.set_defaults(func=_cmd_dlq_show)
    dexport = dlq_sub.add_parser("export", help="write dead letters as JSON lines to edit for replay")
    dlq_filters(dexport)
    dexport.add_argument("--output", "-o", default="-", metavar="FILE", help="the file (default: stdout)")
    dexport.set_defaults(func=_cmd_dlq_export)
    dreplay = dlq_sub.add_parser(
        "replay",
        help="send dead letters (as they are, or edited in an export file) back to their topic and "
        "partition, once each: a ledger records every replay",
    )
    dlq_filters(dreplay)
    dreplay.add_argument("--from-file", metavar="FILE", help="replay the records of an (edited) export file")
    dreplay.add_argument("--dry-run", action="store_true", help="print what would be sent, skipped, refused")
    dreplay.add_argument("--yes", action="store_true", help="send without asking (needed without a terminal)")
    dreplay.add_argument(
        "--force",
        action="store_true",
        help="send records already replayed, with a pseudonym lacking its header, or still invalid",
    )
    dreplay.set_defaults(func=_cmd_dlq_replay)

    backfill = sub.add_parser("backfill", help="recompute creator windows for a past range, diff, swap")
    backfill.add_argument("--since", type=_time_arg, required=True, help="ISO-8601 or epoch ms (inclusive)")
    backfill.add_argument("--until", type=_time_arg, required=True, help="ISO-8601 or epoch ms (exclusive)")
    source = backfill.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-files", nargs="+", metavar="PATH", help="JSON-lines feedback and/or prompts")
    source.add_argument(
        "--from-topic",
        choices=BACKFILL_SOURCES,
        help="the topic to recompute from (creator-events is exact; see docs/replay.md)",
    )
    backfill.add_argument(
        "--swap", action="store_true", help="promote the recomputed windows into serving, atomically"
    )
    backfill.add_argument("--yes", action="store_true", help="confirm --swap (it replaces what is served)")
    backfill.set_defaults(func=_cmd_backfill)

    reset = sub.add_parser("reset-offsets", help="rewind the job's consumer group to a point in time")
    reset.add_argument(
        "--to-datetime", type=_time_arg, required=True, help="ISO-8601 (naive = UTC) or epoch ms"
    )
    reset.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    reset.set_defaults(func=_cmd_reset_offsets)

    audit = sub.add_parser("audit", help="the tamper-evident audit trail (docs/audit.md)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    averify = audit_sub.add_parser(
        "verify",
        help="re-walk every partition's log against its signed checkpoints; exit 1 at a break "
        "(named: truncated, rewritten, reordered, missing batch, fork, ...) or a record that is not an entry",
    )
    averify.add_argument("--topic", metavar="NAME", help="full topic name (default: the prefixed audit-log)")
    averify.add_argument(
        "--checkpoint-topic", metavar="NAME", help="full name (default: the prefixed audit-checkpoints)"
    )
    averify.add_argument(
        "--checkpoint-dir", metavar="DIR", help="also check the checkpoint files exported here (WORM copy)"
    )
    averify.add_argument(
        "--log-name", metavar="TOPIC", help="the log the checkpoints name (default: --topic; for a copy)"
    )
    averify.add_argument(
        "--public-key", metavar="HEX|FILE", help="the audit public key (default: the signing key's)"
    )
    averify.set_defaults(func=_cmd_audit_verify)
    aprove = audit_sub.add_parser(
        "prove", help="print an inclusion proof of a prompt against its signed checkpoint (JSON)"
    )
    aprove.add_argument("prompt_id")
    aprove.add_argument("--topic", metavar="NAME", help="full topic name (default: the prefixed audit-log)")
    aprove.add_argument("--checkpoint-topic", metavar="NAME", help="full name of the checkpoint topic")
    aprove.set_defaults(func=_cmd_audit_prove)
    aconsistency = audit_sub.add_parser(
        "consistency", help="print a consistency proof between two checkpoint files (JSON)"
    )
    aconsistency.add_argument("first", help="an exported checkpoint file (the older)")
    aconsistency.add_argument("second", nargs="?", help="a newer one (default: the latest on the topic)")
    aconsistency.add_argument("--checkpoint-topic", metavar="NAME", help="full name of the checkpoint topic")
    aconsistency.set_defaults(func=_cmd_audit_consistency)
    apublic = audit_sub.add_parser("public-key", help="print the audit public key (hex) for auditors")
    apublic.set_defaults(func=_cmd_audit_public_key)

    rebuild = sub.add_parser(
        "rebuild-redis",
        help="rewrite the served prompts and creator quality in Redis from the table changelogs",
    )
    rebuild.set_defaults(func=_cmd_rebuild_redis)

    creator = sub.add_parser("creator", help="print a creator's quality as JSON (from Redis)")
    creator.add_argument("creator_id")
    creator.set_defaults(func=_cmd_creator)

    matcher = sub.add_parser(
        "match", help="what the content matcher proposes for a video, with each term's score"
    )
    matcher.add_argument("video_id")
    matcher.add_argument("--json", action="store_true", help="print the explanation as JSON")
    matcher.set_defaults(func=_cmd_match)

    pseudonym = sub.add_parser(
        "pseudonym", help="print a user id's pseudonym and Redis key (needs the user key; for support)"
    )
    pseudonym.add_argument("user_id")
    pseudonym.set_defaults(func=_cmd_pseudonym)

    profile = sub.add_parser(
        "profile",
        help="print what the job holds about a user as JSON: tags, level, top categories, consent "
        "(from the worker that owns the user's partition)",
    )
    profile.add_argument("user_id")
    profile.add_argument("--url", help="the worker's web address (default: LIKEFLOW_WEB_HOST/PORT)")
    profile.add_argument("--timeout", type=_positive, default=10.0, help="seconds (default 10)")
    profile.set_defaults(func=_cmd_profile)

    demo = sub.add_parser("demo", help="publish a synthetic catalogue and like feed")
    demo.add_argument("--rate", type=_positive, default=20.0, help="likes per second (default 20)")
    demo.add_argument("--duration", type=_not_negative, default=0.0, help="seconds; 0 runs until Ctrl-C")
    demo.add_argument("--videos", type=int, default=200, help="videos with products (default 200)")
    demo.add_argument("--users", type=int, default=500, help="distinct users (default 500)")
    demo.add_argument("--bad-ratio", type=float, default=0.01, help="share of garbage records")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the catalogue and feed")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `likeflow` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"likeflow: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in unknown_variables():
        print(f"likeflow: warning: {warning}", file=sys.stderr)
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    try:
        code: int = args.func(settings, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        message, known = explain(exc, settings)
        if known is None:
            raise  # a bug: keep its traceback
        print(f"likeflow: {message}", file=sys.stderr)
        return known
    return code


def explain(exc: BaseException, settings: Settings) -> tuple[str, int | None]:
    """One line for the user and the exit code for a failure of a command (None: a bug, which
    keeps its traceback)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from likeflow.errors import LikeflowError

    if isinstance(exc, ConfigError):  # e.g. a secret file missing, found when a client is built
        return f"configuration error: {exc}", EXIT_USAGE
    if isinstance(exc, LikeflowError):
        return str(exc), exc.exit_code
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and exc.retriable
    ):
        return (
            f"Kafka at {settings.kafka_bootstrap} did not answer ({exc}). Is it up (`make stack-up`), "
            "and do LIKEFLOW_KAFKA_BOOTSTRAP and the security settings match its listener?",
            EXIT_UNAVAILABLE,
        )
    if isinstance(exc, KafkaError):
        return f"Kafka refused the request: {exc!r}", EXIT_FAILED
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return (
            f"Redis at {redact_url(settings.redis_url)} did not answer ({exc}). Is it up "
            "(`make stack-up`), and is LIKEFLOW_REDIS_URL right?",
            EXIT_UNAVAILABLE,
        )
    if isinstance(exc, OSError):
        return f"{exc}. Is the stack up? Run `make stack-up`.", EXIT_UNAVAILABLE
    return "", None


def redact_url(url: str) -> str:
    """`url` without a password (`redis://user:secret@host` -> `redis://user:***@host`)."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


if __name__ == "__main__":
    sys.exit(main())
