"""A real web stack on an ephemeral port: SQLite store, event hub, session service, the app.

Vendors are the fake vendor servers of ``tests/fakes`` (real HTTP), driven by the real adapters;
the local avatar is the real one. The browser is Debian's Chromium through Playwright's async API.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr

from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.models import PLAYGROUND, ComponentStatus, Pricing
from bot.core.provider import AvatarProvider
from bot.core.service import SessionService, StartCommand
from bot.settings import Settings
from bot.storage import SqliteStore
from tests.fakes.serve import serve_local
from web.app import create_app
from web.security import RateLimits

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
VENDOR = ROOT / "web" / "static" / "vendor"
SECRET_KEY = "server-secret-3a9d1c7be4f05a62"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
VIEWPORTS = (("desktop", DESKTOP), ("phone", PHONE))
FAKE_AGORA = (ROOT / "tests/fakes/agora_fake.js").read_text()
FAKE_LIVEKIT = (ROOT / "tests/fakes/livekit_fake.js").read_text()

# Loose limits for tests that load pages many times; the rate-limit tests set their own.
LOOSE = RateLimits(pages=(1000, 100), websocket=(1000, 100), signalling=(5000, 1000),
                   playground=(1000, 100))


def make_settings(**overrides: Any) -> Settings:
    """Settings with every secret set, so that leak checks have something to look for."""
    values: dict[str, Any] = {
        "secret_key": SECRET_KEY,
        "a2e_api_key": "a2e-test-key-7f3c",
        "akool_api_key": "akool-test-key-91b2",
        "heygen_api_key": "heygen-test-key-4d8e",
        "discord_token": "discord-token-5be1f0aa",
        "slack_signing_secret": "slack-signing-61c2",
        "slack_bot_token": "xoxb-slack-bot-77aa",
        "slack_client_secret": "slack-client-secret-0d0d",
        "llm_api_key": "llm-key-99ee",
        "playground_credits": 50,
        "playground_max_minutes": 2,
        "playground_max_concurrent": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def status_items(settings: Settings) -> list[ComponentStatus]:
    return [
        ComponentStatus(name="local", kind="provider", enabled=True, detail="built-in avatar"),
        ComponentStatus(name="akool", kind="provider", enabled=True, detail="API key set"),
        ComponentStatus(name="heygen", kind="provider", enabled=False,
                        detail="set HEYGEN_API_KEY to enable"),
        ComponentStatus(name="discord", kind="platform", enabled=False,
                        detail="set DISCORD_TOKEN to enable"),
        ComponentStatus(name="playground", kind="web", enabled=settings.playground_enabled,
                        detail="50 credits a day"),
    ]


@dataclass
class WebStack:
    """Everything a web test talks to."""

    settings: Settings
    store: SqliteStore
    events: EventHub
    service: SessionService
    links: ViewerLinks
    app: web.Application
    url: str
    providers: dict[str, AvatarProvider]
    vendors: dict[str, Any] = field(default_factory=dict)

    async def start(self, provider: str, tenant: str = "discord:1", **kw: Any) -> Any:
        return await self.service.start(StartCommand(
            tenant=tenant, user=kw.pop("user", "u1"), provider=provider,
            minutes=kw.pop("minutes", 5), **kw))

    async def links_session(self, url: str) -> str | None:
        """The session id a ``/v/<token>`` URL (absolute or not) opens."""
        claims = self.links.verify(url.split("/v/")[1])
        return claims.session_id if claims else None

    def link(self, session_id: str, role: str = "viewer", ttl: float = 3600) -> str:
        import time
        return self.url + "/v/" + self.links.token(session_id, time.time() + ttl, role)  # type: ignore[arg-type]


def local_provider(events: EventHub) -> AvatarProvider:
    from bot.providers.local import LocalProvider

    return LocalProvider(
        events=events, pricing=Pricing(credits_per_minute=1, granularity_s=60, minimum_s=60),
        width=320, height=240, fps=15, ice_servers=[], allow_loopback=True, llm=None, http=None,
    )


def has_local() -> bool:
    try:
        from bot.providers.local import LocalProvider  # noqa: F401
    except ImportError:
        return False
    return True


@asynccontextmanager
async def web_stack(
    tmp_path: Path,
    *,
    vendors: tuple[str, ...] = ("akool",),
    local: bool = False,
    extra: Callable[[EventHub], dict[str, AvatarProvider]] | None = None,
    rate_limits: RateLimits = LOOSE,
    **settings_overrides: Any,
) -> AsyncIterator[WebStack]:
    """Open the whole stack; everything is closed when the block exits."""
    settings = make_settings(**settings_overrides)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5.0))
        store = await SqliteStore.open(tmp_path / f"web-{secrets.token_hex(3)}.db")
        stack.push_async_callback(store.close)
        events = EventHub()
        events.relay.max_wait_s = settings.relay_max_wait_s
        providers: dict[str, AvatarProvider] = {}
        fakes: dict[str, Any] = {}
        for name in vendors:
            fake, prov = await _vendor(name, settings, http, events)
            stack.push_async_callback(fake.close)
            fakes[name] = fake
            providers[prov.name] = prov
        if local:
            providers["local"] = local_provider(events)
        if extra:
            providers.update(extra(events))
        for prov in providers.values():
            stack.push_async_callback(prov.aclose)
        service = SessionService(store=store, providers=providers, events=events)
        await store.grant("discord:1", 1000, "test")
        await store.grant(str(PLAYGROUND), settings.playground_credits, "test")
        await store.set_limits(str(PLAYGROUND), **settings.playground_limits().model_dump())
        links = ViewerLinks(SECRET_KEY.encode(), "http://127.0.0.1")
        app = create_app(service=service, links=links, settings=settings,
                         status=status_items(settings), rate_limits=rate_limits)
        # As bot/app.py runs them: the transcript keeper and the watch for other processes.
        keepers = [asyncio.create_task(service.keep_transcripts()),
                   asyncio.create_task(service.watch_other_writers(0.2))]
        runner, port = await serve_local(app, shutdown_timeout=2.0, access_log=None)
        url = f"http://127.0.0.1:{port}"
        links.base_url = url

        async def _shutdown() -> None:
            await service.stop_all("test over")
            await runner.cleanup()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)

        stack.push_async_callback(_shutdown)
        yield WebStack(settings=settings, store=store, events=events, service=service,
                       links=links, app=app, url=url, providers=providers, vendors=fakes)


async def _vendor(name: str, settings: Settings, http: httpx.AsyncClient,
                  events: EventHub) -> tuple[Any, AvatarProvider]:
    if name == "akool":
        from bot.providers.akool import AKoolProvider
        from tests.fakes.akool import FakeAKool

        fake = await FakeAKool().start()
        return fake, AKoolProvider(api_key=SecretStr(fake.api_key), http=http, events=events,
                                   pricing=settings.pricing("akool"), base_url=fake.url)
    if name == "a2e":
        from bot.providers.a2e import A2EProvider
        from tests.fakes.a2e import FakeA2E

        fake = await FakeA2E().start()
        return fake, A2EProvider(api_key=SecretStr(fake.api_key), http=http, events=events,
                                 pricing=settings.pricing("a2e"), base_url=fake.url)
    if name == "heygen":
        from bot.providers.heygen import HeyGenProvider
        from tests.fakes.heygen import FakeHeyGen

        fake = await FakeHeyGen().start()
        return fake, HeyGenProvider(
            api_key=SecretStr(fake.api_key), http=http, events=events,
            pricing=settings.pricing("heygen"), base_url=fake.url,
        )
    if name == "liveavatar":
        from bot.providers.liveavatar import LiveAvatarProvider
        from tests.fakes.liveavatar import FakeLiveAvatar

        fake = await FakeLiveAvatar().start()
        return fake, LiveAvatarProvider(api_key=SecretStr(fake.api_key), http=http, events=events,
                                        pricing=settings.pricing("liveavatar"), base_url=fake.url)
    raise ValueError(name)


# ---------------------------------------------------------------------------- websocket client
class PageSocket:
    """A viewer WebSocket as a test sees it: every JSON message received is kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.raw: list[str] = []

    async def next(self, kind: str, wait: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind`` (earlier unread ones of that type first)."""
        for msg in self.received:
            if msg["type"] == kind and not msg.get("_seen"):
                msg["_seen"] = True
                return msg
        async with asyncio.timeout(wait):
            while True:
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket closed while waiting for {kind}: {msg}")
                self.raw.append(msg.data)
                data = json.loads(msg.data)
                self.received.append(data)
                if data["type"] == kind:
                    data["_seen"] = True
                    return data

    async def closed(self, wait: float = 5.0) -> aiohttp.WSMessage:
        async with asyncio.timeout(wait):
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.raw.append(msg.data)
                    self.received.append(json.loads(msg.data))
                    continue
                return msg


@asynccontextmanager
async def page_socket(client: aiohttp.ClientSession, link: str,
                      query: str = "") -> AsyncIterator[PageSocket]:
    url = link.replace("http://", "ws://") + "/ws" + query
    async with client.ws_connect(url) as ws:
        yield PageSocket(ws)


# ---------------------------------------------------------------------------- browser
def chromium_args() -> list[str]:
    """Our flags plus ONE merged --disable-features (Chromium keeps only the last switch)."""
    import playwright

    bundle = Path(playwright.__file__).parent / "driver/package/lib/coreBundle.js"
    text = bundle.read_text()
    block = re.search(r"disabledFeatures = \[(.*?)\]\.filter", text, re.S)
    features = re.findall(r'^\s*"([A-Za-z0-9_]+)"', block.group(1), re.M) if block else []
    features.append("WebRtcHideLocalIpsWithMdns")
    return [
        "--disable-gpu", "--disable-sync", "--disable-quic",
        "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--disable-features=" + ",".join(dict.fromkeys(features)),
    ]


def ensure_bundles() -> None:
    """Install the pinned browser SDKs (npm ci) once; fail loudly when that is impossible."""
    try:
        subprocess.run(["bash", str(ROOT / "web/assets/install.sh")], check=True,
                       capture_output=True, timeout=240)
    except FileNotFoundError as exc:  # no bash: cannot happen on CI
        pytest.fail(f"cannot install the browser SDKs: {exc}")
    except subprocess.CalledProcessError as exc:
        if b"npm is not installed" in exc.stderr:
            pytest.skip("npm is unavailable: cannot install the browser SDK bundles")
        pytest.fail(f"web/assets/install.sh failed: {exc.stderr.decode()[-2000:]}")


FAKE_AKOOL_PATH = "/__fake-akool/send"


async def wire_akool(page: Any, fake: Any, on_send: Any = None) -> None:
    """Hand every stream message ``page`` sends (``tests/fakes/agora_fake.js``) to the fake AKool
    data channel of its Agora channel, and play the avatar's answers back to it.

    The fake client posts each message with a synchronous request to ``FAKE_AKOOL_PATH``, which
    this route answers (call it after ``guard_page``): like the real SDK, whose bytes are on
    their way once ``sendStreamMessage`` is called, the vendor has the message before the call
    returns, even if the page is unloaded right after. ``on_send(channel, text, at_ms)`` may
    replace the default delivery; it returns the avatar's answers.
    """

    def deliver(channel: str, text: str, at_ms: float) -> list[str]:
        ch = fake.channel_named(channel)
        before = len(ch.outbox)
        ch.send(text.encode(), at=at_ms / 1000)
        replies = ch.outbox[before:]
        del ch.outbox[before:]
        return replies

    async def handler(route: Any) -> None:
        body = json.loads(route.request.post_data or "{}")
        replies = (on_send or deliver)(body["channel"], body["text"], body["at"])
        if asyncio.iscoroutine(replies):
            replies = await replies
        await route.fulfill(status=200, content_type="application/json",
                            body=json.dumps(replies))

    await page.add_init_script(f"window.__fakeAkoolUrl = {json.dumps(FAKE_AKOOL_PATH)};")
    await page.route("**" + FAKE_AKOOL_PATH, handler)


async def guard_page(page: Any, base_url: str) -> list[str]:
    """Abort every request that is not for the test server; return the list of aborted URLs."""
    aborted: list[str] = []

    async def handler(route: Any) -> None:
        if route.request.url.startswith(base_url):
            await route.continue_()
        else:
            aborted.append(route.request.url)
            await route.abort()

    await page.route("**/*", handler)
    return aborted


async def launch_chromium(browser_type: Any, args: list[str] | None = None) -> Any:
    """Debian's Chromium (never a downloaded one), headless, with ``chromium_args()``."""
    return await browser_type.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=chromium_args() if args is None else args)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium per test module (the module's tests share its event loop)."""
    from playwright.async_api import async_playwright

    ensure_bundles()
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        b = await launch_chromium(p.chromium)
        yield b
        await b.close()


async def new_context(browser: Any, viewport: dict[str, int] | None = None) -> Any:
    """A new browser context (another person's browser); a phone viewport is touch and mobile."""
    if viewport is None:
        return await browser.new_context()
    phone = viewport is PHONE
    return await browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone)


def keep_errors(page: Any, console: Callable[[Any], bool] | None = None) -> list[str]:
    """The page's uncaught errors, and the console messages ``console`` picks, as they come."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    if console is not None:
        pick = console
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                if pick(m) else None)
    return errors


async def serve_fake(page: Any, bundle: str, body: str) -> None:
    """Serve ``body`` in place of the SDK bundle ``web/static/vendor/<bundle>``."""
    await page.route(f"**/static/vendor/{bundle}", lambda route: route.fulfill(
        status=200, content_type="application/javascript", body=body))


async def until(page: Any, condition: str, timeout_ms: int = 5_000, arg: Any = None) -> None:
    """Wait until a JS condition holds (as a function: the page's CSP forbids eval); on a
    timeout, fail with what the page shows."""
    try:
        await page.wait_for_function(f"(arg) => ({condition})", arg=arg, timeout=timeout_ms)
    except Exception as exc:
        state = await page.evaluate("""() => {
            const text = (id) => (document.getElementById(id) || {}).innerText;
            const v = window.avatarViewer;
            return {viewer: v ? {status: v.status, error: v.error,
                                 pc: v.pc && v.pc.connectionState} : null,
                    notice: text('notice'), chatError: text('chat-error'),
                    transcript: [...document.querySelectorAll('#transcript li')]
                        .map((li) => li.innerText)};
        }""")
        raise AssertionError(f"timed out waiting for {condition!r}; page state {state}") from exc


async def shot(page: Any, name: str, *, full: bool = False) -> None:
    """A screenshot in ``test-artifacts/<name>.png``."""
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Any]:
    """The web app over the local avatar and a fake AKool (modules may override this)."""
    async with web_stack(tmp_path, vendors=("akool",), local=True) as s:
        yield s


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for the test server."""
    async with aiohttp.ClientSession() as c:
        yield c
