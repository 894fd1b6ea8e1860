"""A small blocking client of the gateway's REST API (httpx); errors become `ApiFailure` with an exit code."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

# Exit codes of every `fornax` API command (docs/cli.md).
OK = 0
VERSION_FAILED = 1
VERSION_CANCELLED = 2
REFUSED = 3  # the server said no: bad token, someone else's or an unknown resource, invalid input
UNAVAILABLE = 4  # the server could not be reached, or failed (5xx)
USAGE = 64


class ApiFailure(Exception):
    def __init__(self, message: str, code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class Client:
    url: str
    token: str
    user: str | None = None
    timeout: float = 30.0
    progress: bool = False  # print "waiting…" on stderr while a 202 is not readable yet

    @classmethod
    def from_args(cls, url: str | None, token: str | None, user: str | None, progress: bool) -> Client:
        token = token or os.environ.get("FORNAX_TOKEN")
        if not token:
            raise ApiFailure("no token: pass --token or set FORNAX_TOKEN", USAGE)
        url = url or os.environ.get("FORNAX_URL") or "http://127.0.0.1:7099"
        return cls(url.rstrip("/"), token, user or os.environ.get("FORNAX_USER"), progress=progress)

    def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            with httpx.Client(base_url=self.url, timeout=self.timeout) as http:
                resp = http.request(method, path, json=json, params=params,
                                    headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise ApiFailure(f"cannot reach the Fornax API at {self.url}: {exc}", UNAVAILABLE) from None
        if resp.status_code >= 400:
            raise ApiFailure(_error_text(resp), UNAVAILABLE if resp.status_code >= 500 else REFUSED, resp.status_code)
        return resp.json() if resp.content else None

    def me(self) -> str:
        if self.user is None:
            self.user = str(self.request("GET", "/api/v1/me")["user_id"])
        return self.user

    def path(self, rest: str) -> str:
        return f"/api/v1/{self.me()}/{rest}"

    def wait_readable(self, rest: str, seconds: float = 10.0) -> Any:
        """GET a resource just created; a create may answer before the read model shows it (202)."""
        deadline = time.monotonic() + seconds
        delay = 0.05
        while True:
            try:
                return self.request("GET", self.path(rest))
            except ApiFailure as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            if self.progress:
                print("waiting for the new resource to be readable…", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def service_id(self, name_or_id: str) -> str:
        """A service id from its name or id."""
        services = self.request("GET", self.path("services"), params={"limit": 500})["services"]
        for s in services:
            if name_or_id in (s["service_id"], s.get("name")):
                return str(s["service_id"])
        raise ApiFailure(f"no service {name_or_id!r} (fornax service list shows yours)", REFUSED, 404)


def _error_text(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error", {})
        message = err.get("message") or resp.text
        field = f" (field: {err['field']})" if err.get("field") else ""
    except (ValueError, AttributeError):
        message, field = resp.text.strip()[:300], ""
    return f"{resp.status_code}: {message}{field}"
