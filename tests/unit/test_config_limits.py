"""Hostile config files: size cap, alias/node budget, nesting, time limit — each a ConfigError
starting "<file>: " and naming the limit, in bounded time and memory."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from services.builder.pipeline import ConfigError, load_config, parse_config, read_config
from shared.settings import Settings
from tests.fixtures.hostile import alias_bomb


@pytest.fixture
def capped_memory():
    """A regression (expanding the bomb) hits this cap as MemoryError instead of eating the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 512 * 1024 * 1024, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.timeout(30)
def test_alias_bomb_fails_fast(capped_memory) -> None:
    began = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_config(alias_bomb(), "fornax.yml", max_nodes=10_000)
    print(f"alias bomb refused in {time.monotonic() - began:.3f}s")
    assert str(info.value).startswith("fornax.yml: more than 10000 values once aliases are expanded")
    assert "config_max_nodes" in str(info.value)


def test_a_few_aliases_are_fine() -> None:
    text = """\
integration:
  image: busybox
  environment: &env [A=1, B=2]
  commands: [echo hi]
post_build:
  image: busybox
  environment: *env
  commands: [echo bye]
"""
    config = parse_config(text)
    assert config.post_build is not None and config.post_build.environment == {"A": "1", "B": "2"}


def test_anchor_reuse_counts_against_the_budget() -> None:
    text = "integration: &s\n  image: busybox\n  commands: [" + ",".join(["a"] * 50) + "]\npost_build: *s\n"
    assert parse_config(text, max_nodes=200).post_build is not None
    with pytest.raises(ConfigError, match=r"^fornax.yml: more than 100 values"):
        parse_config(text, max_nodes=100)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^fornax\.yml"):
        parse_config("integration: " + "[" * 50_000 + "]" * 50_000 + "\n")


def test_expired_deadline_names_the_limit() -> None:
    text = "integration:\n  image: busybox\n  commands: [" + ",".join(["a"] * 5000) + "]\n"
    with pytest.raises(ConfigError, match=r"^fornax.yml: parsing took longer .*config_parse_timeout"):
        parse_config(text, deadline=time.monotonic() - 1)


def test_oversized_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "fornax.yml").write_text("# padding\n" * 30_000)
    with pytest.raises(ConfigError, match=r"^fornax.yml: the file is larger than 262144 bytes .*config_max_bytes"):
        load_config(tmp_path, max_bytes=256 * 1024)


async def test_read_config_uses_settings(tmp_path: Path) -> None:
    (tmp_path / "fornax.yml").write_text(alias_bomb())
    with pytest.raises(ConfigError, match=r"^fornax.yml: more than 500 values"):
        await read_config(tmp_path, None, Settings(config_max_nodes=500))
    (tmp_path / "fornax.yml").write_text("build: {dockerfile_path: Dockerfile}\n")
    assert (await read_config(tmp_path, None, Settings())).source == "fornax.yml"


def test_merge_keys_stay_refused_with_libyaml() -> None:
    with pytest.raises(ConfigError, match=r"^fornax.yml line 3: YAML merge keys"):
        parse_config("x: &a {image: b}\nintegration:\n  <<: *a\n  commands: [a]\n")
