"""`fornax demo`: a sample repository built, pushed, tagged and deployed end to end against a running stack,
through the public API and a signed webhook only (`build.py` the build, `deploy.py` the deploy step)."""
