"""Process and port helpers of the local stack: free ports, readiness waits, stopping by PID, and the
local Docker engine (started only when none answers)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting.\n{tail}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            pass
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise StackError(f"{what} did not become ready within {timeout:.0f}s.\n{tail}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def send_signal(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # we start services as group leaders: signal the whole group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; returns once the process is gone (its ports are free)."""
    if not pid_alive(pid):
        return
    send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    send_signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


# Every version gets its own network and every service its app network, so an engine with Docker's
# default pools (31 networks: 172.17-31.0.0/16 and 192.168.0.0/16 in /20s) runs out under a few parallel
# builds ("could not find an available, non-overlapping IPv4 address pool"). An engine Fornax starts
# carves /24s out of 172.20.0.0/14: 1,024 networks. scripts/dockerd.sh passes the same flags.
DOCKERD_ARGS = ["--default-address-pool", "base=172.20.0.0/14,size=24"]


def ensure_dockerd(state_dir: Path, timeout: float = 60) -> None:
    """Start the local Docker engine if none answers (its PID is recorded for `make down`)."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    if not shutil.which("dockerd"):
        raise StackError("no Docker engine answers and dockerd is not installed: apt-get install docker.io")
    pidfile = Path("/var/run/docker.pid")
    if pidfile.exists():
        try:
            alive = pid_alive(int(pidfile.read_text().strip()))
        except ValueError:
            alive = False
        if not alive:
            pidfile.unlink()  # left behind by a killed dockerd
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "dockerd.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(["dockerd", *DOCKERD_ARGS], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (state_dir / "dockerd.pid").write_text(str(proc.pid))
    wait_for(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, timeout,
             "dockerd", proc, log)
    # dockerd 20.10 sometimes keeps a removed container's endpoint in memory ("has active endpoints" with
    # none listed) until it restarts, so an app network can outlive its service's clean-up: a fresh engine
    # removes the ones no container uses (one a deployed app still uses stays).
    import docker

    from services.deployer.targets.docker_host import remove_app_networks

    client = docker.from_env(timeout=10)
    try:
        remove_app_networks(client)
    finally:
        client.close()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds a process (and, with `children`, every process below it) used so far,
    from /proc; 0 for a process that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc") if children else [str(pid)]:
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    below: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        below.setdefault(parent, []).append(child)

    def total(p: int) -> float:
        return stats.get(p, (0, 0.0))[1] + (sum(total(c) for c in below.get(p, [])) if children else 0.0)

    return total(pid)
