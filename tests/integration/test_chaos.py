"""Crash and restart, on the durable local stack: every process of the stack is killed with SIGKILL in
turn (gateway, projector, builder, deployer, logstream, broker, Mongo-wire server) while signed webhooks
stream in and a version with a long CI step runs, and started again as the Stack starts it.

Every push answered 202 becomes exactly one version, every version ends (success, or failed with a
reason), nothing is built, pushed, tagged or deployed twice, and a viewer following the long version's
log gets every line once. A smaller run of bench/chaos/run.py (which prints the figures), with the
kills one after another instead of round by round.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.stack import Stack
from tests.fixtures.chaos import KILL_ORDER, Chaos, Round

pytestmark = pytest.mark.integration

HOOKS = 3  # webhooks per round
STEP = 5  # seconds of the long CI step


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    from infra.local.images import ensure_busybox_image
    from shared.settings import Settings
    from shared.store import Store

    base = Path(tempfile.mkdtemp(prefix="fornax-chaos-"))
    stack = Stack.on_free_ports(base, durable=True,
                                extra_env={"FORNAX_WORKSPACE_ROOT": str(base / "workspaces")})
    store = None
    run = None
    try:
        ensure_busybox_image()
        stack.start_infra()
        stack.start_services()
        settings = Settings(**{k.removeprefix("FORNAX_").lower(): v for k, v in stack.env().items()})
        store = Store(settings)
        run = Chaos(stack, store, base, hooks=HOOKS, step=STEP)
        run.setup(rounds=len(KILL_ORDER))
        yield run
    finally:
        stack.stop_all()
        if run is not None:
            run.cleanup()  # after the deployer stopped: no deploy lands after it
        if store is not None:
            store.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(600)
def test_kill_each_process_in_turn(chaos: Chaos) -> None:
    # Kill after kill without waiting for the round before to settle (the bench waits, round by round).
    pending = [chaos.begin(process, i) for i, process in enumerate(KILL_ORDER)]
    rounds: list[Round] = [chaos.finish(p) for p in pending]
    for r in rounds:
        print(r.row(), f"(kill round {r.began:.0f}s)")
    for r in rounds:
        assert r.accepted == r.sent, r.row()  # the sender delivers again until answered
        assert r.lost == [], (r.process, r.lost, r.traces)
        assert r.duplicates == [], (r.process, r.duplicates)
        assert r.stuck == [], (r.process, r.stuck)
        assert r.late == [], (r.process, r.late)
        assert all(reason.strip() for reason in r.failed.values()), (r.process, r.failed)
        assert r.lines_expected >= STEP and r.lines_lost == 0 and r.lines_twice == 0, f"{r.lost_detail} | {r.row()}"
