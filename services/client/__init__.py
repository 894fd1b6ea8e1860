"""The `fornax` API client commands: everything the REST API does, from a terminal, with the same token;
and `fornax logs [-f]`, a client of the logstream's WebSocket (follow.py)."""
