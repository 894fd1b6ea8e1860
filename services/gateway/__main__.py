"""`python -m services.gateway`: the gateway HTTP server."""

from __future__ import annotations

import logging

import uvicorn

from shared.settings import get_settings

from .app import create_app
from .http_protocol import CorkedHTTPProtocol


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=CorkedHTTPProtocol,  # one socket write per response (see http_protocol.py)
    )


if __name__ == "__main__":
    main()
