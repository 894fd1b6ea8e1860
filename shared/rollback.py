"""The rollback rule, on read-model deployment documents: what a rollback may roll back to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Doc = Mapping[str, Any]


def rollback_target(successes: Sequence[Doc], target: str | None = None) -> str | None:
    """The target a rollback acts on: the one asked for, else that of the latest successful deployment."""
    if target is not None:
        return target
    return str(successes[0]["target"]) if successes else None


def rollback_source(successes: Sequence[Doc], target: str | None = None) -> Doc | None:
    """The deployment a rollback without an explicit version returns to, or None when there is none.

    `successes` are the service's successful deployments, newest first. On `target` (default: the
    target of the latest one), the answer is the newest earlier deployment whose digest differs from
    the current (latest) one's."""
    if target is None and successes:
        target = successes[0].get("target")
    done = [d for d in successes if d.get("target") == target]
    if not done:
        return None
    current = done[0]
    return next((d for d in done[1:] if d.get("digest") != current.get("digest")), None)
