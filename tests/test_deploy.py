"""Deploy manifests: validated against the Kubernetes schema, and kept in line with the service."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from toonify import metrics
from toonify.settings import Settings

from .conftest import ROOT

K8S = ROOT / "deploy" / "kubernetes"
VERSION = "1.37.0"


def documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_kubernetes_manifests_validate_strictly(name):
    for doc in documents(K8S / name):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_validation_catches_mistakes():
    deployment = documents(K8S / "deployment.yaml")[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def container(doc) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_pods_are_hardened_and_probed(name):
    doc = documents(K8S / name)[0]
    pod, main = doc["spec"]["template"]["spec"], container(doc)
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1034
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert main["startupProbe"]["httpGet"]["path"] == "/readyz"
    # Graceful shutdown outlasts the longest request.
    assert pod["terminationGracePeriodSeconds"] > Settings().request_timeout_s
    writable = {m["mountPath"] for m in main["volumeMounts"]}
    assert {"/tmp", "/home/bentoml/prometheus_multiproc_dir"} <= writable


def test_gpu_deployment_asks_for_a_gpu():
    main = container(documents(K8S / "deployment-gpu.yaml")[0])
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "TOONIFY_BACKEND", "value": "onnxruntime"} in main["env"]


def test_autoscaling_reads_a_metric_the_service_exports():
    hpa = documents(K8S / "hpa.yaml")[0]
    pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    name = pods_metric["pods"]["metric"]["name"]
    assert name == metrics.requests_in_flight._name
    target = float(pods_metric["pods"]["target"]["averageValue"])
    assert 0 < target < Settings().max_in_flight  # scale before instances start refusing
    assert any(m["type"] == "Resource" for m in hpa["spec"]["metrics"])  # CPU fallback
    adapter = yaml.safe_load(documents(K8S / "prometheus-adapter.yaml")[0]["data"]["config.yaml"])
    assert adapter["rules"][0]["name"]["as"] == name


def test_cloud_run_service_matches_the_seed_and_the_service(settings_from):
    service = documents(ROOT / "deploy" / "cloudrun" / "service.yaml")[0]
    assert service["apiVersion"] == "serving.knative.dev/v1" and service["kind"] == "Service"
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["run.googleapis.com/cpu-throttling"] == "true"  # request-based billing
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    assert int(annotations["autoscaling.knative.dev/maxScale"]) >= 2  # 2 hold 25k images/h
    main = template["spec"]["containers"][0]
    assert main["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    env = {e["name"]: e["value"] for e in main["env"]}
    # Cloud Run sends an instance as many as it takes before refusing: the ladder's top.
    settings = settings_from({k: v for k, v in env.items() if k.startswith("TOONIFY_")})
    assert template["spec"]["containerConcurrency"] == settings.degraded_max_in_flight
    assert settings.degraded_max_in_flight > settings.max_in_flight  # with a reduced level
    assert main["startupProbe"]["httpGet"]["path"] == "/readyz"
    # Cloud Run's container is a Kubernetes container: validate it as one, in a Pod.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cloudrun"},
        "spec": {"containers": [{"name": "toonify", **main}]},
    }
    kubernetes_validate.validate(pod, VERSION, strict=True)
