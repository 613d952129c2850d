"""What the matcher reads: a video's content and a catalogue product, as structural protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ContentLike(Protocol):
    """A video's content (`streams.content.VideoContent` is one): caption, hashtags without the
    '#', and recognised labels with their confidence in [0, 1]."""

    @property
    def caption(self) -> str: ...

    @property
    def hashtags(self) -> Sequence[str]: ...

    @property
    def labels(self) -> Sequence[tuple[str, float]]: ...


class CatalogueEntry(Protocol):
    """A catalogue product (`streams.content.CatalogueProduct` is one); `attributes` are
    (name, value) pairs, names "" for attributes given as a plain list."""

    @property
    def product_id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def brand(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def attributes(self) -> Sequence[tuple[str, str]]: ...

    @property
    def price_cents(self) -> int: ...

    @property
    def certified(self) -> bool: ...

    @property
    def stock(self) -> int: ...
