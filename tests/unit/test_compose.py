"""docker-compose.yml cannot run here (no Docker engine): check its structure against the settings."""

from __future__ import annotations

import json
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
    # Workers scale, so they publish no host port; each listens on the settings' web port.
    assert "ports" not in services["worker"]
    assert services["worker"]["expose"] == [str(defaults.web_port)]


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


def test_every_long_running_service_has_a_health_check_and_named_volumes_exist() -> None:
    data = compose()
    for name in ("kafka", "redis", "worker", "prometheus", "grafana"):
        assert "healthcheck" in data["services"][name], name
    assert set(data["volumes"]) == {"kafka-data", "prometheus-data", "grafana-data"}
    for service in data["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in data["volumes"], volume


def test_prometheus_scrapes_every_worker_replica_and_loads_the_rules() -> None:
    data = compose()
    prom = data["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"])
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "likeflow" and job["metrics_path"] == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == Settings().web_port


def test_grafana_is_provisioned_with_the_datasource_and_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/likeflow.yml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/likeflow.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["expr"] for t in panel["targets"])


def test_the_worker_image_serves_health_on_the_web_port() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 6066" in dockerfile and "/ready" in dockerfile


def test_the_worker_reads_its_pseudonym_and_audit_signing_keys_from_compose_secrets() -> None:
    doc = compose()
    worker = doc["services"]["worker"]
    assert worker["secrets"] == ["user_key", "audit_signing_key"]
    assert worker["environment"]["LIKEFLOW_USER_KEY_FILE"] == "/run/secrets/user_key"
    assert worker["environment"]["LIKEFLOW_AUDIT_SIGNING_KEY_FILE"] == "/run/secrets/audit_signing_key"
    for key in ("LIKEFLOW_USER_KEY", "LIKEFLOW_AUDIT_SIGNING_KEY"):
        assert key not in worker["environment"], "never a key itself in the file"
    assert doc["secrets"]["user_key"]["file"] == "./.run/secrets/user-key"
    assert doc["secrets"]["audit_signing_key"]["file"] == "./.run/secrets/audit-signing-key"


def test_kafka_keeps_its_logs_on_the_data_volume() -> None:
    kafka = compose()["services"]["kafka"]
    [mount] = kafka["volumes"]
    volume, path = mount.split(":")
    assert volume == "kafka-data"
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == path


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".cache", ".stack", ".run", ".git"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", dockerfile, flags=re.M)
    assert not set(copied) & ignored, "the image copies something the context leaves out"


def test_the_worker_can_read_the_key_secret_and_write_its_data() -> None:
    # A file secret is bind-mounted with the host file's owner and mode (`make secrets`: 0600),
    # so the worker runs as the host user, and the image's data dir accepts any uid.
    worker = compose()["services"]["worker"]
    assert worker["user"] == "${HOST_UID:-1000}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--uid 1000" in dockerfile and "chmod 1777 /data" in dockerfile
    assert "umask 077" in (ROOT / "Makefile").read_text()


def test_the_worker_is_healthy_when_ready_not_merely_alive() -> None:
    worker = compose()["services"]["worker"]
    assert "/ready" in " ".join(worker["healthcheck"]["test"])
    assert worker["healthcheck"]["start_period"]
    assert "/ready" in (ROOT / "Dockerfile").read_text()
