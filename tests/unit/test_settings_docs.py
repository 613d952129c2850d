"""docs/settings.md documents every setting and is what `make docs` renders today."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from config import Settings
from config.docs import SETTING_DOCS, render

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_once() -> None:
    documented = [name for section in SETTING_DOCS.values() for name in section]
    assert sorted(documented) == sorted(f.name for f in fields(Settings))
    assert len(documented) == len(set(documented))


def test_the_settings_page_is_not_stale() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == render(), "docs/settings.md is stale: run `make docs`"


def test_secrets_are_not_printed_as_defaults() -> None:
    page = render()
    assert "| `LIKEFLOW_USER_KEY` | str | (secret) |" in page
    assert "`LIKEFLOW_WEB_PORT` | int | `6066`" in page
