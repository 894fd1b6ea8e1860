"""The status vocabularies of versions and deploys, defined once."""

from __future__ import annotations

VERSION_ACTIVE_STATUSES = ("pending", "queued", "running")
VERSION_TERMINAL_STATUSES = ("success", "failed", "cancelled")
DEPLOY_TERMINAL_STATUSES = ("success", "failed", "skipped")
