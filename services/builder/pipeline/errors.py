"""Errors raised by the pipeline package."""

from __future__ import annotations


class StageFailed(Exception):
    """A container stage failed; the message is the stage error shown to the user.

    `kind` is "failed", "timed_out" or "cancelled" (the builder maps "cancelled" to VersionCancelled).
    """

    def __init__(self, message: str, kind: str = "failed", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.exit_code = exit_code
