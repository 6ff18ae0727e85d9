"""One thread that owns one ``sqlite3`` connection and runs jobs on it, one at a time.

This is the single-writer pattern datasette uses for its write thread: every database call is a
plain synchronous function ``fn(conn, *args)`` put on a queue; the thread runs them in order and
hands each result (or exception) back to the asyncio future of the coroutine that asked. As only
this thread touches the connection, a function that reads then writes is one uninterrupted
transaction, with no other coroutine's statements in between.

The thread is a daemon and is stopped on every failure path of ``start``, so a database that
cannot be opened never leaves a thread behind that keeps the process alive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Mode of a database file this process creates; SQLite gives its -wal and -shm files the
#: database file's own mode, so those are private too.
FILE_MODE = 0o600

_Job = tuple[Callable[..., Any], tuple[Any, ...], "Future[Any]"]


def create_private(path: Path) -> None:
    """Create an empty ``path`` with mode 0600 unless it exists (SQLite accepts an empty file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


class SqliteWriter:
    """A dedicated thread with one connection; ``call`` runs a function there.

    Args:
        path: the database file (created with mode 0600 if missing).
        name: the thread's name, for debugging.
    """

    def __init__(self, path: Path, name: str = "sqlite-writer") -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._opened: Future[None] = Future()
        self._stopped: Future[None] = Future()
        self._closed = False

    async def start(self) -> None:
        """Start the thread and open the connection there; raise what opening raised.

        On failure the thread has already ended: nothing is left running.
        """
        self._thread.start()
        try:
            await asyncio.wrap_future(self._opened)
        except BaseException:
            self._closed = True
            self._jobs.put(None)  # unread if the thread already ended after a failed open
            await self._ended()
            raise

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer's thread and return its result."""
        if self._closed:
            raise RuntimeError("store is closed")
        done: Future[T] = Future()
        self._jobs.put((fn, args, done))
        return await asyncio.wrap_future(done)

    async def close(self) -> None:
        """Finish the queued jobs, close the connection and end the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        await self._ended()

    async def _ended(self) -> None:
        await asyncio.shield(asyncio.wrap_future(self._stopped))
        # The thread set ``_stopped`` as its last act: this join returns at once.
        self._thread.join()

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        try:
            self._serve()
        finally:
            self._stopped.set_result(None)

    def _serve(self) -> None:
        try:
            create_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.row_factory = sqlite3.Row
        except BaseException as exc:  # noqa: BLE001 - handed to the opener, which re-raises it
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                fn, args, done = job
                # A job whose caller was cancelled before it began is skipped; once begun it
                # runs to its end (a transaction is never cut in half).
                if not done.set_running_or_notify_cancel():
                    continue
                started = time.perf_counter()
                try:
                    result = fn(conn, *args)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
                    done.set_exception(exc)
                else:
                    done.set_result(result)
                if log.isEnabledFor(logging.DEBUG):
                    # The function's name only: its arguments may hold tokens (Slack installs).
                    name = getattr(fn, "__qualname__", type(fn).__name__)
                    took = (time.perf_counter() - started) * 1000
                    log.debug("ran %s in %.1f ms", name, took)
        finally:
            conn.close()


__all__ = ["FILE_MODE", "SqliteWriter", "create_private"]
