"""docs/deployment.md's Kubernetes example is valid Kubernetes and is the file it shows."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.support import ROOT

MANIFEST = ROOT / "deploy" / "kubernetes.yaml"
DOCUMENTS = list(yaml.safe_load_all(MANIFEST.read_text()))


@pytest.mark.parametrize("document", DOCUMENTS, ids=[f"{d['kind']}-{d['metadata']['name']}" for d in DOCUMENTS])
def test_the_kubernetes_example_is_valid_against_the_schemas(document):
    kubernetes_validate.validate(document, "1.33", strict=True)


def test_the_example_has_what_the_docs_promise():
    kinds = {d["kind"] for d in DOCUMENTS}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget"}
    (deployment,) = (d for d in DOCUMENTS if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["grpc"]["port"] == 50051
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORKERS"] and int(env["DB_POOL_SIZE"]) + int(env["DB_POOL_MAX_OVERFLOW"]) <= 10
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert env["METRICS_ADDRESS"].rpartition(":")[2] == str(ports["metrics"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["SHUTDOWN_GRACE_SECONDS"])


def test_the_docs_show_the_manifest_as_it_is():
    assert MANIFEST.read_text() in (ROOT / "docs" / "deployment.md").read_text()
