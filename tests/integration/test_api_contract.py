"""The gateway against its own OpenAPI document: schemathesis fuzzes every operation of the live gateway
(the document it serves at /openapi.json) with every check, as a real user whose token it sends.

A bounded number of examples per operation keeps the module well under a minute. Known ids (a real
service, and a finished version of it with a few log lines) are drawn half of the time, so reads, logs
(paged and followed) and lists answer with real documents, not only 404s."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import schemathesis

from services.gateway.openapi import document
from shared.bus import EventBus
from tests.integration.gateway_helpers import auth
from tests.integration.logstream_helpers import end_version, new_user, request_version, write_lines
from tests.waits import wait_until

pytestmark = pytest.mark.integration

SERVICES = ("projector", "logstream", "gateway")
MAX_EXAMPLES = 15
# 422 for values valid in the document that this server's settings refuse: the repository URL policy,
# the configured deploy targets and namespaces, a provider not connected; and rules across fields
# (a commit status's token secret must be one of the service's secrets).
SETTINGS_DEPENDENT = (
    ("POST", "/services$"),
    ("PUT", "/services/{service_id}$"),
    ("POST", "/deploy$"),
    ("POST", "/rollback$"),
    ("POST", "/unpin$"),
)
# schemathesis's default for valid data, with 422
ACCEPTED_OR_SETTINGS = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


@pytest.fixture(scope="module")
def gateway(stack, no_build_workers):
    for name in SERVICES:
        stack.start_service(name)
    yield f"http://127.0.0.1:{stack.gateway_port}"
    for name in SERVICES:
        stack.stop(name)


def _service(http: httpx.Client, user: str) -> str:
    body = {"name": "svc-" + uuid.uuid4().hex[:8],
            "repository": {"url": f"https://git.example.test/{user}/{uuid.uuid4().hex}.git"}}
    resp = http.post(f"/api/v1/{user}/services", json=body)
    assert resp.status_code in (201, 202), resp.text
    sid = resp.json()["service_id"]
    wait_until(lambda: http.get(f"/api/v1/{user}/services/{sid}").status_code == 200, what="the service")
    return sid


@pytest.fixture(scope="module")
def known(gateway, store, settings):
    """A user, one of their services, a finished version of it with three log lines, and a service for
    DELETE alone (so that deleting it leaves the other to the operations that follow)."""
    user, token = new_user(store, "fuzz")
    with httpx.Client(base_url=gateway, timeout=30, headers=auth(token)) as http:
        sid = _service(http, user)
        doomed = _service(http, user)

    async def a_version() -> str:
        async with EventBus(settings) as bus:
            vid = await request_version(bus, store, user, sid)
            await write_lines(bus, vid, 3)
            await end_version(bus, vid, "success")
            return vid

    vid = asyncio.run(a_version())
    wait_until(lambda: store.logs.count_documents({"version_id": vid}) == 3, what="the archived lines")
    return user, token, sid, vid, doomed


@pytest.fixture(scope="module")
def api_schema(gateway, known):
    user, token, sid, vid, doomed = known
    config = schemathesis.Config.from_dict({
        "base-url": gateway,
        "seed": 20261205,
        "request-timeout": 30,
        "auth": {"openapi": {"bearer": {"bearer": token}}},
        "dictionaries": {"services": {"values": [sid]}, "versions": {"values": [vid]}},
        "parameters": {
            "path.user_id": user,
            "path.service_id": {"dictionary": "services", "probability": 0.5},
            "path.version_id": {"dictionary": "versions", "probability": 0.5},
            "body.service_id": {"dictionary": "services", "probability": 0.5},
            "body.version_id": {"dictionary": "versions", "probability": 0.5},
            "body.to_version_id": {"dictionary": "versions", "probability": 0.5},
        },
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "operations": [
            # Rotating or revoking the token would take the fuzzer's own credentials away mid-run
            # (tests/e2e/test_dashboard.py covers both).
            {"include-path-regex": "/token/(rotate|revoke)$", "enabled": False},
            # The compatibility paths are served by the handlers of their /api/v1 twins (fuzzed in full): a
            # lighter pass there.
            {"include-tag": "compatibility", "phases": {"coverage": {"enabled": False}},
             "generation": {"max-examples": 5}},
            {"include-method": "DELETE", "include-path-regex": "/services/{service_id}$",
             "parameters": {"path.service_id": doomed}},
            *[
                {"include-method": method, "include-path-regex": path,
                 "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_OR_SETTINGS}}}
                for method, path in SETTINGS_DEPENDENT
            ],
        ],
    })
    return schemathesis.openapi.from_url(f"{gateway}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.deserializer("application/x-ndjson")
def _ndjson(ctx, response):  # type: ignore[no-untyped-def]
    """A followed log, one JSON value a line: the array of its lines (as the document describes it)."""
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]


def test_the_served_document_is_the_generated_one(gateway) -> None:
    assert httpx.get(f"{gateway}/openapi.json", timeout=30).json() == document()


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):  # type: ignore[no-untyped-def]
    """schemathesis's lazy loader reads (and rewrites, to name each operation) `node._nodeid`, which pytest
    9.2 no longer has (it keeps `_id`): give it one, the node's own id."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
def test_api_contract(case) -> None:
    case.call_and_validate()
