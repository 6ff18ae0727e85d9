"""Bounded resources of the local avatar: its speech buffer, and the caps on sessions and viewers.

The attack these guard against (issue 16): one playground visitor sent 2,000-character ``say``s,
each of which queued about 13 MiB of audio at once; the process grew from 120 to 950 MiB in 80 s
and kept it after interrupt and stop. Real espeak-ng, real aiortc peers; RSS from /proc.
"""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import pytest

from bot.app import build_providers
from bot.core.errors import AtCapacity, SessionNotLive, SpeechBusy
from bot.core.events import EventHub
from bot.core.models import PLAYGROUND
from bot.core.service import SessionService, StartCommand
from bot.providers.local import LocalProvider
from bot.providers.local import provider as local_provider
from bot.providers.local.speech import MAX_PIECE_CHARS, split_for_speech
from bot.settings import load_settings
from bot.storage import SqliteStore

from .conftest import PRICING, eventually, request
from .memory import MiB, attack_text, rss, watch_speech

# The longest text the service lets through to the built-in avatar (its capabilities' bound;
# test_max_text_is_the_built_in_avatars_bound keeps the two equal).
MAX_TEXT = 500


async def test_max_text_is_the_built_in_avatars_bound() -> None:
    prov = local_provider.LocalProvider(events=EventHub(), pricing=PRICING)
    try:
        assert prov.capabilities.max_text_chars == MAX_TEXT
    finally:
        await prov.aclose()

BUFFER = local_provider.SPEECH_BUFFER_BYTES  # 960,000 bytes: 10 s of 48 kHz mono 16-bit
# Whole-process RSS bounds, generous because the process also runs aiortc, VP8 and the test
# itself: before this change the 20 says below grew it by about 20 x 13 MiB = 260 MiB.
PEAK_GROWTH = 40 * MiB
AFTER_GROWTH = 24 * MiB  # after interrupt or stop, with gc.collect() first

def long_text(seed: int) -> str:
    """A text of the longest length the service lets through (``MAX_TEXT``)."""
    return attack_text(seed, MAX_TEXT)


async def test_twenty_longest_says_stay_within_the_buffer_and_are_freed(hub, viewers):
    # every say accepted, so the bound comes from streaming the synthesis, not from refusing
    prov = LocalProvider(events=hub, pricing=PRICING, allow_loopback=True, max_pending_says=20)
    try:
        ps = await prov.start(request())
        v = viewers(prov, ps, keep_frames=False)
        await v.connect()
        await v.wait_first_frame()
        await prov.say(ps, "Warming up.")  # espeak-ng's own first-use allocations
        await asyncio.sleep(1.0)
        gc.collect()
        before = rss()
        for i in range(20):
            await prov.say(ps, long_text(i))
        assert prov.media_stats(ps)["speech_pending"] >= 19
        t_said = time.monotonic()
        most, peak = await watch_speech(prov, ps, 4.0)
        assert 0 < most <= BUFFER, most
        assert peak - before <= PEAK_GROWTH, (before / MiB, peak / MiB)
        # and the visitor hears continuous speech meanwhile
        loud = [r for t, r in v.audio if t > t_said + 0.5 and r > 300]
        assert len(loud) >= 60, len(loud)  # at least 1.2 s of sound in 3.5 s

        await prov.interrupt(ps)
        stats = prov.media_stats(ps)
        assert stats["speech_buffered_bytes"] == 0 and stats["speech_pending"] == 0
        await asyncio.sleep(0.5)
        assert prov.media_stats(ps)["speech_buffered_bytes"] == 0  # nothing resumes
        gc.collect()
        after_interrupt = rss()
        assert after_interrupt - before <= AFTER_GROWTH, (before / MiB, after_interrupt / MiB)

        # again, then stop
        for i in range(20):
            await prov.say(ps, long_text(100 + i))
        most, peak2 = await watch_speech(prov, ps, 1.5)
        assert 0 < most <= BUFFER
        await prov.stop(ps)
        with pytest.raises(SessionNotLive):
            prov.media_stats(ps)
        gc.collect()
        after_stop = rss()
        assert after_stop - before <= AFTER_GROWTH, (before / MiB, after_stop / MiB)
        print(f"RSS MiB before {before / MiB:.1f} peak {max(peak, peak2) / MiB:.1f} "
              f"after interrupt {after_interrupt / MiB:.1f} after stop {after_stop / MiB:.1f}")
    finally:
        await prov.aclose()


async def test_too_many_waiting_texts_are_refused_until_interrupt(provider, hub):
    ps = await provider.start(request())
    accepted = 0
    refused: list[SpeechBusy] = []
    async with hub.subscribe(ps.session_id) as events:
        for i in range(20):
            try:
                await provider.say(ps, long_text(i))
                accepted += 1
            except SpeechBusy as exc:
                refused.append(exc)
        assert all(len(long_text(i)) == MAX_TEXT for i in range(20))
        lines = []
        while not events.empty():
            lines.append(events.get_nowait())
    assert accepted == local_provider.MAX_PENDING_SAYS and len(refused) == 20 - accepted
    assert refused[0].user_message == "The avatar is still speaking; wait or interrupt."
    # only what was accepted reaches the thread as the avatar's words
    assert [e.text for e in lines] == [long_text(i) for i in range(accepted)]
    with pytest.raises(SpeechBusy):  # ask is refused before any answer is looked up
        await provider.ask(ps, "What now?")
    await provider.interrupt(ps)
    await provider.say(ps, "Right, where was I?")  # room again
    assert provider.media_stats(ps)["speech_pending"] <= 1


async def test_a_short_say_still_starts_at_once_and_plays_whole(provider, viewers):
    ps = await provider.start(request())
    v = viewers(provider, ps, keep_frames=False)
    await v.connect()
    await v.wait_first_frame()
    t0 = time.monotonic()
    await provider.say(ps, "One two three four five six seven eight nine ten. " * 2)
    assert await eventually(lambda: any(t > t0 and r > 500 for t, r in v.audio), within=1.0)
    first = min(t for t, r in v.audio if t > t0 and r > 500)
    assert first - t0 < 0.4, first - t0
    await eventually(lambda: not provider.media_stats(ps)["speech_buffered_bytes"], within=15)
    await asyncio.sleep(0.3)
    loud = [t for t, r in v.audio if t > t0 and r > 500]
    # two sentences of ten numbers each: about 7 s of speech, all of it heard
    assert loud[-1] - loud[0] > 5.0, loud[-1] - loud[0]


def test_texts_are_cut_into_short_pieces_without_losing_a_word():
    text = long_text(7) + " " + "9" * 40 + " https://example.org/a/very/long/address/indeed"
    pieces = split_for_speech(text)
    assert all(0 < len(p) <= MAX_PIECE_CHARS for p, _ in pieces)
    assert "".join(p for p, _ in pieces).replace(" ", "") == text.replace(" ", "")
    # a sentence end gets espeak-ng's end pause; a cut inside a sentence does not
    assert split_for_speech("Hello there. Bye!") == [("Hello there.", True), ("Bye!", True)]
    cut = split_for_speech(" ".join(["word"] * 40) + ".")
    assert [end for _, end in cut] == [False] * (len(cut) - 1) + [True]


async def test_a_small_buffer_holds_even_for_numbers_read_out_long(hub, viewers):
    # 96,000 bytes (1 s): every piece is at most 0.5 s, so most pieces are halved again
    prov = LocalProvider(events=hub, pricing=PRICING, allow_loopback=True,
                         speech_buffer_bytes=96_000)
    try:
        ps = await prov.start(request())
        v = viewers(prov, ps, keep_frames=False)
        await v.connect()
        await v.wait_first_frame()
        t0 = time.monotonic()
        await prov.say(ps, "1234567 7654321 2345678. " * 3)
        most, _ = await watch_speech(prov, ps, 3.0)
        assert 0 < most <= 96_000, most
        loud = [r for t, r in v.audio if t > t0 and r > 300]
        assert len(loud) >= 40, len(loud)  # the numbers are spoken, not dropped
    finally:
        await prov.aclose()


async def test_sessions_beyond_the_cap_are_refused_and_cost_nothing(tmp_path):
    store = await SqliteStore.open(tmp_path / "cap.db")
    hub = EventHub()
    prov = LocalProvider(events=hub, pricing=PRICING, max_sessions=2)
    service = SessionService(store=store, providers={"local": prov}, events=hub)
    # one session per server: the process-wide cap is reached before any tenant's own limit
    tenants = [f"discord:{i}" for i in range(6)]

    def cmd(i: int) -> StartCommand:
        return StartCommand(tenant=tenants[i], user="u1", provider="local", minutes=2)

    try:
        for tenant in tenants:
            await store.grant(tenant, 100, "operator")
        live = [await service.start(cmd(0)), await service.start(cmd(1))]
        with pytest.raises(AtCapacity) as info:
            await service.start(cmd(2))
        assert info.value.user_message == ("The built-in avatar is at capacity (2 sessions); "
                                           "try again later.")
        assert info.value.retryable
        refused = await store.balance(tenants[2])
        assert (refused.available, refused.pending) == (100, 0)  # the reservation is released
        assert await store.verify() == []
        # concurrent starts cannot slip past the cap while others are still starting
        await service.stop(live[0].id)
        results = await asyncio.gather(*(service.start(cmd(i)) for i in (3, 4, 5)),
                                       return_exceptions=True)
        assert sum(isinstance(r, AtCapacity) for r in results) == 2, results
        assert prov.sessions_total == 2
        assert await store.verify() == []
    finally:
        await prov.aclose()
        await store.close()


async def test_viewers_beyond_the_caps_are_refused(hub, viewers):
    prov = LocalProvider(events=hub, pricing=PRICING, allow_loopback=True, max_viewers=3,
                         max_viewers_per_session=2)
    try:
        a = await prov.start(request("a"))
        b = await prov.start(request("b"))
        for name in ("a1", "a2"):
            await viewers(prov, a, name, keep_frames=False).connect()
        with pytest.raises(AtCapacity, match=r"as many viewers as it can serve \(2\)"):
            await prov.viewer_offer(a, "a3")
        b1 = viewers(prov, b, "b1", keep_frames=False)
        await b1.connect()
        await b1.wait_first_frame()
        with pytest.raises(AtCapacity) as info:
            await prov.viewer_offer(b, "b2")
        assert info.value.user_message == ("The built-in avatar is at capacity (3 viewers); "
                                           "try again later.")
        assert prov.viewers_total == 3
        # a viewer that reconnects with its own id is not a new one
        again = viewers(prov, b, "b1", keep_frames=False)
        await again.connect()
        await again.wait_first_frame()
        await prov.viewer_leave(a, "a1")  # a place frees up
        await viewers(prov, b, "b2", keep_frames=False).connect()
        assert prov.viewers_total == 3
    finally:
        await prov.aclose()


def test_settings_reach_the_provider_and_match_its_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    defaults = load_settings()
    assert (defaults.local_max_sessions, defaults.local_max_viewers,
            defaults.local_max_viewers_per_session, defaults.local_speech_buffer_bytes,
            defaults.local_max_pending_says) == (
        local_provider.MAX_SESSIONS, local_provider.MAX_VIEWERS,
        local_provider.MAX_VIEWERS_PER_SESSION, local_provider.SPEECH_BUFFER_BYTES,
        local_provider.MAX_PENDING_SAYS)
    for key, value in (("LOCAL_MAX_SESSIONS", "3"), ("LOCAL_MAX_VIEWERS", "5"),
                       ("LOCAL_MAX_VIEWERS_PER_SESSION", "4"),
                       ("LOCAL_SPEECH_BUFFER_BYTES", "192000"),
                       ("LOCAL_MAX_PENDING_SAYS", "2")):
        monkeypatch.setenv(key, value)
    settings = load_settings()
    prov = build_providers(settings, None, EventHub())["local"]  # type: ignore[arg-type]
    assert isinstance(prov, LocalProvider)
    assert (prov.max_sessions, prov.max_viewers, prov.max_viewers_per_session,
            prov.speech_buffer_bytes, prov.max_pending_says) == (3, 5, 4, 192_000, 2)
    asyncio.run(prov.aclose())


async def test_a_full_server_answers_503_to_the_playground_and_to_signalling(tmp_path):
    from tests.web.conftest import page_socket, web_stack
    from web.home import COOKIE

    def capped(events: EventHub) -> dict[str, LocalProvider]:
        return {"local": LocalProvider(events=events, pricing=PRICING, allow_loopback=True,
                                       max_sessions=1, max_viewers=1)}

    async with web_stack(tmp_path, vendors=(), extra=capped) as stack, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        record = await stack.start("local")  # the only session this process may run
        await client.get(stack.url + "/")
        assert any(c.key == COOKIE for c in client.cookie_jar)
        playground = str(PLAYGROUND)
        before = await stack.store.balance(playground)
        async with client.post(stack.url + "/playground/start", json={}) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == (
                "The built-in avatar is at capacity (1 sessions); try again later.")
        after = await stack.store.balance(playground)
        assert (after.available, after.pending) == (before.available, 0)
        assert await stack.store.verify() == []

        link = stack.link(record.id)
        async with page_socket(client, link) as first, page_socket(client, link) as second:
            one = (await first.next("hello"))["viewer_id"]
            two = (await second.next("hello"))["viewer_id"]
            async with client.post(link + "/webrtc/offer", json={"viewer_id": one}) as r:
                assert r.status == 200
            async with client.post(link + "/webrtc/offer", json={"viewer_id": two}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "30"
                assert (await r.json())["error"] == (
                    "The built-in avatar is at capacity (1 viewers); try again later.")
