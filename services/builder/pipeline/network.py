"""The per-version Docker network and the label-based cleanup of everything a version created."""

from __future__ import annotations

import logging
from typing import Any

import docker
from docker.errors import APIError, NotFound

LABEL = "fornax.version"
EPOCH_LABEL = "fornax.epoch"
log = logging.getLogger(__name__)


def network_name(version_id: str) -> str:
    return f"fornax-{version_id}"


def labels(version_id: str, **extra: str) -> dict[str, str]:
    return {LABEL: version_id, **{f"fornax.{k}": v for k, v in extra.items()}}


def ensure_network(client: docker.DockerClient, version_id: str):
    """The version's bridge network (user-defined: DNS by name and alias), created if missing."""
    name = network_name(version_id)
    for net in client.networks.list(filters={"label": f"{LABEL}={version_id}"}):
        if net.name == name:
            return net
    try:
        return client.networks.create(name, driver="bridge", labels=labels(version_id), check_duplicate=True)
    except APIError as exc:
        if exc.status_code == 409:  # created meanwhile by a resumed attempt
            return client.networks.get(name)
        raise


def cleanup_version(client: docker.DockerClient, version_id: str, epoch: int | None = None) -> None:
    """Remove every container and network labelled with the version (idempotent). With `epoch`, only
    the containers started under that claim epoch (label fornax.epoch), and no network: the worker
    that took the version over shares it."""
    selector: dict[str, Any] = {"label": f"{LABEL}={version_id}"}
    if epoch is not None:
        selector = {"label": [f"{LABEL}={version_id}", f"{EPOCH_LABEL}={epoch}"]}
    for container in client.containers.list(all=True, filters=selector):
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:  # "removal already in progress" is fine; anything else is logged
            if exc.status_code != 409:
                log.warning("could not remove container %s: %s", container.name, exc)
    if epoch is not None:
        return
    for net in client.networks.list(filters=selector):
        try:
            net.reload()
            for c in net.attrs.get("Containers") or {}:
                try:
                    net.disconnect(c, force=True)
                except APIError:
                    pass
            net.remove()
        except NotFound:
            pass
        except APIError as exc:
            log.warning("could not remove network %s: %s", net.name, exc)
