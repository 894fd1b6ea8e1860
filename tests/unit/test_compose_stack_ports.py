"""The compose stack picks its published ports free; another process may take one before Docker binds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.compose import stack as compose_stack
from infra.compose.stack import ComposeError, ComposeStack


def _fake_up(monkeypatch: pytest.MonkeyPatch, stack: ComposeStack, failures: int) -> list[dict[str, int]]:
    seen: list[dict[str, int]] = []

    def compose(*args: str, **_: Any) -> None:
        seen.append(dict(stack.ports))
        if len(seen) <= failures:
            raise ComposeError(f"docker-compose up: Bind for 127.0.0.1:{stack.ports['api']} failed: "
                               "port is already allocated")

    monkeypatch.setattr(compose_stack.shutil, "which", lambda _: "/usr/bin/docker-compose")
    monkeypatch.setattr(stack, "compose", compose)
    monkeypatch.setattr(stack, "write_htpasswd", lambda: None)
    monkeypatch.setattr(stack, "wait_ready", lambda timeout: None)
    return seen


def test_a_port_taken_meanwhile_means_new_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = ComposeStack("p", tmp_path, {})
    seen = _fake_up(monkeypatch, stack, failures=1)
    stack.up()
    assert len(seen) == 2 and seen[0] != seen[1] and stack.ports == seen[1]


def test_ports_given_by_the_caller_are_not_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = {"api": 1, "logs": 2, "registry": 3, "mongo": 4, "stats": 5}
    stack = ComposeStack("p", tmp_path, {}, ports=dict(ports))
    _fake_up(monkeypatch, stack, failures=1)
    with pytest.raises(ComposeError, match="already allocated"):
        stack.up()
    assert stack.ports == ports
