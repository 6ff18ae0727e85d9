"""The Slack adapter: a slack-bolt ``AsyncApp`` on our aiohttp app, single- or multi-workspace.

``build_slack`` makes the adapter and its app; ``mount_slack`` adds ``/slack/events``,
``/slack/install`` and ``/slack/oauth_redirect`` to the web app; ``start_socket_mode`` connects
over Socket Mode instead of public HTTP (development). The adapter's thread relay is an async
context manager: the composition root (``bot/app.py``) runs it in its ``AsyncExitStack``, so its
lifetime has one owner and no module keeps a registry of apps or relays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.oauth.installation_store import Bot
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import ConfigError
from bot.core.links import ViewerLinks
from bot.core.ports import SlackInstallStore
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.intake import Intake, Turn
from bot.platforms.name_cache import NameCache
from bot.platforms.readable import slack_readable
from bot.platforms.slack import commands, events
from bot.platforms.slack.installation_store import (
    LOOKUPS_KEY,
    BotLookups,
    OneReadAuthorize,
    SlackInstallationStore,
    SlackOAuthStateStore,
    reading_through,
)
from bot.platforms.slack.threads import ThreadRelay, team_tenant
from bot.settings import Settings

log = logging.getLogger(__name__)
# slack-sdk logs whole request and response bodies at DEBUG, and oauth.v2.access answers with the
# new bot token: its clients log here, and this logger never goes below INFO.
SDK_LOG = logging.getLogger("bot.platforms.slack.sdk")
SDK_LOG.setLevel(logging.INFO)
# Clients made by slack-bolt itself log to slack-sdk's own loggers: ``respond`` logs the
# response_url (which can post into the channel) and the reply (a viewer link) at DEBUG.
logging.getLogger("slack_sdk").setLevel(logging.INFO)

BOT_SCOPES = [
    "commands", "chat:write", "channels:join", "channels:history",
    "groups:history", "im:history", "reactions:write", "users:read",
    # files:write: the end summary attaches the session's transcript (files.uploadV2 flow)
    "files:write",
]
ADMIN_CACHE_S = 60.0
NAME_CACHE_S = 600.0
# A user mention in Slack's markup: <@U…> or, with escaping on, <@U…|handle>.
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^<>]*)?>")
MAX_CLOCK_SKEW_S = 300  # Slack's rule: refuse requests stamped more than 5 minutes off
# Events that end an installation; they must pass even after the workspace's tokens are gone.
_UNINSTALL_EVENTS = ("app_uninstalled", "tokens_revoked")
# Slack redelivers an event it has no answer to within 3 s. An event whose checks (the gate,
# authorization) have not finished by this time is acknowledged anyway and finishes after
# (docs/backpressure.md).
ACK_BUDGET_S = 1.0
EVENTS_REMEMBERED = 10_000  # event ids accepted lately, to acknowledge redeliveries at once


class SlackAdapter:
    """What the Slack listeners share: the core, the stores, tokens, the relay, the bolt app.

    Args:
        settings: the process settings.
        service: the session service.
        tenants: a workspace's limits, credits and activity.
        bindings: which Slack thread belongs to which session.
        links: the viewer link signer.
        installs: Slack installations, OAuth states and seen event ids.
        min_interval_s: least time between two thread posts of one workspace.
    """

    app: AsyncApp

    def __init__(self, *, settings: Settings, service: SessionService, tenants: TenantService,
                 bindings: ChatBindings, links: ViewerLinks,
                 installs: SlackInstallStore, min_interval_s: float = 1.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        if settings.slack_signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET is required for Slack.")
        self.settings = settings
        self.service = service
        self.tenants = tenants
        self.bindings = bindings
        self.links = links
        self.installs = installs
        # One long-lived HTTP session for every Web API client (owned by the composition root);
        # without it slack-sdk opens a new session, so a new connection, per call.
        self.session = session
        self.api_url = str(settings.slack_api_url)
        self.bot_token = (
            settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        )
        self.multi = (
            settings.slack_client_id is not None and settings.slack_client_secret is not None
        )
        if not self.multi and self.bot_token is None:
            raise ConfigError(
                "Slack needs SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                "SLACK_CLIENT_SECRET (OAuth, many workspaces)."
            )
        self.installations: SlackInstallationStore | None = None
        if self.multi:
            self.installations = SlackInstallationStore(installs, settings.slack_client_id or "")
        self.signing_secret = settings.slack_signing_secret.get_secret_value().encode()
        self.relay = ThreadRelay(service, bindings, self.token_for, self.client, min_interval_s)
        self._single_team: str | None = None
        self._admins: dict[tuple[str, str], tuple[float, bool]] = {}
        self._names = NameCache(max_entries=10_000, ttl_s=NAME_CACHE_S)
        self._file_noted: set[str] = set()
        # Event ids accepted by the HTTP handler lately, oldest first, and the dispatches still
        # running after their acknowledgement (kept here so none is garbage-collected).
        self.accepted_events: dict[str, None] = {}
        self.background: set[asyncio.Task[Any]] = set()
        # Thread messages' look-ups: bounded in number, in arrival order per thread; the turn
        # each message took on arrival, until its listener claims it (docs/backpressure.md).
        self.intake = Intake()
        self.turns: dict[str, Turn] = {}

    def claim_turn(self, event_id: object) -> Turn | None:
        """The intake turn the HTTP handler took for this event on arrival, if any."""
        return self.turns.pop(event_id, None) if isinstance(event_id, str) else None

    def unclaimed(self, event_id: str, turn: Turn) -> None:
        """Give up an event's turn if no listener claimed it (the gate refused, a duplicate).

        Called once the dispatch is over, after its listener (if any) started and claimed it.
        """
        if self.turns.get(event_id) is turn:
            del self.turns[event_id]
            turn.finish()

    # ------------------------------------------------------------------ clients and tokens
    def client(self, token: str | None = None) -> AsyncWebClient:
        """A Web API client on ``SLACK_API_URL`` that retries 429s after ``Retry-After``."""
        return AsyncWebClient(
            token=token, base_url=self.api_url, logger=SDK_LOG, session=self.session,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            ],
        )

    async def single_team(self) -> str | None:
        """The team of ``SLACK_BOT_TOKEN`` (``auth.test``, asked until it answers once).

        A token that works means the app is installed: the workspace is (re)activated, since an
        earlier uninstall marked it inactive and reinstalling gave this new token.
        """
        if self._single_team is None and self.bot_token is not None:
            try:
                resp = await self.client(self.bot_token).auth_test()
            except SlackApiError as exc:
                log.error("SLACK_BOT_TOKEN was refused by Slack: %s", exc.response.get("error"))
                return None
            team = resp.get("team_id")
            if team:
                await self.tenants.activate(team_tenant(team))
            self._single_team = team
        return self._single_team

    async def find_bot(self, team: str, enterprise: str | None) -> Bot | None:
        """The bot installation serving a workspace (multi-workspace mode).

        Looked up by (enterprise id, team id), as slack-bolt stores it: a plain workspace is
        ``(None, T)``, a workspace of an Enterprise Grid org ``(E, T)``, and an org-wide install
        ``(E, None)`` serves every workspace of org ``E`` (docs/platform-payloads.md).
        """
        if self.installations is None:
            return None
        bot = await self.installations.async_find_bot(enterprise_id=enterprise, team_id=team)
        if bot is None and enterprise is not None:
            bot = await self.installations.async_find_bot(
                enterprise_id=enterprise, team_id=None, is_enterprise_install=True)
        return bot

    async def token_for(self, team: str, enterprise: str | None = None) -> str | None:
        """The bot token of a workspace (of Grid org ``enterprise``), or None when not installed."""
        if self.installations is None:
            return self.bot_token if team == await self.single_team() else None
        bot = await self.find_bot(team, enterprise)
        return bot.bot_token if bot is not None else None

    async def knows_team(self, team: str, enterprise: str | None) -> bool:
        """Whether requests from this workspace may be served."""
        if self.installations is None:
            return team == await self.single_team()
        return await self.find_bot(team, enterprise) is not None

    # ------------------------------------------------------------------ people
    async def is_admin(self, client: AsyncWebClient, team: str, user: str) -> bool:
        """Workspace admins and owners (``users.info``), or ids in ``SLACK_ADMIN_USER_IDS``."""
        if self.is_operator(user):
            return True
        cached = self._admins.get((team, user))
        if cached and time.monotonic() - cached[0] < ADMIN_CACHE_S:
            return cached[1]
        info = (await client.users_info(user=user)).get("user") or {}
        admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        if len(self._admins) > 10_000:
            self._admins.clear()
        self._admins[(team, user)] = (time.monotonic(), admin)
        return admin

    async def user_name(self, client: AsyncWebClient, user: str) -> str | None:
        """What people see for ``user``: display name, else real name, else handle (cached).

        ``users.info`` (``users:read``); None when Slack does not know the id or refuses. User
        ids are unique across Slack (Grid ``W…`` ids across the whole org), so the cache is keyed
        by id alone.
        """
        known, cached = self._names.get("user", "", user)
        if known:
            return cached
        try:
            info = (await client.users_info(user=user)).get("user") or {}
        except SlackApiError as exc:
            log.info("could not look up a Slack user's name: %s", exc.response.get("error"))
            info = {}
        profile = info.get("profile") or {}
        name = (profile.get("display_name") or profile.get("real_name")
                or info.get("real_name") or info.get("name") or None)
        self._names.put("user", "", user, name)
        return name

    async def readable(self, client: AsyncWebClient, text: str | None) -> str:
        """Slack command or message text as a person reads it (``slack_readable``).

        Mentions become people's names (looked up first, with ``client``); channels keep the name
        Slack puts in the mention (``<#C…|general>``), or become "a channel".
        """
        names: dict[str, str | None] = {}
        for user in dict.fromkeys(_MENTION.findall(text or "")):
            names[user] = await self.user_name(client, user)
        return slack_readable(text, names.get)

    def first_file_note(self, session_id: str) -> bool:
        """True the first time a session's thread gets a files-only message, False after."""
        if session_id in self._file_noted:
            return False
        if len(self._file_noted) > 10_000:
            self._file_noted.clear()
        self._file_noted.add(session_id)
        return True

    def is_operator(self, user: str) -> bool:
        """Whether ``user`` is an operator (``OPERATOR_USER_IDS`` or ``SLACK_ADMIN_USER_IDS``)."""
        return self.settings.admin_policy().is_operator(f"slack:{user}")

    # ------------------------------------------------------------------ bolt middleware
    async def gate(self, body: dict[str, Any], context: Any, next: Any) -> BoltResponse | None:  # noqa: A002
        """Refuse unknown workspaces (401) and drop Events API redeliveries (before authorize).

        The workspace's installation is read once for the gate and bolt's ``authorize`` after it
        (``reading_through``).
        """
        lookups = BotLookups()
        context[LOOKUPS_KEY] = lookups  # for ``OneReadAuthorize``, the next middleware
        with reading_through(lookups):
            return await self._gate(body, context, next)

    async def _gate(self, body: dict[str, Any], context: Any, next: Any) -> BoltResponse | None:  # noqa: A002
        kind = body.get("type")
        if kind in ("url_verification", "ssl_check") or body.get("ssl_check"):
            await next()
            return None
        raw_event = body.get("event")
        event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}
        uninstall = kind == "event_callback" and event.get("type") in _UNINSTALL_EVENTS
        # An org-wide install's events name no team in `authorizations` (team_id null), so
        # Bolt's context has none: the workspace the event happened in is the wrapper's team_id.
        team = context.team_id or (body.get("team_id") if kind == "event_callback" else None)
        if not team:
            return BoltResponse(status=400, body="no team in the request")
        if not uninstall and not await self.knows_team(team, context.enterprise_id):
            log.warning("request from an unknown Slack workspace refused",
                        extra={"tenant": str(team_tenant(team))})
            return BoltResponse(status=401, body="unknown workspace")
        # A signed request may be sent again within Slack's 5-minute signature window (a
        # replay): a slash command or an interaction is handled once per ``trigger_id``.
        trigger = body.get("trigger_id")
        if isinstance(trigger, str) and trigger:
            if not await self.installs.remember_event(f"trigger:{trigger}", team):
                log.warning("replayed Slack request refused", extra={"tenant": str(
                    team_tenant(team))})
                return BoltResponse(status=200, body="")
        event_id = body.get("event_id")
        if kind == "event_callback" and event_id:
            if not await self.installs.remember_event(str(event_id), team):
                log.info("duplicate Slack event %s ignored", event_id)
                return BoltResponse(status=200, body="")
        await next()
        return None


def build_slack(*, settings: Settings, service: SessionService, tenants: TenantService,
                bindings: ChatBindings, links: ViewerLinks, installs: SlackInstallStore,
                min_interval_s: float = 1.0,
                session: aiohttp.ClientSession | None = None) -> SlackAdapter:
    """Build the Slack adapter and its app: listeners, authorization, OAuth (when configured).

    The adapter's ``relay`` posts into session threads only while it runs (``async with``).

    Args:
        settings: needs ``SLACK_SIGNING_SECRET`` and either ``SLACK_BOT_TOKEN`` or
            ``SLACK_CLIENT_ID`` + ``SLACK_CLIENT_SECRET``; ``SLACK_API_URL`` is the Web API base.
        service: the session service.
        tenants: a workspace's limits, credits and activity.
        bindings: which Slack thread belongs to which session.
        links: signs viewer links.
        installs: Slack installations, OAuth states and seen event ids (from the composition
            root; the adapter never reaches into the session store for them).
        min_interval_s: least time between two thread posts of one workspace.
        session: the HTTP session every Web API client shares (bolt's per-request clients
            take it from the app's client); its owner closes it after the relay.
    """
    adapter = SlackAdapter(settings=settings, service=service, tenants=tenants,
                           bindings=bindings, links=links, installs=installs,
                           min_interval_s=min_interval_s, session=session)
    secret = settings.slack_signing_secret.get_secret_value()  # type: ignore[union-attr]
    kwargs: dict[str, Any] = {
        "signing_secret": secret, "before_authorize": adapter.gate, "name": "avatarbot",
        "logger": logging.getLogger("bot.platforms.slack.bolt"),
    }
    if adapter.installations is not None:
        client_secret = settings.slack_client_secret.get_secret_value()  # type: ignore[union-attr]
        kwargs["client"] = adapter.client()
        kwargs["oauth_settings"] = AsyncOAuthSettings(
            client_id=settings.slack_client_id, client_secret=client_secret, scopes=BOT_SCOPES,
            user_scopes=[], installation_store=adapter.installations,
            installation_store_bot_only=True,
            state_store=SlackOAuthStateStore(adapter.installs),
            redirect_uri=(
                f"{settings.base_url}/slack/oauth_redirect" if settings.public_url else None
            ),
            logger=logging.getLogger("bot.platforms.slack.oauth"),
        )
        # The stock authorize calls auth.test on every request; its cache is keyed by token,
        # and the store is asked first, so an uninstalled workspace is still refused.
        kwargs["authorize"] = OneReadAuthorize(
            logger=kwargs["logger"], installation_store=adapter.installations,
            client_id=settings.slack_client_id, client_secret=client_secret,
            cache_enabled=True, client=kwargs["client"], bot_only=True,
        )
        kwargs["installation_store_bot_only"] = True
    else:
        kwargs["client"] = adapter.client(adapter.bot_token)
    app = AsyncApp(**kwargs)
    # Events first: Bolt tries each listener's matcher in turn (each builds its arguments), and
    # thread messages are most of the traffic. Commands and actions never match an event
    # listener (the catch-all included), so the order changes nothing else.
    events.register(app, adapter)
    commands.register(app, adapter)

    @app.error
    async def on_error(error: Exception) -> None:
        log.error("unhandled error in a Slack listener", exc_info=error)

    adapter.app = app
    return adapter


# ---------------------------------------------------------------------- HTTP


def _parse(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """The request body as Bolt will read it, or None when it is malformed."""
    try:
        text = raw.decode("utf-8")
        if content_type == "application/json" or text.startswith("{"):
            body = json.loads(text)
            return body if isinstance(body, dict) and isinstance(body.get("type"), str) else None
        if content_type != "application/x-www-form-urlencoded":
            return None
        form = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
        if "payload" in form:
            body = json.loads(form["payload"])
            return body if isinstance(body, dict) and isinstance(body.get("type"), str) else None
        return form if form.get("command") or form.get("ssl_check") else None
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." JSON
        return None


def _verified(adapter: SlackAdapter, raw: bytes, request: web.Request) -> bool:
    """Slack's v0 signature: HMAC-SHA256 of ``v0:<timestamp>:<raw body>``, within 5 minutes."""
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    # isascii: str.isdigit() also accepts "²", which int() refuses.
    if not (timestamp.isascii() and timestamp.isdigit()) or not signature:
        return False
    if abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_S:
        return False
    # Over the raw bytes: a body that is not UTF-8 is still checked, then refused as malformed.
    base = b"v0:" + timestamp.encode() + b":" + raw
    expected = "v0=" + hmac.new(adapter.signing_secret, base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _events_handler(bolt_app: AsyncApp, adapter: SlackAdapter) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        # Checked here as well as by Bolt: a forged or stale request must not even be parsed.
        if not _verified(adapter, raw, request):
            return web.json_response({"error": "invalid request signature"}, status=401)
        if _parse(raw, request.content_type) is None:
            return web.json_response({"error": "malformed request body"}, status=400)
        bolt_req = AsyncBoltRequest(
            body=raw.decode("utf-8"), query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
        event_id = _event_id(bolt_req.body)
        if event_id is None:
            return await _ack_request(bolt_app, adapter, bolt_req)
        return await _ack_event(bolt_app, adapter, bolt_req, event_id, request)

    return handle


async def _ack_request(bolt_app: AsyncApp, adapter: SlackAdapter,
                       bolt_req: AsyncBoltRequest) -> web.StreamResponse:
    """Answer a slash command or an interaction within Slack's 3 s.

    Their listeners acknowledge first, so bolt's answer normally comes at once; if the checks in
    front of them (the gate, authorization) have not finished within ``ACK_BUDGET_S``, Slack
    gets an empty 200 now and the listener goes on: what it has to say it says through the
    command's ``response_url`` (docs/backpressure.md).
    """
    task = asyncio.create_task(bolt_app.async_dispatch(bolt_req))
    adapter.background.add(task)
    task.add_done_callback(adapter.background.discard)
    done, _ = await asyncio.wait({task}, timeout=ACK_BUDGET_S)
    if task in done:
        return await to_aiohttp_response(task.result())
    task.add_done_callback(_finished_late)
    log.info("a Slack command or action acknowledged before its checks finished")
    return web.Response(status=200)


def _event_id(body: dict[str, Any]) -> str | None:
    """The ``event_id`` of an Events API ``event_callback``; None for anything else."""
    if body.get("type") != "event_callback":
        return None
    event_id = body.get("event_id")
    return event_id if isinstance(event_id, str) and event_id else None


async def _ack_event(bolt_app: AsyncApp, adapter: SlackAdapter, bolt_req: AsyncBoltRequest,
                     event_id: str, request: web.Request) -> web.StreamResponse:
    """Answer an Events API delivery within Slack's 3 s, whatever the process has queued.

    A redelivery (``X-Slack-Retry-Num``) of an event accepted here lately is acknowledged at once
    and dropped. Otherwise the event is dispatched; if its checks have not answered within
    ``ACK_BUDGET_S`` (a backlog in front of the store), Slack gets its 200 now and the dispatch
    goes on, so the event is handled exactly once and never redelivered because we were slow.
    When every look-up slot of the intake is taken (a backlog already), the 200 goes at once.
    """
    if request.headers.get("X-Slack-Retry-Num") and event_id in adapter.accepted_events:
        log.info("Slack redelivered event %s; already accepted", event_id)
        return web.Response(status=200)
    adapter.accepted_events[event_id] = None
    while len(adapter.accepted_events) > EVENTS_REMEMBERED:
        adapter.accepted_events.pop(next(iter(adapter.accepted_events)))
    # A thread message takes its turn now, in the order Slack delivered it (no await before).
    key = events.conversation_key(bolt_req.body)
    turn = None
    if key is not None and event_id not in adapter.turns:
        turn = adapter.turns[event_id] = adapter.intake.arrive(key)
    # Every look-up slot taken: there is a backlog, the checks will not answer sooner than
    # it drains, and waiting only keeps Slack's connection open: the 200 goes now.
    backlog = adapter.intake.slots.locked()
    task = asyncio.create_task(_dispatch(bolt_app, adapter, bolt_req, event_id, turn))
    adapter.background.add(task)
    task.add_done_callback(adapter.background.discard)
    done, _ = (set(), None) if backlog else await asyncio.wait({task}, timeout=ACK_BUDGET_S)
    if task in done:
        return await to_aiohttp_response(task.result())
    task.add_done_callback(_finished_late)
    log.info("Slack event %s acknowledged before its checks finished", event_id)
    return web.Response(status=200)


async def _dispatch(bolt_app: AsyncApp, adapter: SlackAdapter, bolt_req: AsyncBoltRequest,
                    event_id: str, turn: Turn | None) -> BoltResponse:
    """Run an event through bolt (its checks; then bolt starts its listener).

    The checks hold one of the intake's look-up slots while they read the store.
    """
    try:
        async with adapter.intake.slots:
            return await bolt_app.async_dispatch(bolt_req)
    finally:
        if turn is not None:
            # Bolt started the listener's task before returning; ``call_soon`` runs after that
            # task's first step, where the listener claims its turn (``SlackAdapter.claim_turn``).
            asyncio.get_running_loop().call_soon(adapter.unclaimed, event_id, turn)


def _finished_late(task: asyncio.Task[BoltResponse]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a Slack event failed after its acknowledgement", exc_info=task.exception())


def _oauth_handler(bolt_app: AsyncApp, install: bool) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        flow = bolt_app.oauth_flow
        if flow is None:
            return web.Response(
                status=404, text="This bot runs in one workspace (SLACK_BOT_TOKEN); "
                "there is nothing to install.",
            )
        bolt_req = await to_bolt_request(request)
        resp = await (flow.handle_installation(bolt_req) if install else
                      flow.handle_callback(bolt_req))
        return await to_aiohttp_response(resp)

    return handle


def mount_slack(web_app: web.Application, adapter: SlackAdapter) -> None:
    """Serve the Slack routes on ``web_app`` (the relay's lifetime is the caller's)."""
    bolt_app = adapter.app
    web_app.router.add_post("/slack/events", _events_handler(bolt_app, adapter))
    web_app.router.add_get("/slack/install", _oauth_handler(bolt_app, install=True))
    web_app.router.add_get("/slack/oauth_redirect", _oauth_handler(bolt_app, install=False))


class SocketModeConnection:
    """A running Socket Mode connection; ``aclose()`` ends it (idempotent)."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    async def aclose(self) -> None:
        """Disconnect."""
        if self._handler is not None:
            handler, self._handler = self._handler, None
            await handler.close_async()

    close_async = aclose  # the name slack-bolt's own handlers use


async def start_socket_mode(adapter: SlackAdapter, app_token: str) -> SocketModeConnection:
    """Connect over Socket Mode (``SLACK_APP_TOKEN``, ``xapp-...``): no public URL needed.

    Socket Mode apps cannot be listed in the Slack Marketplace; use HTTP + OAuth in production.
    """
    from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

    bolt_app = adapter.app
    client = adapter.client()
    # slack-sdk retries a refused token forever inside connect(); ask once here to fail clearly.
    try:
        opened = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        raise ConfigError(
            f"SLACK_APP_TOKEN was refused by Slack ({exc.response.get('error')})."
        ) from None
    # The WebSocket URL carries a connection ticket: the socket client logs on SDK_LOG too.
    handler = AsyncSocketModeHandler(bolt_app, app_token, web_client=client, logger=SDK_LOG)
    handler.client.wss_uri = opened["url"]  # the URL just issued; it is good for one connection
    try:
        await handler.connect_async()
    except BaseException:
        await handler.close_async()
        raise
    return SocketModeConnection(handler)
