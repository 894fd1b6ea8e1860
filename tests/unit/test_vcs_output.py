"""How a clone's output becomes log lines: a progress meter's carriage returns keep its last state only."""

from __future__ import annotations

import asyncio
import sys

from services.builder.vcs.proc import run_command, shown


def test_a_progress_line_keeps_what_a_terminal_would_show() -> None:
    meter = "".join(f"Receiving objects: {p:3}% ({p}/100)\r" for p in range(101)) + "Receiving objects: 100%, done.\n"
    assert shown(meter) == "Receiving objects: 100%, done."
    assert shown("plain line\n") == "plain line"
    assert shown("last state\r\r\n") == "last state"  # empty rewrites do not blank it
    assert shown("\r\n") == ""


def test_a_command_printing_a_progress_meter_logs_one_line_per_newline() -> None:
    script = ("import sys\n"
              "for p in range(0, 101, 5):\n"
              "    sys.stdout.write(f'Counting objects: {p}%\\r'); sys.stdout.flush()\n"
              "print('Counting objects: 100%, done.')\n"
              "print('second line')\n")
    seen: list[str] = []

    async def on_line(text: str) -> None:
        seen.append(text)

    ran = asyncio.run(run_command([sys.executable, "-c", script], on_line=on_line, timeout=30))
    assert ran.code == 0
    assert seen == ["Counting objects: 100%, done.", "second line"]
    assert ran.out == "Counting objects: 100%, done.\nsecond line"
