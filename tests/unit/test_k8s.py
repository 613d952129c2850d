"""deploy/k8s/ validates against the Kubernetes schemas (offline) and agrees with the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import likeflow
from config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes release the manifests are meant for (policy/v1 PDBs, startup probes).
KUBERNETES_VERSION = "1.30.0"


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> document, for every manifest the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [yaml.safe_load((K8S / name).read_text()) for name in kustomization["resources"]]
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    ), "a manifest is not in the kustomization"
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("kind", sorted(manifests()))
def test_each_manifest_is_valid_kubernetes(kind: str) -> None:
    kubernetes_validate.validate(manifests()[kind], KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    # The validator is strict: an unknown field fails, so the test above is not vacuous.
    broken = manifests()["StatefulSet"]
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def worker() -> tuple[dict[str, Any], dict[str, Any]]:
    pod = manifests()["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def settings_of_the_config_map() -> Settings:
    return load_settings(manifests()["ConfigMap"]["data"])


def test_the_config_map_holds_valid_settings() -> None:
    settings = settings_of_the_config_map()
    assert settings.web_host == "0.0.0.0"  # noqa: S104 (inside the pod network, docs/security.md)
    _, container = worker()
    assert container["envFrom"] == [{"configMapRef": {"name": manifests()["ConfigMap"]["metadata"]["name"]}}]


def test_the_settings_are_secure_by_default() -> None:
    """SASL_SSL to Kafka and TLS with an ACL user to Redis, every secret from a file."""
    settings = settings_of_the_config_map()
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism.startswith("SCRAM-")
    assert settings.kafka_sasl_username and settings.kafka_sasl_password_file and settings.kafka_ssl_cafile
    assert settings.redis_url.startswith("rediss://")
    assert settings.redis_username and settings.redis_password_file and settings.redis_ssl_cafile
    data = manifests()["ConfigMap"]["data"]
    for value in ("LIKEFLOW_USER_KEY", "LIKEFLOW_KAFKA_SASL_PASSWORD", "LIKEFLOW_REDIS_PASSWORD"):
        assert value not in data, f"never {value} itself in a ConfigMap: its _FILE, mounted from a Secret"


def documented_secrets() -> dict[str, set[str]]:
    """Secret name -> its keys, from the `kubectl create secret generic` commands of docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text().replace("\\\n", " ")
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        command = re.search(r"kubectl .*create secret generic ([a-z0-9][a-z0-9.-]*)(.*)", line)
        if command:
            found[command.group(1)] = set(re.findall(r"--from-file=([^=\s]+)=", command.group(2)))
    return found


def test_no_secret_is_applied_with_the_manifests() -> None:
    """`kubectl apply -k` must never install a placeholder over the key or password an operator made."""
    assert "Secret" not in manifests()
    assert not (K8S / "secret.yaml").exists()


def test_every_secret_file_is_mounted_from_a_secret_the_docs_create() -> None:
    pod, container = worker()
    settings = settings_of_the_config_map()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    created = documented_secrets()
    files = ("user_key_file", "audit_signing_key_file", "kafka_sasl_password_file", "kafka_ssl_cafile",
             "redis_password_file", "redis_ssl_cafile")  # fmt: skip
    used = set()
    for name in files:
        path = getattr(settings, name)
        directory, key = path.rsplit("/", 1)
        mount = mounts.get(directory)
        assert mount is not None, f"{name}={path}: no volume is mounted at {directory}"
        assert mount.get("readOnly") is True, f"{directory} must be mounted read-only"
        secret = volumes[mount["name"]].get("secret")
        assert secret is not None, f"{name}: the volume at {directory} is not a Secret"
        assert secret["defaultMode"] == 0o400
        assert key in created.get(secret["secretName"], set()), (
            f"docs/deploy.md does not create Secret {secret['secretName']} with key {key} ({name})"
        )
        used.add(secret["secretName"])
    assert used == set(created), "docs/deploy.md creates a Secret nothing mounts, or the reverse"
    # The container user reads the 0400 files through fsGroup (0440).
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 1000


def test_the_network_policy_opens_only_the_web_port_to_the_workers() -> None:
    policy = manifests()["NetworkPolicy"]["spec"]
    labels = manifests()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    settings = settings_of_the_config_map()
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": settings.web_port}]
    assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"]), "never from anywhere"
    _, container = worker()
    assert [p["containerPort"] for p in container["ports"]] == [settings.web_port]
    egress = {(p["protocol"], p["port"]) for r in policy["egress"] for p in r["ports"]}
    kafka = {("TCP", int(url.rsplit(":", 1)[1])) for url in settings.kafka_bootstrap.split(",")}
    redis_port = int(settings.redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    assert egress == kafka | {("TCP", redis_port), ("UDP", 53), ("TCP", 53)}


def test_probes_use_health_for_liveness_and_ready_for_readiness() -> None:
    _, container = worker()
    port = int(manifests()["ConfigMap"]["data"]["LIKEFLOW_WEB_PORT"])
    assert container["ports"] == [{"name": "web", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_termination_grace_is_above_the_shutdown_timeout() -> None:
    pod, _ = worker()
    settings = settings_of_the_config_map()
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s


def test_the_disruption_budget_and_service_select_the_workers() -> None:
    labels = manifests()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert manifests()["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests()["StatefulSet"]["spec"]["serviceName"] == manifests()["Service"]["metadata"]["name"]


def test_the_image_tag_is_the_package_version() -> None:
    version = likeflow.__version__
    _, container = worker()
    assert container["image"] == f"likeflow:{version}"


def test_the_autoscaler_never_runs_more_workers_than_partitions() -> None:
    hpa = manifests()["HorizontalPodAutoscaler"]["spec"]
    statefulset = manifests()["StatefulSet"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": statefulset["apiVersion"],
        "kind": "StatefulSet",
        "name": statefulset["metadata"]["name"],
    }
    settings = settings_of_the_config_map()
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"] <= settings.partitions
    assert "replicas" not in statefulset["spec"], "the autoscaler owns the count; an apply must not reset it"


def test_the_autoscaler_scales_on_the_exported_lag_of_likes() -> None:
    from prometheus_client import CollectorRegistry

    from likeflow.metrics import Metrics

    [metric] = manifests()["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "likeflow_likes_lag"
    assert metric["external"]["target"]["type"] == "AverageValue"
    # The adapter rule of docs/deploy.md sums the gauge the workers export.
    registry = CollectorRegistry()
    Metrics(registry)
    exported = "likeflow_consumer_lag_records"
    assert exported in {family.name for family in registry.collect()}
    rule = (ROOT / "docs" / "deploy.md").read_text()
    assert f"sum({exported}" in rule
    assert 'as: "likeflow_likes_lag"' in rule


def test_scale_down_lets_each_worker_finish_before_the_next_goes() -> None:
    behavior = manifests()["HorizontalPodAutoscaler"]["spec"]["behavior"]["scaleDown"]
    pod, _ = worker()
    settings = settings_of_the_config_map()
    [policy] = behavior["policies"]
    assert policy == {"type": "Pods", "value": 1, "periodSeconds": policy["periodSeconds"]}
    # One worker at a time (as the disruption budget), each gone and its partitions moved (the
    # shutdown's grace, then the static member's session) before the next one is taken down.
    assert manifests()["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert policy["periodSeconds"] >= pod["terminationGracePeriodSeconds"] + settings.session_timeout_s
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s
    # No scale-down on a short lull: a backlog comes back in waves.
    assert behavior["stabilizationWindowSeconds"] >= 300
