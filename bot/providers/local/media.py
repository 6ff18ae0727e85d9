"""One session's media: rendered and encoded once, fanned out to every viewer's peer connection.

aiortc's ``RTCRtpSender`` packs pre-encoded ``av.Packet`` objects without encoding them again, so
each viewer's track hands out the same VP8 and Opus packets. The cost per viewer is then only
aiortc's RTP/SRTP work (see ``docs/browser.md``: that is most of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import logging
import time
from collections import deque
from concurrent.futures import Executor

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bot.core.errors import SpeechBusy
from bot.providers.local.face import REST, Face, MouthShape, mouth_at
from bot.providers.local.speech import (
    OUT_RATE,
    Utterance,
    Voice,
    halve,
    split_for_speech,
    synthesize,
)

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_FRAME = 960  # 20 ms at 48 kHz, what browsers expect from Opus
AUDIO_PERIOD = AUDIO_FRAME / OUT_RATE
_VIDEO_TB = fractions.Fraction(1, VIDEO_CLOCK)
_AUDIO_TB = fractions.Fraction(1, OUT_RATE)
_QUEUE = 8  # packets a slow viewer may lag before it loses the oldest


class FanoutTrack(MediaStreamTrack):
    """A viewer's copy of a session track: it returns the session's encoded packets."""

    def __init__(self, media: SessionMedia, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._media = media
        self._queue: deque[av.Packet] = deque(maxlen=_QUEUE)
        self._ready = asyncio.Event()
        self._started = False
        self._need_key = kind == "video"

    def push(self, packet: av.Packet) -> None:
        """Queue one shared packet (called by the session's producer)."""
        if not self._started:
            return
        if self._need_key:
            if not packet.is_keyframe:
                return
            self._need_key = False
        if self.kind == "video" and len(self._queue) == self._queue.maxlen:
            # a viewer that lost video frames cannot decode until the next keyframe
            self._queue.clear()
            self._need_key = True
            self._media.request_keyframe()
            return
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:
        """The next packet; the first video packet a viewer gets is a keyframe."""
        if not self._started:
            self._started = True
            if self.kind == "video":
                self._media.request_keyframe()
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        """Detach from the session and wake a waiting ``recv``."""
        super().stop()
        self._media.unsubscribe(self)
        self._ready.set()


class SessionMedia:
    """Renders the face and speaks utterances in step, for any number of viewers.

    Args:
        face: the drawn avatar.
        fps: video frame rate.
        executor: where frames are drawn and encoded (off the event loop).
    """

    def __init__(self, face: Face, fps: int, executor: Executor) -> None:
        self.face = face
        self.fps = fps
        self._executor = executor
        self._tracks: set[FanoutTrack] = set()
        self._queue: deque[Utterance] = deque()
        self._current: Utterance | None = None
        self._pos = 0  # samples of the current utterance already sent
        self._want_key = True
        self._tasks: list[asyncio.Task[None]] = []
        self._t0 = 0.0
        self._video_enc = self._make_video_encoder(face.width, face.height, fps)
        self._audio_enc = self._make_audio_encoder()
        self._silence = np.zeros(AUDIO_FRAME, dtype=np.int16)
        self._played = asyncio.Event()  # set whenever queued audio shrinks
        self.frames_rendered = 0
        self.audio_packets = 0

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        """Start the video and audio clocks."""
        self._t0 = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._video_loop(), name="local-avatar-video"),
            asyncio.create_task(self._audio_loop(), name="local-avatar-audio"),
        ]

    async def aclose(self) -> None:
        """Stop the clocks and every viewer track (idempotent)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for track in list(self._tracks):
            track.stop()
        self.interrupt()

    # ------------------------------------------------------------------ viewers
    def subscribe(self, kind: str) -> FanoutTrack:
        """A new viewer track of ``kind`` (``audio`` or ``video``)."""
        track = FanoutTrack(self, kind)
        self._tracks.add(track)
        return track

    def unsubscribe(self, track: FanoutTrack) -> None:
        """Forget a viewer track."""
        self._tracks.discard(track)

    def request_keyframe(self) -> None:
        """Make the next video frame a keyframe (a viewer joined or lost a picture)."""
        self._want_key = True

    @property
    def viewer_tracks(self) -> int:
        """How many viewer tracks are attached."""
        return len(self._tracks)

    # ------------------------------------------------------------------ speech
    def speak(self, utterance: Utterance) -> None:
        """Queue an utterance after whatever is being said."""
        self._queue.append(utterance)

    def interrupt(self) -> None:
        """Drop the current and queued speech; the next audio packet is silent."""
        self._queue.clear()
        self._current = None
        self._pos = 0
        self._played.set()

    @property
    def buffered_bytes(self) -> int:
        """PCM bytes waiting to be played: the rest of the current utterance and the queue."""
        total = sum(u.samples.nbytes for u in self._queue)
        cur = self._current
        if cur is not None:
            total += max(0, len(cur.samples) - self._pos) * cur.samples.itemsize
        return total

    async def wait_buffered_at_most(self, limit: int) -> None:
        """Return once at most ``limit`` bytes of speech are waiting to be played."""
        while self.buffered_bytes > limit:
            self._played.clear()
            await self._played.wait()

    @property
    def speaking(self) -> bool:
        """Whether speech is playing or queued."""
        return self._current is not None or bool(self._queue)

    def _next_samples(self) -> np.ndarray:
        if self._current is None and self._queue:
            self._current, self._pos = self._queue.popleft(), 0
        cur = self._current
        if cur is None:
            return self._silence
        chunk = cur.samples[self._pos : self._pos + AUDIO_FRAME]
        self._pos += AUDIO_FRAME
        if self._pos >= len(cur.samples):
            self._current = None
        if len(chunk) < AUDIO_FRAME:
            chunk = np.concatenate([chunk, self._silence[: AUDIO_FRAME - len(chunk)]])
        return chunk

    def _mouth_now(self) -> tuple[MouthShape, bool]:
        cur = self._current
        if cur is None:
            return REST, False
        return mouth_at(cur.visemes, self._pos * 1000 / OUT_RATE), True

    # ------------------------------------------------------------------ clocks
    async def _tick(self, n: int, period: float, max_late: float) -> int:
        """Sleep until tick ``n``; a clock more than ``max_late`` s behind skips ahead."""
        now = time.monotonic()
        due = self._t0 + n * period
        if due - now > 0:
            await asyncio.sleep(due - now)
        elif now - due > max_late:
            n = int((now - self._t0) / period)
        return n

    async def _video_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period, n = 1.0 / self.fps, 0
        while True:
            n = await self._tick(n, period, 0.2)  # late frames are stale: skip
            if self._tracks:
                mouth, speaking = self._mouth_now()
                key, self._want_key = self._want_key, False
                packets = await loop.run_in_executor(
                    self._executor, self._render, n * period, mouth, speaking, key
                )
                for packet in packets:
                    packet.pts, packet.time_base = round(n * period * VIDEO_CLOCK), _VIDEO_TB
                    for track in [t for t in self._tracks if t.kind == "video"]:
                        track.push(packet)
            n += 1

    def _render(self, t: float, mouth: MouthShape, speaking: bool, key: bool) -> list[av.Packet]:
        rgb = self.face.render(t, mouth, speaking)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        if key:
            frame.pict_type = av.video.frame.PictureType.I
        self.frames_rendered += 1
        return list(self._video_enc.encode(frame))

    async def _audio_loop(self) -> None:
        n = 0
        while True:
            n = await self._tick(n, AUDIO_PERIOD, 1.0)  # catch up: lost audio is heard
            pcm = self._next_samples()
            if pcm is not self._silence:
                self._played.set()
            if any(t.kind == "audio" for t in self._tracks):
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts = OUT_RATE, n * AUDIO_FRAME
                for packet in self._audio_enc.encode(frame):
                    packet.pts, packet.time_base = n * AUDIO_FRAME, _AUDIO_TB
                    self.audio_packets += 1
                    for track in [t for t in self._tracks if t.kind == "audio"]:
                        track.push(packet)
            n += 1

    # ------------------------------------------------------------------ encoders
    @staticmethod
    def _make_video_encoder(width: int, height: int, fps: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = fractions.Fraction(1, fps)
        codec.framerate = fractions.Fraction(fps, 1)
        # a drawn face compresses well: about 0.1 bit per pixel is plenty
        rate = max(150_000, int(width * height * fps * 0.1))
        codec.bit_rate = rate
        codec.gop_size = fps * 4  # periodic keyframes, besides those viewers ask for
        codec.thread_count = 1
        codec.options = {
            "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
            "minrate": str(rate), "maxrate": str(rate), "bufsize": str(rate),
            "undershoot-pct": "100", "overshoot-pct": "15", "static-thresh": "1",
            "partitions": "0", "error-resilient": "1",
        }
        return codec

    @staticmethod
    def _make_audio_encoder() -> av.AudioCodecContext:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate, codec.format, codec.layout = OUT_RATE, "s16", "mono"
        codec.bit_rate = 32_000
        codec.time_base = _AUDIO_TB
        codec.options = {"application": "voip"}
        return codec


class Speaker:
    """Speaks a session's texts a piece at a time, so its audio buffer stays bounded.

    A text is cut into pieces of a few seconds (``split_for_speech``); the next piece is
    synthesised only when the session's queued audio leaves room for a whole piece, so at most
    ``buffer_bytes`` of PCM are ever queued, whatever the text's length or how many there are.
    At most ``max_pending`` texts wait their turn (the one being synthesised counts); more are
    refused with ``SpeechBusy``. ``interrupt`` forgets the waiting texts and the rest of the
    current one, and drops the queued audio.

    Args:
        media: the session's media, which plays the pieces.
        voice: the session's espeak-ng voice.
        executor: the thread that runs espeak-ng.
        buffer_bytes: the most PCM (48 kHz mono 16-bit: 96,000 bytes a second) queued at once;
            a piece is at most half of it.
        max_pending: how many texts may wait to be spoken.
    """

    def __init__(
        self, media: SessionMedia, voice: Voice, executor: Executor, *, buffer_bytes: int,
        max_pending: int,
    ) -> None:
        if buffer_bytes < 2 * 2 * AUDIO_FRAME or max_pending < 1:
            raise ValueError("the speech buffer must hold at least 40 ms and one text")
        self.media = media
        self.voice = voice
        self.buffer_bytes = buffer_bytes
        self.piece_bytes = buffer_bytes // 2
        self.max_pending = max_pending
        self._executor = executor
        self._waiting: deque[str] = deque()
        self._current: str | None = None
        self._generation = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Texts accepted and not yet wholly synthesised (waiting, or being synthesised)."""
        return len(self._waiting) + (self._current is not None)

    @property
    def full(self) -> bool:
        """Whether a new text would be refused."""
        return self.pending >= self.max_pending

    def start(self) -> None:
        """Start synthesising whatever is queued."""
        self._task = asyncio.create_task(self._run(), name="local-avatar-speech")

    def enqueue(self, text: str) -> None:
        """Queue ``text`` after what is being said; ``SpeechBusy`` when too many are waiting."""
        if self.full:
            raise SpeechBusy()
        self._waiting.append(text)
        self._wake.set()

    def interrupt(self) -> None:
        """Forget every waiting text and the rest of the current one; silence at once."""
        self._generation += 1
        self._waiting.clear()
        self._current = None  # its synthesis stops at the next piece (generation check)
        self.media.interrupt()

    async def aclose(self) -> None:
        """Stop synthesising and drop everything queued (idempotent)."""
        self.interrupt()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            self._current = self._waiting.popleft()
            try:
                await self._speak(self._current, self._generation)
            except Exception:  # one text that cannot be spoken must not silence the session
                log.exception("the local avatar could not speak a text; it is skipped")
            finally:
                self._current = None

    async def _speak(self, text: str, generation: int) -> None:
        pieces = deque(split_for_speech(text))
        while pieces:
            piece, sentence_end = pieces.popleft()
            budget = self.piece_bytes
            while True:
                await self.media.wait_buffered_at_most(self.buffer_bytes - budget)
                if generation != self._generation:
                    return
                utterance = await self._synthesize(piece, budget, sentence_end)
                if generation != self._generation:
                    return  # interrupted while espeak-ng ran: the audio is dropped here
                if utterance.complete or budget == self.buffer_bytes or " " in piece:
                    break
                # one word longer than a piece (a long number read out): wait until the
                # buffer is empty and give it the whole buffer
                budget = self.buffer_bytes
            if not utterance.complete:
                halves = halve(piece)
                if halves is not None:  # more speech than a piece holds: say it in two
                    pieces.extendleft([(halves[1], sentence_end), (halves[0], False)])
                    continue
                log.info("one word is longer than the speech buffer; it is cut")
            self.media.speak(utterance)

    async def _synthesize(self, piece: str, max_bytes: int, sentence_end: bool) -> Utterance:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(
                synthesize, piece, self.voice, max_samples=max_bytes // 2,
                end_pause=sentence_end,
            ),
        )
