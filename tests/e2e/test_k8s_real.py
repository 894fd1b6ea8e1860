"""The Kubernetes target against a REAL cluster (skipped unless KUBECONFIG points at one).

Run it with infra/k8s/e2e-kind.sh (kind + a local registry), or by hand:
    KUBECONFIG=~/.kube/config FORNAX_E2E_K8S_IMAGE1=<repo>@sha256:... \
        FORNAX_E2E_K8S_IMAGE2=<repo>@sha256:... .venv/bin/python -m pytest tests/e2e/test_k8s_real.py
The images must be pullable by the cluster's nodes and keep running (e.g. `sleep 3600`). Everything
happens in a fresh namespace `fornax-e2e-<random>`, deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

KUBECONFIG = os.environ.get("KUBECONFIG", "")
IMAGE1 = os.environ.get("FORNAX_E2E_K8S_IMAGE1", "")
IMAGE2 = os.environ.get("FORNAX_E2E_K8S_IMAGE2", "")
CONTEXT = os.environ.get("FORNAX_E2E_K8S_CONTEXT") or None


def _cluster_answers() -> bool:
    if not KUBECONFIG or not Path(KUBECONFIG.split(os.pathsep)[0]).is_file():
        return False
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=KUBECONFIG, context=CONTEXT)
        client.VersionApi(api).get_code(_request_timeout=5)
        return True
    except Exception:  # noqa: BLE001 - any failure means "no cluster here"
        return False


if not _cluster_answers():
    pytest.skip("KUBECONFIG does not point at a reachable cluster", allow_module_level=True)
if "@sha256:" not in IMAGE1 or "@sha256:" not in IMAGE2:
    pytest.skip("set FORNAX_E2E_K8S_IMAGE1/2 to two pullable images by digest", allow_module_level=True)

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402

from services.deployer.targets import DeployRequest  # noqa: E402
from services.deployer.targets.kubernetes import KubernetesTarget  # noqa: E402
from shared.settings import KubernetesCluster  # noqa: E402


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    api = k8s_config.new_client_from_config(config_file=KUBECONFIG, context=CONTEXT)
    core = k8s.CoreV1Api(api)
    name = f"fornax-e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def request(ns: str, ref: str, version: str, timeout: float = 180) -> DeployRequest:
    repo, digest = ref.split("@", 1)
    return DeployRequest(
        deployment_id=uuid.uuid4().hex,
        service_id="e2e",
        service_name="e2e",
        version_id=version,
        application="app",
        image=f"{repo}:{version}",
        digest=digest,
        namespace=ns,
        timeout=timeout,
    )


def target() -> KubernetesTarget:
    cluster = KubernetesCluster(kubeconfig=KUBECONFIG, context=CONTEXT, namespaces=["fornax-e2e-*"])
    return KubernetesTarget("e2e", cluster, poll_interval=1)


def read(ns: str) -> dict:
    api = k8s_config.new_client_from_config(config_file=KUBECONFIG, context=CONTEXT)
    resp = k8s.AppsV1Api(api).read_namespaced_deployment("app", ns, _preload_content=False)
    return json.loads(resp.data)  # type: ignore[no-any-return]


def test_create_patch_keeps_sidecar_and_rolls_back(namespace: str) -> None:
    first = asyncio.run(target().deploy(request(namespace, IMAGE1, "v1")))
    assert first.ok, first.reason
    # Someone adds a sidecar and env by hand; a deploy must keep both.
    api = k8s_config.new_client_from_config(config_file=KUBECONFIG, context=CONTEXT)
    k8s.AppsV1Api(api).patch_namespaced_deployment(
        "app",
        namespace,
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/-",
                "value": {"name": "sidecar", "image": IMAGE1, "command": ["sh", "-c", "sleep 3600"]},
            },
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/env",
                "value": [{"name": "MODE", "value": "e2e"}],
            },
        ],
        _content_type="application/json-patch+json",
    )
    second = asyncio.run(target().deploy(request(namespace, IMAGE2, "v2")))
    assert second.ok, second.reason
    containers = read(namespace)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["image"] == IMAGE2 and containers[1]["image"] == IMAGE1
    assert [(e["name"], e.get("value")) for e in containers[0]["env"]] == [("MODE", "e2e")]
    back = asyncio.run(target().deploy(request(namespace, IMAGE1, "v1")))
    assert back.ok, back.reason
    assert read(namespace)["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1


def test_missing_image_is_a_pull_error(namespace: str) -> None:
    repo = IMAGE1.split("@", 1)[0]
    result = asyncio.run(target().deploy(request(namespace, f"{repo}@sha256:{'0' * 64}", "v9", timeout=120)))
    assert not result.ok
    assert result.reason.startswith(("image pull error", "timeout")), result.reason
