"""The built-in local avatar: a drawn face that speaks with espeak-ng, served over aiortc.

Signalling is server-offer (as HeyGen v1): ``viewer_offer`` returns a complete offer (aiortc does
not trickle), the browser answers and trickles its candidates, which are buffered until the
answer is applied. Each session renders and encodes once; every viewer gets its own peer
connection carrying the same packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from bot.compat import aioice_compat, aiortc_compat
from bot.core.errors import (
    AtCapacity,
    ConfigError,
    InvalidRequest,
    ProviderRejected,
    SessionNotLive,
    SpeechBusy,
)
from bot.core.events import EventHub, Transcript
from bot.core.ice import candidate_address_problem, public_ice_servers
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    Pricing,
    ProviderSession,
    StartRequest,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import ProviderBase
from bot.providers.local import persona
from bot.providers.local.answer import (
    LLM_DOWN,
    ChatClient,
    LLMConfig,
    LLMError,
    local_answer,
)
from bot.providers.local.face import DEFAULT_LOOK, LOOKS, Face, Look
from bot.providers.local.media import FanoutTrack, SessionMedia, Speaker
from bot.providers.local.speech import Voice, voice_exists

log = logging.getLogger(__name__)

# One process serves about 30 viewers in all (docs/browser.md); the settings
# LOCAL_MAX_SESSIONS, LOCAL_MAX_VIEWERS and LOCAL_MAX_VIEWERS_PER_SESSION default to these.
MAX_SESSIONS = 8
MAX_VIEWERS = 30
MAX_VIEWERS_PER_SESSION = 10
# LOCAL_SPEECH_BUFFER_BYTES: 10 s of 48 kHz mono 16-bit PCM per session (96,000 bytes a second)
SPEECH_BUFFER_BYTES = 960_000
MAX_PENDING_SAYS = 4  # LOCAL_MAX_PENDING_SAYS: texts waiting to be spoken per session
# Each remote candidate makes the ICE agent send STUN checks to the address it names; a browser
# trickles a handful (docs/browser.md, "Remote ICE candidates").
MAX_REMOTE_CANDIDATES = 50
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}(\+[A-Za-z0-9_]{1,20})?")
_CODECS = {"video": ("video/vp8", "video/rtx"), "audio": ("audio/opus",)}


@dataclass
class _Viewer:
    pc: RTCPeerConnection
    tracks: list[FanoutTrack]
    answered: bool = False
    pending: list[Any] = field(default_factory=list)
    watchdog: asyncio.Task[None] | None = None
    candidates: int = 0  # remote candidates accepted so far (MAX_REMOTE_CANDIDATES)


@dataclass
class _Session:
    session_id: str
    look: Look
    voice: Voice
    media: SessionMedia
    speaker: Speaker
    knowledge: str | None
    viewers: dict[str, _Viewer] = field(default_factory=dict)
    interrupts: int = 0  # an answer that arrives after an interrupt is not spoken


def _ice_servers(servers: list[dict[str, Any]]) -> list[RTCIceServer]:
    out = []
    for i, server in enumerate(servers):
        urls = server.get("urls") if isinstance(server, dict) else None
        if not urls or not isinstance(urls, str | list):
            raise ConfigError(f"LOCAL_ICE_SERVERS entry {i} needs 'urls' (a string or a list).")
        out.append(RTCIceServer(
            urls=urls, username=server.get("username"), credential=server.get("credential"),
        ))
    return out


class LocalProvider(ProviderBase):
    """The embedded avatar, always available, needing no vendor account.

    Args:
        events: where the avatar's words are published as transcript lines.
        pricing: what a minute of it costs.
        width, height, fps: the video size and rate.
        ice_servers: ICE servers for both ends (empty: nothing leaves the machine).
        allow_loopback: also gather 127.0.0.1 candidates (tests, one-machine trials).
        llm: an OpenAI-compatible chat endpoint for ``ask``; without it answers come from the
            session's knowledge text.
        http: the shared HTTP client for the chat endpoint.
        max_sessions: sessions this process runs at once; more are refused (``AtCapacity``).
        max_viewers: viewer peer connections this process holds at once, across sessions.
        max_viewers_per_session: viewer peer connections of one session.
        speech_buffer_bytes: the most synthesised PCM one session queues (see ``Speaker``).
        max_pending_says: texts one session lets wait to be spoken; more get ``SpeechBusy``.
    """

    name = "local"
    display_name = "Local avatar"

    def __init__(
        self, *, events: EventHub, pricing: Pricing, width: int = 640, height: int = 480,
        fps: int = 15, ice_servers: list[dict[str, Any]] | None = None,
        allow_loopback: bool = False, llm: LLMConfig | None = None,
        http: httpx.AsyncClient | None = None, max_sessions: int = MAX_SESSIONS,
        max_viewers: int = MAX_VIEWERS, max_viewers_per_session: int = MAX_VIEWERS_PER_SESSION,
        speech_buffer_bytes: int = SPEECH_BUFFER_BYTES, max_pending_says: int = MAX_PENDING_SAYS,
    ) -> None:
        if min(max_sessions, max_viewers, max_viewers_per_session, max_pending_says) < 1:
            raise ConfigError("Local avatar caps (sessions, viewers, pending says) must be >= 1.")
        if speech_buffer_bytes < 96_000:
            raise ConfigError("LOCAL_SPEECH_BUFFER_BYTES must hold at least 1 s (96000 bytes).")
        if width % 2 or height % 2 or width < 64 or height < 64 or not 1 <= fps <= 60:
            raise ConfigError("Local avatar video must be even-sized, at least 64x64, 1-60 fps.")
        self.events = events
        self.width, self.height, self.fps = width, height, fps
        self._ice_dicts = [dict(s) for s in (ice_servers or [])]
        self._ice = _ice_servers(self._ice_dicts)
        self.capabilities = Capabilities(
            transport="webrtc", control="server", multi_viewer=True, lists_sessions=False,
            survives_restart=False, pricing=pricing,
            # About half a minute of speech: longer texts are better split into turns. The
            # knowledge text goes into every LLM prompt: kept short (the playground is public).
            max_text_chars=500, max_knowledge_chars=5000,
        )
        self._own_http = http is None and llm is not None
        self._http = http or (httpx.AsyncClient() if llm is not None else None)
        self._chat = ChatClient(llm, self._http) if llm is not None and self._http else None
        self._loopback = allow_loopback
        if allow_loopback:
            aioice_compat.acquire_loopback()
        self._render_pool = ThreadPoolExecutor(2, thread_name_prefix="local-avatar-render")
        self._speech_pool = ThreadPoolExecutor(1, thread_name_prefix="local-avatar-speech")
        self._sessions: dict[str, _Session] = {}
        self.max_sessions = max_sessions
        self.max_viewers = max_viewers
        self.max_viewers_per_session = max_viewers_per_session
        self.speech_buffer_bytes = speech_buffer_bytes
        self.max_pending_says = max_pending_says
        self._starting = 0  # starts past the capacity check, not yet in ``_sessions``
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # a viewer that has not connected this long after its offer (no answer, no candidates)
        # is dropped, so abandoned offers do not hold sockets
        self.connect_timeout_s = 30.0

    # ------------------------------------------------------------------ catalogue
    async def list_avatars(self) -> list[AvatarInfo]:
        """The built-in looks."""
        return [
            AvatarInfo(id=lk.id, name=lk.name, provider=self.name, description=lk.description)
            for lk in LOOKS.values()
        ]

    # ------------------------------------------------------------------ life
    async def start(self, request: StartRequest) -> ProviderSession:
        """Create the session's avatar; its media runs until ``stop``."""
        if self._closed:
            raise ProviderRejected(self.name, "The local avatar is shutting down.")
        look = LOOKS.get(request.avatar_id or DEFAULT_LOOK)
        if look is None:
            names = ", ".join(f"{lk.name} ({lk.id})" for lk in LOOKS.values())
            raise ProviderRejected(self.name, f"Unknown local avatar. Choose one of: {names}.")
        if len(self._sessions) + self._starting >= self.max_sessions:
            raise AtCapacity(self.name, f"The built-in avatar is at capacity "
                                        f"({self.max_sessions} sessions); try again later.")
        self._starting += 1  # counted from here, so concurrent starts cannot overshoot
        try:
            voice = await self._pick_voice(look, request)
            loop = asyncio.get_running_loop()
            face = await loop.run_in_executor(
                self._render_pool, Face, look, self.width, self.height, secrets.randbits(32)
            )
        finally:
            self._starting -= 1
        media = SessionMedia(face, self.fps, self._render_pool)
        speaker = Speaker(media, voice, self._speech_pool, buffer_bytes=self.speech_buffer_bytes,
                          max_pending=self.max_pending_says)
        local_id = f"local-{secrets.token_hex(8)}"
        self._sessions[local_id] = _Session(request.session_id, look, voice, media, speaker,
                                            request.knowledge)
        media.start()
        speaker.start()
        log.info("local avatar started", extra={"session": request.session_id, "look": look.id})
        return ProviderSession(
            session_id=request.session_id, provider=self.name, provider_session_id=local_id,
            # Static TURN credentials stay with the server's own peer (bot/core/ice.py).
            viewer=ViewerInfo(transport="webrtc", ice_servers=public_ice_servers(self._ice_dicts)),
            expires_at=utcnow() + timedelta(seconds=request.duration_s),
            handle={"avatar_id": look.id, "voice": voice.name},
        )

    async def _pick_voice(self, look: Look, request: StartRequest) -> Voice:
        for given in (request.voice, request.language):
            # espeak-ng builds a file path from the name: accept names, never paths
            if given and not _VOICE_NAME.fullmatch(given.strip()):
                raise ProviderRejected(self.name, f"{given!r} is not an espeak-ng voice name.")
        voice = look.voice
        if request.voice:
            voice = Voice(request.voice.strip(), voice.rate, voice.pitch)
        elif request.language:
            variant = voice.name.partition("+")[2]
            name = request.language.strip().lower() + (f"+{variant}" if variant else "")
            voice = Voice(name, voice.rate, voice.pitch)
        loop = asyncio.get_running_loop()
        fallback = Voice("en", look.voice.rate, look.voice.pitch)  # every espeak-ng has it
        for choice in dict.fromkeys((voice, look.voice, fallback)):
            try:
                known = await loop.run_in_executor(self._speech_pool, voice_exists, choice)
            except ConfigError as exc:  # espeak-ng is not installed
                raise ProviderRejected(self.name, exc.user_message) from exc
            if known:
                return choice
            if request.voice:
                raise ProviderRejected(self.name,
                                       f"The local avatar has no voice {request.voice!r}.")
            log.info("espeak-ng has no voice %r; trying another", choice.name)
        raise ProviderRejected(self.name, "espeak-ng has no usable voice on this machine.")

    async def stop(self, session: ProviderSession) -> None:
        """Close every viewer and the session's media; unknown sessions are already stopped."""
        sess = self._sessions.pop(session.provider_session_id, None)
        if sess is None:
            return
        for viewer_id in list(sess.viewers):
            await self._drop_viewer(sess, viewer_id)
        await sess.speaker.aclose()
        await sess.media.aclose()
        log.info("local avatar stopped", extra={"session": sess.session_id})

    async def aclose(self) -> None:
        """Stop every session and release threads and the HTTP client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for local_id in list(self._sessions):
            sess = self._sessions[local_id]
            await self.stop(_ref(sess.session_id, local_id))
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._render_pool.shutdown(wait=True, cancel_futures=True)
        self._speech_pool.shutdown(wait=True, cancel_futures=True)
        if self._own_http and self._http is not None:
            await self._http.aclose()
        if self._loopback:
            aioice_compat.release_loopback()

    def _live(self, session: ProviderSession) -> _Session:
        sess = self._sessions.get(session.provider_session_id)
        if sess is None:
            # e.g. the process restarted: the avatar lived inside the old one
            raise SessionNotLive(session.session_id, "ended")
        return sess

    # ------------------------------------------------------------------ driving
    async def say(self, session: ProviderSession, text: str) -> None:
        """Speak ``text`` word for word (after whatever is being said)."""
        await self._speak(self._live(session), session, text)

    async def ask(self, session: ProviderSession, text: str) -> None:
        """Answer ``text`` from the knowledge text, or through the chat endpoint."""
        sess = self._live(session)
        if not text.strip():
            raise InvalidRequest("Ask a question: the text is empty.")
        if sess.speaker.full:  # refused before the chat endpoint is paid for
            raise SpeechBusy()
        generation = sess.interrupts
        name, look_id = sess.look.name, sess.look.id
        if self._chat is None:
            answer = local_answer(sess.knowledge, text, name, look_id).text
        else:
            try:
                answer = await self._chat.answer(sess.knowledge, text,
                                                 persona.system_prompt(name, look_id))
            except LLMError as exc:
                log.warning("local avatar chat endpoint failed: %s", exc)
                # what the avatar can say without the endpoint, if anything
                reply = local_answer(sess.knowledge, text, name, look_id)
                if reply.kind == "knowledge":
                    answer = f"{LLM_DOWN} From my notes: {reply.text}"
                elif reply.kind == "fallback":
                    answer = LLM_DOWN
                else:
                    answer = f"{LLM_DOWN} {reply.text}"
        if self._live(session).interrupts != generation:
            return  # interrupted while the answer was being found
        await self._speak(sess, session, answer)

    async def _speak(self, sess: _Session, session: ProviderSession, text: str) -> None:
        """Queue ``text``; it is synthesised piece by piece as the audio plays (``Speaker``)."""
        text = " ".join(text.split())
        if not text:
            raise InvalidRequest("There is nothing to say: the text is empty.")
        sess.speaker.enqueue(text)
        # published when accepted: a long text is synthesised while it plays, piece by piece
        self.events.publish(Transcript(session_id=sess.session_id, speaker="avatar", text=text))

    async def interrupt(self, session: ProviderSession) -> None:
        """Stop speaking at once (the next 20 ms audio packet is silent) and free the audio."""
        sess = self._live(session)
        sess.interrupts += 1
        sess.speaker.interrupt()

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """Replace the knowledge text ``ask`` answers from."""
        self._live(session).knowledge = text.strip() or None

    # ------------------------------------------------------------------ signalling
    async def viewer_offer(self, session: ProviderSession, viewer_id: str) -> dict[str, str]:
        """A new peer connection for ``viewer_id`` and its complete offer."""
        sess = self._live(session)
        if viewer_id in sess.viewers:
            await self._drop_viewer(sess, viewer_id)
        if len(sess.viewers) >= self.max_viewers_per_session:
            raise AtCapacity(self.name, f"This avatar already has as many viewers as it can "
                                        f"serve ({self.max_viewers_per_session}); try again later.")
        if self.viewers_total >= self.max_viewers:
            raise AtCapacity(self.name, f"The built-in avatar is at capacity "
                                        f"({self.max_viewers} viewers); try again later.")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice))
        viewer = _Viewer(pc, [])
        sess.viewers[viewer_id] = viewer
        try:
            for kind in ("audio", "video"):
                track = sess.media.subscribe(kind)
                viewer.tracks.append(track)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                codecs = RTCRtpSender.getCapabilities(kind).codecs
                transceiver.setCodecPreferences(
                    [c for c in codecs if c.mimeType.lower() in _CODECS[kind]]
                )
                # a viewer's PLI/FIR must reach the shared encoder, not aiortc's own
                aiortc_compat.route_keyframe_requests(
                    transceiver.sender, sess.media.request_keyframe
                )
            pc.on("connectionstatechange", lambda: self._on_state(sess, viewer_id, pc))
            await pc.setLocalDescription(await pc.createOffer())
        except BaseException:
            await self._drop_viewer(sess, viewer_id)
            raise
        viewer.watchdog = asyncio.get_running_loop().create_task(
            self._watch(sess, viewer_id, viewer)
        )
        return {"type": "offer", "sdp": pc.localDescription.sdp}

    async def viewer_answer(self, session: ProviderSession, viewer_id: str, sdp: str) -> None:
        """Apply the viewer's answer, then the candidates that came before it."""
        sess = self._live(session)
        viewer = self._viewer(sess, viewer_id)
        if viewer.answered:
            raise InvalidRequest("This viewer has already answered; ask for a new offer.")
        if not isinstance(sdp, str) or "m=" not in sdp:
            raise InvalidRequest("The viewer's answer is not an SDP description.")
        try:
            await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise InvalidRequest("The viewer's answer does not match the offer.") from exc
        viewer.answered = True
        pending, viewer.pending = viewer.pending, []
        for candidate in pending:
            await viewer.pc.addIceCandidate(candidate)

    async def viewer_candidate(
        self, session: ProviderSession, viewer_id: str, candidate: dict[str, Any] | None
    ) -> None:
        """Apply (or, before the answer, keep) one trickled candidate; ``None`` ends them."""
        viewer = self._viewer(self._live(session), viewer_id)
        parsed = _parse_candidate(candidate, allow_loopback=self._loopback)
        if parsed is not None:
            if viewer.candidates >= MAX_REMOTE_CANDIDATES:
                raise InvalidRequest(
                    f"A viewer may send at most {MAX_REMOTE_CANDIDATES} ICE candidates; "
                    "reload the page to start over."
                )
            viewer.candidates += 1
        if viewer.answered:
            await viewer.pc.addIceCandidate(parsed)
        else:
            viewer.pending.append(parsed)

    async def viewer_leave(self, session: ProviderSession, viewer_id: str) -> None:
        """Close the viewer's peer connection (unknown viewers are already gone)."""
        sess = self._sessions.get(session.provider_session_id)
        if sess is not None:
            await self._drop_viewer(sess, viewer_id)

    def viewer_count(self, session: ProviderSession) -> int:
        """How many viewers the session has now."""
        sess = self._sessions.get(session.provider_session_id)
        return len(sess.viewers) if sess else 0

    @property
    def viewers_total(self) -> int:
        """Viewer peer connections this process holds, across sessions."""
        return sum(len(sess.viewers) for sess in self._sessions.values())

    @property
    def sessions_total(self) -> int:
        """Sessions this process runs (and starts in progress)."""
        return len(self._sessions) + self._starting

    def running(self) -> tuple[int, int]:
        """Sessions rendering and viewer peers open now, across all sessions (for metrics)."""
        return len(self._sessions), self.viewers_total

    def media_stats(self, session: ProviderSession) -> dict[str, int]:
        """Counters of the session's media.

        Viewers, frames drawn, audio packets encoded, and the speech waiting: PCM bytes queued
        to play (``speech_buffered_bytes``) and texts not yet synthesised (``speech_pending``).
        """
        sess = self._live(session)
        return {
            "viewers": len(sess.viewers),
            "frames_rendered": sess.media.frames_rendered,
            "audio_packets": sess.media.audio_packets,
            "speech_buffered_bytes": sess.media.buffered_bytes,
            "speech_pending": sess.speaker.pending,
        }

    def _viewer(self, sess: _Session, viewer_id: str) -> _Viewer:
        viewer = sess.viewers.get(viewer_id)
        if viewer is None:
            raise InvalidRequest("Unknown viewer: ask for a new offer first.")
        return viewer

    async def _watch(self, sess: _Session, viewer_id: str, viewer: _Viewer) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if viewer.pc.connectionState != "connected" and sess.viewers.get(viewer_id) is viewer:
            log.info("local avatar viewer never connected; dropping it")
            viewer.watchdog = None  # this task: do not cancel itself
            await self._drop_viewer(sess, viewer_id)

    def _on_state(self, sess: _Session, viewer_id: str, pc: RTCPeerConnection) -> None:
        if pc.connectionState in ("failed", "closed"):
            viewer = sess.viewers.get(viewer_id)
            if viewer is not None and viewer.pc is pc:
                task = asyncio.get_running_loop().create_task(self._drop_viewer(sess, viewer_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _drop_viewer(self, sess: _Session, viewer_id: str) -> None:
        viewer = sess.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        if viewer.watchdog is not None:
            viewer.watchdog.cancel()
        for track in viewer.tracks:
            track.stop()
        await viewer.pc.close()


def _parse_candidate(candidate: dict[str, Any] | None, *, allow_loopback: bool = False) -> Any:
    """A browser ``RTCIceCandidateInit`` as aiortc's candidate (``None``: end of candidates).

    A candidate naming an address no browser candidate holds is refused (bot/core/ice.py).
    """
    if candidate is None:
        return None
    if not isinstance(candidate, dict):
        raise InvalidRequest("A candidate must be an object with a 'candidate' string.")
    text = candidate.get("candidate")
    if not isinstance(text, str):
        raise InvalidRequest("A candidate must be an object with a 'candidate' string.")
    if not text.strip():
        return None  # the browser's end-of-candidates marker
    line = text.strip().removeprefix("candidate:")
    try:
        if len(line.split()) < 8:  # aiortc only asserts this
            raise ValueError(line)
        parsed = candidate_from_sdp(line)
    except (ValueError, IndexError, AssertionError) as exc:
        raise InvalidRequest("The candidate is not a valid ICE candidate line.") from exc
    why = candidate_address_problem(parsed.ip, parsed.port, allow_loopback=allow_loopback)
    if why is not None:
        raise InvalidRequest(f"The candidate is refused: {why}.")
    parsed.sdpMid = candidate.get("sdpMid")
    index = candidate.get("sdpMLineIndex")
    parsed.sdpMLineIndex = index if isinstance(index, int) else None
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed


def _ref(session_id: str, local_id: str) -> ProviderSession:
    """A minimal session reference for internal ``stop`` calls."""
    return ProviderSession(
        session_id=session_id, provider="local", provider_session_id=local_id,
        viewer=ViewerInfo(transport="webrtc"), expires_at=utcnow(),
    )
