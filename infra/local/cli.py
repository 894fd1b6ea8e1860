"""`python -m infra.local.cli up|down|status|clean`: the local stack for `make up` / `make down`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .procs import StackError, pid_alive, stop_pid
from .stack import REGISTRY_USER, Stack


def remove_deployed_apps(stack: Stack) -> int:
    """Containers the Docker-host target deployed from this stack's registry (they could not be
    restarted once the registry is gone): like `docker compose down`, `down` removes them."""
    try:
        import docker

        client = docker.from_env(timeout=10)
    except Exception:  # noqa: BLE001 - no engine: nothing to remove
        return 0
    from services.deployer.targets.docker_host import remove_app_networks

    prefix = f"127.0.0.1:{stack.registry_port}/"
    removed = 0
    try:
        for c in client.containers.list(all=True, filters={"label": "fornax.deploy.service"}):
            if c.labels.get("fornax.deploy.image", "").startswith(prefix):
                c.remove(force=True)
                removed += 1
                remove_app_networks(client, c.labels["fornax.deploy.service"])
    except Exception:  # noqa: BLE001 - best effort on the way down
        pass
    finally:
        client.close()
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.cli")
    parser.add_argument("command", choices=["up", "down", "status", "clean"])
    parser.add_argument("--dir", default=".fornax")
    parser.add_argument("--infra-only", action="store_true")
    parser.add_argument("--memory", action="store_true",
                        help="keep the broker's records in memory only (lost when it stops)")
    args = parser.parse_args(argv)
    stack = Stack(base=Path(args.dir).resolve(), durable=not args.memory)
    if args.command in ("down", "clean"):
        removed = remove_deployed_apps(stack)
        if removed:
            print(f"fornax: removed {removed} deployed app container(s) of this stack's registry")
        stack.stop_all()
        dpid = stack.base / "dockerd.pid"
        if dpid.exists():
            stop_pid(int(dpid.read_text()), 20)
            dpid.unlink()
        print("fornax: stopped")
        if args.command == "clean" and stack.base.exists():
            shutil.rmtree(stack.base)
            print(f"fornax: deleted {stack.base} (broker records, offsets, Mongo data, registry, logs)")
        return 0
    if args.command == "status":
        for pidfile in sorted(stack.pid_dir.glob("*.pid")) if stack.pid_dir.exists() else []:
            pid = int(pidfile.read_text())
            print(f"{pidfile.stem:10} pid {pid:>7}  {'running' if pid_alive(pid) else 'dead'}")
        return 0
    stack.stop_all()
    try:
        stack.start_infra()
        if not args.infra_only:
            stack.start_services()
    except StackError as exc:
        print(f"fornax: {exc}", file=sys.stderr)
        stack.stop_all()
        return 1
    storage = (f"on S3 (SeaweedFS 127.0.0.1:{stack.weed_ports['s3']}), durable" if stack.durable
               else "in memory")
    print(f"""fornax: the local stack is up (logs and data under {stack.base})
  Kafka protocol (Tansu)  127.0.0.1:{stack.kafka_port}  records {storage}
  Mongo wire (nx-27017)   127.0.0.1:{stack.mongo_port}
  registry                127.0.0.1:{stack.registry_port}  (user {REGISTRY_USER})
  dashboard               http://127.0.0.1:{stack.gateway_port}/ui/
  gateway (REST, hooks)   http://127.0.0.1:{stack.gateway_port}/apidocs
  logstream (WebSocket)   ws://127.0.0.1:{stack.logstream_port}/ws""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
