"""A real Prometheus scrapes a worker under traffic; every dashboard and rule expression returns data."""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from config import Settings
from likeflow.ops.demo import DemoOptions, catalogue
from likeflow.ops.status import render, scrape, summarize
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.harness import Record, WorkerProcess, free_port, produce
from tests.integration.namespaces import private_settings

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yml"
RULE_TESTS = ROOT / "deploy/prometheus/rules.test.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/likeflow.json"


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard and the rules; alerts cut into their operands
    (each side of `and`/`or`/`unless` and of a comparison, inside `absent`), numbers dropped."""
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                exprs.append(rule["record"])
                exprs.append(rule["expr"])
            else:
                exprs.extend(operands(rule["expr"]))
    return exprs


BINARY = re.compile(r"\s+(and|or|unless|==|!=|>=|<=|>|<)\s+(on\([^)]*\)\s*|ignoring\([^)]*\)\s*)?")
NUMBER = re.compile(r"^[-+0-9.e]+$")


def operands(expr: str) -> list[str]:
    """The operands of the top-level binary operators of `expr` (outside parentheses), each
    without an `absent(...)` around it; plain numbers are left out."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        ch = expr[i]
        depth += {"(": 1, ")": -1}.get(ch, 0)
        match = BINARY.match(expr, i) if depth == 0 else None
        if match:
            parts.append(expr[start:i])
            start = i = match.end()
            continue
        i += 1
    parts.append(expr[start:])
    out = []
    for part in (p.strip() for p in parts):
        if part.startswith("absent(") and part.endswith(")"):
            part = part[len("absent(") : -1]
        if not NUMBER.match(part):
            out.append(part)
    return out


def test_operands_split_only_at_the_top_level() -> None:
    assert operands('count(a == 1) > count(b{x="y"}[1h]) and on() sum(c) > 0') == [
        "count(a == 1)",
        'count(b{x="y"}[1h])',
        "sum(c)",
    ]
    assert operands("absent(up == 1)") == ["up == 1"]


class Prometheus:
    def __init__(self, target_port: int, workdir: Path) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "likeflow", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def query(self, expr: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
            result: dict[str, Any] = orjson.loads(resp.read())
            return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def obs_worker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> Iterator[WorkerProcess]:
    settings = private_settings(base_settings, tmp_path_factory)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def test_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_its_promtool_unit_test() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert alerts == tested, f"alerts without a firing test: {sorted(alerts - tested)}"


def test_every_alert_has_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs/observability.md").read_text().splitlines()
        if line.startswith("#")
    }
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            url = rule["annotations"]["runbook_url"]
            path, _, anchor = url.partition("#")
            assert path == "docs/observability.md" and anchor in anchors, (rule["alert"], url)


async def traffic(settings: Settings, seconds: float) -> None:
    """Mappings, likes with some garbage, and feedback whose event time closes windows."""
    now = int(time.time() * 1000)
    videos = catalogue(DemoOptions(videos=40, creators=6), now)
    await produce(
        settings,
        settings.topic(VIDEO_PRODUCTS),
        [(v["video_id"].encode(), orjson.dumps(v), []) for v in videos],
    )
    rng = random.Random(3)
    feedback: list[Record] = []
    for i in range(60):
        creator = f"c{i % 6:03d}"
        ts = now - 3 * 3_600_000 + i * 180_000  # three hours of event time: windows close
        body = {
            "event_id": f"obs-f{i}",
            "prompt_id": "p",
            "creator_id": creator,
            "product_id": "x",
            "user_id": "u",
            "kind": "click",
            "ts": ts,
        }
        feedback.append((creator.encode(), orjson.dumps(body), []))
    await produce(settings, settings.topic(PROMPT_FEEDBACK), feedback)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        batch: list[Record] = []
        for _ in range(25):
            n += 1
            user = f"obs-u{rng.randint(0, 300)}"
            if n % 40 == 0:
                batch.append((user.encode(), b"{not json", []))
                continue
            like = {
                "event_id": f"obs-l{n}",
                "user_id": user,
                "video_id": f"v{rng.randint(0, 39):04d}",
                "ts": int(time.time() * 1000),
            }
            batch.append((user.encode(), orjson.dumps(like), []))
        await produce(settings, settings.topic(LIKES), batch)
        await asyncio.sleep(0.5)


async def test_every_dashboard_and_rule_expression_returns_data(
    obs_worker: WorkerProcess, tmp_path: Path
) -> None:
    assert shutil.which("prometheus"), (
        "prometheus is missing: `make test` installs Debian's prometheus package"
    )
    prom = Prometheus(obs_worker.settings.web_port, tmp_path)
    try:
        await traffic(obs_worker.settings, 20)
        await asyncio.sleep(5)  # a few more scrapes and rule evaluations
        empty: list[str] = []
        for expr in expressions():
            answer = prom.query(expr)
            assert answer["status"] == "success", (expr, answer)
            if not answer["data"]["result"]:
                empty.append(expr)
        assert not empty, f"expressions without data: {empty}\n{prom.log.read_text()[-2000:]}"
    finally:
        prom.stop()


async def test_status_shows_live_numbers(worker: WorkerProcess, settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    before = await asyncio.to_thread(scrape, url)
    await produce(
        settings,
        settings.topic(LIKES),
        [
            (
                b"st-u1",
                orjson.dumps(
                    {
                        "event_id": f"st-{i}",
                        "user_id": "st-u1",
                        "video_id": "nope",
                        "ts": int(time.time() * 1000),
                    }
                ),
                [],
            )
            for i in range(30)
        ],
    )
    await asyncio.sleep(3)
    after = await asyncio.to_thread(scrape, url)
    view = summarize(before, after, 3.0)
    assert view.likes_per_s >= 30 / 3.0 - 0.01
    assert "likes in" in render(view, url)
