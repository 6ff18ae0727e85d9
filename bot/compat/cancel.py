"""Cancelling a task that may be inside ``asyncio.wait_for``, on Python 3.11.

On Python 3.11, ``asyncio.wait_for`` returns its inner result instead of raising when the outer
task is cancelled in the same loop step as the inner awaitable completes: the cancellation is
lost (CPython issue gh-86296, fixed in 3.12 by rebuilding ``wait_for`` on ``asyncio.timeout``).
redis-py wraps every socket write in ``wait_for`` (its default ``socket_timeout`` is 5 s), so a
task cancelled while it talks to Redis keeps running now and then: seen here 1 time in 4 to 6
when cancelling a loop of Redis calls at random moments. ``task.cancel(); await task`` then waits
forever (a lease renewer that never stopped hung a test for 120 s).

``cancel_and_wait`` cancels again until the task has really finished. It relies on nothing
private; ``tests/compat/test_cancel.py`` shows the lost cancellation on 3.11 and that this ends
such a task, and notices when the Python in use no longer loses it.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

# How long one cancellation gets before it is sent again. Short: a lost one is retried at once.
_RECHECK_S = 0.05


async def cancel_and_wait(task: asyncio.Task[object], *, grace_s: float = 10.0) -> None:
    """Cancel ``task`` and wait until it has finished (cancelled or not), for up to ``grace_s``.

    An exception the task ended with is logged, not raised: callers are shutting it down.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECHECK_S)
        if not task.done() and loop.time() > deadline:
            log.error("task %s did not stop within %.0f s of being cancelled", task.get_name(),
                      grace_s)
            return
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s ended with an error", task.get_name(), exc_info=task.exception())
