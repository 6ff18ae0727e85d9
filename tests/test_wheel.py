"""The wheel as an operator installs it (``pip install .``/``pipx install .``), not the checkout.

Builds the wheel from a copy of the source, installs it without ``-e`` into a fresh venv that
borrows the already-installed dependencies (a ``.pth`` line, so nothing is downloaded), and runs
``avatarbot run`` from that venv with the checkout off ``sys.path``: the migrations create the
tables, and the pages, static files and a local-avatar viewer page come from the installed package.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

from tests.test_product import free_port, read_banner

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "web" / "static" / "vendor"
# What the built package must carry besides its modules: (source folder, pattern, wheel folder).
DATA = [
    ("bot/storage/migrations", "*.sql", "bot/storage/migrations"),
    ("templates", "*.html", "web/templates"),
    ("web/static", "*.js", "web/static"),
    ("web/static", "*.css", "web/static"),
    ("web/static/vendor", "*.js", "web/static/vendor"),
]
# Settings that must not leak from the test's own environment into the installed product.
FOREIGN = ("PYTHON", "DISCORD_", "SLACK_", "A2E_", "AKOOL_", "HEYGEN_", "LLM_", "PUBLIC_URL",
           "DATABASE_PATH", "PORT", "HOST", "SECRET_KEY", "PLAYGROUND_", "VIRTUAL_ENV")

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(240)]


def _source_files() -> set[str]:
    """Every module and data file the wheel must hold, as wheel paths."""
    names = {
        str(p.relative_to(ROOT)) for top in ("bot", "web") for p in (ROOT / top).rglob("*.py")
        if "node_modules" not in p.parts
    }
    for src, pattern, dest in DATA:
        names |= {f"{dest}/{p.name}" for p in (ROOT / src).glob(pattern)}
    return names


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` on a clean copy (a reused ``build/`` would keep stale files)."""
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "node_modules", "*.egg-info", "build")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("bot", "web", "templates"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
    out = tmp / "dist"
    # No build isolation: the build backend comes from the dev environment, not from the network.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        check=True, timeout=120, capture_output=True,
    )
    (wheel,) = out.glob("avatarbot-*.whl")
    return wheel


def _venv(tmp: Path, wheel: Path) -> Path:
    """A fresh venv with the wheel installed (not editable) over the dev env's dependencies."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=_env(), timeout=30,
    ).stdout.strip()
    # A plain path line: the dev env's own .pth files (its editable finder for the checkout)
    # are not processed through it, so only the dependencies become importable.
    (Path(purelib) / "dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        check=True, timeout=120, capture_output=True, env=_env(),
    )
    return venv


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    return env | extra


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not (VENDOR / "agora-rtc-sdk-ng.js").is_file():
        pytest.fail("web/static/vendor is empty: run `bash web/assets/install.sh` first")
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    return wheel, _venv(tmp, wheel)


def test_the_wheel_holds_every_module_template_static_file_and_migration(
    installed: tuple[Path, Path],
) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = _source_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert any(n.startswith("web/static/vendor/livekit") for n in names)
    assert not [n for n in names if "node_modules" in n or n.startswith("web/assets")]


async def test_the_installed_wheel_runs_creates_tables_and_serves_pages(
    installed: tuple[Path, Path], tmp_path: Path,
) -> None:
    _, venv = installed
    run = tmp_path / "run"
    run.mkdir()
    env = _env(DATABASE_PATH=str(run / "wheel.db"), PORT=str(free_port()))
    where = (await asyncio.to_thread(
        subprocess.run,
        [venv / "bin" / "python", "-c", "import bot, web; print(bot.__file__, web.__file__)"],
        check=True, capture_output=True, text=True, env=env, cwd=run, timeout=60,
    )).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # not the checkout

    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "avatarbot"), "run", env=env, cwd=run,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        banner = await read_banner(proc)
        assert "[on ] provider local" in banner
        await _check_running(f"http://127.0.0.1:{env['PORT']}")
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, rest.decode()[-2000:]

    with sqlite3.connect(run / "wheel.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        applied = {r[0] for r in db.execute("SELECT name FROM schema_migrations")}
    assert applied == {p.stem for p in (ROOT / "bot/storage/migrations").glob("*.sql")}
    assert {"sessions", "ledger"} <= tables, tables


async def _check_running(base: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keep the cookie of an IP-address host
    async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
        async with http.get("/") as resp:
            assert resp.status == 200 and "playground" in (await resp.text()).lower()
        for name in ("app.css", "viewer.js", "vendor/livekit-client.umd.js"):
            async with http.get(f"/static/{name}") as resp:
                assert resp.status == 200, name
                assert await resp.read() == (ROOT / "web/static" / name).read_bytes()
        async with http.post("/playground/start", json={}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        async with http.get(body["url"]) as resp:
            page = await resp.text()
            assert resp.status == 200 and 'id="chat"' in page, page[:500]
            assert "/static/viewer.js" in page
