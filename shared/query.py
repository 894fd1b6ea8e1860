"""Integer query parameters (paging offsets, log positions): digits only, bounded, never a driver error.

A Mongo skip or `$gt` past 2**63 makes the driver raise OverflowError (a 500, or a streamed 200 that
breaks half-way); values are checked here, before any query is built.
"""

from __future__ import annotations

import re

# Far beyond any real offset or log sequence number, and exact in a JSON number (2**53).
MAX_POSITION = 2**53
_INTEGER = re.compile(r"-?[0-9]{1,20}")


def parse_int(raw: str, low: int, high: int) -> int:
    """`raw` as an int within [low, high]; ValueError says what is wrong (for a message naming it)."""
    if not _INTEGER.fullmatch(raw):
        raise ValueError("must be an integer")
    value = int(raw)
    if value < low or value > high:
        raise ValueError(f"must be between {low} and {high}")
    return value
