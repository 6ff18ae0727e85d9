"""The provider protocol every avatar backend implements (A2E, AKool, HeyGen, LiveAvatar, local).

Vendor wire models stay inside each adapter; the core sees only the types below.

Answers and spoken words come back as ``Transcript`` events on the ``EventHub`` that each
provider is built with: server-controlled providers publish them themselves; for providers
controlled through the viewer's RTC data channel (``capabilities.control == "viewer"``),
``say``/``ask``/``interrupt`` queue messages in the session's relay outbox (``EventHub.relay``,
``bot/core/relay.py``) for the page to send, and the page's received data messages come back
through ``decode_viewer_data``, which must accept only the vendor's own shapes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from bot.core.events import Transcript
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    ProviderSession,
    StartRequest,
    VendorStatus,
)


@runtime_checkable
class AvatarProvider(Protocol):
    """A streaming-avatar backend."""

    name: str
    display_name: str
    capabilities: Capabilities

    async def list_avatars(self) -> list[AvatarInfo]:
        """Return the avatars this account may use."""
        ...

    async def start(self, request: StartRequest) -> ProviderSession:
        """Start a vendor session; raise a ``ProviderError`` on failure."""
        ...

    async def say(self, session: ProviderSession, text: str) -> None:
        """Make the avatar speak ``text`` word for word."""
        ...

    async def ask(self, session: ProviderSession, text: str) -> None:
        """Ask the avatar ``text``; its answer arrives as ``Transcript`` events."""
        ...

    async def interrupt(self, session: ProviderSession) -> None:
        """Stop the avatar's current speech at once."""
        ...

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """Replace the knowledge the avatar answers from."""
        ...

    async def keep_alive(self, session: ProviderSession) -> None:
        """Tell the vendor the session is still in use (no-op where not needed)."""
        ...

    async def stop(self, session: ProviderSession) -> None:
        """End the vendor session. Idempotent: stopping an ended session succeeds."""
        ...

    async def list_open_sessions(self) -> list[str] | None:
        """Vendor ids of the account's open sessions, or ``None`` if the vendor cannot list them."""
        ...

    def decode_viewer_data(self, session: ProviderSession, payload: Any) -> list[Transcript]:
        """Turn a data message the viewer received from the vendor into transcript lines."""
        ...

    async def aclose(self) -> None:
        """Release the provider's own resources (idempotent)."""
        ...


@runtime_checkable
class SessionStatusSource(Protocol):
    """Optional capability: ask the vendor whether one of its sessions is still open.

    Providers whose vendor can end a session on its own without telling us by an event
    implement it (AKool's session detail, HeyGen's session list); the reaper calls it for live
    sessions at most every ``capabilities.status_interval_s`` seconds. Raise a
    ``ProviderError`` when the vendor cannot be asked: the session is then left as it is.
    A vendor whose own end is known in advance implements ``PlannedVendorEnd`` instead.
    """

    async def status(self, session: ProviderSession) -> VendorStatus:
        """Whether the vendor still holds ``session`` open, and if not since when and why."""
        ...


@runtime_checkable
class PlannedVendorEnd(Protocol):
    """Optional capability: the vendor ends a session on its own at a time known at the start.

    A2E releases a room when the token it handed out expires. The reaper files that time in its
    index like the session's own expiry and ends the session there, so nothing is asked or
    computed for the session before then (a poll every few seconds cost 100 checks a second at
    500 sessions, issue 15). Pure and synchronous: it reads only ``session``.
    """

    def planned_end(self, session: ProviderSession) -> VendorStatus | None:
        """The vendor's own end of ``session`` (closed, ``ended_at`` set) if it comes before ours.

        None when the vendor set no end of its own, or one that is not before ours.
        """
        ...


@runtime_checkable
class WebRTCSignalling(Protocol):
    """Server-offer WebRTC signalling (the local avatar).

    The server makes the offer, the browser answers and trickles its candidates; candidates
    that arrive before the answer are buffered by the implementation.
    """

    async def viewer_offer(self, session: ProviderSession, viewer_id: str) -> dict[str, str]:
        """Return ``{"type": "offer", "sdp": ...}`` for a new viewer."""
        ...

    async def viewer_answer(self, session: ProviderSession, viewer_id: str, sdp: str) -> None:
        """Apply the browser's answer."""
        ...

    async def viewer_candidate(
        self, session: ProviderSession, viewer_id: str, candidate: dict[str, Any] | None
    ) -> None:
        """Apply one trickled browser candidate (``None`` means end of candidates)."""
        ...

    async def viewer_leave(self, session: ProviderSession, viewer_id: str) -> None:
        """Drop a viewer's peer connection."""
        ...


class ProviderBase:
    """Defaults for the optional parts of the protocol; adapters override what they support."""

    name: str
    display_name: str
    capabilities: Capabilities

    async def keep_alive(self, session: ProviderSession) -> None:
        """Do nothing: most vendors need no keep-alive."""

    async def list_open_sessions(self) -> list[str] | None:
        """Return ``None``: this vendor cannot list its open sessions."""
        return None

    def decode_viewer_data(self, session: ProviderSession, payload: Any) -> list[Transcript]:
        """Return no lines: this vendor sends nothing through the viewer."""
        return []

    async def aclose(self) -> None:
        """Nothing to release."""
