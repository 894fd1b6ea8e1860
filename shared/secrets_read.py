"""Reading one of a service's secrets (the `secrets` collection the gateway writes) for a worker."""

from __future__ import annotations

from typing import Any


def service_secret(store: Any, service_id: str, name: str) -> str | None:
    """The value of secret `name` of a service, or None."""
    doc = store.secrets.find_one({"_id": service_id}, {"values": 1})
    value = ((doc or {}).get("values") or {}).get(name)
    return str(value) if value is not None else None
