"""``avatarbot doctor``'s platform checks: ask Slack and Discord whether the tokens work.

Slack: ``auth.test`` with the bot token, on ``SLACK_API_URL`` (Slack docs, reference/methods/
auth.test: ``ok`` with ``team``/``user``, or ``invalid_auth``, ``not_authed``, ``token_revoked``,
``account_inactive``...). Discord: ``GET /users/@me`` with ``Authorization: Bot <token>`` on
``DISCORD_API_BASE`` (Discord docs, resources/user "Get Current User"; a wrong token gets 401), then
``GET /oauth2/applications/@me`` for the application flags that say whether the Message Content
intent is switched on (docs/platforms.md, "Gateway and intents"). Tokens are sent, never printed.
"""

from __future__ import annotations

import logging

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings

Check = tuple[str, bool, str]

# slack-sdk logs request and response bodies at DEBUG: this logger stays at INFO (as in app.py).
SDK_LOG = logging.getLogger("bot.platforms.slack.sdk")
SDK_LOG.setLevel(logging.INFO)
TIMEOUT_S = 10.0
# Application flags (Discord docs, resources/application "Application Flags"): the Message
# Content intent, approved (100+ servers) or switched on in the portal (fewer servers).
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
PORTAL = "https://discord.com/developers/applications"
SLACK_APPS = "https://api.slack.com/apps"

SLACK_ERRORS = {
    "invalid_auth": "Slack does not know this token: copy the Bot User OAuth Token (xoxb-...) "
                    f"from your app's OAuth & Permissions page ({SLACK_APPS}) into SLACK_BOT_TOKEN",
    "not_authed": "no token reached Slack: SLACK_BOT_TOKEN is empty",
    "token_revoked": "the token was revoked (the app was removed from the workspace or the token "
                     "was regenerated): reinstall the app from its settings page and copy the "
                     "new Bot User OAuth Token into SLACK_BOT_TOKEN",
    "account_inactive": "the token belongs to a deleted user or a removed app: reinstall the app "
                        "and copy the new Bot User OAuth Token into SLACK_BOT_TOKEN",
    "not_allowed_token_type": "this is not a bot token: SLACK_BOT_TOKEN must be the Bot User "
                              "OAuth Token (xoxb-...)",
    "team_access_not_granted": "the token has no access to this workspace: reinstall the app",
}


def _slack_prefix_hint(token: str) -> str:
    if token.startswith("xapp-"):
        return " (it starts with xapp-: that is the app-level token, which goes in SLACK_APP_TOKEN)"
    if token.startswith("xoxp-"):
        return " (it starts with xoxp-: that is a user token, not the bot's)"
    return ""


async def check_slack(settings: Settings) -> Check | None:
    """``auth.test`` with ``SLACK_BOT_TOKEN``; None when no bot token is configured."""
    if settings.slack_bot_token is None:
        return None
    token = settings.slack_bot_token.get_secret_value()
    client = AsyncWebClient(token=token, base_url=str(settings.slack_api_url), logger=SDK_LOG,
                            timeout=int(TIMEOUT_S))
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown error")
        detail = SLACK_ERRORS.get(error, f"Slack refused SLACK_BOT_TOKEN ({error})")
        return ("slack token", False, f"{error}: {detail}{_slack_prefix_hint(token)}")
    except Exception as exc:  # noqa: BLE001 - aiohttp and timeouts: report, do not crash doctor
        return ("slack token", False, f"{settings.slack_api_url} unreachable "
                                      f"({type(exc).__name__})")
    if not resp.get("bot_id"):
        return ("slack token", False, "this token is not a bot's: SLACK_BOT_TOKEN must be the "
                                      f"Bot User OAuth Token (xoxb-...){_slack_prefix_hint(token)}")
    return ("slack token", True, f"bot {resp.get('user')} in workspace {resp.get('team')} "
                                 f"({resp.get('team_id')})")


async def check_slack_app_token(settings: Settings) -> Check | None:
    """``apps.connections.open`` with ``SLACK_APP_TOKEN`` (Socket Mode); None when unset.

    It only issues a WebSocket URL, which is left unused (Slack docs, reference/methods/
    apps.connections.open); a running connection is not affected.
    """
    if settings.slack_app_token is None:
        return None
    token = settings.slack_app_token.get_secret_value()
    client = AsyncWebClient(base_url=str(settings.slack_api_url), logger=SDK_LOG,
                            timeout=int(TIMEOUT_S))
    try:
        await client.apps_connections_open(app_token=token)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown error")
        hint = " (it starts with xoxb-: that is the bot token)" if token.startswith("xoxb-") \
            else ""
        return ("slack app token", False,
                f"{error}: Slack refused SLACK_APP_TOKEN{hint}. Create an App-Level Token with "
                "the connections:write scope on your app's Basic Information page "
                f"({SLACK_APPS}), and turn Socket Mode on")
    except Exception as exc:  # noqa: BLE001 - reported, like the bot token's check
        return ("slack app token", False, f"{settings.slack_api_url} unreachable "
                                          f"({type(exc).__name__})")
    return ("slack app token", True, "Socket Mode can connect")


async def check_discord(settings: Settings) -> list[Check]:
    """The bot user behind ``DISCORD_TOKEN`` and its Message Content intent; [] without a token."""
    if settings.discord_token is None:
        return []
    token = settings.discord_token.get_secret_value()
    base = str(settings.discord_api_base).rstrip("/")
    headers = {
        "Authorization": f"Bot {token}",
        # Discord asks for this form of User-Agent (docs, reference "User Agent").
        "User-Agent": "DiscordBot (https://github.com/avatarbot/avatarbot, 1.0)",
    }
    async with httpx.AsyncClient(timeout=TIMEOUT_S, headers=headers) as http:
        try:
            me = await http.get(f"{base}/users/@me")
        except httpx.HTTPError as exc:
            return [("discord token", False, f"{base} unreachable ({type(exc).__name__})")]
        if me.status_code == 401:
            hint = " (leave out the 'Bot ' prefix)" if token.startswith("Bot ") else ""
            return [("discord token", False,
                     "Discord refused DISCORD_TOKEN (401): the token is wrong or was reset"
                     f"{hint}. Copy a new one from {PORTAL} -> your app -> Bot -> Reset Token.")]
        if me.status_code != 200:
            return [("discord token", False, f"Discord answered HTTP {me.status_code} to "
                                             "GET /users/@me; try again later")]
        user = me.json()
        if not user.get("bot"):
            return [("discord token", False, "this is not a bot token: use the token from the "
                                             f"Bot page of your app at {PORTAL}")]
        checks = [("discord token", True, f"bot {user.get('username')} (id {user.get('id')})")]
        app = await http.get(f"{base}/oauth2/applications/@me")
    if app.status_code == 200:
        flags = int(app.json().get("flags") or 0)
        if flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED):
            checks.append(("discord intent", True, "Message Content intent is on"))
        else:
            checks.append(("discord intent", False,
                           "the Message Content intent is off, so thread messages reach the "
                           f"avatar only when they mention the bot: {PORTAL} -> your app -> Bot "
                           "-> Privileged Gateway Intents -> MESSAGE CONTENT INTENT"))
    return checks
