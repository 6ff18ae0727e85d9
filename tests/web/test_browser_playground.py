"""The playground and viewer as a newcomer meets them, in real headless Chromium at desktop and
phone width (issue 14): per-visitor sessions, tabs that end their session when they go, the chat
controls (Interrupt, the character counter, empty messages), a page that cannot get media saying
why, transcripts that survive a reload and the end, accessibility (axe-core) and a console free
of errors. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bot.core.events import Warning
from bot.core.models import SessionState
from tests.web.conftest import ARTIFACTS, ROOT, chromium_args, ensure_bundles, guard_page, web_stack

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
VIEWPORTS = (("desktop", DESKTOP), ("phone", PHONE))
AXE = ROOT / "tests/web/vendor/axe.min.js"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    ensure_bundles()
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=chromium_args())
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def stack(tmp_path: Path) -> AsyncIterator[Any]:
    async with web_stack(tmp_path, vendors=(), local=True, playground_max_concurrent=4,
                         playground_leave_grace_s=1.0, playground_heartbeat_s=120) as s:
        yield s


class Page:
    """A page in its own browser context, with every console error and page error kept."""

    def __init__(self, ctx: Any, page: Any) -> None:
        self.ctx, self.page = ctx, page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)


async def new_page(browser: Any, stack: Any, viewport: dict[str, int]) -> Page:
    phone = viewport is PHONE
    ctx = await browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone)
    await ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    page = await ctx.new_page()
    await guard_page(page, stack.url)
    return Page(ctx, page)


async def until(page: Any, condition: str, timeout_ms: int = 5_000) -> None:
    """Wait until a JS condition holds (as a function: the page's CSP forbids eval)."""
    try:
        await page.wait_for_function(f"() => ({condition})", timeout=timeout_ms)
    except Exception as exc:
        state = await page.evaluate("""() => {
            const text = (id) => (document.getElementById(id) || {}).innerText;
            return {status: window.avatarViewer && window.avatarViewer.status,
                    notice: text('notice'), error: text('chat-error')};
        }""")
        raise AssertionError(f"timed out waiting for {condition!r}; page state {state}") from exc


async def shot(page: Any, name: str, *, full: bool = False) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


async def start_from_home(p: Page, stack: Any, knowledge: str = "") -> str:
    """Open the home page, start the playground, wait for live video; the session id."""
    await p.page.goto(stack.url + "/")
    if knowledge:
        await p.page.fill("#knowledge", knowledge)
    await p.page.click("#start")
    await p.page.wait_for_url("**/v/**")
    await until(p.page, "window.avatarViewer.status === 'live'", 15_000)
    session_id = await stack.links_session(p.page.url)
    assert session_id is not None
    return session_id


async def axe_violations(page: Any) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now."""
    await page.evaluate(AXE.read_text() + "\n;0")
    result = await page.evaluate(
        "async () => (await window.axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter((v) => v.impact === 'serious' || v.impact === 'critical')"
        ".map((v) => v.id + ': ' + v.help + ' '"
        "     + v.nodes.map((n) => n.target.join(' ')).join(', '))"
    )
    return list(result)


AUDIO_ENERGY = """async () => {
  const s = await window.avatarViewer.pc.getStats();
  let e = 0;
  s.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') e = r.totalAudioEnergy || 0;
  });
  return e;
}"""


async def energy_over(page: Any, seconds: float) -> float:
    """The audio energy the page received over ``seconds``."""
    before = await page.evaluate(AUDIO_ENERGY)
    await asyncio.sleep(seconds)
    return float(await page.evaluate(AUDIO_ENERGY)) - float(before)


# ---------------------------------------------------------------------------- fair playground
async def test_two_visitors_get_their_own_sessions_and_a_tab_that_leaves_ends_its_own(
    browser: Any, stack: Any
) -> None:
    alice = await new_page(browser, stack, DESKTOP)
    bob = await new_page(browser, stack, PHONE)
    try:
        first = await start_from_home(alice, stack)
        second = await start_from_home(bob, stack)
        assert first != second
        await shot(alice.page, "fair-alice-desktop")
        await shot(bob.page, "fair-bob-phone")

        # Alice asks for a second one in another tab: told to go back to hers, with a link.
        extra = await alice.ctx.new_page()
        await guard_page(extra, stack.url)
        await extra.goto(stack.url + "/")
        await extra.click("#start")
        error = extra.locator("#start-error")
        await error.wait_for()
        assert "already have a playground session" in await error.text_content()
        href = await extra.get_attribute("#resume", "href")
        assert href is not None and await stack.links_session(href) == first
        await shot(extra, "fair-refused-desktop")
        await extra.close()

        # Alice leaves her tab (navigates away): her session ends, Bob's goes on.
        await alice.page.goto(stack.url + "/")
        async with asyncio.timeout(8):
            while (await stack.service.get(first)).state.is_open:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        record = await stack.service.get(first)
        assert record.state is SessionState.ENDED and record.end_reason == "the page was closed"
        assert (await stack.service.get(second)).state is SessionState.LIVE

        # Bob closes his tab: its beacon ends his session too.
        await bob.page.close(run_before_unload=True)
        async with asyncio.timeout(8):
            while (await stack.service.get(second)).state.is_open:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert alice.errors == [] and bob.errors == []
    finally:
        await alice.ctx.close()
        await bob.ctx.close()


async def test_a_reload_keeps_the_session_and_its_transcript(browser: Any, stack: Any) -> None:
    for name, viewport in VIEWPORTS:
        p = await new_page(browser, stack, viewport)
        try:
            session_id = await start_from_home(p, stack)
            await p.page.fill("#chat-text", "Remember this line.")
            await p.page.click("#say")
            await p.page.locator("#transcript .line.user").first.wait_for()
            await p.page.reload()
            await until(p.page, "window.avatarViewer.status === 'live'", 15_000)
            lines = p.page.locator("#transcript .line.user")
            await lines.first.wait_for()
            assert await lines.count() == 1  # shown once, not once from history and once live
            assert "Remember this line." in await lines.first.text_content()
            await asyncio.sleep(2.0)  # past the leave grace: the reload did not end it
            assert (await stack.service.get(session_id)).state is SessionState.LIVE
            await shot(p.page, f"reload-transcript-{name}")
            assert p.errors == []
        finally:
            await p.ctx.close()


# ---------------------------------------------------------------------------- controls
async def test_interrupt_counter_empty_message_and_layout(browser: Any, stack: Any) -> None:
    for name, viewport in VIEWPORTS:
        p = await new_page(browser, stack, viewport)
        page = p.page
        try:
            session_id = await start_from_home(p, stack)
            limit = stack.providers["local"].capabilities.max_text_chars
            assert await page.text_content("#chat-count") == f"0 / {limit}"

            # An empty message is answered, not ignored.
            await page.click("#ask")
            assert "Type a message first" in await page.text_content("#chat-error")
            await shot(page, f"controls-empty-{name}")

            # A paste over the limit is kept whole and announced; sending it is refused here.
            long = "All work and no play. " * 250
            await page.evaluate("(t) => navigator.clipboard.writeText(t)", long)
            await page.focus("#chat-text")
            await page.keyboard.press("Control+V")
            await until(page, "document.getElementById('chat-count').classList.contains('over')")
            value = await page.input_value("#chat-text")
            assert value == long  # nothing cut
            n = len(long.strip())
            assert await page.text_content("#chat-count") == f"{n} / {limit} ({n - limit} too many)"
            error = await page.text_content("#chat-error")
            assert f"{n} characters" in error and f"at most {limit}" in error
            assert error == await page.text_content("#chat-announce")  # read out (aria-live)
            await shot(page, f"controls-too-long-{name}")
            await page.click("#ask")
            assert await page.locator("#transcript .line.user").count() == 0

            # Interrupt silences the avatar mid-sentence.
            await page.fill("#chat-text", "This is a long sentence that goes on and on, " * 6)
            await page.click("#say")
            await page.locator("#transcript .line.user").first.wait_for()
            await asyncio.sleep(0.8)
            speaking = await energy_over(page, 0.8)
            await page.click("#interrupt")
            await asyncio.sleep(0.5)
            after = await energy_over(page, 0.8)
            assert speaking > 0 and after < speaking / 20, (speaking, after)

            # A warning banner does not push the chat buttons off screen.
            stack.events.publish(Warning(session_id=session_id, text="1 minute(s) left.",
                                         seconds_left=60))
            await page.locator("#warning").wait_for()
            await page.evaluate("window.scrollTo(0, 0)")
            for button in ("#ask", "#say", "#interrupt", "#stop"):
                box = await page.locator(button).bounding_box()
                assert box is not None and box["y"] >= 0, button
                assert box["y"] + box["height"] <= viewport["height"], (button, box, name)
            await shot(page, f"controls-warning-{name}")
            assert p.errors == []
        finally:
            await p.ctx.close()


# ---------------------------------------------------------------------------- no media path
async def test_a_page_without_a_media_path_says_why_and_retries(tmp_path: Path,
                                                                browser: Any) -> None:
    async with web_stack(tmp_path, vendors=(), local=True, viewer_media_timeout_s=3) as stack:
        for name, viewport in VIEWPORTS:
            p = await new_page(browser, stack, viewport)
            page = p.page
            try:
                record = await stack.start("local", minutes=2)

                # The network between browser and server drops every ICE candidate.
                async def no_candidates_offer(route: Any) -> None:
                    resp = await route.fetch()
                    body = await resp.json()
                    body["sdp"] = "".join(line for line in body["sdp"].splitlines(True)
                                          if not line.startswith("a=candidate"))
                    await route.fulfill(response=resp, json=body)

                async def no_candidates_answer(route: Any) -> None:
                    body = route.request.post_data_json
                    body["sdp"] = "".join(line for line in body["sdp"].splitlines(True)
                                          if not line.startswith("a=candidate"))
                    await route.continue_(post_data=json.dumps(body))

                await page.route("**/webrtc/offer", no_candidates_offer)
                await page.route("**/webrtc/answer", no_candidates_answer)
                await page.route("**/webrtc/candidate",
                                 lambda route: route.fulfill(json={"ok": True}))
                began = time.monotonic()
                await page.goto(stack.link(record.id))
                notice = page.locator("#notice")
                await notice.wait_for(timeout=10_000)
                waited = time.monotonic() - began
                text = await notice.text_content()
                assert "has not arrived after 3 seconds" in text, text
                assert "TURN_URLS" in text and "LOCAL_ALLOW_LOOPBACK" in text
                assert await page.text_content("#status") == "No video"
                assert waited < 10
                box = await page.locator("#retry").bounding_box()
                assert box is not None and box["y"] + box["height"] <= viewport["height"]
                await shot(page, f"no-media-{name}")

                # The network is back: Retry gets the video.
                await page.unroute("**/webrtc/offer")
                await page.unroute("**/webrtc/answer")
                await page.unroute("**/webrtc/candidate")
                await page.click("#retry")
                await until(page, "window.avatarViewer.status === 'live'", 15_000)
                assert await page.is_hidden("#notice")
                await stack.service.stop(record.id, "test over")
            finally:
                await p.ctx.close()


# ---------------------------------------------------------------------------- after the end
async def test_ended_link_shows_summary_transcript_and_download_while_kept(
    browser: Any, stack: Any
) -> None:
    for name, viewport in VIEWPORTS:
        p = await new_page(browser, stack, viewport)
        page = p.page
        try:
            session_id = await start_from_home(p, stack)
            await page.fill("#chat-text", "Hello from the transcript test.")
            await page.click("#say")
            await page.locator("#transcript .line.user").first.wait_for()
            await page.click("#stop")
            await until(page, "window.avatarViewer.status === 'ended'")
            # The live page offers the download and another session.
            await page.locator("#ended-transcript").wait_for(state="visible", timeout=5_000)
            assert await page.get_attribute("#ended-another", "href") == "/#playground"
            await shot(page, f"ended-live-page-{name}")

            # A link whose own expiry has passed still shows the ended session...
            expired = stack.link(session_id, ttl=-60)
            await page.goto(expired)
            assert "Ended" in await page.text_content("#summary")
            line = page.locator("#transcript .line.user")
            assert "Hello from the transcript test." in await line.text_content()
            assert "You had the avatar say" in await line.text_content()
            async with page.expect_download() as info:
                await page.click("#download")
            download = await info.value
            saved = await download.path()
            text = await asyncio.to_thread(Path(saved).read_text)
            assert "You had the avatar say: Hello from the transcript test." in text
            await shot(page, f"ended-summary-{name}", full=True)
            await page.click("#start-another")
            await page.wait_for_url(stack.url + "/#playground")
            assert p.errors == []
        finally:
            await p.ctx.close()


async def test_unknown_tampered_and_expired_open_links_get_the_same_plain_404(
    stack: Any
) -> None:
    record = await stack.start("local", minutes=2)
    good = stack.link(record.id, ttl=-60).split("/v/")[1]
    payload, sig = good.split(".")
    tampered = payload + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    async with aiohttp.ClientSession() as client:
        bodies = []
        for token in ("not-a-real-token", tampered, good):  # good but expired, session open
            for path in (f"/v/{token}", f"/v/{token}/transcript.txt"):
                async with client.get(stack.url + path) as resp:
                    assert resp.status == 404, path
                    bodies.append(await resp.text())
        assert len(set(bodies)) == 1


# ---------------------------------------------------------------------------- clean and accessible
async def test_a_normal_session_has_no_console_errors_and_passes_axe(
    browser: Any, stack: Any
) -> None:
    for name, viewport in VIEWPORTS:
        p = await new_page(browser, stack, viewport)
        page = p.page
        try:
            await page.goto(stack.url + "/")
            assert await axe_violations(page) == [], "home"
            await start_from_home(p, stack, knowledge="The shop opens at nine.")
            await page.fill("#chat-text", "Hello!")
            await page.keyboard.press("Enter")  # the keyboard alone drives the chat
            await page.locator("#transcript .line.avatar").first.wait_for(timeout=15_000)
            assert await axe_violations(page) == [], "viewer"
            await page.focus("#stop")
            await page.keyboard.press("Enter")
            await until(page, "window.avatarViewer.status === 'ended'")
            assert await axe_violations(page) == [], "viewer ended"
            await page.reload()
            await page.locator("#summary").wait_for()
            assert await axe_violations(page) == [], "ended page"
            await asyncio.sleep(0.5)  # late requests (the peer's leave) have answered
            assert p.errors == [], p.errors
            await shot(page, f"axe-ended-{name}", full=True)
        finally:
            await p.ctx.close()
