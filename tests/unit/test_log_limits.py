"""Bounded build output: the line splitter, the per-line cut and the per-version cap of the log writer."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.logwriter import LineSplitter, LogWriter, cap_line


def _split(chunks: list[bytes], limit: int) -> list[str]:
    s = LineSplitter(limit)
    out = [line for c in chunks for line in s.feed(c)]
    return out + s.close()


def test_lines_across_chunks() -> None:
    assert _split([b"ab", b"c\nde", b"\r\n", b"\n", b"tail"], 100) == ["abc", "de", "", "tail"]


def test_long_line_is_cut_with_count() -> None:
    assert _split([b"x" * 10, b"y" * 15 + b"\nok\n"], 8) == ["xxxxxxxx…[17 bytes truncated]", "ok"]


def test_no_newline_at_all_keeps_limit_bytes() -> None:
    s = LineSplitter(16)
    for _ in range(1000):
        assert s.feed(b"a" * 4096) == []
    assert len(s._buf) == 16  # the point: memory stays at the limit
    assert s.close() == ["a" * 16 + f"…[{4096 * 1000 - 16} bytes truncated]"]
    assert s.close() == []


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(1, 12))
def test_splitter_matches_split_then_cut(chunks: list[bytes], limit: int) -> None:
    data = b"".join(chunks)
    expected = []
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    for raw in parts:
        cut = raw[:limit]
        if len(raw) <= limit:
            cut = cut.removesuffix(b"\r")
        text = cut.decode("utf-8", "replace")
        expected.append(text + (f"…[{len(raw) - limit} bytes truncated]" if len(raw) > limit else ""))
    assert _split(chunks, limit) == expected


def test_split_before_keeps_a_marker_after_a_cut_line() -> None:
    s = LineSplitter(4, split_before=b"\x1e")
    out = s.feed(b"\x1em0\n" + b"a" * 100) + s.feed(b"\x1em1\nok\x1e") + s.feed(b"m2\n") + s.close()
    assert out == ["\x1em0", "aaaa…[96 bytes truncated]", "\x1em1", "ok", "\x1em2"]


def test_cap_line_counts_bytes_and_merges_an_earlier_cut() -> None:
    assert cap_line("short", 10) == "short"
    assert cap_line("é" * 10, 10) == "é" * 5 + "…[10 bytes truncated]"
    assert cap_line("a" * 12 + "…[100 bytes truncated]", 10) == "a" * 10 + "…[102 bytes truncated]"
    assert cap_line("abc…[7 bytes truncated]", 10) == "abc…[7 bytes truncated]"


class _Bus:
    def __init__(self) -> None:
        self.events: list = []

    async def publish(self, *events) -> None:
        self.events.extend(events)


async def test_writer_masks_before_cutting() -> None:
    bus = _Bus()
    secret = "s3cr3t-value"
    w = LogWriter(bus, "v1", secrets=[secret], max_line=20)
    s = LineSplitter(20 + 1024)
    for line in s.feed(b"x" * 15 + secret.encode() + b"y" * 5000 + b"\n"):
        await w.write("integration", line)
    await w.close()
    [line] = [e.payload.text for e in bus.events]
    assert "s3c" not in line
    assert line.startswith("x" * 15 + "****"[:5])
    assert line.endswith("bytes truncated]")


async def test_writer_caps_a_version_and_says_so() -> None:
    bus = _Bus()
    w = LogWriter(bus, "v1", max_line=100, max_bytes=1000)
    for i in range(100):
        await w.write("integration", f"{i:010d}")  # 10 bytes each
    await w.write("integration", "version failed: reason", "system")
    await w.close()
    texts = [(e.payload.stream, e.payload.text) for e in bus.events]
    kept = [t for s, t in texts if s == "stdout"]
    assert kept == [f"{i:010d}" for i in range(100)]
    w = LogWriter(bus := _Bus(), "v2", max_line=100, max_bytes=1000)
    for i in range(150):
        await w.write("integration", f"{i:010d}")
    await w.write("integration", "version failed: reason", "system")
    await w.close()
    texts = [(e.payload.stream, e.payload.text) for e in bus.events]
    assert [t for s, t in texts if s == "stdout"] == [f"{i:010d}" for i in range(100)]
    system = [t for s, t in texts if s == "system"]
    assert system[0].startswith("…[log limit of 1000 bytes reached")
    assert system[1] == "version failed: reason"
    assert system[2] == "…[50 lines (500 bytes) of output not kept: over the log limit of 1000 bytes]"
    assert [e.payload.seq for e in bus.events] == list(range(1, len(bus.events) + 1))


class _SlowBus(_Bus):
    """Acknowledges only when released; can refuse (a broker that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.refuse = False

    async def publish(self, *events) -> None:
        if self.refuse:
            raise ConnectionError("broker down")
        await self.release.wait()
        self.events.extend(events)


async def test_a_started_writer_does_not_wait_for_the_broker_until_its_queue_is_full() -> None:
    bus = _SlowBus()
    w = LogWriter(bus, "v1", flush_every=0.001)
    w.max_pending = 50
    w.start()
    for i in range(40):  # the broker acknowledges nothing meanwhile: writes still return at once
        await asyncio.wait_for(w.write("clone", f"line {i}"), 0.5)
        await asyncio.sleep(0.002)
    blocked = asyncio.ensure_future(asyncio.gather(*[w.write("clone", f"more {i}") for i in range(20)]))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # queue full: backpressure
    bus.release.set()
    await asyncio.wait_for(blocked, 2)
    await w.close()
    assert [e.payload.seq for e in bus.events] == list(range(1, 61))


async def test_lines_a_broker_refused_are_sent_again_in_order() -> None:
    bus = _SlowBus()
    bus.release.set()
    w = LogWriter(bus, "v1")
    await w.write("build", "one")
    bus.refuse = True
    with pytest.raises(ConnectionError):
        await w.flush()
    await w.write("build", "two")
    bus.refuse = False
    await w.close()
    assert [(e.payload.seq, e.payload.text) for e in bus.events] == [(1, "one"), (2, "two")]
