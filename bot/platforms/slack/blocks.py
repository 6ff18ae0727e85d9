"""Block Kit and mrkdwn for the Slack adapter (pure functions, no I/O)."""

from __future__ import annotations

from typing import Any

from bot.core.models import AvatarInfo, Limits, SessionRecord, SessionSummary
from bot.core.tenants import CreditsReport

STOP_ACTION = "avatar_stop"
VIEWER_ACTION = "open_viewer"
# Slack asks for texts over 4000 characters to be split; section texts stop at 3000.
MAX_TEXT = 3000

HELP = """*Talking avatars* — `/avatar <command>`
• `start [avatar] [minutes] [ask|say]` — start a session here; its thread is the conversation
• `stop [session]` — end the session in this channel (the starter or an admin)
• `ask <text>` / `say <text>` — ask the avatar, or make it say the words
• `mode ask|say` — what plain messages in the thread do (`!ask` / `!say` override once)
• `interrupt` — stop the avatar mid-sentence
• `context <text>` — the text the avatar answers questions from
• `link` — the viewer link again
• `avatars` — the avatars you can start
• `credits` — this workspace's credits and your use today
• `admin grant <credits>` · `admin allow @user` · `admin deny @user` — admins only
• `admin limits [max_concurrent=N] [max_minutes=N] [daily_user_credits=N]` — admins only
• `admin default [avatar]` — show or choose the avatar a bare `start` uses (admins only)
• `help` — this text"""


def escape(text: str) -> str:
    """Escape Slack's control characters so text cannot ping channels or fake links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split(text: str, size: int = MAX_TEXT) -> list[str]:
    """Cut ``text`` into pieces of at most ``size`` characters, at line or word ends if possible."""
    pieces = []
    while len(text) > size:
        cut = max(text.rfind("\n", 0, size), text.rfind(" ", 0, size))
        cut = cut if cut > size // 2 else size
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return [*pieces, text] if text else pieces


def _when(epoch: float, fallback: str) -> str:
    # Slack renders <!date^...> in each reader's own time zone.
    return f"<!date^{int(epoch)}^{{time}}|{fallback}>"


def duration(seconds: int) -> str:
    """``125`` -> ``2m 5s``."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def session_started(record: SessionRecord, vendor: str, viewer_url: str) -> list[dict[str, Any]]:
    """The channel message that anchors a session's thread: what, who, until when, buttons."""
    ends = record.expires_at
    ends_text = _when(ends.timestamp(), ends.strftime("%H:%M UTC")) if ends else "?"
    text = (
        f":performing_arts: *{escape(record.avatar_name)}* ({escape(vendor)}) is live for "
        f"{record.requested_s // 60} min, until {ends_text} — started by <@{record.started_by}>.\n"
        f"Reply in this thread to talk to the avatar (mode: *{record.mode.value}*; "
        "start a message with `!say` or `!ask` to switch once)."
    )
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": f"session:{record.id}",
            "elements": [
                {
                    "type": "button", "action_id": VIEWER_ACTION, "url": viewer_url,
                    "text": {"type": "plain_text", "text": "Open viewer"}, "style": "primary",
                },
                {
                    "type": "button", "action_id": STOP_ACTION, "value": record.id,
                    "text": {"type": "plain_text", "text": "Stop"}, "style": "danger",
                },
            ],
        },
    ]


def started_fallback(record: SessionRecord) -> str:
    """Notification text of the anchor message."""
    return f"{record.avatar_name} is live for {record.requested_s // 60} min."


def summary_text(summary: SessionSummary) -> str:
    """One line saying how a session ended and what it cost."""
    reason = f" ({escape(summary.reason)})" if summary.reason else ""
    return (
        f":stop_button: Session with *{escape(summary.avatar_name)}* ended after "
        f"{duration(summary.duration_s)}{reason}. Credits used: {summary.settled} "
        f"(reserved {summary.reserved}, returned {summary.released})."
    )


def session_ended(summary: SessionSummary) -> list[dict[str, Any]]:
    """The anchor message once its session is over: the summary, no buttons."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": summary_text(summary)}}]


def avatars_text(avatars: list[AvatarInfo], qualified: bool) -> str:
    """The ``/avatar avatars`` listing; ``provider:id`` names when several providers exist."""
    if not avatars:
        return "No avatar is available right now."
    lines = []
    for avatar in avatars[:40]:
        ref = f"{avatar.provider}:{avatar.id}" if qualified else avatar.id
        lines.append(f"• *{escape(avatar.name)}* — `{escape(ref)}`")
    more = f"\n…and {len(avatars) - 40} more." if len(avatars) > 40 else ""
    return "*Avatars* (`/avatar start <name or id>`):\n" + "\n".join(lines) + more


def credits_text(report: CreditsReport) -> str:
    """The ``/avatar credits`` answer."""
    b = report.balance
    return (
        f":coin: This workspace has *{b.available}* credits available "
        f"({b.granted} granted, {b.settled} used, {b.pending} held by running sessions).\n"
        f"You have used {report.used_today_by_user} of your {report.daily_user_credits} "
        "credits today."
    )


def limits_text(limits: Limits) -> str:
    """The ``/avatar admin limits`` answer."""
    allowed = ", ".join(f"<@{u}>" for u in limits.allowed_users) or "everyone"
    return (
        f"*Limits:* max_concurrent={limits.max_concurrent}, max_minutes={limits.max_minutes}, "
        f"daily_user_credits={limits.daily_user_credits}.\nWho may start sessions: {allowed}."
    )
