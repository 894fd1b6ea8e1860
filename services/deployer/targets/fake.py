"""A steerable in-memory target for handler tests: records requests, answers as told."""

from __future__ import annotations

import asyncio

from . import DeployRequest, DeployResult


class FakeTarget:
    """`fail_with` makes the next deploys fail; `gate` (an Event) holds deploys until it is set."""

    kind = "fake"

    def __init__(self, fail_with: str = "", gate: asyncio.Event | None = None) -> None:
        self.fail_with = fail_with
        self.gate = gate
        self.requests: list[DeployRequest] = []
        self.running: dict[str, DeployRequest] = {}  # application -> what runs now

    async def deploy(self, request: DeployRequest) -> DeployResult:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            return DeployResult.failure(self.fail_with)
        self.running[request.application] = request
        return DeployResult.success(f"fake: {request.application} runs {request.reference}")
