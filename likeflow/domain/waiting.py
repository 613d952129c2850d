"""Likes that wait for their video's mapping: what is held, and which are due for a decision.

A like whose video has no mapping version at all (likeflow/domain/mapping_versions.py) waits up
to the grace (`LIKEFLOW_MAPPING_GRACE_S`) for one: a video collects its first likes right after
it is posted, often before its mapping reaches `video-products`. The worker keeps each waiting
like in a changelogged table (its key: the like's partition and offset, so a redelivered like
is the same entry) and this index of them in memory. A waiting like is due when its video
gets a mapping or its deadline passes; it is then decided like any like (docs/joins.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True, slots=True)
class WaitingLike:
    """A like held for its video's mapping: the decoded like (user pseudonymised), its offset in
    its `likes` partition, and the wall-clock deadline (epoch ms) after which it is skipped as
    `no_mapping`."""

    event_id: str
    user_id: str
    video_id: str
    ts: int
    offset: int
    until_ms: int

    def key(self, partition: int) -> str:
        """Its key in the table: the like's partition and offset (a memory store holds the keys
        of every partition in one dict, so the partition is part of the key)."""
        return f"{partition}/{self.offset}"

    def to_json(self) -> bytes:
        """The table's value."""
        return orjson.dumps([self.event_id, self.user_id, self.video_id, self.ts, self.offset, self.until_ms])

    @classmethod
    def from_json(cls, raw: bytes) -> WaitingLike:
        """Decode `to_json`'s bytes."""
        event_id, user_id, video_id, ts, offset, until_ms = orjson.loads(raw)
        return cls(str(event_id), str(user_id), str(video_id), int(ts), int(offset), int(until_ms))


@dataclass
class WaitList:
    """The waiting likes of the partitions one worker owns, indexed by video and by deadline.

    Pure bookkeeping: the caller writes and deletes the table entries. `mapped(video_id)` makes
    a video's likes due, a deadline passing makes a like due; `due(partition)` hands out the
    likes due in a partition, each once (an entry handed out stays held until `settled`: its
    decision's outputs are acknowledged and the caller deleted the table entry).
    """

    max_waiting: int = 100_000
    _held: dict[int, dict[int, WaitingLike]] = field(default_factory=dict)  # partition -> offset -> like
    _by_video: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # -> (partition, offset)
    _deadlines: list[tuple[int, int, int]] = field(default_factory=list)  # heap of (until, partition, offset)
    _ready: dict[int, set[int]] = field(default_factory=dict)  # partition -> offsets due
    _handed_out: set[tuple[int, int]] = field(default_factory=set)
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    def loaded(self, partition: int) -> bool:
        """Whether `partition`'s waiting likes are indexed (`load` after an assignment)."""
        return partition in self._held

    def load(self, partition: int, likes: Iterable[WaitingLike], known: Callable[[str], bool]) -> None:
        """Index `partition`'s waiting likes as restored from the table; those whose video is
        `known` by now are due at once."""
        self._held.setdefault(partition, {})
        for like in likes:
            self.add(partition, like)
            if known(like.video_id):
                self._ready.setdefault(partition, set()).add(like.offset)

    def has_room(self) -> bool:
        """Whether one more like may wait (`max_waiting` per worker)."""
        return self._count < self.max_waiting

    def holds(self, partition: int, offset: int) -> bool:
        """Whether the like at `offset` of `partition` is waiting (a redelivery of it changes nothing)."""
        return offset in self._held.get(partition, {})

    def add(self, partition: int, like: WaitingLike) -> None:
        """Hold `like` (its table entry written by the caller)."""
        held = self._held.setdefault(partition, {})
        if like.offset in held:
            return
        held[like.offset] = like
        self._count += 1
        self._by_video.setdefault(like.video_id, set()).add((partition, like.offset))
        heapq.heappush(self._deadlines, (like.until_ms, partition, like.offset))

    def mapped(self, video_id: str) -> None:
        """`video_id` got a mapping: its waiting likes are due."""
        for partition, offset in self._by_video.pop(video_id, ()):
            self._ready.setdefault(partition, set()).add(offset)

    def due_partitions(self, now_ms: int) -> set[int]:
        """The partitions with a waiting like due at `now_ms` (mapped, or past its deadline)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now_ms:
            _, partition, offset = heapq.heappop(deadlines)
            if offset in self._held.get(partition, {}) and (partition, offset) not in self._handed_out:
                self._ready.setdefault(partition, set()).add(offset)
        return {p for p, offsets in self._ready.items() if offsets}

    def due(self, partition: int) -> list[WaitingLike]:
        """The likes of `partition` found due by `due_partitions`, in offset order, each once."""
        held = self._held.get(partition, {})
        out = []
        for offset in sorted(self._ready.pop(partition, ())):
            like = held.get(offset)
            if like is None or (partition, offset) in self._handed_out:
                continue
            self._handed_out.add((partition, offset))
            out.append(like)
            videos = self._by_video.get(like.video_id)
            if videos is not None:
                videos.discard((partition, offset))
                if not videos:
                    del self._by_video[like.video_id]
        return out

    def settled(self, partition: int, offset: int) -> None:
        """The like's decision is out and its table entry deleted: forget it."""
        self._handed_out.discard((partition, offset))
        if self._held.get(partition, {}).pop(offset, None) is not None:
            self._count -= 1

    def forget(self) -> None:
        """After a rebalance: partitions may have moved; each is loaded again from the table."""
        self._held.clear()
        self._by_video.clear()
        self._deadlines.clear()
        self._ready.clear()
        self._handed_out.clear()
        self._count = 0
