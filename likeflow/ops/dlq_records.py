"""Dead letters as an operator sees them, and the rules of `likeflow dlq` (no Kafka here).

A dead letter (`likeflow/sinks/dead_letter_records.py`) is the original record's key, value and
headers followed by `likeflow.dlq.*` headers saying why and where it was read. `DeadLetter`
reads one back; `matches` filters, `summarise` counts for `dlq list`; `export_line` and
`parse_export_line` are the JSON-lines format a person edits; `plan_replay` decides, record by
record, what `dlq replay` sends, skips or refuses; `ledger_entry` is what the replay ledger
keeps of each record sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER, is_pseudonym
from likeflow.sinks.dead_letter_records import HEADER_PREFIX
from streams.events import CONTRACT_HEADER, Invalid

#: Header of a replayed record: the dead letter it was replayed from, `<dlq topic>/<p>/<o>`.
#: Outside `likeflow.dlq.*`, so a replayed record dead-lettered again still names its origin.
REPLAYED_FROM_HEADER = "likeflow.replayed_from"

#: Problems `--force` overrides: the operator knows better (a replay wanted twice, an id that
#: really is to be pseudonymised, a record the worker is to dead-letter again).
ALREADY_REPLAYED = "already_replayed"
PSEUDONYMISED_TWICE = "would_be_pseudonymised_twice"
STILL_INVALID = "still_invalid"
FORCEABLE = frozenset({ALREADY_REPLAYED, PSEUDONYMISED_TWICE, STILL_INVALID})
#: Problems nothing overrides: there is no right place to send the record, or it is not whole.
NO_SOURCE = "no_source"
NOT_AN_INPUT = "not_an_input"
NO_SUCH_PARTITION = "no_such_partition"
TRUNCATED = "truncated"
TWICE_IN_RUN = "twice_in_this_run"


class ExportFormatError(ValueError):
    """A line of an export file that cannot be read back; the message says which field."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: where it is on the dead-letter topic, why it is there, where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def coordinates(self) -> str:
        """`<dlq topic>/<partition>/<offset>`: the dead letter's identity (the ledger's key)."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    def header(self, name: str) -> str | None:
        """The last value of header `name` as text (the dead-letter sink appends its own last)."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return None if found is None else found.decode("utf-8", "replace")

    @property
    def reason(self) -> str:
        return self.header(HEADER_PREFIX + "reason") or "?"

    @property
    def error(self) -> str:
        return self.header(HEADER_PREFIX + "error") or ""

    @property
    def source_topic(self) -> str | None:
        return self.header(HEADER_PREFIX + "topic")

    @property
    def source_partition(self) -> int | None:
        return _int(self.header(HEADER_PREFIX + "partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self.header(HEADER_PREFIX + "offset"))

    @property
    def truncated(self) -> bool:
        """True when the sink cut its key or value to fit (the sizes and digests are in headers)."""
        names = {name for name, _ in self.headers}
        return bool(names & {HEADER_PREFIX + "key_size", HEADER_PREFIX + "value_size"})


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters a command looks at; None matches anything. Times are the dead letters'
    own timestamps (when they were dead-lettered), epoch ms, `since` inclusive, `until` exclusive."""

    reasons: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    offsets: tuple[int, int] | None = None  # [first, last], inclusive

    def matches(self, letter: DeadLetter) -> bool:
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.source_topics and letter.source_topic not in self.source_topics:
            return False
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and letter.timestamp_ms >= self.until_ms:
            return False
        if self.partition is not None and letter.partition != self.partition:
            return False
        return self.offsets is None or self.offsets[0] <= letter.offset <= self.offsets[1]


def parse_offsets(text: str) -> tuple[int, int]:
    """'42' -> (42, 42); '40-45' -> (40, 45): dead-letter offsets, inclusive."""
    first, sep, last = text.partition("-")
    try:
        low = int(first)
        high = int(last) if sep else low
    except ValueError:
        raise ValueError(f"{text!r} is not an offset or a range of offsets (N or N-M)") from None
    if low < 0 or high < low:
        raise ValueError(f"{text!r}: offsets are >= 0 and a range goes upwards (N-M with N <= M)")
    return low, high


@dataclass(slots=True)
class Group:
    """The dead letters of one source topic and reason, for `dlq list`."""

    count: int = 0
    oldest_ms: int | None = None
    newest_ms: int | None = None
    replayed: int = 0

    def add(self, letter: DeadLetter, replayed: bool) -> None:
        self.count += 1
        ts = letter.timestamp_ms
        self.oldest_ms = ts if self.oldest_ms is None else min(self.oldest_ms, ts)
        self.newest_ms = ts if self.newest_ms is None else max(self.newest_ms, ts)
        self.replayed += replayed


def summarise(letters: Iterable[DeadLetter], replayed: Mapping[str, object]) -> dict[tuple[str, str], Group]:
    """(source topic, reason) -> count, oldest and newest timestamp and how many were replayed
    (their coordinates are keys of `replayed`, the ledger), sorted by source topic and reason."""
    groups: dict[tuple[str, str], Group] = {}
    for letter in letters:
        groups.setdefault((letter.source_topic or "?", letter.reason), Group()).add(
            letter, letter.coordinates in replayed
        )
    return dict(sorted(groups.items()))


def age_text(age_ms: int) -> str:
    """A duration for people: '45s', '12m', '5h', '3d'."""
    seconds = max(age_ms, 0) // 1000
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def outgoing_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The headers a replay of `letter` carries: the original record's, without what the
    dead-letter sink added (its `likeflow.dlq.*` headers and the contract header placed just
    before them); `likeflow.pseudonymised` is kept, so the edge takes pseudonyms as they are."""
    headers = list(letter.headers)
    first_own = next((i for i, (name, _) in enumerate(headers) if name == HEADER_PREFIX + "reason"), None)
    if first_own is not None and first_own > 0 and headers[first_own - 1][0] == CONTRACT_HEADER:
        del headers[first_own - 1]
    return [(name, value) for name, value in headers if not name.startswith(HEADER_PREFIX)]


# -- the export format ---------------------------------------------------------------------------


def _bytes_field(data: bytes | None) -> dict[str, Any]:
    """`{"<f>": text}` for UTF-8 bytes, `{"<f>_base64": ...}` otherwise, `{"<f>": null}` for none."""
    if data is None:
        return {"text": None}
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def encode_value(value: bytes | None) -> tuple[str, Any]:
    """(format, representation) of a record value in an export line: `json` (the parsed value,
    when it parses: the form a person edits), `text` (UTF-8 that is not JSON), `base64`, `null`."""
    if value is None:
        return "null", None
    try:
        return "json", orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    try:
        return "text", value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(value).decode()


def decode_value(fmt: str, value: Any) -> bytes | None:
    """The bytes an export line's value stands for (JSON is sent compact, as orjson writes it)."""
    if fmt == "null":
        return None
    if fmt == "json":
        return orjson.dumps(value)
    if fmt == "text" and isinstance(value, str):
        return value.encode("utf-8")
    if fmt == "base64" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ExportFormatError("value: not base64") from None
    raise ExportFormatError(f"value_format {fmt!r} with a value of type {type(value).__name__}")


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """A record to replay: the dead letter it comes from (coordinates, reason, where it was read)
    and what to send: key, value and headers (as dead-lettered, or as edited in an export file)."""

    dlq: str  # coordinates `<dlq topic>/<partition>/<offset>`
    reason: str
    topic: str | None  # the source topic (full name): where it goes back to
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    #: SHA-256 of the value as it would be sent unedited (None: unknown, a null value).
    original_sha256: str | None
    truncated: bool = False

    @property
    def edited(self) -> bool:
        return _digest(self.value) != self.original_sha256

    @classmethod
    def of(cls, letter: DeadLetter) -> ReplayItem:
        """The dead letter as it would be sent unedited (a JSON value sent compact)."""
        fmt, value = encode_value(letter.value)
        sent = decode_value(fmt, value)
        return cls(
            dlq=letter.coordinates,
            reason=letter.reason,
            topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
            key=letter.key,
            value=sent,
            headers=tuple(outgoing_headers(letter)),
            original_sha256=_digest(sent),
            truncated=letter.truncated,
        )


def export_line(letter: DeadLetter) -> bytes:
    """One line of `dlq export` (no newline): what replay sends, in a form a person can edit
    (`key`, `value` with its `value_format`, `headers`), and what it must not change (`dlq`,
    `source`, `reason`, `error`, `value_sha256`: of the value as replay sends it unedited)."""
    item = ReplayItem.of(letter)
    fmt, value = encode_value(item.value)
    key = _bytes_field(letter.key)
    doc: dict[str, Any] = {
        "dlq": {
            "topic": letter.topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "timestamp": letter.timestamp_ms,
        },
        "reason": letter.reason,
        "error": letter.error,
        "source": {"topic": item.topic, "partition": item.partition, "offset": item.offset},
        "key": key.get("text"),
        **({"key_base64": key["base64"]} if "base64" in key else {}),
        "value_format": fmt,
        "value": value,
        "value_sha256": item.original_sha256,
        "headers": [[name, _header_text(data)] for name, data in item.headers],
    }
    if item.truncated:
        doc["truncated"] = True
    return orjson.dumps(doc)


def _header_text(data: bytes) -> str | dict[str, str]:
    field_ = _bytes_field(data)
    return {"base64": field_["base64"]} if "base64" in field_ else str(field_["text"])


def parse_export_line(line: bytes) -> ReplayItem:
    """A line of an export file (edited or not) as a replay item; ExportFormatError names what is wrong."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ExportFormatError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ExportFormatError("not a JSON object")
    dlq, source = doc.get("dlq"), doc.get("source")
    if not isinstance(dlq, dict) or not isinstance(source, dict):
        raise ExportFormatError("`dlq` and `source` must be objects (as `dlq export` writes them)")
    try:
        coordinates = f"{dlq['topic']}/{int(dlq['partition'])}/{int(dlq['offset'])}"
    except (KeyError, TypeError, ValueError):
        raise ExportFormatError("`dlq` needs topic, partition and offset") from None
    if "key_base64" in doc:
        try:
            key: bytes | None = base64.b64decode(str(doc["key_base64"]), validate=True)
        except binascii.Error:
            raise ExportFormatError("key_base64: not base64") from None
    else:
        text = doc.get("key")
        if text is not None and not isinstance(text, str):
            raise ExportFormatError("key: a string or null")
        key = None if text is None else text.encode("utf-8")
    headers = []
    for pair in doc.get("headers") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ExportFormatError("headers: a list of [name, value] pairs")
        name, data = pair
        if isinstance(data, str):
            headers.append((name, data.encode("utf-8")))
        elif isinstance(data, dict) and isinstance(data.get("base64"), str):
            headers.append((name, base64.b64decode(data["base64"])))
        else:
            raise ExportFormatError(f"header {name!r}: a string or {{'base64': ...}}")
    sha = doc.get("value_sha256")
    return ReplayItem(
        dlq=coordinates,
        reason=str(doc.get("reason") or "?"),
        topic=source.get("topic") if isinstance(source.get("topic"), str) else None,
        partition=source.get("partition") if isinstance(source.get("partition"), int) else None,
        offset=source.get("offset") if isinstance(source.get("offset"), int) else None,
        key=key,
        value=decode_value(str(doc.get("value_format")), doc.get("value")),
        headers=tuple(headers),
        original_sha256=sha if isinstance(sha, str) else None,
        truncated=bool(doc.get("truncated")),
    )


# -- replay decisions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A topic a dead letter can go back to: its contract name, partitions, how it names users,
    and its decoder (the one the worker runs: bytes -> event or Invalid)."""

    name: str
    partitions: int
    user_keyed: bool  # the key is the user id (`likes`, `user-consent`, ...)
    names_user: bool  # a `user_id` field names a user
    decode: Callable[[bytes | None, bytes | None], object]


@dataclass(frozen=True, slots=True)
class Planned:
    """One item's fate: sent when it has no problem, or only ones `--force` overrides (then
    `forced` lists them); otherwise skipped (already replayed, and nothing else that --force
    would not override) or refused, with the problems."""

    item: ReplayItem
    problems: tuple[str, ...] = ()
    details: tuple[str, ...] = ()
    forced: tuple[str, ...] = field(default=())

    @property
    def send(self) -> bool:
        return not self.problems

    @property
    def outcome(self) -> str:
        if self.send:
            return "send"
        # Replayed already, and nothing but --force stands in the way: nothing to do, no error.
        skip = ALREADY_REPLAYED in self.problems and FORCEABLE.issuperset(self.problems)
        return "skip" if skip else "refuse"


def plan_replay(
    items: Sequence[ReplayItem],
    targets: Mapping[str, Target],
    ledger: Mapping[str, object],
    *,
    force: bool = False,
) -> list[Planned]:
    """What `dlq replay` does with each item, in order.

    `targets`: full topic name -> Target, the input topics a dead letter may go back to;
    `ledger`: dead-letter coordinates already replayed. Problems: no source headers
    (`no_source`); a source that is not an input (`not_an_input`: the audit log, an internal
    topic); a partition the topic does not have; a cut value nobody repaired (`truncated`); the
    same dead letter twice in the run; and, overridden by `force`: already in the ledger,
    a pseudonym that would be pseudonymised again (a user id of the pseudonym shape without the
    `likeflow.pseudonymised` header: the edge would take it for a raw id), a record the topic's
    decoder still refuses (the worker would dead-letter it again).
    """
    seen: set[str] = set()
    out = []
    for item in items:
        problems: list[str] = []
        details: list[str] = []
        target = targets.get(item.topic or "")
        if item.topic is None or item.partition is None:
            problems.append(NO_SOURCE)
            details.append("no likeflow.dlq.topic/partition header")
        elif target is None:
            problems.append(NOT_AN_INPUT)
            details.append(f"{item.topic} is not an input topic of this job")
        elif not 0 <= item.partition < target.partitions:
            problems.append(NO_SUCH_PARTITION)
            details.append(f"{item.topic} has {target.partitions} partitions")
        if item.truncated and not item.edited:
            problems.append(TRUNCATED)
            details.append("cut to fit the dead-letter topic and not repaired")
        if item.dlq in seen:
            problems.append(TWICE_IN_RUN)
        seen.add(item.dlq)
        soft: list[str] = []
        if item.dlq in ledger:
            soft.append(ALREADY_REPLAYED)
        if target is not None:
            twice = _pseudonymised_twice(item, target)
            if twice:
                soft.append(PSEUDONYMISED_TWICE)
                details.append(twice)
            decoded = target.decode(item.key, item.value)
            if isinstance(decoded, Invalid):
                soft.append(STILL_INVALID)
                details.append(f"{decoded.reason.value}: {decoded.error}")
        if force and not problems:
            out.append(Planned(item, (), tuple(details), tuple(soft)))
        else:
            out.append(Planned(item, tuple(problems + soft), tuple(details)))
    return out


def _pseudonymised_twice(item: ReplayItem, target: Target) -> str | None:
    """Why the edge would pseudonymise a pseudonym of `item` again, or None."""
    if any(name == PSEUDONYMISED_HEADER for name, _ in item.headers):
        return None
    if target.user_keyed and item.key:
        text = item.key.decode("utf-8", "replace")
        if is_pseudonym(text):
            return f"key {text} is a pseudonym and the {PSEUDONYMISED_HEADER} header is missing"
    if target.names_user and item.value:
        try:
            doc = orjson.loads(item.value)
        except orjson.JSONDecodeError:
            return None
        user = doc.get("user_id") if isinstance(doc, dict) else None
        if isinstance(user, str) and is_pseudonym(user):
            return f"user_id {user} is a pseudonym and the {PSEUDONYMISED_HEADER} header is missing"
    return None


def replay_headers(item: ReplayItem) -> list[tuple[str, bytes]]:
    """The headers sent: the item's, then `likeflow.replayed_from` (replacing an earlier one)."""
    kept = [(n, v) for n, v in item.headers if n != REPLAYED_FROM_HEADER]
    return kept + [(REPLAYED_FROM_HEADER, item.dlq.encode())]


def ledger_entry(
    planned: Planned,
    *,
    run_id: str,
    by: str,
    host: str,
    at_ms: int,
    sent_partition: int,
    sent_offset: int,
    earlier: list[Any] | None = None,
) -> bytes:
    """The ledger's record of one replayed dead letter (key: its coordinates). No record
    content: digests and sizes only, so the ledger keeps no user data past the dead letters'
    30 days. `earlier`: the entry this one replaces (a forced replay), kept inside it so
    compaction loses no replay."""
    item = planned.item
    doc: dict[str, Any] = {
        "dlq": item.dlq,
        "reason": item.reason,
        "source": {"topic": item.topic, "partition": item.partition, "offset": item.offset},
        "sent": {
            "topic": item.topic,
            "partition": sent_partition,
            "offset": sent_offset,
            "key_sha256": _digest(item.key),
            "value_sha256": _digest(item.value),
            "value_bytes": None if item.value is None else len(item.value),
        },
        "edited": item.edited,
        "forced": list(planned.forced),
        "at": at_ms,
        "by": by,
        "host": host,
        "run": run_id,
    }
    if earlier:
        doc["earlier"] = earlier
    return orjson.dumps(doc)


def earlier_entries(previous: object) -> list[Any] | None:
    """The replays a new ledger entry must keep: the previous entry and those it kept."""
    if not isinstance(previous, dict):
        return None
    kept = previous.get("earlier")
    flat = [{k: v for k, v in previous.items() if k != "earlier"}]
    return flat + (list(kept) if isinstance(kept, list) else [])
