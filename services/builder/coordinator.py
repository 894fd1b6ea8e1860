"""The builder's coordinator: one run of a version, from the step it is at to its end.

`handle(b, event)` is the one entry point. The build, push and tag agents call it with
VersionRequested, ImageBuilt and ImagePushed; the reaper calls it with the event of the step a
version whose worker died is at (`resume_event`, rebuilt from the read model). It

- refuses results of a lost claim (an event whose epoch is older than the version's claim),
- skips a finished version, one this process works on (or finished) already, and one whose image is
  built (or pushed) already — that step's event is in the log and leads to the next one,
- claims the version with a new epoch (waiting while another live worker holds it; taking it over
  once that worker's heartbeat stops), counts the attempt and fails a version that killed its
  builders `builder_max_crashes` times,
- runs the steps (`STEPS`) from the one the event starts, one after the other in the same run: each
  step handler takes the run and the event it starts from and returns the events it ended with. The
  milestones (ImageBuilt, ImagePushed, VersionTagged) are published once per version
  (`Run.publish_once`); the terminal VersionSucceeded after the teardown, if still wanted. Failures,
  cancellation and a lost claim end the run in `run.run_guarded`.

Running push and tag right after the build saves a broker round trip per step; the push and tag
agents skip the events of a version active (or finished) here, and handle them after a crash or a
takeover.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.events import Event, ImageBuilt, ImagePushed, VersionRequested, utcnow
from shared.events.versions import ImageBuiltPayload, ImagePushedPayload, VersionRequestedPayload
from shared.projections.versions import requested_fields
from shared.status import VERSION_TERMINAL_STATUSES

from . import build, push, tag
from .core import Active, Builder, Failed
from .run import MILESTONES, Run, run_guarded

log = logging.getLogger(__name__)
PROJECTION_WAIT = 10.0
CLAIM_POLL = 2.0

Handler = Callable[[Builder, Run, Event], Awaitable[list[Event]]]


@dataclass(frozen=True)
class Step:
    name: str
    takes: str  # the type of the event the step starts from
    handler: Handler


STEPS: tuple[Step, ...] = (
    Step("build", "VersionRequested", build.build),
    Step("push", "ImageBuilt", push.push),
    Step("tag", "ImagePushed", tag.tag),
    Step("finish", "ImagePushed", tag.finish),
)
TERMINAL = frozenset({"VersionSucceeded"})
ENTRY = {step.takes: step for step in reversed(STEPS)}  # an event type → the first step it starts


def _built(doc: dict[str, Any]) -> bool:
    return bool(doc.get("image_id")) and (doc.get("stages") or {}).get("build", {}).get("status") == "success"


def _pushed(doc: dict[str, Any]) -> bool:
    return bool(doc.get("digest")) and (doc.get("stages") or {}).get("push", {}).get("status") == "success"


# The step an event starts is done already when the read model shows this (its own event follows).
DONE = {"VersionRequested": _built, "ImageBuilt": _pushed}


async def handle(b: Builder, event: Event, reserved: Active | None = None) -> None:
    """Run the version of `event` from the step the event starts to its end (or nothing: see above).
    `reserved`: the reaper marked the version as worked on here (`b.begin`) before it claimed it, so no
    agent of this process starts it meanwhile (its claim would make the agent's run a lost one)."""
    if event.type not in ENTRY or await _from_lost_claim(b, event):
        if reserved is not None:
            b.end(event.aggregate_id)
        return
    fallback = _from_request(event) if isinstance(event, VersionRequested) else None
    owned = await acquire_version(
        b, event.aggregate_id, skip=DONE.get(event.type), fallback=fallback, reserved=reserved
    )
    if owned is None:
        return
    doc, active = owned
    log.info(
        "version %s: %s (status %s, %.3fs after the event)",
        event.aggregate_id,
        event.type,
        doc.get("status"),
        (utcnow() - event.occurred_at).total_seconds(),
    )
    run = Run(b, event, doc, active)
    ended = False
    try:
        crashes = await b.state.start_attempt(run.vid) - 1
        if crashes >= b.settings.builder_max_crashes:
            await run_guarded(b, run, _poisoned(crashes))
        else:
            await run_guarded(b, run, lambda r: advance(b, r, event))
        ended = True
    finally:
        b.end(run.vid, finished=ended)


async def advance(b: Builder, run: Run, event: Event) -> None:
    """Run the steps from the one `event` starts; publish what each returns, until the version ends."""
    latest = {event.type: event}
    first = STEPS.index(ENTRY[event.type])
    for step in STEPS[first:]:
        cause = latest[step.takes]
        run.cause = cause
        for out in await step.handler(b, run, cause):
            if out.type in TERMINAL:
                end = await run.teardown(functools.partial(run.with_log_seq, out))
                if end is not None and await run.still_wanted():
                    await run.publish(end)
                return
            if out.type in MILESTONES:
                await run.publish_once(out)
            else:
                await run.publish(out)
            latest[out.type] = out
    raise RuntimeError(f"version {run.vid}: the steps ended without a terminal event")


async def acquire_version(
    b: Builder,
    vid: str,
    *,
    skip: Any = None,
    fallback: dict[str, Any] | None = None,
    reserved: Active | None = None,
) -> tuple[dict[str, Any], Active] | None:
    """Read the version, skip it if finished (or `skip(doc)`) or already worked on here, and own it:
    (doc, Active) or None. `fallback` (from the event) stands in while the read model lags."""
    try:
        doc = await b.state.version(vid)
        if doc is None:
            doc = fallback or await b.state.wait_version(vid, PROJECTION_WAIT)
    except BaseException:
        if reserved is not None:
            b.end(vid)
        raise
    if doc is None:
        log.warning("version %s: not in the read model after %ss; skipped", vid, PROJECTION_WAIT)
    if doc is None or doc.get("status") in VERSION_TERMINAL_STATUSES or (skip is not None and skip(doc)):
        if reserved is not None:
            b.end(vid)
        return None
    # Being worked on here already: the running chain (build → push → tag) covers this step too,
    # or this is a repeated delivery.
    active = reserved or b.begin(vid)
    if active is None:
        return None
    try:
        waiting = False
        while not (epoch := await b.state.claim(vid)):
            hb = await b.state.heartbeat(vid) or {}
            if hb.get("state") == "done":  # it ended (its end is on its way to the read model): a repeated delivery
                b.end(vid)
                return None
            if not waiting:
                log.info(
                    "version %s: owned by %s; waiting (taken over if its heartbeat stops)",
                    vid,
                    hb.get("worker"),
                )
                waiting = True
            # Another live worker has it (e.g. partitions moved while it builds): wait, take over if it dies.
            await asyncio.sleep(CLAIM_POLL)
            doc = await b.state.version(vid) or doc
            if doc.get("status") in VERSION_TERMINAL_STATUSES or (skip is not None and skip(doc)):
                b.end(vid)
                return None
    except BaseException:
        b.end(vid)
        raise
    active.epoch = epoch
    return doc, active


def _from_request(event: Event) -> dict[str, Any]:
    return {"_id": event.aggregate_id, "status": "pending", "stages": {}, **requested_fields(event)}


def _poisoned(crashes: int) -> Callable[[Run], Awaitable[None]]:
    """The run of a version whose processing killed its worker `crashes` times: fail it, so one
    hostile version cannot take the builders down again and again."""

    async def fail(run: Run) -> None:
        reason = (f"processing this version stopped its builder {crashes} times "
                  "(limit builder_max_crashes); it is not retried")
        stages = run.version.get("stages") or {}
        running = [name for name, st in stages.items() if (st or {}).get("status") == "running"]
        for name in running:
            await run.finish(name, "failed", reason)
        raise Failed(reason, running[-1] if running else None)

    return fail


async def _from_lost_claim(b: Builder, event: Event) -> bool:
    """The event is a result of a builder whose claim was taken over since (a newer epoch exists)."""
    epoch = getattr(event.payload, "epoch", None)
    if epoch is None:
        return False
    hb = await b.state.heartbeat(event.aggregate_id) or {}
    if int(hb.get("epoch") or 0) > epoch:
        log.warning("version %s: %s from lost claim epoch %s ignored", event.aggregate_id, event.type, epoch)
        return True
    return False


def _stage_ok(doc: dict[str, Any], stage: str) -> bool:
    return ((doc.get("stages") or {}).get(stage) or {}).get("status") == "success"


def resume_event(doc: dict[str, Any], default_host: str) -> Event:
    """The event of the step a version (its read-model doc) is at: ImagePushed if pushed (tag next),
    ImageBuilt if built (push next), else VersionRequested (the build from a fresh clone)."""
    vid, user = doc["_id"], doc.get("user_id")
    if doc.get("digest") and _stage_ok(doc, "push"):
        return ImagePushed.make(
            vid, ImagePushedPayload(image=doc["image"], digest=doc["digest"]), correlation_id=vid, actor=user
        )
    if doc.get("image_id") and _stage_ok(doc, "build"):
        return ImageBuilt.make(
            vid,
            ImageBuiltPayload(image=doc["image"], image_id=doc["image_id"], host=doc.get("host") or default_host),
            correlation_id=vid,
            actor=user,
        )
    payload = VersionRequestedPayload(
        service_id=doc["service_id"],
        user_id=str(user),
        name=doc["name"],
        description=doc.get("description") or "",
        commit=doc.get("commit"),
        branch=doc.get("branch"),
        trigger=doc.get("trigger") or "api",
        operations=doc.get("operations"),
    )
    return VersionRequested.make(vid, payload, correlation_id=vid, actor=user)
