"""The web dashboard: static ES modules under /ui/static, the page itself for every /ui/ path (the page
routes in the browser), and /ui/config.json (where the logstream answers). It uses only the public REST API
and WebSocket, with the token the user signs in with; nothing here reads the store."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parent.parent / "dashboard"
NO_CACHE = {"Cache-Control": "no-cache"}


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=302)


async def page(request: Request) -> Response:
    return FileResponse(ROOT / "index.html", headers=NO_CACHE)


async def config(request: Request) -> Response:
    settings = request.app.state.settings
    return JSONResponse({"logstream_url": settings.logstream_public_url}, headers=NO_CACHE)


routes: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/ui/config.json", config, methods=["GET"]),
    Mount("/ui/static", StaticFiles(directory=ROOT / "static"), name="dashboard-static"),
    Route("/ui", page, methods=["GET"]),
    Route("/ui/{path:path}", page, methods=["GET"]),
]
