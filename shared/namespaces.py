"""Which Kubernetes namespaces a user may deploy into on a configured cluster: the one rule the gateway
(early 422) and the Kubernetes target (failed deploy) both apply.

A cluster lists namespace patterns for every user (`namespaces`) and extra ones per user id
(`user_namespaces`); a pattern is a shell-style glob (`team-*`) in which `{user}` stands for the user id
(`fornax-{user}`). A request without a namespace means `default`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from glob import escape

from .settings import KubernetesCluster

DEFAULT_NAMESPACE = "default"


def namespace_patterns(cluster: KubernetesCluster, user_id: str | None) -> list[str]:
    """The cluster's namespace patterns for this user, `{user}` filled in."""
    patterns = list(cluster.namespaces)
    if user_id:
        patterns += cluster.user_namespaces.get(user_id, [])
    # The user id is matched literally: a `*` in it must not widen `fornax-{user}`.
    return [p.replace("{user}", escape(user_id or "")) for p in patterns if user_id or "{user}" not in p]


def namespace_refusal(
    cluster_name: str, cluster: KubernetesCluster, namespace: str | None, user_id: str | None
) -> str | None:
    """None when `user_id` may deploy into `namespace` on the cluster, else the reason it may not."""
    ns = namespace or DEFAULT_NAMESPACE
    patterns = namespace_patterns(cluster, user_id)
    if any(fnmatchcase(ns, p) for p in patterns):
        return None
    allowed = ", ".join(patterns) or "none"
    return f"namespace {ns!r} is not allowed on cluster {cluster_name!r} (allowed: {allowed})"
