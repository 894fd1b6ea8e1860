"""Liveness, readiness, the OpenAPI document and the human docs page."""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..io import bus_of, store_of


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _mongo_ok(request: Request) -> str | None:
    try:  # straight to Mongo (not through db_call's fail-fast window): this is the probe
        await run_in_threadpool(store_of(request).ping)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"MongoDB unavailable: {type(exc).__name__}"


async def _broker_ok(request: Request) -> str | None:
    bus = bus_of(request)
    try:
        await asyncio.wait_for(bus.start(), 5)
        producer = bus._producer  # the bus has no public health probe
        assert producer is not None
        ok = await asyncio.wait_for(producer.client.ready(producer.client.get_random_node()), 3)
        return None if ok else "event broker unreachable"
    except Exception as exc:  # noqa: BLE001
        return f"event broker unavailable: {type(exc).__name__}"


async def readyz(request: Request) -> Response:
    problems = [p for p in await asyncio.gather(_mongo_ok(request), _broker_ok(request)) if p]
    if problems:
        return JSONResponse(
            {"status": "unavailable", "error": {"code": "not_ready", "message": "; ".join(problems)}},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})


async def openapi_json(request: Request) -> Response:
    from ..openapi import document

    return JSONResponse(document())


async def apidocs(request: Request) -> Response:
    from ..apidocs import render

    return HTMLResponse(render())


routes: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/apidocs", apidocs, methods=["GET"]),
]
