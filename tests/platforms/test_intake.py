"""The intake of thread messages (docs/backpressure.md): a thread's messages reach their
session's queue in the order they came, whichever look-up finishes first; a slow one holds up
only its own thread; at most ``limit`` are looked up at once; a message dropped before its turn
(a refused event) does not hold up the ones behind it."""

from __future__ import annotations

import asyncio

from bot.platforms.intake import Intake


async def test_a_threads_messages_keep_their_order_and_other_threads_go_past_a_slow_one():
    intake = Intake(limit=2)
    queued: list[str] = []
    slow = asyncio.Event()
    in_lookups = 0
    most = 0

    async def message(thread: str, name: str, gate: asyncio.Event | None = None) -> None:
        nonlocal in_lookups, most
        turn = intake.arrive(thread)  # on arrival, before anything is awaited
        async with turn:
            in_lookups += 1
            most = max(most, in_lookups)
            if gate is not None:
                await gate.wait()  # a look-up that takes its time
            await asyncio.sleep(0)
            queued.append(name)
            in_lookups -= 1

    tasks = [asyncio.create_task(message("A", "a1", slow)), asyncio.create_task(message("A", "a2"))]
    tasks += [asyncio.create_task(message(t, f"{t.lower()}1")) for t in ("B", "C", "D")]
    async with asyncio.timeout(5):
        while len(queued) < 3:  # noqa: ASYNC110 - waiting for the other threads
            await asyncio.sleep(0.01)
    assert queued == ["b1", "c1", "d1"]  # thread A's second message waits for its first
    slow.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert queued == ["b1", "c1", "d1", "a1", "a2"]
    assert most == 2  # never more look-ups at once than the intake's slots
    assert intake.waiting() == 0


async def test_a_message_given_up_before_its_turn_does_not_hold_up_the_next():
    intake = Intake(limit=1)
    first, dropped, third = (intake.arrive("A") for _ in range(3))
    dropped.finish()  # e.g. the gate refused its event: no listener will take the turn
    async with first:
        pass
    async with asyncio.timeout(5):
        async with third:
            assert intake.waiting() == 1
    assert intake.waiting() == 0
