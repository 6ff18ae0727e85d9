"""The local avatar end to end: the real provider, an aiortc viewer, real media."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from bot.core.errors import InvalidRequest, SessionNotLive
from bot.providers.local import LocalProvider

from .conftest import PRICING, eventually, request

LONG = ("Good morning everyone. This is a long sentence that keeps going for a while, so that "
        "there is plenty of speech to interrupt in the middle of it, about the weather, the "
        "mountains, the sea and a great many other wonderful things.")


def mouth_darkness(image: np.ndarray) -> int:
    """Dark pixels (the open mouth) in the mouth area of a frame of Ada, at any size.

    Counted in pixels of a 320x240 frame, so the thresholds below hold at every size.
    """
    k = image.shape[0] / 240  # the face is drawn in units of height / 240
    cx = image.shape[1] / 2
    box = image[int(126 * k):int(162 * k), int(cx - 30 * k):int(cx + 30 * k)].astype(np.int32)
    luma = (box[..., 0] * 3 + box[..., 1] * 6 + box[..., 2]) // 10
    return int((luma < 70).sum() / (k * k))


async def _frames_between(viewer, t0: float, t1: float) -> list[np.ndarray]:
    return [img for t, img in viewer.frames if t0 <= t < t1]


async def test_frames_arrive_at_the_set_rate_and_size(provider, viewers):
    ps = await provider.start(request())
    v = viewers(provider, ps)
    t0 = time.monotonic()
    await v.connect()
    first = await v.wait_first_frame()
    # A person sees the picture promptly; the 0.5 s target is measured in bench/local_avatar.py,
    # this only catches a stream that stalls (a loaded CI machine must not fail it).
    assert first - t0 < 3.0, "first frame should arrive within seconds of the offer"
    await asyncio.sleep(0.5)
    rendered0, n0, w0 = provider.media_stats(ps)["frames_rendered"], len(v.frames), time.monotonic()
    await asyncio.sleep(3.0)
    elapsed = time.monotonic() - w0
    rendered = (provider.media_stats(ps)["frames_rendered"] - rendered0) / elapsed
    received = (len(v.frames) - n0) / elapsed
    fps = provider.fps
    # Paced by the clock: never faster than the set rate, and not starved (loose lower bound: the
    # precise figure is the bench's job).
    assert 0.6 * fps <= rendered <= 1.1 * fps, (fps, rendered, received)
    assert received >= 0.75 * rendered, (rendered, received)
    assert v.frames[-1][1].shape == (provider.height, provider.width, 3)


async def test_the_default_size_streams(hub, viewers):
    prov = LocalProvider(events=hub, pricing=PRICING, allow_loopback=True)
    try:
        ps = await prov.start(request())
        v = viewers(prov, ps)
        await v.connect()
        await v.wait_first_frame()
        await asyncio.sleep(0.5)
        rendered0, w0 = prov.media_stats(ps)["frames_rendered"], time.monotonic()
        await asyncio.sleep(2.0)
        rendered = (prov.media_stats(ps)["frames_rendered"] - rendered0) / (time.monotonic() - w0)
        assert v.frames[-1][1].shape == (480, 640, 3)
        # a loose bar that still catches a stalled renderer: the machine running the tests is
        # shared (bench/local_avatar.py measures the real rate)
        assert rendered >= 0.4 * prov.fps, rendered
    finally:
        await prov.aclose()


def test_the_provider_defaults_are_the_settings_defaults():
    # one default size and rate, chosen with bench/local_avatar.py (10 viewers well under 60%
    # of a core), whether the provider is built by the app or on its own
    from bot.settings import Settings

    fields = Settings.model_fields
    prov = LocalProvider.__init__.__kwdefaults__
    assert (prov["width"], prov["height"], prov["fps"]) == (
        fields["local_video_width"].default, fields["local_video_height"].default,
        fields["local_video_fps"].default)
    assert prov["height"] >= 480  # shown at about 560 lines in the viewer: drawn near that


async def test_audio_arrives_and_mouth_moves_only_while_speaking(provider, viewers, hub):
    ps = await provider.start(request())
    v = viewers(provider, ps)
    await v.connect()
    await v.wait_first_frame()
    await asyncio.sleep(0.3)
    quiet_from = time.monotonic()
    await asyncio.sleep(1.2)
    quiet_to = time.monotonic()
    async with hub.subscribe(ps.session_id) as events:
        await provider.say(ps, "Hello, I am Ada. Papa made a lovely apple pie.")
        line = await asyncio.wait_for(events.get(), 1)
    assert line.speaker == "avatar" and "lovely apple pie" in line.text
    talk_from = time.monotonic()
    await asyncio.sleep(2.0)
    talk_to = time.monotonic()

    quiet = [mouth_darkness(img) for img in await _frames_between(v, quiet_from, quiet_to)]
    talk = [mouth_darkness(img) for img in await _frames_between(v, talk_from, talk_to)]
    assert len(quiet) >= 12 and len(talk) >= 20
    assert max(quiet) < 15, quiet  # closed mouth, even though the head sways
    assert max(talk) > 60, talk  # the mouth opens...
    assert len({d // 20 for d in talk}) >= 3, talk  # ...and changes shape

    quiet_audio = [r for t, r in v.audio if quiet_from <= t < quiet_to]
    talk_audio = [r for t, r in v.audio if talk_from <= t < talk_to]
    assert len(quiet_audio) >= 45  # 20 ms packets keep flowing in silence
    assert max(quiet_audio) < 50
    assert max(talk_audio) > 500


async def test_mouth_moves_in_step_with_the_audio(provider, viewers):
    ps = await provider.start(request())
    v = viewers(provider, ps)
    await v.connect()
    await v.wait_first_frame()
    for _ in range(2):
        await asyncio.sleep(0.6)
        t0 = time.monotonic()
        await provider.say(ps, "Aah.")
        await asyncio.sleep(1.2)
        sound = [t for t, r in v.audio if t > t0 and r > 300]
        mouth = [t for t, img in v.frames if t > t0 and mouth_darkness(img) > 30]
        assert sound and mouth
        # within about one video frame (67 ms) plus the receiver's audio buffering, with room
        # for a loaded machine; a mouth out of step by a whole word (> 0.3 s) still fails
        assert abs(mouth[0] - sound[0]) < 0.3, (mouth[0] - t0, sound[0] - t0)
        assert abs(mouth[-1] - sound[-1]) < 0.3, (mouth[-1] - t0, sound[-1] - t0)


async def test_interrupt_silences_audio_within_200_ms(provider, viewers):
    ps = await provider.start(request())
    v = viewers(provider, ps, keep_frames=False)
    await v.connect()
    await v.wait_first_frame()
    await provider.say(ps, LONG)
    await eventually(lambda: any(r > 500 for _, r in v.audio[-5:]))
    await asyncio.sleep(0.5)
    assert any(r > 500 for _, r in v.audio[-25:]), "speech should be playing"
    t_int = time.monotonic()
    await provider.interrupt(ps)
    await asyncio.sleep(0.8)
    loud_after = [t - t_int for t, r in v.audio if t > t_int and r > 50]
    assert max(loud_after, default=0.0) < 0.2, loud_after
    # and it stays quiet: nothing queued resumes
    assert all(r < 50 for t, r in v.audio if t > t_int + 0.2)
    # speech still being synthesised when the interrupt came is dropped too
    say = asyncio.create_task(provider.say(ps, LONG))
    await asyncio.sleep(0)  # the say is now waiting for espeak-ng
    await provider.interrupt(ps)
    await say
    await asyncio.sleep(0.4)
    assert all(r < 50 for t, r in v.audio if t > t_int + 0.2)
    # the avatar can speak again afterwards
    await provider.say(ps, "Right, where was I?")
    await asyncio.sleep(0.8)
    assert any(r > 500 for t, r in v.audio if t > t_int + 1.2)


async def test_many_viewers_share_one_rendering(provider, viewers):
    ps = await provider.start(request())
    group = [viewers(provider, ps, f"v{i}", keep_frames=False) for i in range(4)]
    for v in group:
        await v.connect()
    for v in group:
        await v.wait_first_frame()
    assert provider.viewer_count(ps) == 4
    before = provider.media_stats(ps)["frames_rendered"]
    t0 = time.monotonic()
    counts = [len(v.frames) for v in group]
    await asyncio.sleep(2.5)
    elapsed = time.monotonic() - t0
    rendered = provider.media_stats(ps)["frames_rendered"] - before
    received = [len(v.frames) - c for v, c in zip(group, counts, strict=True)]
    # drawn once per tick for everyone, not once per viewer
    fps = provider.fps
    assert fps * elapsed * 0.6 <= rendered <= fps * elapsed * 1.1 + 2, rendered
    assert all(r >= rendered * 0.75 for r in received), (rendered, received)


async def test_leave_and_vanished_viewers_are_cleaned_up(provider, viewers):
    ps = await provider.start(request())
    a, b, c = (viewers(provider, ps, name, keep_frames=False) for name in ("a", "b", "c"))
    for v in (a, b, c):
        await v.connect()
        await v.wait_first_frame()
    await provider.viewer_leave(ps, "a")
    await provider.viewer_leave(ps, "a")  # leaving twice is fine
    assert provider.viewer_count(ps) == 2
    # a viewer that just goes away (tab closed) is dropped when its connection closes
    await c.close()
    await eventually(lambda: provider.viewer_count(ps) <= 1, within=5)
    assert provider.viewer_count(ps) == 1
    n = len(b.frames)
    assert await eventually(lambda: len(b.frames) > n + 5, within=5), \
        "the remaining viewer keeps receiving"


async def test_abandoned_offers_are_dropped(provider, viewers):
    provider.connect_timeout_s = 0.5
    ps = await provider.start(request())
    await provider.viewer_offer(ps, "ghost")  # asked for an offer, never answered
    ok = viewers(provider, ps, "ok", keep_frames=False)
    await ok.connect()
    await ok.wait_first_frame()
    assert provider.viewer_count(ps) == 2
    assert await eventually(lambda: provider.viewer_count(ps) == 1, within=3)
    await asyncio.sleep(0.5)
    assert provider.viewer_count(ps) == 1  # the connected viewer stays


async def test_stop_frees_everything(hub, viewers):
    threads_before = threading.active_count()
    tasks_before = set(asyncio.all_tasks())
    prov = LocalProvider(events=hub, pricing=PRICING, allow_loopback=True)
    ps = await prov.start(request())
    group = [viewers(prov, ps, f"v{i}", keep_frames=False) for i in range(2)]
    for v in group:
        await v.connect()
        await v.wait_first_frame()
    await prov.say(ps, "Goodbye.")
    await prov.stop(ps)
    await prov.stop(ps)  # idempotent
    assert prov.viewer_count(ps) == 0
    with pytest.raises(SessionNotLive):
        await prov.say(ps, "still there?")
    with pytest.raises(SessionNotLive):
        await prov.viewer_offer(ps, "late")
    # the viewers' streams end: no more frames arrive
    await asyncio.sleep(0.3)
    counts = [len(v.frames) for v in group]
    await asyncio.sleep(0.5)
    assert [len(v.frames) for v in group] == counts
    for v in group:
        await v.close()
    await prov.aclose()
    await prov.aclose()
    def leaked() -> set[asyncio.Task]:
        return set(asyncio.all_tasks()) - tasks_before - {asyncio.current_task()}

    await eventually(lambda: not leaked() and threading.active_count() <= threads_before)
    assert not leaked(), leaked()
    assert threading.active_count() <= threads_before


async def test_offer_is_complete_and_loopback_only_when_allowed(hub, provider):
    ps = await provider.start(request())
    offer = await provider.viewer_offer(ps, "v1")
    sdp = offer["sdp"]
    assert "a=candidate:" in sdp and "127.0.0.1" in sdp
    assert "VP8/90000" in sdp and "opus/48000" in sdp.lower()
    assert "H264" not in sdp  # one encoding shared by all viewers: VP8 only
    assert "typ srflx" not in sdp  # no STUN server unless configured
    await provider.viewer_leave(ps, "v1")

    closed = LocalProvider(events=hub, pricing=PRICING,
                           ice_servers=[{"urls": ["turn:turn.example.org:3478"],
                                         "username": "u", "credential": "c"}])
    try:
        ps2 = await closed.start(request("s2"))
        assert ps2.viewer.transport == "webrtc"
        # Static TURN credentials are the server's own: viewers never get them (issue 16).
        assert ps2.viewer.ice_servers == []
    finally:
        await closed.aclose()


async def test_no_loopback_by_default(hub):
    prov = LocalProvider(events=hub, pricing=PRICING)
    try:
        ps = await prov.start(request())
        assert ps.viewer.ice_servers == []
        sdp = (await prov.viewer_offer(ps, "v1"))["sdp"]
        assert "127.0.0.1" not in sdp
    finally:
        await prov.aclose()


async def test_bad_signalling_gets_clear_errors(provider):
    ps = await provider.start(request())
    with pytest.raises(InvalidRequest, match="new offer"):
        await provider.viewer_answer(ps, "nobody", "v=0\r\n")
    with pytest.raises(InvalidRequest, match="new offer"):
        await provider.viewer_candidate(ps, "nobody", None)
    await provider.viewer_offer(ps, "v1")
    with pytest.raises(InvalidRequest, match="SDP"):
        await provider.viewer_answer(ps, "v1", "hello")
    with pytest.raises(InvalidRequest, match="candidate"):
        await provider.viewer_candidate(ps, "v1", {"candidate": "candidate:nonsense"})
    with pytest.raises(InvalidRequest, match="candidate"):
        await provider.viewer_candidate(ps, "v1", {"sdpMid": "0"})
    # the viewer can still connect after the bad input
    assert provider.viewer_count(ps) == 1
