"""Events on fornax.versions: one aggregate per version, keyed by version id."""

from __future__ import annotations

from typing import Literal

from .envelope import Event, Payload

Operation = Literal["integration", "publish", "deploy"]
StageName = Literal["clone", "integration", "pre_build", "build", "push", "tag", "post_build", "deploy"]
StageStatus = Literal["success", "failed", "skipped", "cancelled"]


class FencedPayload(Payload):
    """A builder's result: `epoch` names the builder's claim on the version (services/builder/state.py).
    Once a newer claim exists, results of an older one are refused (projector, builder agents).
    None: not from a claimed run (older events, the reaper), always applied."""

    epoch: int | None = None


class VersionRequestedPayload(Payload):
    service_id: str
    user_id: str
    name: str
    description: str = ""
    commit: str | None = None
    branch: str | None = None
    trigger: Literal["api", "webhook"] = "api"
    operations: list[Operation] | None = None
    delivery_id: str | None = None


class VersionRequested(Event):
    TOPIC = "versions"
    type: Literal["VersionRequested"] = "VersionRequested"
    payload: VersionRequestedPayload


class VersionQueuedPayload(FencedPayload):
    reason: str


class VersionQueued(Event):
    """The version waits (e.g. for the user's resource quota)."""

    TOPIC = "versions"
    type: Literal["VersionQueued"] = "VersionQueued"
    payload: VersionQueuedPayload


class SourceFetchedPayload(FencedPayload):
    commit: str
    host: str
    branch: str | None = None


class SourceFetched(Event):
    TOPIC = "versions"
    type: Literal["SourceFetched"] = "SourceFetched"
    payload: SourceFetchedPayload


class StageStartedPayload(FencedPayload):
    stage: StageName


class StageStarted(Event):
    TOPIC = "versions"
    type: Literal["StageStarted"] = "StageStarted"
    payload: StageStartedPayload


class StageFinishedPayload(FencedPayload):
    stage: StageName
    status: StageStatus
    error: str | None = None


class StageFinished(Event):
    TOPIC = "versions"
    type: Literal["StageFinished"] = "StageFinished"
    payload: StageFinishedPayload


class ImageBuiltPayload(FencedPayload):
    image: str
    image_id: str
    host: str


class ImageBuilt(Event):
    TOPIC = "versions"
    type: Literal["ImageBuilt"] = "ImageBuilt"
    payload: ImageBuiltPayload


class ImagePushedPayload(FencedPayload):
    image: str
    digest: str


class ImagePushed(Event):
    TOPIC = "versions"
    type: Literal["ImagePushed"] = "ImagePushed"
    payload: ImagePushedPayload


class VersionTaggedPayload(FencedPayload):
    tag: str
    commit: str


class VersionTagged(Event):
    TOPIC = "versions"
    type: Literal["VersionTagged"] = "VersionTagged"
    payload: VersionTaggedPayload


class DeploySpec(Payload):
    """One automatic deploy from the config file's `deploy` section."""

    application: str
    cluster: str
    partition: str | None = None


class VersionSucceededPayload(FencedPayload):
    image: str | None = None
    digest: str | None = None
    # The seq of the version's last build log line (its log is 1..log_seq): a viewer is done once it has
    # them all, whatever the broker says of its offsets. None when unknown.
    log_seq: int | None = None
    # The deploys to run now: the config's `deploy` section when the version's operations include
    # deploy (the builder decides; the deployer just runs them).
    deploy: list[DeploySpec] = []


class VersionSucceeded(Event):
    TOPIC = "versions"
    type: Literal["VersionSucceeded"] = "VersionSucceeded"
    payload: VersionSucceededPayload


class VersionFailedPayload(FencedPayload):
    reason: str
    stage: str | None = None
    log_seq: int | None = None  # as VersionSucceededPayload.log_seq


class VersionFailed(Event):
    TOPIC = "versions"
    type: Literal["VersionFailed"] = "VersionFailed"
    payload: VersionFailedPayload


class VersionCancelledPayload(Payload):
    reason: str = "cancelled by user"


class VersionCancelled(Event):
    TOPIC = "versions"
    type: Literal["VersionCancelled"] = "VersionCancelled"
    payload: VersionCancelledPayload
