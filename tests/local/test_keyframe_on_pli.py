"""A viewer that loses its picture sends RTCP PLI; the local avatar must answer with a keyframe.

The local avatar's senders carry packets encoded once for every viewer, so aiortc's own
keyframe path (its sender's encoder) has nothing to act on: ``bot/compat/aiortc_compat.py``
routes the request to the shared encoder. This drives the real wire: the viewer's aiortc
receiver sends a PLI over SRTP and the provider's sender gets it like any browser's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from aiortc.codecs.vpx import VpxPayloadDescriptor

from .conftest import Viewer, eventually, request

# The avatar encodes a keyframe every 4 s on its own (GOP = 4 x fps), so keyframes within a
# fraction of a second of each PLI are the answers to it.
ANSWER_WITHIN_S = 0.8


class KeyframeViewer(Viewer):
    """A viewer that records when a VP8 keyframe starts arriving on the wire.

    (The libvpx decoder does not flag decoded frames as key frames, so this reads the RTP
    payload: a VP8 frame whose first byte has bit 0 clear is a key frame, RFC 6386 9.1.)
    """

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.keyframes: list[float] = []

    async def connect(self) -> None:
        await super().connect()
        video = self.offer_sdp.split("m=video", 1)[1]
        self.ssrc = int(re.search(r"^a=ssrc:(\d+) ", video, re.M).group(1))
        vp8 = int(re.search(r"^a=rtpmap:(\d+) VP8/90000", video, re.M | re.I).group(1))
        self.receiver = next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")
        handle = self.receiver._handle_rtp_packet

        async def watch(packet, arrival_time_ms: int) -> None:
            if packet.payload_type == vp8 and packet.payload:
                descriptor, data = VpxPayloadDescriptor.parse(packet.payload)
                if descriptor.partition_start and descriptor.partition_id == 0 and data \
                        and not data[0] & 1:
                    self.keyframes.append(time.monotonic())
            await handle(packet, arrival_time_ms)

        # the viewer peer's side of the wire: aiortc has no public hook for incoming RTP
        self.receiver._handle_rtp_packet = watch

    def keyframe_since(self, moment: float) -> Callable[[], bool]:
        """A check: has a keyframe started arriving after ``moment``?"""
        return lambda: any(t > moment for t in self.keyframes)

    async def send_pli(self) -> None:
        """What a browser does when it cannot decode: RTCP PLI for the avatar's video SSRC."""
        await self.receiver._send_rtcp_pli(self.ssrc)  # no public call in aiortc either


async def test_each_pli_from_a_viewer_gets_a_keyframe(provider) -> None:
    ps = await provider.start(request())
    viewer = KeyframeViewer(provider, ps)
    try:
        await viewer.connect()
        await viewer.wait_first_frame()
        assert await eventually(lambda: bool(viewer.keyframes)), "a viewer starts on a keyframe"
        for _ in range(2):
            await asyncio.sleep(1.0)
            sent = time.monotonic()
            await viewer.send_pli()
            answered = await eventually(viewer.keyframe_since(sent), within=ANSWER_WITHIN_S)
            assert answered, f"no keyframe within {ANSWER_WITHIN_S} s of a PLI: {viewer.keyframes}"
    finally:
        await viewer.close()
