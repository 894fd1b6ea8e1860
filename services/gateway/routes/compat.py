"""Compatibility paths: the REST paths of Fornax 2016, without the `/api/v1` prefix.

`/{user_id}/services`, `/{user_id}/services/{service_id}`, `/{user_id}/versions`,
`/{user_id}/versions/{version_id}`, `/{user_id}/versions/{version_id}/logs` and
`/{user_id}/services/{service_id}/versions` answer exactly as their `/api/v1/...` twins: the same
handlers, for every method the twin has. Fixed paths always win: a compat path never matches when its
first segment is one of the gateway's own (`ui`, `badges`, `webhooks`, `api`, `healthz`, ...), so a
user with such a name uses the `/api/v1` forms.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from . import logs, services, versions

PREFIX = "/api/v1"
# The thesis's table; each is served by the /api/v1 route of the same shape.
SEED_PATHS = (
    "/{user_id}/services",
    "/{user_id}/services/{service_id}",
    "/{user_id}/versions",
    "/{user_id}/versions/{version_id}",
    "/{user_id}/versions/{version_id}/logs",
    "/{user_id}/services/{service_id}/versions",
)
# First path segments that belong to the gateway itself (now or reserved for it).
RESERVED = frozenset({"api", "ui", "badges", "webhooks", "healthz", "readyz", "openapi.json", "apidocs",
                      "services", "static", "metrics", "favicon.ico", "robots.txt"})


class CompatRoute(Route):
    """A Route that never matches a reserved first segment, whatever the route order."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and child.get("path_params", {}).get("user_id") in RESERVED:
            return Match.NONE, {}
        return match, child


def _twins() -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for module in (services, versions, logs):
        for route in module.routes:
            if isinstance(route, Route) and route.path.removeprefix(PREFIX) in SEED_PATHS:
                out.append(CompatRoute(route.path.removeprefix(PREFIX), route.endpoint,
                                       methods=sorted(route.methods or ()), name=f"compat_{route.name}"))
    return out


routes: list[BaseRoute] = _twins()
