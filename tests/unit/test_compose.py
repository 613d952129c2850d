"""docker-compose.yml cannot run here (no Docker engine): check its structure against the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from config import Settings, load_settings
from config.settings import ENV_PREFIX

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def kafka_version_of_local_stack() -> str:
    pom = (ROOT / "deploy/kafka/pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert match
    return match.group(1)


def test_images_are_pinned_and_kafka_matches_the_local_broker() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version_of_local_stack()}"
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", services["redis"]["image"])


def test_kafka_runs_in_kraft_mode() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


def test_host_ports_match_the_default_settings() -> None:
    defaults = Settings()
    services = compose()["services"]
    kafka_port = defaults.kafka_bootstrap.rsplit(":", 1)[1]
    assert f"127.0.0.1:{kafka_port}:9092" in services["kafka"]["ports"]
    redis_port = defaults.redis_url.rsplit(":", 1)[1].split("/")[0]
    assert f"127.0.0.1:{redis_port}:6379" in services["redis"]["ports"]
    assert f"127.0.0.1:{defaults.web_port}:{defaults.web_port}" in services["worker"]["ports"]


def test_every_likeflow_variable_is_a_real_setting_and_parses() -> None:
    services = compose()["services"]
    for name in ("worker", "topics", "demo"):
        env = services[name]["environment"]
        assert all(k.startswith(ENV_PREFIX) for k in env), name
        settings = load_settings({k: str(v) for k, v in env.items()})
        assert settings.kafka_bootstrap == "kafka:19092"
        assert settings.redis_url.startswith("redis://redis:")


def test_worker_is_built_from_the_repo_and_waits_for_its_dependencies() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["build"] == "."
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert {"kafka", "redis"} <= set(worker["depends_on"])
    assert services["demo"]["profiles"] == ["demo"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("likeflow", "config", "streams", "tables", "agents"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["likeflow"]' in dockerfile
