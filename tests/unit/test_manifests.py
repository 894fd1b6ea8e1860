"""The deployment files are checked, not just written: every Kubernetes manifest validates against a
pinned Kubernetes schema, every compose file passes `docker-compose config`, and every setting they
name exists (a typo in an env name would otherwise be silently ignored)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"  # the pinned schema: the oldest Kubernetes release the manifests support
MANIFESTS = sorted((ROOT / "infra" / "k8s").rglob("*.yaml"))
COMPOSE_FILES = sorted([*ROOT.glob("docker-compose*.yml"), *(ROOT / "infra").rglob("docker-compose*.yml")])
# Custom resources have no schema in the core set: they are operator examples (Strimzi), skipped by name.
CUSTOM_GROUPS = ("kafka.strimzi.io/",)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in MANIFESTS for d in _docs(p)]


def _setting_names() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(f"FORNAX_{name.upper()}")
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(a).upper() for a in alias.choices if isinstance(a, str))
    return names


def test_there_are_manifests_and_compose_files() -> None:
    assert (ROOT / "infra" / "k8s" / "fornax.yaml") in MANIFESTS
    assert ROOT / "docker-compose.yml" in COMPOSE_FILES


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kubernetes_manifests_validate_against_the_pinned_schema(path: Path) -> None:
    checked = 0
    for doc in _docs(path):
        if doc.get("apiVersion", "").startswith(CUSTOM_GROUPS):
            continue  # a custom resource: its operator's CRD defines it, not the core schema
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}: {exc.message}")
        checked += 1
    assert checked or path.parent.name == "examples"


def test_the_validator_catches_a_bad_manifest() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_referenced_secret_configmap_and_account_is_defined() -> None:
    defined = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for _, d in _all_docs()}
    missing = []
    for path, doc in _all_docs():
        pod = _pod_spec(doc)
        if pod is None:
            continue
        ns = doc["metadata"].get("namespace")
        refs: list[tuple[str, str]] = []
        if pod.get("serviceAccountName"):
            refs.append(("ServiceAccount", pod["serviceAccountName"]))
        for v in pod.get("volumes", []):
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
        for c in pod.get("containers", []):
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    refs.append(("Secret", src["secretRef"]["name"]))
                if "configMapRef" in src:
                    refs.append(("ConfigMap", src["configMapRef"]["name"]))
        missing += [f"{path.name}: {doc['kind']} {doc['metadata']['name']} -> {kind} {name}"
                    for kind, name in refs if (kind, ns, name) not in defined]
    assert not missing


def test_platform_pods_have_resources_and_the_servers_have_probes_and_budgets() -> None:
    docs = [d for p, d in _all_docs() if p.name == "fornax.yaml"]
    for doc in docs:
        pod = _pod_spec(doc)
        for c in (pod or {}).get("containers", []):
            res = c.get("resources", {})
            assert res.get("requests") and res.get("limits", {}).get("memory"), f"{doc['metadata']['name']}/{c['name']}"
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    budgets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    for server in ("gateway", "logstream"):
        container = deployments[server]["spec"]["template"]["spec"]["containers"][0]
        assert container.get("readinessProbe") and container.get("livenessProbe"), server
        labels = deployments[server]["spec"]["template"]["metadata"]["labels"]
        assert budgets[server]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert any(d["kind"] == "Ingress" for d in docs)


def test_the_deployer_is_bound_to_a_role_that_covers_what_the_target_calls() -> None:
    docs = [d for _, d in _all_docs()]
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "fornax-deployer")
    verbs = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
             for v in rule["verbs"]}
    # What services/deployer/targets/kubernetes.py calls: read/create/patch Deployments, list Pods.
    for need in [("apps", "deployments", v) for v in ("get", "create", "patch")] + [("", "pods", "list")]:
        assert need in verbs
    assert not any(v == "*" or r == "*" for _, r, v in verbs), "least privilege: no wildcards"
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and d["roleRef"]["name"] == "fornax-deployer"]
    assert any(s["name"] == "fornax-deployer" and s["namespace"] == "fornax" for b in bindings for s in b["subjects"])


def test_every_fornax_setting_named_by_a_manifest_or_compose_file_exists() -> None:
    known = _setting_names()
    unknown = []
    for path in [*MANIFESTS, *COMPOSE_FILES]:
        for name in sorted(set(re.findall(r"\bFORNAX_[A-Z0-9_]+", path.read_text()))):
            if name not in known and name != "FORNAX_SETTINGS_FILE":
                unknown.append(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown


def test_the_targets_file_in_the_manifest_is_valid_settings() -> None:
    doc = next(d for _, d in _all_docs() if d["kind"] == "Secret" and d["metadata"]["name"] == "fornax-deploy-targets")
    settings = Settings(**yaml.safe_load(doc["stringData"]["targets.yml"]))
    assert settings.kubernetes_clusters["default"].in_cluster


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_files_pass_docker_compose_config(path: Path) -> None:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: scripts/install.sh installs Debian's docker-compose"
    files = ["-f", str(ROOT / "docker-compose.yml")]
    if path.name != "docker-compose.yml":
        files += ["-f", str(path)]  # an override file is only valid on top of the base file
    env = {**os.environ, "FORNAX_REGISTRY_PASSWORD": "validate-only", "FORNAX_SECRETS_KEY": "validate-only"}
    out = subprocess.run([exe, *files, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec") or {}
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec["template"]["spec"]
    return None
