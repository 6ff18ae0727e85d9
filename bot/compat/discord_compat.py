"""discord.py internals avatarbot relies on (tested with discord.py 2.7.1).

- Endpoints: discord.py keeps the REST base in the class attribute ``discord.http.Route.BASE``
  (read whenever a route is built, interaction callbacks and webhook edits included) and the
  gateway in ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``; neither has a per-instance
  setting, so pointing a client at another endpoint (the tests' fake Discord, a proxy) sets them
  for the whole process. That fits: a process runs one Discord client.
- Intents: after gateway close 4014 (Message Content not allowed) the client reconnects without
  that intent. discord.py has no public setter; IDENTIFY (``DiscordWebSocket.identify``) reads
  the connection state's private ``_intents``, so that object is changed in place.
- ``GET /gateway/bot`` (the gateway URL behind a REST proxy, the recommended shard count and
  IDENTIFY concurrency): discord.py calls it only inside its own connect and keeps the answer;
  the client's HTTP layer (``Client.http``, an ``HTTPClient``) is not public API, so the one call
  to its ``get_bot_gateway`` is here.
"""

from __future__ import annotations

import discord
import discord.gateway
import discord.http
import yarl

from bot.compat import Fence

TESTED = "2.7.1"
FENCE = Fence("discord.py", TESTED, "bot/compat/discord_compat.py")

FENCE.require(discord.http.Route, "BASE")
FENCE.require(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY")
FENCE.require_read(discord.gateway.DiscordWebSocket.identify, "_intents")
FENCE.require(discord.http.HTTPClient, "get_bot_gateway", callable_=True)
# The getter of the `intents` property (mypy sees a property as its return type, not an object).
FENCE.require_read(getattr(vars(discord.Client).get("intents"), "fget", None), "_connection")


def endpoints() -> tuple[str, yarl.URL]:
    """The process-wide REST base and gateway URL in use now."""
    return discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def set_api_base(url: str) -> None:
    """Send every REST call of this process to ``url`` (e.g. ``https://discord.com/api/v10``)."""
    discord.http.Route.BASE = url


def set_gateway(url: yarl.URL) -> None:
    """Connect every gateway of this process to ``url`` (a ws/wss URL)."""
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = url


async def bot_gateway(client: discord.Client) -> tuple[int, str, int]:
    """Discord's ``GET /gateway/bot``: recommended shards, gateway URL, IDENTIFY concurrency."""
    shards, url, limit = await client.http.get_bot_gateway()
    return shards, url, int(limit.get("max_concurrency", 1))


def wants_message_content(client: discord.Client) -> bool:
    """Whether the client's next IDENTIFY asks for the Message Content intent."""
    return client.intents.message_content


def drop_message_content(client: discord.Client) -> None:
    """Make the client's next IDENTIFY leave out the Message Content intent."""
    client._connection._intents.message_content = False
