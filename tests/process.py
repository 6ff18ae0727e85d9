"""Running ``avatarbot`` as its own process, as an operator does (tests/test_product.py and
tests/web/test_cli_stop.py): a free local port for ``avatarbot run``, and one CLI command."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's bin: where ``avatarbot`` is installed


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
