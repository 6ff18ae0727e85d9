"""``/avatar ...`` and the buttons of the session message.

Every listener acks at once (Slack allows 3 s) and does the work afterwards; answers and
refusals go back through ``respond`` (the command's ``response_url``) as ephemeral messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import InvalidRequest, NotAllowed, SessionNotFound
from bot.core.models import (
    NUMERIC_LIMITS,
    ChatBinding,
    Mode,
    SessionRecord,
    SessionState,
    TenantId,
    limit_bounds,
)
from bot.core.service import StartCommand
from bot.platforms.slack import blocks
from bot.platforms.slack.errors import error_text
from bot.platforms.slack.threads import Target, team_tenant, thread_key

if TYPE_CHECKING:
    from bot.platforms.slack.app import SlackAdapter

log = logging.getLogger(__name__)

COMMAND = "/avatar"
_NOT_MEMBER = ("not_in_channel", "channel_not_found")
_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,})$")
_LIMIT_KEYS = NUMERIC_LIMITS
# "-5", "1.5", "1e9": meant as a length, so they get a length error, not "unknown avatar".
_NUMBERISH = re.compile(r"^[+-]?\d*[.,]?\d+(?:e[+-]?\d+)?$", re.ASCII | re.IGNORECASE)


def whole_number(text: str) -> int | None:
    """``text`` as an int if it is at most 12 plain ASCII digits, else ``None``.

    ``str.isdigit`` alone also accepts superscripts such as ``²``, which ``int`` refuses.
    """
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    return None


@dataclass
class Call:
    """One ``/avatar`` invocation."""

    adapter: SlackAdapter
    client: AsyncWebClient
    team: str
    channel: str
    user: str
    user_name: str
    args: list[str]
    rest: str
    enterprise: str | None = None
    # Slack's ``trigger_id``: unique per invocation, so the same request handled twice (a
    # replay) is known by it.
    request_id: str = ""

    @property
    def tenant(self) -> TenantId:
        """The workspace's tenant id."""
        return team_tenant(self.team)


Handler = Callable[[Call], Awaitable[str | None]]


def split_command(text: str) -> tuple[str, list[str], str]:
    """``"say hello there"`` -> ``("say", ["hello", "there"], "hello there")``."""
    text = (text or "").strip()
    head, _, rest = text.partition(" ")
    try:
        args = shlex.split(rest)
    except ValueError:
        args = rest.split()
    return head.lower(), args, rest.strip()


def parse_start(args: list[str]) -> tuple[str | None, int | None, Mode]:
    """``[avatar] [minutes] [ask|say]`` in any order."""
    avatar, minutes, mode = None, None, Mode.ASK
    for arg in args:
        if whole_number(arg) is not None:
            minutes = whole_number(arg)
        elif _NUMBERISH.match(arg) or arg.isnumeric():
            raise InvalidRequest(f"{arg!r} is not a length: give whole minutes, like `10`.")
        elif arg.lower() in ("ask", "say"):
            mode = Mode(arg.lower())
        elif avatar is None:
            avatar = arg
        else:
            raise InvalidRequest(f"Unexpected {arg!r}. Usage: `/avatar start [avatar] [minutes] "
                                 "[ask|say]`.")
    return avatar, minutes, mode


def parse_user(arg: str) -> str:
    """A user id from ``<@U123|name>``, ``<@U123>`` or ``U123``."""
    match = _USER.match(arg.strip())
    if not match:
        raise InvalidRequest(
            f"{arg!r} is not a user I can read: pick the person with @ so Slack sends their id "
            "(or give the id, like U0123ABC)."
        )
    return match.group(1) or match.group(2)


# ---------------------------------------------------------------------- session lookups


async def channel_session(call: Call, ref: str | None = None) -> SessionRecord:
    """The session a command means: ``ref`` if given, else the newest open one in this channel."""
    service = call.adapter.service
    if ref:
        return await service.get(ref, tenant=call.tenant)
    found = await service.open_sessions_in(call.tenant, "slack", call.channel)
    if not found:
        err = SessionNotFound("-")
        err.user_message = (
            "There is no open session in this channel. Start one with `/avatar start`."
        )
        raise err
    return found[0]  # newest first


async def may_stop(adapter: SlackAdapter, client: AsyncWebClient, team: str, user: str,
                   record: SessionRecord) -> None:
    """Only the person who started a session, or an admin, may end it early."""
    if record.started_by != user and not await adapter.is_admin(client, team, user):
        raise NotAllowed(
            f"Only <@{record.started_by}> (who started it) or a workspace admin can stop this "
            "session."
        )


# ---------------------------------------------------------------------- start


async def ensure_member(call: Call, notice: str) -> None:
    """Prove the bot can post here (an ephemeral notice), joining public channels if needed."""
    try:
        await call.client.chat_postEphemeral(channel=call.channel, user=call.user, text=notice)
        return
    except SlackApiError as exc:
        if exc.response.get("error") not in _NOT_MEMBER:
            raise
    try:
        await call.client.conversations_join(channel=call.channel)
        await call.client.chat_postEphemeral(channel=call.channel, user=call.user, text=notice)
    except SlackApiError as exc:
        log.info("cannot join a Slack channel: %s", exc.response.get("error"))
        raise NotAllowed(
            "I am not a member of this channel and cannot join it myself. Invite me with "
            "`/invite @avatarbot`, then try again."
        ) from None


async def cmd_start(call: Call) -> str | None:
    """Start a session; its channel message (with buttons) anchors the session thread."""
    avatar, minutes, mode = parse_start(call.args)
    adapter = call.adapter
    # an unknown name fails before anything
    found = await adapter.service.start_avatar(call.tenant, avatar)
    command = StartCommand(
        tenant=call.tenant, user=call.user, avatar=f"{found.provider}:{found.id}",
        minutes=minutes, mode=mode,
    )
    # Credits, limits and who may start are refused before anyone reads "Starting …";
    # ``start`` checks the same rules again inside its reserving transaction.
    await adapter.service.precheck(command, found)
    await ensure_member(call, f":hourglass_flowing_sand: Starting {found.name}…")
    record = await adapter.service.start(command)
    try:
        await _announce(call, record)
    except BaseException:
        # No thread to talk in: end it now, so it holds no credits.
        await asyncio.shield(adapter.service.stop(record.id, "could not post in the channel"))
        raise
    return None


async def _announce(call: Call, record: SessionRecord) -> None:
    adapter = call.adapter
    assert record.expires_at is not None  # a live record has one
    url = adapter.links.url(record.id, record.expires_at.timestamp())
    vendor = adapter.service.provider(record.provider).display_name
    resp = await call.client.chat_postMessage(
        channel=call.channel, text=blocks.started_fallback(record),
        blocks=blocks.session_started(record, vendor, url), unfurl_links=False,
    )
    ts = resp["ts"]
    await adapter.bindings.bind(ChatBinding(
        session_id=record.id, platform="slack", channel_id=call.channel,
        thread_id=thread_key(call.channel, ts), message_id=ts, enterprise_id=call.enterprise,
    ))
    adapter.relay.bound(record.id, Target(call.team, call.channel, ts, record.avatar_name,
                                          call.enterprise))


# ---------------------------------------------------------------------- driving a session


async def cmd_stop(call: Call) -> str | None:
    """End the channel's session (or the one named)."""
    record = await channel_session(call, call.args[0] if call.args else None)
    await may_stop(call.adapter, call.client, call.team, call.user, record)
    if not record.state.is_open:
        return f":information_source: That session already {record.state.value}."
    await call.adapter.service.stop(record.id, f"stopped by {call.user_name}", tenant=call.tenant)
    return ":stop_button: Stopped. The summary is in the session's thread."


async def cmd_say(call: Call) -> str | None:
    """The avatar says the text word for word."""
    record = await channel_session(call)
    text = await call.adapter.readable(call.client, call.rest)
    await call.adapter.service.say(record.id, text, author=call.user, tenant=call.tenant)
    return ":speaking_head_in_silhouette: Sent to the avatar."


async def cmd_ask(call: Call) -> str | None:
    """The avatar answers the question in the session's thread."""
    record = await channel_session(call)
    text = await call.adapter.readable(call.client, call.rest)
    await call.adapter.service.ask(record.id, text, author=call.user, tenant=call.tenant)
    return ":speech_balloon: Asked; the answer comes in the session's thread."


async def cmd_mode(call: Call) -> str | None:
    """Set what plain thread messages do."""
    if len(call.args) != 1:
        raise InvalidRequest("Usage: `/avatar mode ask` or `/avatar mode say`.")
    mode = Mode.parse(call.args[0])
    record = await channel_session(call)
    await call.adapter.service.set_mode(record.id, mode, tenant=call.tenant)
    return f":ok_hand: Plain messages in the thread now *{mode.value}*."


async def cmd_interrupt(call: Call) -> str | None:
    """Stop the avatar mid-sentence."""
    record = await channel_session(call)
    await call.adapter.service.interrupt(record.id, tenant=call.tenant)
    return ":raised_hand: Interrupted."


async def cmd_context(call: Call) -> str | None:
    """Give the avatar the text it answers from (replaces what it had)."""
    if not call.rest:
        raise InvalidRequest("Usage: `/avatar context <the text the avatar answers from>`.")
    record = await channel_session(call)
    text = await call.adapter.readable(call.client, call.rest)
    await call.adapter.service.set_context(record.id, text, tenant=call.tenant)
    return f":books: The avatar now answers from your text ({len(text):,} characters)."


async def cmd_link(call: Call) -> str | None:
    """The viewer link of the channel's session."""
    record = await channel_session(call)
    if record.state is not SessionState.LIVE or record.expires_at is None:
        return f":zzz: That session is {record.state.value}; there is nothing to watch."
    url = call.adapter.links.url(record.id, record.expires_at.timestamp())
    return f":tv: <{url}|Open the viewer> for *{blocks.escape(record.avatar_name)}*."


async def cmd_avatars(call: Call) -> str | None:
    """List the avatars that can be started."""
    service = call.adapter.service
    return blocks.avatars_text(await service.list_avatars(), qualified=len(service.providers) > 1)


async def cmd_credits(call: Call) -> str | None:
    """The workspace's credits and the caller's use today."""
    return blocks.credits_text(await call.adapter.tenants.credits(call.tenant, call.user))


# ---------------------------------------------------------------------- admin


async def cmd_admin(call: Call) -> str | None:
    """``admin grant|limits|allow|deny|default``: workspace admins/owners and operators."""
    adapter = call.adapter
    if not await adapter.is_admin(call.client, call.team, call.user):
        raise NotAllowed("Only workspace admins and owners can use `/avatar admin`.")
    sub, args = (call.args[0].lower(), call.args[1:]) if call.args else ("", [])
    handler = _ADMIN.get(sub)
    if handler is None:
        raise InvalidRequest("Usage: `/avatar admin grant|limits|allow|deny|default ...`.")
    return await handler(call, args)


async def admin_grant(call: Call, args: list[str]) -> str | None:
    """Grant credits to this workspace."""
    amount = whole_number(args[0]) if args else None
    if amount is None:
        raise InvalidRequest("Usage: `/avatar admin grant <credits> [note]`.")
    note = " ".join(args[1:]) or None
    actor = TenantId(platform="slack", id=call.user)
    # Only the operator mints credits, on every platform and in every mode (bot/core/tenants.py
    # AdminPolicy); once per request: a replayed request grants nothing more.
    balance = await call.adapter.tenants.admin_grant(
        call.adapter.settings.admin_policy(), call.tenant, amount, actor, note,
        request_id=f"slack:{call.request_id}",
    )
    return f":coin: Granted {amount} credits. Available now: *{balance.available}*."


async def admin_limits(call: Call, args: list[str]) -> str | None:
    """Show, or set with ``key=value``, the workspace's limits."""
    tenants = call.adapter.tenants
    if not args:
        return blocks.limits_text(await tenants.limits(call.tenant))
    changes: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        number = whole_number(value)
        if not sep or key not in _LIMIT_KEYS or number is None:
            raise InvalidRequest(
                f"Bad limit {arg!r}: write key=number with key one of {', '.join(_LIMIT_KEYS)}."
            )
        low, high = limit_bounds(key)
        if not low <= number <= high:
            raise InvalidRequest(f"Bad limit {arg!r}: {key} goes from {low} to {high:,}.")
        changes[key] = number
    limits = await tenants.admin_set_limits(
        call.adapter.settings.admin_policy(), call.tenant,
        TenantId(platform="slack", id=call.user), **changes,
    )
    return ":white_check_mark: Limits updated.\n" + blocks.limits_text(limits)


async def admin_allow(call: Call, args: list[str]) -> str | None:
    """Add people to the list of who may start sessions (an empty list means everyone)."""
    if not args:
        raise InvalidRequest("Usage: `/avatar admin allow @person ...`.")
    users = [parse_user(a) for a in args]
    tenants = call.adapter.tenants
    current = (await tenants.limits(call.tenant)).allowed_users
    limits = await tenants.set_limits(call.tenant, allowed_users=[*current, *users])
    return ":white_check_mark: Allowed.\n" + blocks.limits_text(limits)


async def admin_deny(call: Call, args: list[str]) -> str | None:
    """Remove people from the list of who may start sessions."""
    if not args:
        raise InvalidRequest("Usage: `/avatar admin deny @person ...`.")
    users = {parse_user(a) for a in args}
    tenants = call.adapter.tenants
    current = (await tenants.limits(call.tenant)).allowed_users
    if not users & set(current):
        raise InvalidRequest(
            "They are not on the list of who may start sessions. (An empty list means "
            "everyone may; `/avatar admin allow @person` starts a list.)"
        )
    remaining = [u for u in current if u not in users]
    if not remaining:
        raise InvalidRequest(
            "That would empty the list, which means everyone may start sessions. Allow "
            "someone else first."
        )
    limits = await tenants.set_limits(call.tenant, allowed_users=remaining)
    return ":white_check_mark: Removed.\n" + blocks.limits_text(limits)


async def admin_default(call: Call, args: list[str]) -> str | None:
    """Show or choose the avatar ``/avatar start`` uses when none is named."""
    service = call.adapter.service
    if not args:
        avatar = await service.start_avatar(call.tenant, None)
        ref = f"{avatar.provider}:{avatar.id}"
        return f"`/avatar start` with no avatar starts *{avatar.name}* (`{ref}`)."
    chosen = await service.set_default_avatar(call.tenant, " ".join(args))
    assert chosen is not None  # a named avatar comes back (None only when forgetting)
    return f":white_check_mark: `/avatar start` with no avatar now starts *{chosen.name}*."


_ADMIN: dict[str, Callable[[Call, list[str]], Awaitable[str | None]]] = {
    "grant": admin_grant, "limits": admin_limits, "allow": admin_allow, "deny": admin_deny,
    "default": admin_default,
}

HANDLERS: dict[str, Handler] = {
    "start": cmd_start, "stop": cmd_stop, "say": cmd_say, "ask": cmd_ask, "mode": cmd_mode,
    "interrupt": cmd_interrupt, "context": cmd_context, "link": cmd_link, "avatars": cmd_avatars,
    "credits": cmd_credits, "admin": cmd_admin,
}


# ---------------------------------------------------------------------- bolt listeners


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    """Add the ``/avatar`` command and the session message's buttons to ``app``."""

    @app.command(COMMAND)
    async def on_avatar(ack: Any, command: dict[str, Any], respond: Any,
                        client: AsyncWebClient) -> None:
        sub, args, rest = split_command(command.get("text", ""))
        handler = HANDLERS.get(sub)
        if handler is None:
            unknown = "" if sub in ("", "help") else f"Unknown command `{blocks.escape(sub)}`.\n\n"
            await ack(text=unknown + blocks.HELP, response_type="ephemeral")
            return
        await ack()
        # enterprise_id: set for a workspace of an Enterprise Grid org (Slack's slash command
        # payload, https://api.slack.com/slash-commands); its token is stored under it.
        call = Call(adapter, client, command["team_id"], command["channel_id"],
                    command["user_id"], command.get("user_name") or command["user_id"], args, rest,
                    command.get("enterprise_id") or None,
                    str(command.get("trigger_id") or ""))
        try:
            text = await handler(call)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one ephemeral line
            text = error_text(exc)
        if text:
            await respond(text=text, response_type="ephemeral", replace_original=False)

    @app.action(blocks.VIEWER_ACTION)
    async def on_open_viewer(ack: Any) -> None:
        # A URL button still sends block_actions; unacked, Slack shows a warning icon.
        await ack()

    @app.action(blocks.STOP_ACTION)
    async def on_stop(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any,
                      client: AsyncWebClient) -> None:
        await ack()
        team = (body.get("team") or {}).get("id") or body.get("user", {}).get("team_id")
        user = body["user"]["id"]
        name = body["user"].get("username") or body["user"].get("name") or user
        try:
            tenant = team_tenant(team)
            record = await adapter.service.get(action.get("value", ""), tenant=tenant)
            await may_stop(adapter, client, team, user, record)
            await adapter.service.stop(record.id, f"stopped by {name}", tenant=tenant)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one ephemeral line
            await respond(text=error_text(exc), response_type="ephemeral", replace_original=False)
