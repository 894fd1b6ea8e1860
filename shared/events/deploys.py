"""Events on fornax.deploys: keyed by service id, so one service's deploys stay ordered."""

from __future__ import annotations

from typing import Literal

from .envelope import Event, Payload

DeployKind = Literal["deploy", "rollback", "auto"]


class DeployRequestedPayload(Payload):
    deployment_id: str
    service_id: str
    user_id: str
    version_id: str
    target: str
    namespace: str | None = None
    application: str | None = None
    kind: DeployKind = "deploy"
    # Known at request time for automatic deploys (from VersionSucceeded); else read from `versions`.
    image: str | None = None
    digest: str | None = None


class DeployRequested(Event):
    TOPIC = "deploys"
    type: Literal["DeployRequested"] = "DeployRequested"
    payload: DeployRequestedPayload


class RollbackRequestedPayload(Payload):
    deployment_id: str
    service_id: str
    user_id: str
    to_version_id: str | None = None
    target: str | None = None


class RollbackRequested(Event):
    TOPIC = "deploys"
    type: Literal["RollbackRequested"] = "RollbackRequested"
    payload: RollbackRequestedPayload


class DeployStartedPayload(Payload):
    deployment_id: str
    service_id: str
    version_id: str
    target: str
    namespace: str | None = None
    application: str | None = None
    image: str
    digest: str | None = None
    kind: DeployKind = "deploy"


class DeployStarted(Event):
    TOPIC = "deploys"
    type: Literal["DeployStarted"] = "DeployStarted"
    payload: DeployStartedPayload


class DeploySucceededPayload(Payload):
    deployment_id: str
    service_id: str
    detail: str = ""


class DeploySucceeded(Event):
    TOPIC = "deploys"
    type: Literal["DeploySucceeded"] = "DeploySucceeded"
    payload: DeploySucceededPayload


class DeployFailedPayload(Payload):
    deployment_id: str
    service_id: str
    reason: str


class DeployFailed(Event):
    TOPIC = "deploys"
    type: Literal["DeployFailed"] = "DeployFailed"
    payload: DeployFailedPayload


class DeploySkippedPayload(Payload):
    deployment_id: str
    service_id: str
    version_id: str
    target: str
    reason: str


class DeploySkipped(Event):
    """An automatic deploy that did not run (target pinned, superseded)."""

    TOPIC = "deploys"
    type: Literal["DeploySkipped"] = "DeploySkipped"
    payload: DeploySkippedPayload


class TargetPinChangedPayload(Payload):
    service_id: str
    target: str
    pinned: bool
    reason: str = ""


class TargetPinChanged(Event):
    TOPIC = "deploys"
    type: Literal["TargetPinChanged"] = "TargetPinChanged"
    payload: TargetPinChangedPayload
