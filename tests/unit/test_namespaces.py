"""The namespace allow-list rule shared by the gateway and the Kubernetes target."""

from __future__ import annotations

from shared.namespaces import namespace_patterns, namespace_refusal
from shared.settings import KubernetesCluster, Settings


def test_default_allows_only_the_default_namespace() -> None:
    cluster = KubernetesCluster()
    assert namespace_refusal("c", cluster, None, "alice") is None
    assert namespace_refusal("c", cluster, "default", "alice") is None
    assert namespace_refusal("c", cluster, "kube-system", "alice") == (
        "namespace 'kube-system' is not allowed on cluster 'c' (allowed: default)"
    )


def test_globs_user_placeholder_and_per_user_lists() -> None:
    cluster = KubernetesCluster(namespaces=["fornax-{user}", "shared-*"], user_namespaces={"alice": ["team-a"]})
    assert namespace_patterns(cluster, "alice") == ["fornax-alice", "shared-*", "team-a"]
    for ns in ("fornax-alice", "shared-x", "team-a"):
        assert namespace_refusal("c", cluster, ns, "alice") is None
    assert namespace_refusal("c", cluster, "fornax-bob", "bob") is None
    for ns in ("fornax-alice", "team-a", "default", "fornax-bob-x"):
        assert namespace_refusal("c", cluster, ns, "bob") is not None
    assert namespace_refusal("c", cluster, "fornax-anything", "*") is not None  # the id is literal
    # Without a user, `{user}` patterns give nothing (never `fornax-` for everyone).
    assert namespace_patterns(cluster, None) == ["shared-*"]


def test_cluster_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(
        "FORNAX_KUBERNETES_CLUSTERS",
        '{"prod": {"api_url": "https://k:6443", "namespaces": ["apps-*"], "user_namespaces": {"ann": ["x"]}}}',
    )
    prod = Settings().kubernetes_clusters["prod"]
    assert prod.namespaces == ["apps-*"] and prod.user_namespaces == {"ann": ["x"]}
