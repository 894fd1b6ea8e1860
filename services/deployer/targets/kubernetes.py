"""Kubernetes target through the official client: create or JSON-patch a Deployment, wait for rollout.

Only the application's container image (and the version label/digest annotation) is ever patched:
other containers, ports, env and replicas stay as the cluster's owners left them. The client is
blocking, so every call runs in a thread (`asyncio.to_thread`); objects are read as raw JSON dicts so
that partially filled objects never trip the client's models.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from shared.settings import KubernetesCluster

from . import DeployRequest, DeployResult, k8s_name

LABEL_SERVICE = "fornax.io/service"
LABEL_APPLICATION = "fornax.io/application"
LABEL_VERSION = "fornax.io/version"
ANNOTATION_DIGEST = "fornax.io/digest"
ANNOTATION_DEPLOYMENT = "fornax.io/deployment"
PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
JSON_PATCH = "application/json-patch+json"


class Failed(Exception):
    """A deploy failure with its user-facing reason."""


class KubernetesTarget:
    """One configured cluster; `poll_interval` and `call_timeout` bound every API call."""

    kind = "kubernetes"

    def __init__(
        self, name: str, cluster: KubernetesCluster, poll_interval: float = 0.25, call_timeout: float = 10.0
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.poll_interval = poll_interval
        self.call_timeout = call_timeout

    async def deploy(self, request: DeployRequest) -> DeployResult:
        return await asyncio.to_thread(self._deploy, request)

    # -- blocking part -------------------------------------------------------------------------
    def api_client(self) -> k8s.ApiClient:
        cfg = k8s.Configuration()
        c = self.cluster
        if c.in_cluster:
            k8s_config.load_incluster_config(client_configuration=cfg)
        elif c.kubeconfig:
            k8s_config.load_kube_config(config_file=c.kubeconfig, context=c.context, client_configuration=cfg)
        else:
            cfg.host = c.api_url or "https://127.0.0.1:6443"
            if c.token is not None:
                cfg.api_key = {"BearerToken": c.token.get_secret_value()}
                cfg.api_key_prefix = {"BearerToken": "Bearer"}
            cfg.ssl_ca_cert = c.ca_file
            cfg.verify_ssl = c.verify_ssl
        cfg.retries = 0  # an unreachable cluster must fail fast, not after urllib3's retries
        return k8s.ApiClient(cfg)

    def _deploy(self, req: DeployRequest) -> DeployResult:
        deadline = time.monotonic() + req.timeout
        try:
            with self.api_client() as api:
                detail = self._apply_and_wait(api, req, deadline)
        except Failed as exc:
            return DeployResult.failure(str(exc))
        except ApiException as exc:
            return DeployResult.failure(self._api_reason(exc))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return DeployResult.failure(f"cluster {self.name!r} unreachable: {type(exc).__name__}")
        return DeployResult.success(detail)

    def _apply_and_wait(self, api: k8s.ApiClient, req: DeployRequest, deadline: float) -> str:
        apps: Any = k8s.AppsV1Api(api)  # raw responses (_preload_content=False), not the typed models
        ns = req.namespace or "default"
        name = k8s_name(req.application)
        current = self._read(apps, name, ns)
        if current is None:
            resp = apps.create_namespaced_deployment(
                ns, deployment_manifest(req, name), _preload_content=False, _request_timeout=self.call_timeout
            )
            verb = "created"
        else:
            resp = apps.patch_namespaced_deployment(
                name,
                ns,
                image_patch(current, req, name),
                _content_type=JSON_PATCH,
                _preload_content=False,
                _request_timeout=self.call_timeout,
            )
            verb = "updated"
        generation = (json.loads(resp.data).get("metadata") or {}).get("generation") or 0
        self._wait_rollout(api, apps, name, ns, generation, req, deadline)
        return f"deployment {ns}/{name} {verb}; rolled out {req.reference}"

    def _read(self, apps: Any, name: str, ns: str) -> dict[str, Any] | None:
        try:
            resp = apps.read_namespaced_deployment(
                name, ns, _preload_content=False, _request_timeout=self.call_timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def _wait_rollout(
        self,
        api: k8s.ApiClient,
        apps: Any,
        name: str,
        ns: str,
        generation: int,
        req: DeployRequest,
        deadline: float,
    ) -> None:
        core: Any = k8s.CoreV1Api(api)
        last_pod_check = 0.0
        while True:
            dep = self._read(apps, name, ns)
            if dep is None:
                raise Failed(f"deployment {ns}/{name} disappeared during the rollout")
            progress = rollout_progress(dep, generation)
            if progress.done:
                return
            if progress.failure:
                raise Failed(progress.failure)
            if time.monotonic() - last_pod_check > 1.0:
                last_pod_check = time.monotonic()
                pull = self._pull_error(core, ns, req)
                if pull:
                    raise Failed(pull)
            if time.monotonic() > deadline:
                raise Failed(
                    f"timeout: rollout of deployment {ns}/{name} not complete after {req.timeout:g}s "
                    f"({progress.summary})"
                )
            time.sleep(self.poll_interval)

    def _pull_error(self, core: Any, ns: str, req: DeployRequest) -> str:
        """An image pull error from the application's pods, when the pods are visible to us."""
        selector = f"{LABEL_SERVICE}={req.service_id},{LABEL_APPLICATION}={k8s_name(req.application)}"
        try:
            resp = core.list_namespaced_pod(
                ns, label_selector=selector, _preload_content=False, _request_timeout=self.call_timeout
            )
        except ApiException:
            return ""  # no right to list pods: rely on the Deployment's conditions and the timeout
        for pod in json.loads(resp.data).get("items") or []:
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_VERSION) not in (None, req.version_id):
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in PULL_ERRORS:
                    return f"image pull error: {waiting['reason']}: {waiting.get('message', '')}".strip(": ")
        return ""

    def _api_reason(self, exc: ApiException) -> str:
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        if exc.status == 403:
            return f"forbidden: cluster {self.name!r} refused: {message}"
        if exc.status == 401:
            return f"unauthorized: cluster {self.name!r} rejected the configured credentials"
        return f"kubernetes API error {exc.status} on cluster {self.name!r}: {message}"


class Progress:
    def __init__(self, done: bool, failure: str, summary: str) -> None:
        self.done, self.failure, self.summary = done, failure, summary


def rollout_progress(dep: dict[str, Any], generation: int) -> Progress:
    """kubectl's rule: observedGeneration caught up, every replica updated and available."""
    meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    wanted_gen = max(int(meta.get("generation") or 0), int(generation or 0))
    observed = int(status.get("observedGeneration") or 0)
    replicas = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    summary = (
        f"observedGeneration {observed}/{wanted_gen}, updated {updated}/{replicas}, "
        f"available {available}/{replicas}"
    )
    for cond in status.get("conditions") or []:
        if (
            observed >= wanted_gen
            and cond.get("type") == "Progressing"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            return Progress(
                False, f"rollout stalled: {cond.get('message') or 'progress deadline exceeded'}", summary
            )
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return Progress(False, f"replica failure: {cond.get('message') or cond.get('reason')}", summary)
    done = wanted_gen > 0 and observed >= wanted_gen and updated == replicas and available == replicas
    return Progress(done, "", summary)


def deployment_manifest(req: DeployRequest, name: str) -> dict[str, Any]:
    selector = {LABEL_SERVICE: req.service_id, LABEL_APPLICATION: name}
    labels = {**selector, LABEL_VERSION: req.version_id}
    annotations = {ANNOTATION_DIGEST: req.digest or "", ANNOTATION_DEPLOYMENT: req.deployment_id}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": req.namespace or "default", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": name, "image": req.reference}]},
            },
        },
    }


def _esc(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def image_patch(current: dict[str, Any], req: DeployRequest, name: str) -> list[dict[str, Any]]:
    """JSON patch: this container's image, the version label and digest annotation; nothing else."""
    template = (current.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    index = next((i for i, c in enumerate(containers) if c.get("name") == name), None)
    if index is None:
        names = ", ".join(c.get("name", "?") for c in containers) or "none"
        raise Failed(f"deployment {name} has no container named {name!r} (containers: {names})")
    base = f"/spec/template/spec/containers/{index}"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": f"{base}/name", "value": name},  # the list did not shift under us
        {"op": "replace", "path": f"{base}/image", "value": req.reference},
    ]
    for path, mapping, key, value in (
        ("/metadata/labels", (current.get("metadata") or {}).get("labels"), LABEL_VERSION, req.version_id),
        (
            "/spec/template/metadata/labels",
            (template.get("metadata") or {}).get("labels"),
            LABEL_VERSION,
            req.version_id,
        ),
        (
            "/spec/template/metadata/annotations",
            (template.get("metadata") or {}).get("annotations"),
            ANNOTATION_DIGEST,
            req.digest or "",
        ),
    ):
        if mapping is None:
            meta_op = {"op": "add", "path": "/spec/template/metadata", "value": {}}
            if (
                path.startswith("/spec/template/metadata")
                and template.get("metadata") is None
                and meta_op not in ops
            ):
                ops.append(meta_op)
            ops.append({"op": "add", "path": path, "value": {key: value}})
        else:
            ops.append({"op": "add", "path": f"{path}/{_esc(key)}", "value": value})
    return ops
