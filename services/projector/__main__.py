"""`python -m services.projector`: the projector worker (read models and the push trigger)."""

from .app import main

main()
