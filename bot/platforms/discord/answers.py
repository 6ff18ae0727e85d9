"""Every interaction is answered within Discord's 3 s, whatever it waits for.

Discord forgets an interaction that has no first response (a message, or a deferral: "thinking…")
within 3 s, and the person sees "The application did not respond". Most commands answer after a
store read or two, which is quick, but a read can wait behind a backlog and some answers need a
vendor (the default avatar's name). So each command and button is **guarded**: if it has not
answered ``ANSWER_BUDGET_S`` after it began, the guard defers it (ephemeral, thinking), and the
command's own answer then replaces the "thinking…" placeholder (docs/backpressure.md).

The guard and the command never both send a first response: ``answer`` and ``defer`` mark the
interaction as answered before they await anything, and wait for a deferral the guard has
already started. Marks live in discord.py's ``Interaction.extras``, a dict for callers' use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord

log = logging.getLogger(__name__)

ANSWER_BUDGET_S = 2.0
_MARK = "avatarbot_answer"  # in Interaction.extras: True (answering) or the guard's deferral

__all__ = ["ANSWER_BUDGET_S", "answer", "defer", "guard", "settled"]

_deferrals: set[asyncio.Task[None]] = set()


def guard(interaction: discord.Interaction, budget_s: float = ANSWER_BUDGET_S) -> None:
    """Defer ``interaction`` if nothing answered it within ``budget_s``.

    Not an autocomplete: its only answer is the list of choices.
    """
    if interaction.type is discord.InteractionType.autocomplete:
        return
    asyncio.get_running_loop().call_later(budget_s, _defer_late, interaction)


def _defer_late(interaction: discord.Interaction) -> None:
    if _MARK in interaction.extras or interaction.response.is_done():
        return
    task = asyncio.create_task(_deferral(interaction), name="discord-late-defer")
    interaction.extras[_MARK] = task
    _deferrals.add(task)
    task.add_done_callback(_deferrals.discard)


async def _deferral(interaction: discord.Interaction) -> None:
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
    except discord.HTTPException:
        log.warning("could not defer a slow Discord interaction", exc_info=True)
    else:
        log.info("a Discord interaction took over %.0f s; deferred", ANSWER_BUDGET_S)


async def _claim(interaction: discord.Interaction) -> None:
    """Mark the interaction as being answered here; wait for a deferral already under way."""
    pending = interaction.extras.get(_MARK)
    interaction.extras[_MARK] = True
    if isinstance(pending, asyncio.Task):
        with contextlib.suppress(Exception):
            await asyncio.shield(pending)


async def defer(interaction: discord.Interaction) -> None:
    """Defer (ephemeral, thinking) unless the guard already did."""
    await _claim(interaction)
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=True, thinking=True)


async def answer(interaction: discord.Interaction, content: str, **kwargs: Any) -> None:
    """The command's (ephemeral) answer: the first response, or the deferred one's text."""
    await _claim(interaction)
    if not interaction.response.is_done():
        await interaction.response.send_message(content, ephemeral=True, **kwargs)
    else:
        await interaction.edit_original_response(content=content, **kwargs)


async def settled(interaction: discord.Interaction) -> None:
    """Wait for a deferral the guard started (before answering some other way)."""
    await _claim(interaction)
