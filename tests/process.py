"""Running ``avatarbot`` as its own process, as an operator does (tests/test_product.py,
tests/web/test_cli_stop.py, the database-open and secrets tests): a free local port for
``avatarbot run``, an environment without credentials, and one CLI command."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the venv's bin: where ``avatarbot`` is installed
CREDENTIALS = ("DISCORD_", "SLACK_", "A2E_", "AKOOL_", "HEYGEN_", "LLM_")


def bare_env(*also: str) -> dict[str, str]:
    """This process's environment without platform or vendor credentials (nor ``also``)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIALS + also)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def cli(env: dict[str, str], *args: str) -> str:
    """``avatarbot ARGS`` in ``env``; its stdout. A non-zero exit fails with both outputs."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "avatarbot"), *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out.decode(), err.decode())
    return out.decode()


async def run(env: dict[str, str], *args: str, cwd: Path | None = None,
              prefix: list[str] | None = None, within_s: float = 30,
              merged: bool = False) -> tuple[int, str, str]:
    """``avatarbot ARGS`` in ``env`` (after ``prefix``, e.g. a user switch): exit code, stdout
    and stderr (stderr in stdout if ``merged``). Not exiting within ``within_s`` fails the test."""
    proc = await asyncio.create_subprocess_exec(
        *(prefix or []), str(BIN / "avatarbot"), *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merged else asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"avatarbot {' '.join(args)} hung")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), (err or b"").decode()
