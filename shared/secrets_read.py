"""Reading one of a service's secrets (the `secrets` collection the gateway writes, sealed at rest) for a worker."""

from __future__ import annotations

from .secretbox import SecretBox
from .store import ReadModelStore


def service_secret(store: ReadModelStore, service_id: str, name: str) -> str | None:
    """The value of secret `name` of a service, opened, or None."""
    doc = store.secrets.find_one({"_id": service_id}, {"values": 1})
    value = ((doc or {}).get("values") or {}).get(name)
    return str(SecretBox.of(store.settings).open(value)) if value is not None else None
