"""Badges and CLI formatting: pure parts."""

from __future__ import annotations

import io

import pytest

from services.client.commands import table
from services.gateway.routes.badges import OUTCOMES, outcome, render


@pytest.mark.parametrize(("status", "expected"), [
    (None, "none"), ("pending", "running"), ("queued", "running"), ("running", "running"),
    ("success", "success"), ("failed", "failed"), ("cancelled", "cancelled"), ("weird", "none"),
])
def test_badge_outcome_of_each_status(status: str | None, expected: str) -> None:
    assert outcome(status) == expected


def test_badge_is_svg_with_escaped_texts_and_width_growing_with_them() -> None:
    svg = render("build", "<passing>", "#4c1")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "&lt;passing&gt;" in svg and "<passing>" not in svg
    short, long = render("build", "ok", "#4c1"), render("build", "a much longer message", "#4c1")
    width = lambda s: int(s.split('width="', 1)[1].split('"', 1)[0])  # noqa: E731
    assert width(long) > width(short)
    assert {m for m, _ in OUTCOMES.values()} == {"passing", "failing", "running", "cancelled", "none"}


def test_table_aligns_columns_and_marks_missing_values() -> None:
    out = io.StringIO()
    table([{"name": "web", "status": "success"}, {"name": "a-longer-name"}], ("name", "status"), out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "STATUS"]
    assert lines[2].split() == ["a-longer-name", "-"]
    assert lines[1].index("success") == lines[0].index("STATUS")
    empty = io.StringIO()
    table([], ("name",), empty)
    assert "(none)" in empty.getvalue()
