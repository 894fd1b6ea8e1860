"""The tests' one polling helper: bounded, returns what the check returned, names what it waited for."""

from __future__ import annotations

import asyncio

import pytest

from tests.waits import wait_until, wait_until_async


def test_returns_the_first_truthy_value() -> None:
    answers = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(answers), 5, "ready", every=0.001) == "ready"


def test_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"^timed out after 0s waiting for the moon$"):
        wait_until(lambda: False, 0.05, "the moon", every=0.01)


def test_listed_errors_mean_not_yet_and_the_last_one_is_reported() -> None:
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return True

    assert wait_until(flaky, 5, "up", every=0.001, retry=(ConnectionError,)) is True
    assert len(calls) == 3

    def down() -> bool:
        raise ConnectionError("down")

    with pytest.raises(AssertionError, match=r"waiting for up \(last error: ConnectionError\('down'\)\)$"):
        wait_until(down, 0.05, "up", every=0.01, retry=(ConnectionError,))


def test_other_errors_are_not_swallowed() -> None:
    def broken() -> bool:
        raise KeyError("x")

    with pytest.raises(KeyError):
        wait_until(broken, 5, "x", retry=(ConnectionError,))
    with pytest.raises(KeyError):
        wait_until(broken, 5, "x")


async def test_async_twin_keeps_the_event_loop_running() -> None:
    ready = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, ready.set)
    assert await wait_until_async(ready.is_set, 5, "the event", every=0.01) is True
    with pytest.raises(AssertionError, match=r"^timed out after 0s waiting for never$"):
        await wait_until_async(lambda: False, 0.05, "never", every=0.01)
