"""The one place where an error becomes text a Slack user sees."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.core.errors import (
    AvatarBotError,
    InsufficientCredits,
    InvalidRequest,
    LimitReached,
    NotAllowed,
    ProviderError,
    SessionNotFound,
    SessionNotLive,
)

log = logging.getLogger(__name__)

GENERIC = ":x: Something went wrong on our side. It has been logged; please try again in a minute."

# Most specific first: the first matching class picks the emoji.
_EMOJI: tuple[tuple[type[AvatarBotError], str], ...] = (
    (InsufficientCredits, ":money_with_wings:"),
    (LimitReached, ":hourglass:"),
    (NotAllowed, ":no_entry:"),
    (SessionNotFound, ":mag:"),
    (SessionNotLive, ":zzz:"),
    (InvalidRequest, ":warning:"),
    (ProviderError, ":satellite_antenna:"),
)


def error_text(exc: BaseException) -> str:
    """What to tell the user about ``exc``; unexpected errors are logged with their traceback.

    ``AvatarBotError.user_message`` is safe to show by contract; anything else (a Slack API error,
    a bug) is shown only as a generic line, so no token or raw payload reaches a chat.
    """
    if isinstance(exc, AvatarBotError):
        emoji = next((e for cls, e in _EMOJI if isinstance(exc, cls)), ":warning:")
        return f"{emoji} {exc.user_message}"
    if isinstance(exc, SlackApiError):
        log.warning("Slack API call failed: %s", exc.response.get("error"))
        return ":x: Slack refused a call the bot made. Please try again in a minute."
    log.error("unexpected error in the Slack adapter", exc_info=exc)
    return GENERIC
