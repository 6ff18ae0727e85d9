"""Events API listeners: thread messages to the avatar, and uninstalls."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import AvatarBotError, InvalidRequest, SessionNotFound
from bot.core.models import ChatBinding, TenantId
from bot.core.service import Queued
from bot.platforms.readable import slack_forwardable
from bot.platforms.slack.errors import error_text
from bot.platforms.slack.threads import is_person_thread_reply, team_tenant, thread_key

if TYPE_CHECKING:
    from bot.platforms.slack.app import SlackAdapter

log = logging.getLogger(__name__)

# The reaction that tells the writer their message reached the avatar.
REACTIONS = {"ask": "speech_balloon", "say": "speaking_head_in_silhouette"}
FILES_NOTE = (
    ":information_source: The avatar only hears text: files and images are not passed on. "
    "Type what it should hear."
)


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    """Add the message and uninstall listeners to ``app``."""

    @app.event("message")
    async def on_message(event: dict[str, Any], body: dict[str, Any], context: Any,
                         client: AsyncWebClient) -> None:
        # Claimed before anything is awaited: the turn the HTTP handler took on arrival.
        turn = adapter.claim_turn(body.get("event_id"))
        # Every message event lands here (edits, deletes and bots' posts too) so that each is
        # acknowledged; Slack redelivers unacknowledged events. Only people's replies count:
        # the HTTP handler took a turn only for those (``conversation_key``).
        if turn is None:  # not through the HTTP handler (Socket Mode): its turn starts now
            key = conversation_key(body)
            if key is None:
                return
            turn = adapter.intake.arrive(key)
        # The look-ups and the queueing hold one of the intake's slots, in the thread's order;
        # the wait for the vendor and the answers to Slack come after, without it.
        async with turn:
            outcome = await _queue(adapter, event, context, client)
        if outcome is None:
            return
        client, queued = outcome
        try:
            if isinstance(queued, BaseException):
                raise queued
            if queued is FILES_NOTE:
                await _tell(client, event, FILES_NOTE)
                return
            assert isinstance(queued, Queued)
            await queued.sent()
        except Exception as exc:  # noqa: BLE001 - told to the writer, privately
            await _tell(client, event, error_text(exc))
            return
        await _react(client, event, REACTIONS[queued.mode.value])

    @app.event("app_uninstalled")
    async def on_uninstalled(context: Any) -> None:
        await _uninstall(adapter, context.team_id, context.enterprise_id, "the app was uninstalled")

    @app.event("tokens_revoked")
    async def on_tokens_revoked(event: dict[str, Any], context: Any) -> None:
        tokens = event.get("tokens") or {}
        if adapter.installations is not None:
            for user in tokens.get("oauth") or []:
                await adapter.installations.async_delete_installation(
                    enterprise_id=context.enterprise_id, team_id=context.team_id, user_id=user,
                )
        if tokens.get("bot"):
            await _uninstall(adapter, context.team_id, context.enterprise_id,
                             "the bot's token was revoked")

    @app.event(re.compile(".*"))
    async def on_other(event: dict[str, Any]) -> None:
        # Registered last: any other subscribed event is acknowledged (Slack would redeliver an
        # unhandled one, answered 404, and eventually turn the subscription off).
        log.debug("Slack event %s ignored", event.get("type"))


def conversation_key(body: dict[str, Any]) -> str | None:
    """The thread of an Events API body's message when it is a person's thread reply, else None.

    Only such replies are heard by the avatar (``is_person_thread_reply``).
    """
    event = body.get("event")
    if body.get("type") != "event_callback" or not isinstance(event, dict):
        return None
    if event.get("type") != "message" or not is_person_thread_reply(event):
        return None
    return f"{body.get('team_id')}:{thread_key(str(event.get('channel')), str(event['thread_ts']))}"


async def _queue(adapter: SlackAdapter, event: dict[str, Any], context: Any,
                 client: AsyncWebClient
                 ) -> tuple[AsyncWebClient, Queued | BaseException | str] | None:
    """A thread reply's look-ups, then its place in the session's queue (no vendor wait).

    Returns the client to answer with and what to answer about: the queued message, the refusal
    to tell the writer, or ``FILES_NOTE``; None when there is nothing to say.
    """
    # The session that owns the thread decides, not the installation Bolt authorized: in a
    # Slack Connect channel Slack lists one installation per event, possibly the other
    # organisation's (docs/platform-payloads.md, "Slack Connect").
    binding = await adapter.bindings.for_thread(
        "slack", thread_key(event["channel"], event["thread_ts"]))
    if binding is None:
        return None
    # The relay knows the workspace of every session it posts for: the store is asked only
    # for a session this worker has not bound or relayed (another worker started it).
    owner = adapter.relay.owner(binding.session_id) or await _owner(adapter, binding)
    if owner is None:
        return None
    team, enterprise = owner
    if (team, enterprise) != (context.team_id, context.enterprise_id):
        token = await adapter.token_for(team, enterprise)
        client = adapter.client(token) if token is not None else client
    text = await adapter.readable(client, event.get("text"))
    verdict = slack_forwardable(event.get("subtype"), bool(text),
                                has_files=bool(event.get("files")),
                                is_bot=bool(event.get("bot_id")))
    if verdict == "ignore":
        return None
    if verdict == "note":
        # An upload with nothing typed: said once per session, privately, never a warning.
        return (client, FILES_NOTE) if adapter.first_file_note(binding.session_id) else None
    try:
        queued = await adapter.service.enqueue(binding.session_id, text,
                                               author=event.get("user"), tenant=team_tenant(team))
    except Exception as exc:  # noqa: BLE001 - told to the writer, privately, after the turn
        return client, exc
    return client, queued


async def _uninstall(adapter: SlackAdapter, team: str | None, enterprise: str | None,
                     reason: str) -> None:
    """End the workspace's sessions, mark it inactive and forget its tokens."""
    if team is None:
        # An org-wide install: its events name the org only (authorizations' team_id is null).
        if enterprise is not None:
            await _uninstall_org(adapter, enterprise, reason)
        return
    tenant = team_tenant(team)
    # Refuse new starts first: one that slipped in while earlier sessions were still stopping
    # would run on in a workspace that removed the app.
    await adapter.tenants.deactivate(tenant)
    summaries = await adapter.service.stop_all(reason, tenant)
    if adapter.installations is not None:
        await adapter.installations.async_delete_all(enterprise_id=enterprise, team_id=team)
    log.info("slack workspace removed; %d session(s) ended", len(summaries),
             extra={"tenant": str(tenant)})


async def _uninstall_org(adapter: SlackAdapter, enterprise: str, reason: str) -> None:
    """Forget an org-wide install and end the sessions of the org's workspaces it served.

    A workspace of the org that also has its own install keeps its sessions.
    """
    if adapter.installations is not None:
        await adapter.installations.async_delete_all(enterprise_id=enterprise, team_id=None)
    ended = 0
    for record in await adapter.service.open_sessions():
        ours = [b for b in await adapter.bindings.for_session(record.id)
                if b.platform == "slack" and b.enterprise_id == enterprise]
        owner = await _owner(adapter, ours[0]) if ours else None
        if owner is None or await adapter.token_for(*owner) is not None:
            continue
        try:
            await adapter.service.stop(record.id, reason)
            ended += 1
        except AvatarBotError:
            log.exception("could not stop a session of a removed Slack org")
    log.info("slack org-wide install removed; %d session(s) ended", ended)


async def _owner(adapter: SlackAdapter, binding: ChatBinding) -> tuple[str, str | None] | None:
    """The (team id, enterprise id) of the workspace a session was started from."""
    try:
        record = await adapter.service.get(binding.session_id)
        tenant = TenantId.parse(record.tenant)
    except (SessionNotFound, InvalidRequest):
        return None
    return (tenant.id, binding.enterprise_id) if tenant.platform == "slack" else None


async def _react(client: AsyncWebClient, event: dict[str, Any], name: str) -> None:
    try:
        await client.reactions_add(channel=event["channel"], timestamp=event["ts"], name=name)
    except SlackApiError as exc:
        log.info("could not add a reaction: %s", exc.response.get("error"))


async def _tell(client: AsyncWebClient, event: dict[str, Any], text: str) -> None:
    try:
        await client.chat_postEphemeral(channel=event["channel"], user=event["user"], text=text,
                                        thread_ts=event["thread_ts"])
    except SlackApiError as exc:
        log.info("could not tell a user about an error: %s", exc.response.get("error"))
