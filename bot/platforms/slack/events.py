"""Events API listeners: thread messages to the avatar, and uninstalls."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.platforms.slack.errors import error_text
from bot.platforms.slack.threads import is_person_thread_reply, route_thread_message, team_tenant

if TYPE_CHECKING:
    from bot.platforms.slack.app import SlackAdapter

log = logging.getLogger(__name__)

# The reaction that tells the writer their message reached the avatar.
REACTIONS = {"ask": "speech_balloon", "say": "speaking_head_in_silhouette"}


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    """Add the message and uninstall listeners to ``app``."""

    @app.event("message")
    async def on_message(event: dict[str, Any], context: Any, client: AsyncWebClient) -> None:
        # Every message event lands here (edits, deletes and bots' posts too) so that each is
        # acknowledged; Slack redelivers unacknowledged events. Only people's replies count.
        if not is_person_thread_reply(event):
            return
        team = context.team_id
        try:
            routed = await route_thread_message(adapter.service, adapter.bindings, team, event)
        except Exception as exc:  # noqa: BLE001 - told to the writer, privately
            await _tell(client, event, error_text(exc))
            return
        if routed is not None:
            await _react(client, event, REACTIONS[routed[1]])

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


async def _uninstall(adapter: SlackAdapter, team: str, enterprise: str | None,
                     reason: str) -> None:
    """End the workspace's sessions, mark it inactive and forget its tokens."""
    tenant = team_tenant(team)
    # Refuse new starts first: one that slipped in while earlier sessions were still stopping
    # would run on in a workspace that removed the app.
    await adapter.tenants.deactivate(tenant)
    summaries = await adapter.service.stop_all(reason, tenant)
    if adapter.installations is not None:
        await adapter.installations.async_delete_all(enterprise_id=enterprise, team_id=team)
    log.info("slack workspace removed; %d session(s) ended", len(summaries),
             extra={"tenant": str(tenant)})


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
