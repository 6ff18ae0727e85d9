"""aiortc internals avatarbot relies on (tested with aiortc 1.16.0).

When a viewer reports a lost picture (RTCP PLI or FIR), ``RTCRtpSender._handle_rtcp_packet``
calls the sender's private ``_send_keyframe``, which asks the sender's own encoder for a
keyframe. The local avatar encodes each frame once for every viewer and hands aiortc the
encoded packets, so the sender has no encoder of its own: the request must reach the shared
one instead. ``route_keyframe_requests`` replaces ``_send_keyframe`` on one sender instance.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpSender

from bot.compat import Fence

TESTED = "1.16.0"
FENCE = Fence("aiortc", TESTED, "bot/compat/aiortc_compat.py")

FENCE.require(RTCRtpSender, "_send_keyframe", callable_=True)
FENCE.require_read(RTCRtpSender._handle_rtcp_packet, "_send_keyframe")


def route_keyframe_requests(sender: RTCRtpSender, request_keyframe: Callable[[], None]) -> None:
    """Make a viewer's PLI/FIR on ``sender`` call ``request_keyframe``."""
    sender._send_keyframe = request_keyframe  # type: ignore[method-assign]
