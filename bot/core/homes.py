"""Sessions with a home: the one worker that must handle what touches their in-process state.

With one process this module is idle. With several workers (docs/scale-out.md, "Sessions with a
home") two kinds of session keep state in the memory of one worker:

- the local avatar (``survives_restart`` is false): the worker renders it and holds every
  viewer's WebRTC peer connection;
- vendors driven through the viewer page (``control == "viewer"``: AKool, LiveAvatar): the
  relay outbox (``bot/core/relay.py``) and the provider's bookkeeping of what it sent (AKool's
  pending commands and questions, LiveAvatar's socket) live where the messages were queued.

The home of such a session is the worker holding its lease (``bot/core/leases.py``): its starter
claims it at once, and a worker that takes a dead one's sessions over becomes their home. A
request that arrives anywhere else is run on the home through ``SessionHomes.call``; the cluster
implementation is ``bot/cluster/homes.py`` (HTTP between workers, signed).
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.core.models import Capabilities, ProviderSession


def has_home(capabilities: Capabilities) -> bool:
    """Whether a provider's sessions must be handled on the one worker that holds them."""
    return capabilities.control == "viewer" or not capabilities.survives_restart


class SessionHomes(Protocol):
    """Where a session's home is, and a way to run an operation there."""

    async def home_of(self, session_id: str) -> str | None:
        """The address of the session's home, or ``None`` when it is this worker (or nobody's).

        Raises:
            WorkerUnreachable: the lease names a worker whose address is not known.
        """
        ...

    async def call(self, home: str, op: str, session_id: str, **fields: Any) -> dict[str, Any]:
        """Run ``op`` on the worker at ``home`` and return its JSON answer.

        Raises:
            WorkerUnreachable: it did not answer in time.
            Forwarded: it answered with an error (its message and status).
        """
        ...


class HomeSignalling:
    """``WebRTCSignalling`` of a local-avatar session rendered by another worker.

    Each call runs on the home, where the provider holds the viewer's peer connection; the
    viewer id is the one the page got from its own worker's hub.
    """

    def __init__(self, homes: SessionHomes, home: str) -> None:
        self._homes = homes
        self._home = home

    async def viewer_offer(self, session: ProviderSession, viewer_id: str) -> dict[str, str]:
        """The home's offer for a new peer of ``viewer_id``."""
        answer = await self._homes.call(self._home, "offer", session.session_id,
                                        viewer_id=viewer_id)
        return {"type": str(answer["type"]), "sdp": str(answer["sdp"])}

    async def viewer_answer(self, session: ProviderSession, viewer_id: str, sdp: str) -> None:
        """Hand the page's answer to the home."""
        await self._homes.call(self._home, "answer", session.session_id, viewer_id=viewer_id,
                               sdp=sdp)

    async def viewer_candidate(self, session: ProviderSession, viewer_id: str,
                               candidate: dict[str, Any] | None) -> None:
        """Hand one trickled candidate (or the end of them) to the home."""
        await self._homes.call(self._home, "candidate", session.session_id,
                               viewer_id=viewer_id, candidate=candidate)

    async def viewer_leave(self, session: ProviderSession, viewer_id: str) -> None:
        """Have the home close the viewer's peer connection."""
        await self._homes.call(self._home, "leave", session.session_id, viewer_id=viewer_id)
