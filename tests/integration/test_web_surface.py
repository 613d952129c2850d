"""The worker's port serves only /health, /ready, /metrics and /creators/{id}/quality."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from tests.integration.harness import WorkerProcess, wait_until
from tests.integration.test_quality import get_json

NOT_SERVED = [
    "/",
    "/table/",
    "/table/user_state/",
    "/table/user_state/v1.0000/",
    "/router/",
    "/router/user_state/",
    "/router/user_state/v1.0000/",
    "/graph/",
    "/stats/",
    "/assignments/",
    "/performance/",
    "/health/extra",
]


def status_of(worker: WorkerProcess, path: str) -> int:
    url = f"http://{worker.settings.web_host}:{worker.settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def serving(worker: WorkerProcess) -> WorkerProcess:
    asyncio.run(wait_until(lambda: worker.health() is not None, 60, "the web server", worker))
    return worker


@pytest.mark.parametrize("path", NOT_SERVED)
def test_faust_s_own_views_are_not_served(serving: WorkerProcess, path: str) -> None:
    assert status_of(serving, path) == 404


def test_the_documented_pages_are_served(serving: WorkerProcess) -> None:
    assert status_of(serving, "/health") == 200
    assert status_of(serving, "/metrics") == 200
    assert status_of(serving, "/ready") in (200, 503)  # 503 names what it waits for
    # A creator without data: the page exists and says so (not Faust's 404 for a missing route).
    status, body = get_json(serving, "/creators/nobody/quality")
    assert status == 404 and "no quality data" in body["error"]
