"""Fixtures for the local avatar: the real provider and an in-process aiortc viewer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from bot.core.events import EventHub
from bot.core.models import Pricing, StartRequest
from bot.providers.local import LocalProvider

PRICING = Pricing(credits_per_minute=1, granularity_s=60, minimum_s=60)


class Viewer:
    """An aiortc peer that answers the provider's offer like the browser page does.

    It trickles its candidates separately (before its answer, so the provider must buffer
    them) and records every decoded video frame and audio frame with its arrival time.
    """

    def __init__(self, provider: LocalProvider, session, viewer_id: str = "v1",
                 keep_frames: bool = True) -> None:
        self.provider, self.session, self.viewer_id = provider, session, viewer_id
        self.keep_frames = keep_frames
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: list[tuple[float, np.ndarray | None]] = []
        self.audio: list[tuple[float, float]] = []  # (arrival, RMS of the frame)
        self.first_frame = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task] = []
        self.offer_sdp = ""
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        reader = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.create_task(reader(track)))

    async def _read_video(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if not self.first_frame.done():
                    self.first_frame.set_result(now)
                image = frame.to_ndarray(format="rgb24") if self.keep_frames else None
                self.frames.append((now, image))

    async def _read_audio(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().astype(np.float32)
                self.audio.append((time.monotonic(), float(np.sqrt(np.mean(pcm**2)))))

    async def connect(self) -> None:
        offer = await self.provider.viewer_offer(self.session, self.viewer_id)
        assert offer["type"] == "offer"
        self.offer_sdp = offer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        lines = self.pc.localDescription.sdp.splitlines()
        mid = next(line.split(":", 1)[1] for line in lines if line.startswith("a=mid:"))
        candidates = []
        for line in lines:
            if line.startswith("a=candidate:"):
                candidates.append(line[2:])
            elif line.startswith("m=") and candidates:
                break
        stripped = [
            line for line in lines
            if not line.startswith(("a=candidate:", "a=end-of-candidates"))
        ]
        # the browser trickles: candidates may come before the answer
        for cand in candidates:
            await self.provider.viewer_candidate(
                self.session, self.viewer_id,
                {"candidate": cand, "sdpMid": mid, "sdpMLineIndex": 0},
            )
        await self.provider.viewer_candidate(self.session, self.viewer_id, None)
        await self.provider.viewer_answer(self.session, self.viewer_id,
                                          "\r\n".join(stripped) + "\r\n")

    async def wait_first_frame(self, within: float = 5.0) -> float:
        return await asyncio.wait_for(asyncio.shield(self.first_frame), within)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(predicate, within: float = 3.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``within`` seconds pass; return its last value."""
    for _ in range(int(within / step)):
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


@pytest.fixture
def hub() -> EventHub:
    return EventHub()


@pytest.fixture
async def provider(hub):
    # the tests' viewers decode VP8 in this process: the small size keeps the timing checks
    # steady on a busy machine (test_stream.py checks the default size on its own)
    prov = LocalProvider(events=hub, pricing=PRICING, width=320, height=240, fps=15,
                         allow_loopback=True)
    yield prov
    await prov.aclose()


def request(session_id: str = "s1", avatar: str = "ada", knowledge: str | None = None,
            **kw) -> StartRequest:
    return StartRequest(session_id=session_id, avatar_id=avatar, duration_s=300,
                        knowledge=knowledge, **kw)


@pytest.fixture
async def viewers():
    made: list[Viewer] = []

    def make(provider, session, viewer_id="v1", **kw) -> Viewer:
        v = Viewer(provider, session, viewer_id, **kw)
        made.append(v)
        return v

    yield make
    for v in made:
        await v.close()
