"""`python -m services.deployer`: the deploy worker."""

import logging

from shared.faust_app import run_worker
from shared.settings import get_settings

from .app import build_app

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run_worker(build_app(get_settings()))
