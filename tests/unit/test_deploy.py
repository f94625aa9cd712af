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
    assert env == {"INFLUX_TOKEN", "KAFKA_SASL_PASSWORD", "ALERT_WEBHOOK_SECRET",
                   "ALERT_SMTP_PASSWORD"}, "secrets come from the Secret only"


def test_every_configmap_setting_is_one_the_worker_reads() -> None:
    import inspect

    from thurrock_streams import settings

    cm = yaml.safe_load((DEPLOY / "base" / "configmap.yaml").read_text())
    source = inspect.getsource(settings.Settings.from_env)
    unknown = [k for k in cm["data"] if f'"{k}"' not in source]
    assert unknown == [], f"settings the worker never reads: {unknown}"
