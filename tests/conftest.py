"""Test-run options shared by the unit and integration suites."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--keep-test-data",
        action="store_true",
        help="keep the integration tests' topics and Redis keys after the run (to inspect a failure)",
    )
