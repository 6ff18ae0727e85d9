"""The layering rules of docs/architecture.md, held by a test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_FORBIDDEN = (
    "discord", "slack_bolt", "slack_sdk", "httpx", "aiosqlite", "aiohttp", "jinja2", "aiortc",
    "redis", "web", "bot.platforms", "bot.providers", "bot.storage", "bot.settings", "bot.app",
)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offending(files, forbidden) -> list[str]:
    bad = []
    for path in files:
        for name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_core_imports_no_other_layer_and_no_io_library():
    assert offending((ROOT / "bot/core").rglob("*.py"), CORE_FORBIDDEN) == []


def test_web_does_not_import_the_chat_platforms():
    assert offending((ROOT / "web").rglob("*.py"), ("bot.platforms", "discord", "slack_bolt")) == []


@pytest.mark.parametrize("layer", ["bot/providers", "bot/platforms", "bot/storage", "web"])
def test_only_the_composition_root_wires_layers(layer):
    forbidden = ("bot.app", "bot.cli")
    assert offending((ROOT / layer).rglob("*.py"), forbidden) == []


def test_platforms_and_providers_do_not_import_each_other():
    assert offending((ROOT / "bot/providers").rglob("*.py"), ("bot.platforms", "web")) == []
    assert offending((ROOT / "bot/platforms").rglob("*.py"), ("bot.providers", "web")) == []


# Lines allowed to name ``store`` (file, snippet): none. Slack installations, OAuth state and event
# de-duplication have their own port (``SlackInstallStore``), handed in by the composition root.
_STORE_ALLOWED: tuple[tuple[str, str], ...] = ()


def store_accesses(layer: str) -> list[str]:
    """Every ``<something>.store`` in a layer, as ``file:line: source``, minus the allowance."""
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source, rel)):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                line = lines[node.lineno - 1].strip()
                if any(rel == f and snippet in line for f, snippet in _STORE_ALLOWED):
                    continue
                found.append(f"{rel}:{node.lineno}: {line}")
    return found


@pytest.mark.parametrize("layer", ["bot/platforms", "web"])
def test_platforms_and_web_reach_the_store_only_through_the_services(layer):
    """Adapters use SessionService, TenantService and ChatBindings; never the store itself."""
    assert store_accesses(layer) == []


def test_the_store_check_sees_an_access(tmp_path, monkeypatch):
    """The check above is not vacuous: a platform file naming ``.store`` is reported."""
    fake_root = tmp_path
    (fake_root / "bot/platforms/demo").mkdir(parents=True)
    (fake_root / "bot/platforms/demo/cmd.py").write_text(
        "async def f(bot):\n    return await bot.service.store.balance('x')\n"
    )
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    assert store_accesses("bot/platforms") == [
        "bot/platforms/demo/cmd.py:2: return await bot.service.store.balance('x')"
    ]
