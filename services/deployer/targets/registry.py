"""Builds the configured targets from settings (credentials stay inside the adapters)."""

from __future__ import annotations

from shared.settings import Settings

from . import Target


def build_targets(settings: Settings) -> dict[str, Target]:
    from .docker_host import DockerHostTarget
    from .kubernetes import KubernetesTarget

    targets: dict[str, Target] = {}
    for name, cluster in settings.kubernetes_clusters.items():
        targets[name] = KubernetesTarget(name, cluster)
    for name, docker_target in settings.docker_targets.items():
        targets[name] = DockerHostTarget(name, docker_target, settings)
    return targets


def target_names(settings: Settings) -> set[str]:
    return set(settings.kubernetes_clusters) | set(settings.docker_targets)
