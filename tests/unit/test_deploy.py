"""The cluster manifests render with kustomize and pass Kubernetes' schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


@pytest.mark.parametrize("overlay", ["base", "demo"])
def test_manifests_render_and_validate(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to check deploy/"
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / overlay)], capture_output=True,
                         text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "thurrock-streams-worker") in kinds
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
        assert doc["metadata"].get("namespace", "thurrock-streams") == "thurrock-streams"
    worker = next(d for d in docs if d["metadata"]["name"] == "thurrock-streams-worker"
                  and d["kind"] == "Deployment")
    env = {e["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"INFLUX_TOKEN", "KAFKA_SASL_PASSWORD"}, "secrets come from the Secret only"
