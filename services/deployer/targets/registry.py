"""Builds the configured targets from settings (credentials stay inside the adapters)."""

from __future__ import annotations

from shared.settings import Settings, target_names

from . import Target


def build_targets(settings: Settings) -> dict[str, Target]:
    """One adapter for each name of `target_names` (a Docker host wins over a cluster of the same name)."""
    from .docker_host import DockerHostTarget
    from .kubernetes import KubernetesTarget

    targets: dict[str, Target] = {}
    for name in sorted(target_names(settings)):
        docker_target = settings.docker_targets.get(name)
        if docker_target is not None:
            targets[name] = DockerHostTarget(name, docker_target, settings)
        else:
            targets[name] = KubernetesTarget(name, settings.kubernetes_clusters[name])
    return targets
