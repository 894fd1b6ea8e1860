"""Each process is its own package under services/, and no service package imports another: what two of
them need lives in shared/. Every module is parsed (nothing is imported), so imports inside functions,
relative imports and `importlib.import_module("...")` / `__import__("...")` literals all count.
`services/cli.py`, the dispatcher, names the packages' modules as strings only."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
PACKAGES = sorted(p.name for p in SERVICES.iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a relative import `from <level dots><name> import ...` made in `module`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, the module `module`: import statements
    anywhere (module level, functions, classes), and string literals given to importlib.import_module or
    __import__. For `from X import a, b` both X and X.a, X.b are listed (a and b may be submodules)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module) if node.level else node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    name = first.value
                    if name.startswith("."):
                        level = len(name) - len(name.lstrip("."))
                        name = _resolve(module, is_package, level, name.lstrip(".") or None)
                    found.append((node.lineno, name))
    return found


def foreign_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """The imports in `module` (inside services/<pkg>/) of another service package or of services.cli: one
    entry per statement (`from services.x.y import a` is listed as services.x.y, not also as services.x.y.a)."""
    own = module.split(".")[1]
    bad: list[tuple[int, str]] = []
    for line, name in sorted(set(imported_names(source, module, is_package))):
        parts = name.split(".")
        if len(parts) >= 2 and parts[0] == "services" and parts[1] != own:
            if not any(at == line and name.startswith(f"{seen}.") for at, seen in bad):
                bad.append((line, name))
    return bad


def test_the_scanner_flags_a_foreign_import() -> None:
    source = '''
import os
import importlib
from shared.store import Store
from services.logstream.history import read_lines
from .. import auth
from ..auth import authorize
from ...deployer.targets import registry
from ... import builder


def later():
    import services.client.follow
    importlib.import_module("services.projector.app")
    importlib.import_module("services.gateway.render")
    return __import__("services.notifier")
'''
    flagged = foreign_imports(source, "services.gateway.routes.logs")
    assert flagged == [
        (5, "services.logstream.history"),
        (8, "services.deployer.targets"),
        (9, "services.builder"),
        (13, "services.client.follow"),
        (14, "services.projector.app"),
        (16, "services.notifier"),
    ]
    # Relative imports resolve from a package's __init__ too; the own package is never flagged.
    assert foreign_imports("from .app import main\nfrom ..gateway import app\n", "services.projector", True) == [
        (2, "services.gateway"),
    ]
    assert foreign_imports("from services.gateway.auth import authorize\n", "services.gateway.routes.x") == []


def test_no_service_package_imports_another() -> None:
    assert {"builder", "client", "deployer", "gateway", "logstream", "notifier", "projector"} <= set(PACKAGES)
    problems = []
    for package in PACKAGES:
        for path in sorted((SERVICES / package).rglob("*.py")):
            found = foreign_imports(path.read_text(), module_name(path), path.name == "__init__.py")
            problems += [f"{path.relative_to(ROOT)}:{line} imports {name}" for line, name in found]
    assert not problems, "service packages import each other:\n" + "\n".join(problems)


def test_the_dispatcher_names_modules_as_strings_only() -> None:
    path = SERVICES / "cli.py"
    tree = ast.parse(path.read_text())
    statements = [
        f"services/cli.py:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(n == "services" or n.startswith("services.") for n in _statement_names(node))
    ]
    assert not statements, statements


def _statement_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return ["services.x" if node.level else node.module or ""]


def test_every_cli_command_resolves() -> None:
    from services.cli import COMMANDS

    for name, (module, func, _) in COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func, None)), (name, module, func)


def test_every_started_module_is_a_service_package() -> None:
    """What the local stack, docker-compose and the Kubernetes manifests run with `python -m`."""
    from infra.local.stack import SERVICE_MODULES

    started = set(SERVICE_MODULES.values())
    files = [ROOT / "docker-compose.yml", ROOT / "infra/docker/Dockerfile",
             *sorted((ROOT / "infra").glob("compose/*.yml")), *sorted((ROOT / "infra").glob("k8s/*.yaml"))]
    for path in files:
        started |= set(re.findall(r'"-m",\s*"([\w.]+)"', path.read_text()))
    assert "services.projector" in started
    for module in sorted(started):
        parts = module.split(".")
        assert parts[0] == "services" and len(parts) == 2, module
        assert (SERVICES / parts[1] / "__main__.py").is_file(), f"{module}: no __main__.py"

