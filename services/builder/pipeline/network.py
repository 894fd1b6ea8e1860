"""Names and labels of what a version creates: its network, and the labels cleanup selects on
(fornax.version; fornax.epoch for the containers of one claim epoch)."""

from __future__ import annotations

LABEL = "fornax.version"
EPOCH_LABEL = "fornax.epoch"


def network_name(version_id: str) -> str:
    return f"fornax-{version_id}"


def labels(version_id: str, **extra: str) -> dict[str, str]:
    return {LABEL: version_id, **{f"fornax.{k}": v for k, v in extra.items()}}
