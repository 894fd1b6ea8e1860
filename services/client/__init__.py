"""The `fornax` API client commands: everything the REST API does, from a terminal, with the same token."""
