"""`python -m services.builder`: the builder worker (repository checks, builds, pushes, tags)."""

import logging

from shared.faust_app import run_worker
from shared.settings import get_settings

from .app import build_app

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(build_app(get_settings()))
