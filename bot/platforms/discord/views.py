"""The session message's buttons: a viewer link and a persistent Stop button.

The Stop button is a ``DynamicItem``: the session id lives in its ``custom_id``
(``avatar:stop:<session id>``), so a click reaches the handler even after a restart, with nothing
kept in memory. The handler is looked up on the client (``client.on_stop_click``).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

STOP_PREFIX = "avatar:stop:"
STOP_TEMPLATE = r"avatar:stop:(?P<sid>[0-9a-f]{1,32})"


class StopButton(discord.ui.DynamicItem[discord.ui.Button], template=STOP_TEMPLATE):
    """A red "Stop" button bound to one session."""

    def __init__(self, session_id: str, *, disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(
            label="Stop", style=discord.ButtonStyle.danger, custom_id=STOP_PREFIX + session_id,
            disabled=disabled, emoji="⏹️",
        ))
        self.session_id = session_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StopButton:
        """Rebuild the button from a click (works on a freshly started client)."""
        return cls(match["sid"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the client, which stops the session."""
        client: _StopHandler = interaction.client
        await client.on_stop_click(interaction, self.session_id)


class _StopHandler(Protocol):
    """What the Stop button needs from the client (``bot.platforms.discord.client``)."""

    async def on_stop_click(
        self, interaction: discord.Interaction[Any], session_id: str
    ) -> None: ...


def session_view(
    session_id: str, viewer_url: str | None, *, ended: bool = False
) -> discord.ui.View:
    """Buttons of a session message: "Open viewer" (link, no interaction) and "Stop"."""
    view = discord.ui.View(timeout=None)
    if viewer_url and not ended:
        view.add_item(discord.ui.Button(
            label="Open viewer", style=discord.ButtonStyle.link, url=viewer_url, emoji="🎥"
        ))
    view.add_item(StopButton(session_id, disabled=ended))
    return view
