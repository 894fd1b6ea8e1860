"""Crash and restart under load, on the durable local stack (Tansu on S3/SeaweedFS) on free ports.

Per process killed (gateway, projector, builder, deployer, logstream, broker, Mongo-wire server), in turn:
a version with a long CI step runs and a viewer follows its log; signed webhooks stream in; the process
gets SIGKILL and is started again as the Stack starts it. Prints, per process: pushes accepted (of sent,
and how many were delivered again after getting no answer), versions made, duplicates, versions stuck,
versions failed (with their reasons), slowest time to end after the restart (or after the push's 202,
if later), versions late (ended, but later than --deadline: queueing on a busy machine) and log lines
lost or twice.

    .venv/bin/python bench/chaos/run.py [--hooks 50] [--step 20] [--only builder] [--memory] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from infra.local.images import ensure_busybox_image
    from infra.local.procs import cpu_seconds
    from infra.local.stack import Stack
    from tests.fixtures.chaos import KILL_ORDER, Chaos

    parser = argparse.ArgumentParser()
    parser.add_argument("--hooks", type=int, default=50, help="signed webhooks per round")
    parser.add_argument("--step", type=int, default=20, help="seconds of the long version's CI step")
    parser.add_argument("--deadline", type=float, default=60, help="seconds a version may take to end")
    parser.add_argument("--only", choices=KILL_ORDER, action="append")
    parser.add_argument("--memory", action="store_true", help="memory broker (a broker kill loses everything)")
    parser.add_argument("--keep", action="store_true", help="keep the stack directory (logs)")
    parser.add_argument("--partitions", type=int, help="partitions per topic (default: the stack's)")
    parser.add_argument("--env", action="append", default=[], metavar="FORNAX_X=V",
                        help="a setting for every process of the stack (repeatable)")
    args = parser.parse_args()

    from shared.settings import Settings
    from shared.store import Store

    base = Path(tempfile.mkdtemp(prefix="fornax-bench-chaos-"))
    extra = {"FORNAX_WORKSPACE_ROOT": str(base / "workspaces"), **dict(e.split("=", 1) for e in args.env)}
    sized = {"partitions": args.partitions} if args.partitions else {}
    stack = Stack.on_free_ports(base, durable=not args.memory, extra_env=extra, **sized)
    order = [p for p in KILL_ORDER if not args.only or p in args.only]
    rows: list[str] = [f"chaos: {args.hooks} webhooks and one {args.step} s CI step per round, "
                       f"{'memory' if args.memory else 'durable'} broker, {stack.partitions} partitions per topic"
                       + "".join(f", {e}" for e in args.env)]
    run = None
    store = None
    failed = False
    try:
        ensure_busybox_image()
        stack.start_infra()
        stack.start_services()
        settings = Settings(**{k.removeprefix("FORNAX_").lower(): v for k, v in stack.env().items()})
        store = Store(settings)
        run = Chaos(stack, store, base, hooks=args.hooks, step=args.step, deadline=args.deadline)
        run.setup(rounds=len(KILL_ORDER))
        for process in order:
            started = time.monotonic()
            before = {name: cpu_seconds(p.pid, children=True) for name, p in stack.procs.items()}
            r = run.round(process, KILL_ORDER.index(process))
            after = {name: cpu_seconds(p.pid, children=True) for name, p in stack.procs.items()}
            used = sorted(((after[k] - before.get(k, 0.0), k) for k in after), reverse=True)
            print("    cpu s: " + ", ".join(f"{k} {v:.0f}" for v, k in used if v >= 1), flush=True)
            rows.append(r.row() + f"  (round {time.monotonic() - started:.0f}s)")
            print(rows[-1], flush=True)
            for line in [*r.lost, *r.duplicates, *[f"stuck {v}" for v in r.stuck]]:
                print(f"    ! {line}", flush=True)
                failed = True
            for line in r.traces:
                print(f"    trace {line}", flush=True)
            if r.lost_detail:
                print(f"    lines: {r.lost_detail}", flush=True)
            for line in r.late:
                print(f"    late: {line}", flush=True)
            for vid, reason in r.failed.items():
                print(f"    failed {vid}: {reason[:200]}", flush=True)
    finally:
        stack.stop_all()
        if run is not None:
            run.cleanup()  # after the deployer stopped: no deploy lands after it
        if store is not None:
            store.close()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
