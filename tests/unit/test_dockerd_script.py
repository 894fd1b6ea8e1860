"""scripts/dockerd.sh (used by `make test` and `make bench`): starts an engine only when none answers,
runs the command, stops the engine it started by PID, and passes the command's exit status on. Run
with stand-in `docker` and `dockerd` programs first on PATH, so no real engine is touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dockerd.sh"


def _fakes(tmp_path: Path, answering: bool) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    up = tmp_path / "engine-up"
    if answering:
        up.write_text("already")
    # `docker info` answers once the stand-in engine has started (or from the start when `answering`).
    (bin_dir / "docker").write_text(f'#!/bin/sh\n[ -f "{up}" ]\n')
    # The stand-in engine records its PID, marks itself up and stays until it is killed.
    (bin_dir / "dockerd").write_text(
        f'#!/bin/sh\necho $$ > "{tmp_path / "dockerd.pid"}"\ntouch "{up}"\nexec sleep 300\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.timeout(60)
def test_starts_an_engine_when_none_answers_and_stops_it_by_pid(tmp_path):
    env = _fakes(tmp_path, answering=False)
    out = subprocess.run(
        [str(SCRIPT), "sh", "-c", "docker info && echo ran && exit 3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout.strip() == "ran"
    pid = int((tmp_path / "dockerd.pid").read_text())
    assert not _alive(pid)


@pytest.mark.timeout(60)
def test_leaves_a_running_engine_alone(tmp_path):
    env = _fakes(tmp_path, answering=True)
    out = subprocess.run([str(SCRIPT), "true"], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "dockerd.pid").exists()  # never started


def test_usage_without_a_command():
    out = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=50)
    assert out.returncode == 64 and "usage" in out.stderr
