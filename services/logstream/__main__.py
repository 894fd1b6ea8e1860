"""python -m services.logstream: serve live logs on settings.logstream_host:logstream_port."""

from .server import main

main()
