"""A kept transcript as plain text.

Used for the viewer page's download and the file attached to the end summary in Discord and Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.core.models import TranscriptLine


def speaker_label(avatar: str, line: TranscriptLine) -> str:
    """Who said a line, as the viewer page labels it ("Ann asked", "Ada")."""
    if line.speaker == "avatar":
        return avatar
    if line.speaker == "system":
        return "Note"
    verb = {"say": "had the avatar say", "ask": "asked"}.get(line.intent or "", "said")
    return f"{line.author or 'Someone'} {verb}"


def transcript_text(avatar: str, lines: list[TranscriptLine]) -> str:
    """One line per turn with its UTC time; empty when nothing was said."""
    out = []
    for line in lines:
        when = datetime.fromtimestamp(line.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.append(f"[{when} UTC] {speaker_label(avatar, line)}: {line.text}")
    return "\n".join(out) + ("\n" if out else "")


def transcript_filename(session_id: str) -> str:
    """The file name a transcript is saved or attached under."""
    return f"transcript-{session_id}.txt"
