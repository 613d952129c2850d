"""deploy/k8s/ validates against the Kubernetes schemas (offline) and agrees with the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import likeflow
from config import load_settings

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


def test_the_config_map_holds_valid_settings() -> None:
    settings = load_settings(manifests()["ConfigMap"]["data"])
    assert settings.web_host == "0.0.0.0"  # noqa: S104 (inside the pod network, docs/security.md)
    _, container = worker()
    assert container["envFrom"] == [{"configMapRef": {"name": manifests()["ConfigMap"]["metadata"]["name"]}}]


def test_probes_use_health_for_liveness_and_ready_for_readiness() -> None:
    _, container = worker()
    port = int(manifests()["ConfigMap"]["data"]["LIKEFLOW_WEB_PORT"])
    assert container["ports"] == [{"name": "web", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_termination_grace_is_above_the_shutdown_timeout() -> None:
    pod, _ = worker()
    settings = load_settings(manifests()["ConfigMap"]["data"])
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s


def test_the_pseudonym_key_is_a_secret_mounted_as_the_key_file() -> None:
    pod, container = worker()
    settings = load_settings(manifests()["ConfigMap"]["data"])
    secret = manifests()["Secret"]
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    [key_name] = secret["stringData"]
    assert settings.user_key_file == f"{mount['mountPath']}/{key_name}"
    assert "LIKEFLOW_USER_KEY" not in manifests()["ConfigMap"]["data"], "never the key in a ConfigMap"
    # The container user reads the 0400 file through fsGroup.
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 1000


def test_the_disruption_budget_and_service_select_the_workers() -> None:
    labels = manifests()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert manifests()["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests()["StatefulSet"]["spec"]["serviceName"] == manifests()["Service"]["metadata"]["name"]


def test_the_image_tag_is_the_package_version() -> None:
    version = likeflow.__version__
    _, container = worker()
    assert container["image"] == f"likeflow:{version}"
