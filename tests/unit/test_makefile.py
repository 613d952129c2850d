"""`make help` lists every target the Makefile has (each target line carries its `##` text)."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def test_every_target_has_a_help_line() -> None:
    target_lines = [ln for ln in MAKEFILE.read_text().splitlines() if re.match(r"^[a-z][a-z-]*:(?!=)", ln)]
    assert target_lines, "no targets found"
    undocumented = [ln.split(":", 1)[0] for ln in target_lines if "## " not in ln]
    assert not undocumented, f"targets without a `## ` help text: {undocumented}"


def test_every_phony_target_exists() -> None:
    text = MAKEFILE.read_text()
    phony = " ".join(re.findall(r"^\.PHONY:((?:.*\\\n)*.*)$", text, flags=re.M)).replace("\\", " ").split()
    defined = set(re.findall(r"^([a-z][a-z-]*):(?!=)", text, flags=re.M))
    assert set(phony) <= defined, set(phony) - defined
