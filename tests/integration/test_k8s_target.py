"""Kubernetes target through the real `kubernetes` client against kmock plus a MODEL of the Deployment
controller (tests/fixtures/k8s_model.py; not a cluster). Asserts on the requests sent and on results."""

from __future__ import annotations

from typing import Any

import kmock
import pytest
from pydantic import SecretStr

from infra.local.procs import free_port
from services.deployer.handlers import Deployer
from services.deployer.state import MemoryState
from services.deployer.targets import DeployRequest
from services.deployer.targets.kubernetes import KubernetesTarget
from shared.events import DeployRequested, Event, RollbackRequested
from shared.events.deploys import DeployRequestedPayload, RollbackRequestedPayload
from shared.settings import KubernetesCluster
from tests.fixtures.k8s_model import DEPLOYMENTS, DeploymentControllerModel, deployment_controller_model  # noqa: F401

TOKEN = "very-secret-token"
DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "2" * 64


@pytest.fixture
def model(deployment_controller_model: DeploymentControllerModel) -> DeploymentControllerModel:  # noqa: F811
    """The modelled cluster (see tests/fixtures/k8s_model.py)."""
    return deployment_controller_model


def target_for(model: Any, timeout_poll: float = 0.05, **cluster: Any) -> KubernetesTarget:
    config = KubernetesCluster(
        api_url=str(model.url).rstrip("/"),
        token=SecretStr(TOKEN),
        verify_ssl=False,
        **{"namespaces": ["prod"], **cluster},
    )
    return KubernetesTarget("model", config, poll_interval=timeout_poll, call_timeout=5)


def request(
    digest: str = DIGEST1,
    version: str = "ver1",
    timeout: float = 10.0,
    did: str = "dep1",
    namespace: str = "prod",
    user: str = "alice",
) -> DeployRequest:
    return DeployRequest(
        deployment_id=did,
        service_id="svc1",
        service_name="shop",
        version_id=version,
        application="web",
        image="127.0.0.1:5000/alice/shop:v1",
        digest=digest,
        namespace=namespace,
        timeout=timeout,
        user_id=user,
    )


async def test_create_when_missing(model: DeploymentControllerModel) -> None:
    result = await target_for(model).deploy(request())
    assert result.ok, result.reason
    assert "deployment prod/web created" in result.detail
    posts = model[kmock.method.POST]
    assert len(posts) == 1 and posts[0].url.path == "/apis/apps/v1/namespaces/prod/deployments"
    assert posts[0].headers.get("Authorization") == f"Bearer {TOKEN}"
    body = posts[0].data
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container == {"name": "web", "image": f"127.0.0.1:5000/alice/shop@{DIGEST1}"}
    assert body["spec"]["template"]["metadata"]["labels"] == {
        "fornax.io/service": "svc1",
        "fornax.io/application": "web",
        "fornax.io/version": "ver1",
    }
    assert body["spec"]["selector"]["matchLabels"] == {
        "fornax.io/service": "svc1",
        "fornax.io/application": "web",
    }
    assert model.deployment("prod", "web")["status"]["observedGeneration"] == 1


async def test_patch_changes_only_the_app_image_and_keeps_sidecar(model: DeploymentControllerModel) -> None:
    await model.post(
        "/apis/apps/v1/namespaces/prod/deployments",
        json={
            "metadata": {
                "name": "web",
                "namespace": "prod",
                "labels": {"team": "a", "fornax.io/service": "svc1", "fornax.io/user": "alice"},
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "log-shipper",
                                "image": "shipper:1",
                                "env": [{"name": "LEVEL", "value": "debug"}],
                            },
                            {
                                "name": "web",
                                "image": "old:1",
                                "ports": [{"containerPort": 8080}],
                                "env": [{"name": "MODE", "value": "prod"}],
                            },
                        ]
                    },
                },
            },
        },
    )
    result = await target_for(model).deploy(request())
    assert result.ok, result.reason
    assert "deployment prod/web updated" in result.detail
    (patch,) = model[kmock.method.PATCH]
    assert patch.headers.get("Content-Type") == "application/json-patch+json"
    paths = {op["path"]: op for op in patch.data}
    assert paths["/spec/template/spec/containers/1/name"] == {
        "op": "test",
        "path": "/spec/template/spec/containers/1/name",
        "value": "web",
    }
    assert paths["/spec/template/spec/containers/1/image"]["value"] == f"127.0.0.1:5000/alice/shop@{DIGEST1}"
    assert not [p for p in paths if p.startswith("/spec/template/spec/containers/0")]
    assert not [p for p in paths if "replicas" in p or "ports" in p or "env" in p]
    dep = model.deployment("prod", "web")
    shipper, web = dep["spec"]["template"]["spec"]["containers"]
    assert shipper == {
        "name": "log-shipper",
        "image": "shipper:1",
        "env": [{"name": "LEVEL", "value": "debug"}],
    }
    assert web["ports"] == [{"containerPort": 8080}] and web["env"] == [{"name": "MODE", "value": "prod"}]
    assert dep["spec"]["replicas"] == 2 and dep["metadata"]["labels"]["team"] == "a"
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "web", "fornax.io/version": "ver1"}
    assert dep["metadata"]["generation"] == 2 and dep["status"]["observedGeneration"] == 2
    assert dep["status"]["availableReplicas"] == 2
    assert [r["revision"] for r in model.revisions[("prod", "web")]] == [1, 2]


async def test_rollout_wait_polls_until_the_controller_observed_the_generation(
    model: DeploymentControllerModel,
) -> None:
    model.rollout_delay = 1.0
    result = await target_for(model).deploy(request())
    assert result.ok, result.reason
    gets = model[kmock.method.GET]["/apis/apps/v1/namespaces/prod/deployments/web"]
    assert len(gets) >= 3  # the initial read, then polls until the status converged
    assert model.deployment("prod", "web")["status"]["updatedReplicas"] == 1


async def test_timeout_when_status_never_converges(model: DeploymentControllerModel) -> None:
    model.behaviour = "stuck"
    result = await target_for(model).deploy(request(timeout=1.5))
    assert not result.ok
    assert result.reason.startswith("timeout: rollout of deployment prod/web not complete after 1.5s")
    assert "available 0/1" in result.reason


async def test_image_pull_error_is_named(model: DeploymentControllerModel) -> None:
    model.behaviour = "pull-error"
    result = await target_for(model).deploy(request(timeout=20))
    assert not result.ok
    assert result.reason.startswith("image pull error: ErrImagePull")
    assert f"shop@{DIGEST1}" in result.reason
    assert len(model[kmock.method.GET]["/api/v1/namespaces/prod/pods"]) >= 1


async def test_forbidden_gives_a_clear_reason_without_credentials(model: DeploymentControllerModel) -> None:
    (
        model[kmock.method.GET]
        << 403
        << {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 403,
            "reason": "Forbidden",
            "message": 'deployments.apps "web" is forbidden: User "ci" cannot get resource "deployments"',
        }
    )
    result = await target_for(model).deploy(request())
    assert not result.ok
    assert result.reason.startswith(
        "forbidden: cluster 'model' refused: deployments.apps \"web\" is forbidden"
    )
    assert TOKEN not in result.reason
    assert len(model[kmock.method.POST]) == 0 and len(model[kmock.method.PATCH]) == 0


async def test_forbidden_patch(model: DeploymentControllerModel) -> None:
    assert (await target_for(model).deploy(request())).ok
    model[kmock.method.PATCH] << 403 << {"kind": "Status", "code": 403, "message": "cannot patch deployments"}
    result = await target_for(model).deploy(request(DIGEST2, "ver2", did="dep2"))
    assert not result.ok and result.reason == "forbidden: cluster 'model' refused: cannot patch deployments"


async def test_unreachable_cluster() -> None:
    cluster = KubernetesCluster(
        api_url=f"http://127.0.0.1:{free_port()}", token=SecretStr(TOKEN), namespaces=["prod"]
    )
    result = await KubernetesTarget("gone", cluster, call_timeout=2).deploy(request())
    assert not result.ok
    assert result.reason.startswith("cluster 'gone' unreachable")
    assert TOKEN not in result.reason


async def _existing(model: DeploymentControllerModel, labels: dict[str, str], ns: str = "prod") -> None:
    await model.post(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        json={
            "metadata": {"name": "web", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "theirs:1"}]},
                },
            },
        },
    )


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        ({"app": "web"}, "exists and was not created by Fornax"),
        ({"fornax.io/service": "svc-of-bob"}, "exists and belongs to another service (fornax.io/service=svc-of-bob)"),
        ({"fornax.io/service": "svc1", "fornax.io/user": "bob"}, "belongs to another user (fornax.io/user=bob)"),
    ],
)
async def test_a_foreign_deployment_of_the_same_name_is_refused(
    model: DeploymentControllerModel, labels: dict[str, str], why: str
) -> None:
    await _existing(model, labels)
    result = await target_for(model).deploy(request())
    assert not result.ok
    assert result.reason.startswith(f"refused: deployment prod/web {why}"), result.reason
    assert len(model[kmock.method.PATCH]) == 0 and len(model[kmock.method.POST]) == 1  # only ours above
    (container,) = model.deployment("prod", "web")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "theirs:1"


async def test_created_deployments_carry_the_owner_and_are_patched_again(model: DeploymentControllerModel) -> None:
    assert (await target_for(model).deploy(request())).ok
    labels = model.deployment("prod", "web")["metadata"]["labels"]
    assert labels["fornax.io/service"] == "svc1" and labels["fornax.io/user"] == "alice"
    assert (await target_for(model).deploy(request(DIGEST2, "ver2", did="dep2"))).ok
    (container,) = model.deployment("prod", "web")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"127.0.0.1:5000/alice/shop@{DIGEST2}"


async def test_a_namespace_outside_the_allow_list_is_refused_before_any_call(
    model: DeploymentControllerModel,
) -> None:
    result = await target_for(model).deploy(request(namespace="kube-system"))
    assert not result.ok
    assert result.reason == "refused: namespace 'kube-system' is not allowed on cluster 'model' (allowed: prod)"
    assert len(model) == 0  # not even a read


async def test_namespace_patterns_for_every_user_and_per_user(model: DeploymentControllerModel) -> None:
    target = target_for(model, namespaces=["fornax-{user}"], user_namespaces={"alice": ["team-*"]})
    assert (await target.deploy(request(namespace="fornax-alice"))).ok
    assert (await target.deploy(request(namespace="team-blue", did="dep2"))).ok
    refused = await target.deploy(request(namespace="team-blue", user="bob", did="dep3"))
    assert refused.reason == "refused: namespace 'team-blue' is not allowed on cluster 'model' (allowed: fornax-bob)"
    assert not (await target.deploy(request(namespace="fornax-alice", user="bob", did="dep4"))).ok
    assert not (await target.deploy(request(namespace=None, did="dep5"))).ok  # = default, not listed


async def test_a_refused_deploy_fails_naming_the_reason(model: DeploymentControllerModel) -> None:
    await _existing(model, {"app": "web"})
    state = MemoryState()
    state.services["svc1"] = {"_id": "svc1", "name": "shop"}
    state.versions["ver1"] = {
        "_id": "ver1",
        "service_id": "svc1",
        "status": "success",
        "name": "ver1",
        "image": "127.0.0.1:5000/alice/shop:ver1",
        "digest": DIGEST1,
    }
    events: list[Event] = []

    async def publish(*evs: Event) -> None:
        events.extend(evs)

    deployer = Deployer(state, {"prod-cluster": target_for(model)}, publish, timeout=10, projection_wait=0.2)
    for did, ns in (("d1", "prod"), ("d2", "kube-system")):
        payload = DeployRequestedPayload(
            deployment_id=did,
            service_id="svc1",
            user_id="alice",
            version_id="ver1",
            target="prod-cluster",
            namespace=ns,
            application="web",
        )
        await deployer.on_deploy_event(DeployRequested.make("svc1", payload))
        await deployer.idle()
    failed = {e.payload.deployment_id: e.payload.reason for e in events if e.type == "DeployFailed"}
    assert failed["d1"].startswith("refused: deployment prod/web exists and was not created by Fornax")
    assert failed["d2"].startswith("refused: namespace 'kube-system' is not allowed on cluster 'model'")
    assert len(model[kmock.method.PATCH]) == 0


async def test_rollback_through_handlers_sets_the_earlier_digest(model: DeploymentControllerModel) -> None:
    state = MemoryState()
    state.services["svc1"] = {"_id": "svc1", "name": "shop"}
    for vid, digest in (("ver1", DIGEST1), ("ver2", DIGEST2)):
        state.versions[vid] = {
            "_id": vid,
            "service_id": "svc1",
            "status": "success",
            "name": vid,
            "image": f"127.0.0.1:5000/alice/shop:{vid}",
            "digest": digest,
        }
    events: list[Event] = []

    async def publish(*evs: Event) -> None:
        events.extend(evs)

    deployer = Deployer(state, {"prod-cluster": target_for(model)}, publish, timeout=10, projection_wait=0.2)
    for did, vid in (("d1", "ver1"), ("d2", "ver2")):
        await deployer.on_deploy_event(
            DeployRequested.make(
                "svc1",
                DeployRequestedPayload(
                    deployment_id=did,
                    service_id="svc1",
                    user_id="alice",
                    version_id=vid,
                    target="prod-cluster",
                    namespace="prod",
                    application="web",
                ),
            )
        )
        await deployer.idle()
    await deployer.on_deploy_event(
        RollbackRequested.make(
            "svc1", RollbackRequestedPayload(deployment_id="r1", service_id="svc1", user_id="alice")
        )
    )
    await deployer.idle()
    assert [e.type for e in events if e.type.startswith("Deploy") and e.payload.deployment_id == "r1"] == [
        "DeployStarted",
        "DeploySucceeded",
    ]
    (container,) = model.deployment("prod", "web")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"127.0.0.1:5000/alice/shop@{DIGEST1}"
    patches = model[kmock.method.PATCH]
    assert len(patches) == 2
    assert patches[-1].data[1] == {
        "op": "replace",
        "path": "/spec/template/spec/containers/0/image",
        "value": f"127.0.0.1:5000/alice/shop@{DIGEST1}",
    }
    revisions = model.revisions[("prod", "web")]
    assert [r["template"]["spec"]["containers"][0]["image"].rsplit("@", 1)[1] for r in revisions] == [
        DIGEST1,
        DIGEST2,
        DIGEST1,
    ]
    assert model.deployment("prod", "web")["metadata"]["labels"]["fornax.io/version"] == "ver1"
