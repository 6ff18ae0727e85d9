"""What the child processes of ``bench/system.py`` share (each is run as ``python bench/X.py``,
so this folder is first on ``sys.path`` and ``from child import ...`` finds this module)."""

from __future__ import annotations

import asyncio
import sys


async def until_stdin_closes(limit_s: float = 3600) -> None:
    """Run until the bench closes our stdin (or kills us); never longer than ``limit_s``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await asyncio.wait_for(reader.read(), limit_s)
    except TimeoutError:
        pass
