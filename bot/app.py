"""The composition root: the one module that imports every layer and wires them together.

``build_services`` opens the shared parts (HTTP client, store, providers, session service) in one
``AsyncExitStack``; ``run`` adds the web server, the chat platforms and the reaper in one
``TaskGroup`` and shuts everything down cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import aiohttp
import httpx
from aiohttp import web

from bot.compat.cancel import cancel_and_wait
from bot.core.bookings import BookingKeeper
from bot.core.events import EventHub
from bot.core.ice import display_url
from bot.core.leases import session_lease
from bot.core.links import ViewerLinks
from bot.core.models import PLAYGROUND, ComponentStatus
from bot.core.ports import SecretsStore, SessionStore, SlackInstallStore
from bot.core.provider import AvatarProvider
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.providers._http import vendor_client
from bot.settings import Settings
from bot.storage import Backend, open_backend
from bot.storage.secrets import SecretBox

if TYPE_CHECKING:
    from bot.cluster.wiring import Cluster
    from bot.platforms.discord import AvatarBot
    from bot.platforms.slack import SlackAdapter

log = logging.getLogger(__name__)

# Connections to vendors from the one shared client (docs/backpressure.md).
VENDOR_CONNECTIONS = 512


@dataclass
class Services:
    """Everything the platforms and the web layer are built from."""

    settings: Settings
    http: httpx.AsyncClient
    store: SessionStore
    events: EventHub
    providers: dict[str, AvatarProvider]
    service: SessionService
    reaper: SessionReaper
    links: ViewerLinks
    slack_installs: SlackInstallStore
    tenants: TenantService
    bindings: ChatBindings
    box: SecretBox
    # Set when REDIS_URL is: the other workers' events, leases, shared dedupe and rate limits.
    cluster: Cluster | None = None


def build_providers(
    settings: Settings, http: httpx.AsyncClient, events: EventHub
) -> dict[str, AvatarProvider]:
    """The configured vendors plus the always-on local avatar."""
    from bot.providers.local import LLMConfig, LocalProvider
    from bot.providers.registry import build_vendor_providers

    providers = build_vendor_providers(settings, http, events)
    llm = None
    if settings.llm_base_url and settings.llm_model:
        llm = LLMConfig(
            base_url=str(settings.llm_base_url), api_key=settings.llm_api_key,
            model=settings.llm_model,
        )
    providers["local"] = LocalProvider(
        events=events, pricing=settings.pricing("local"), width=settings.local_video_width,
        height=settings.local_video_height, fps=settings.local_video_fps,
        ice_servers=settings.local_ice_servers, allow_loopback=settings.local_allow_loopback,
        llm=llm, http=http, max_sessions=settings.local_max_sessions,
        max_viewers=settings.local_max_viewers,
        max_viewers_per_session=settings.local_max_viewers_per_session,
        speech_buffer_bytes=settings.local_speech_buffer_bytes,
        max_pending_says=settings.local_max_pending_says,
    )
    return providers


def component_status(settings: Settings) -> list[ComponentStatus]:
    """What is on and off, and why, for the startup banner, ``doctor`` and the home page."""
    from bot.providers.registry import describe_vendors

    items = [ComponentStatus(name="web", kind="web", enabled=True,
                             detail=display_url(settings.base_url))]
    for name, enabled, why in describe_vendors(settings):
        items.append(ComponentStatus(name=name, kind="provider", enabled=enabled, detail=why))
    items.append(ComponentStatus(
        name="local", kind="provider", enabled=True,
        detail="built-in avatar" + (" with an LLM" if settings.llm_base_url else ""),
    ))
    items.append(ComponentStatus(
        name="discord", kind="platform", enabled=settings.discord_token is not None,
        detail="token set" if settings.discord_token else "set DISCORD_TOKEN to enable",
    ))
    items.append(ComponentStatus(
        name="slack", kind="platform", enabled=settings.slack_enabled,
        detail=_slack_detail(settings),
    ))
    items.append(ComponentStatus(
        name="playground", kind="web", enabled=settings.playground_enabled,
        detail=f"{settings.playground_credits} credits a day" if settings.playground_enabled
        else "PLAYGROUND_ENABLED is false",
    ))
    return items


def _slack_detail(settings: Settings) -> str:
    if settings.slack_enabled:
        mode = "OAuth (many workspaces)" if settings.slack_client_id else "one workspace"
        return mode + (", Socket Mode" if settings.slack_app_token else ", HTTP events")
    if settings.slack_signing_secret is None:
        return "set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN (or SLACK_CLIENT_ID/SECRET) to enable"
    return "set SLACK_BOT_TOKEN, or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET, to enable"


@asynccontextmanager
async def build_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the shared services; everything closes when the block exits."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(vendor_client(
            timeout_s=settings.vendor_timeout_s,
            # Each session has at most one vendor call in flight (its queue sends them in
            # turn), so many sessions mean many calls at once: a pool of 100 made the rest wait
            # for a connection (docs/backpressure.md).
            max_connections=VENDOR_CONNECTIONS,
        ))
        box = secret_box(settings)
        backend = await open_database(settings, box)
        stack.push_async_callback(backend.close)
        store = backend.store
        # On either backend: a wrong STORAGE_KEY is one clear error here, not a failure at the
        # first Slack request; rows from before encryption are sealed now.
        await store.check_storage_key(box)
        if sealed := await store.seal_plain_secrets(box):
            log.info("encrypted %d stored credential(s) kept in plain text", sealed)
        events = EventHub()
        events.relay.max_wait_s = settings.relay_max_wait_s
        cluster = None
        if settings.redis_url is not None:
            from bot.cluster.wiring import open_cluster

            cluster = await stack.enter_async_context(open_cluster(
                settings.redis_url.get_secret_value(), events, prefix=settings.redis_prefix,
                lease_ttl_s=settings.lease_ttl_s,
            ))
        providers = build_providers(settings, http, events)
        for provider in providers.values():
            stack.push_async_callback(provider.aclose)
        service = SessionService(
            store=store, providers=providers, events=events,
            default_minutes=settings.default_session_minutes,
            bookings=await _booking_keeper(settings, store),
        )
        reaper = SessionReaper(
            service, idle_timeout_s=settings.idle_timeout_s,
            warn_before_end_s=settings.warn_before_end_s, interval_s=settings.reaper_interval_s,
            transcript_retention_s=settings.transcript_retention_h * 3600,
            leases=cluster.leases if cluster is not None else None,
        )
        link_secret = await _link_secret(settings, store, box)
        links = ViewerLinks(link_secret, settings.base_url)
        if cluster is not None:
            from bot.cluster.homes import RedisHomes, forward_key

            cluster.homes = await stack.enter_async_context(RedisHomes(
                cluster.client, prefix=settings.redis_prefix, worker_id=cluster.worker_id,
                url=settings.advertised_url, key=forward_key(link_secret),
                ttl_s=settings.lease_ttl_s, leases=cluster.leases,
            ))
            service.homes = cluster.homes
        await top_up_playground(settings, store)
        # Unwound before the database closes: the event ids still in memory reach the table.
        stack.push_async_callback(backend.installs.aclose)
        await service.counts.load()
        slack_installs: SlackInstallStore = backend.installs
        if cluster is not None:
            from bot.cluster.shared import SharedDedupeInstallStore

            slack_installs = SharedDedupeInstallStore(slack_installs, cluster.dedupe)
        yield Services(
            settings, http, store, events, providers, service, reaper, links,
            tenants=TenantService(store), bindings=ChatBindings(store),
            slack_installs=slack_installs, box=box, cluster=cluster,
        )


async def _booking_keeper(settings: Settings, store: SessionStore) -> BookingKeeper:
    """Who books: ``DEPLOYMENT_ID``, or one made once and kept in the database."""
    deployment = settings.deployment_id or await store.get_or_set_meta(
        "deployment_id", secrets.token_hex(6)
    )
    return BookingKeeper(
        store, deployment_id=deployment, billed_to=settings.in_doubt_billed_to,
        sweep_unknown=settings.sweep_unknown_vendor_sessions,
    )


def secret_box(settings: Settings) -> SecretBox:
    """The box sealing stored credentials: ``STORAGE_KEY``, else the database's key file."""
    key = settings.storage_key.get_secret_value() if settings.storage_key else None
    return SecretBox.from_settings(key, settings.database_path)


async def open_database(settings: Settings, box: SecretBox | None = None) -> Backend:
    """PostgreSQL when ``DATABASE_URL`` is set, else the SQLite file; migrated, ready to use.

    Raises:
        StoreUnavailable: the database cannot be reached, opened or migrated.
    """
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return await open_backend(
        database_url=url, database_path=settings.database_path,
        default_limits=settings.default_limits(), box=box,
    )


async def _link_secret(settings: Settings, store: SecretsStore, box: SecretBox) -> bytes:
    """``SECRET_KEY``, or one made once and kept (sealed) in the database so links survive."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return (await store.link_secret(box, secrets.token_hex(32))).encode()


async def refill_playground(
    settings: Settings, store: SessionStore, *, interval_s: float = 30.0,
    today: Callable[[], date] | None = None,
) -> None:
    """Top the playground up again each new UTC day while running (checked every ``interval_s``).

    ``top_up_playground`` grants at most once per day (a marker in the meta table), so checking
    often costs one read; the budget is back within ``interval_s`` of midnight UTC.
    """
    clock = today or (lambda: datetime.now(UTC).date())
    while True:
        await asyncio.sleep(interval_s)
        try:
            await top_up_playground(settings, store, today=clock())
        except Exception:
            log.exception("could not refill the playground budget")


async def top_up_playground(
    settings: Settings, store: SessionStore, *, today: date | None = None
) -> None:
    """Give the playground its daily budget and limits (once per UTC day)."""
    if not settings.playground_enabled:
        return
    tenant = str(PLAYGROUND)
    await store.ensure_tenant(tenant)
    limits = settings.playground_limits()
    await store.set_limits(
        tenant, max_concurrent=limits.max_concurrent, max_minutes=limits.max_minutes,
        daily_user_credits=limits.daily_user_credits,
    )
    day = (today or datetime.now(UTC).date()).isoformat()
    marker = secrets.token_hex(8)
    if await store.get_or_set_meta(f"playground_topup:{day}", marker) != marker:
        return  # already topped up today
    missing = settings.playground_credits - (await store.balance(tenant)).available
    if missing > 0:
        await store.grant(tenant, missing, "system", "daily playground budget")


async def run(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run the whole product until SIGINT/SIGTERM."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":  # asyncio has no signal handlers there
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
    async with build_services(settings) as services, AsyncExitStack() as stack:
        # Finish what a crash left before anyone can start a session.
        await services.reaper.reconcile()
        # The Slack Web API session, closed last (after the relay's final posts).
        slack_http = aiohttp.ClientSession() if settings.slack_enabled else None
        if slack_http is not None:
            stack.push_async_callback(slack_http.close)
        web_app, slack = _build_web(services, slack_http)
        if slack is not None:
            # The process's one Slack relay: running before the first request is served, closed
            # after the web server and the socket (the stack unwinds in reverse), so the end
            # summaries of a shutdown still reach their threads.
            await stack.enter_async_context(slack.relay)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        print_banner(settings)
        async with asyncio.TaskGroup() as group:
            reaper = services.reaper.run(reconcile_first=False)
            started = [group.create_task(reaper, name="reaper")]
            service = services.service
            started.append(group.create_task(service.keep_transcripts(), name="transcripts"))
            started.append(group.create_task(
                service.watch_other_writers(settings.store_watch_interval_s), name="store-watch"
            ))
            if settings.playground_enabled:  # else each wake-up would only return
                started.append(group.create_task(
                    refill_playground(settings, services.store), name="playground-refill"
                ))
            started += await _start_platforms(services, slack, stack, group)
            # What exists now lives as long as the process (modules, the app, its clients): out
            # of the cyclic collector's sight, its full collections walk only what came after.
            # A full collection of the startup heap held the loop for 40-60 ms (issue 15,
            # bench/README.md Run E).
            gc.collect()
            gc.freeze()
            if ready is not None:
                ready.set()
            await stopping.wait()
            log.info("shutting down")
            # No new starts; the ones in flight finish (bounded) so what they book is recorded
            # and, below, ended with the rest.
            since = loop.time()
            service.stop_accepting()
            await service.drain_starts(settings.shutdown_start_wait_s)
            ended = await _end_sessions(services)
            log.info("shutdown: %d session(s) ended in %.1f s", ended, loop.time() - since)
            # Messages still queued for a vendor are moot once their sessions ended.
            await services.service.queues.aclose()
            # Again and again if need be: a task inside a Redis call can lose one cancellation.
            await asyncio.gather(*(cancel_and_wait(task) for task in started))
        # What the stack closes now: the chat relays' last posts (the end summaries), the web
        # server, the Slack session.
    log.info("shutdown: done in %.1f s", loop.time() - since)


def _build_web(
    services: Services, slack_http: aiohttp.ClientSession | None = None
) -> tuple[web.Application, SlackAdapter | None]:
    """The web app, with the Slack routes mounted when Slack is configured."""
    from web.app import create_app

    settings = services.settings
    web_app = create_app(
        service=services.service, links=services.links, settings=settings,
        status=component_status(settings),
        shared_limiter=services.cluster.limiter if services.cluster is not None else None,
        home_key=services.cluster.homes.key
        if services.cluster is not None and services.cluster.homes is not None else None,
    )
    slack = None
    if settings.slack_enabled:
        from bot.platforms.slack import build_slack, mount_slack

        slack = build_slack(
            settings=settings, service=services.service, tenants=services.tenants,
            bindings=services.bindings, links=services.links,
            installs=services.slack_installs, session=slack_http,
        )
        mount_slack(web_app, slack)
    return web_app, slack


async def _start_platforms(
    services: Services, slack: SlackAdapter | None, stack: AsyncExitStack,
    group: asyncio.TaskGroup,
) -> list[asyncio.Task[None]]:
    settings = services.settings
    started = []
    if settings.discord_token is not None:
        from bot.platforms.discord import build_discord_client

        identify_gate = None
        if services.cluster is not None and settings.discord_shards() is not None:
            from bot.cluster.shared import RedisPacingGate
            from bot.platforms.discord.shards import IDENTIFY_INTERVAL_S

            # The IDENTIFY buckets are the bot's, shared by every worker holding its shards.
            identify_gate = RedisPacingGate(
                services.cluster.client, prefix=settings.redis_prefix, name="discord-identify",
                worker_id=services.cluster.worker_id, interval_s=IDENTIFY_INTERVAL_S,
            )
        client = build_discord_client(
            settings=settings, service=services.service, tenants=services.tenants,
            bindings=services.bindings, links=services.links, identify_gate=identify_gate,
        )
        stack.push_async_callback(client.close)
        token = settings.discord_token.get_secret_value()
        started.append(group.create_task(
            _guard(_run_discord(services, client, token), "discord"), name="discord"))
    if slack is not None and settings.slack_app_token is not None:
        from bot.platforms.slack import start_socket_mode

        app_token = settings.slack_app_token.get_secret_value()
        handler = await start_socket_mode(slack, app_token)
        stack.push_async_callback(handler.aclose)
    return started


async def _run_discord(services: Services, client: AvatarBot, token: str) -> None:
    """Connect the Discord client; a worker of several first takes its shards' leases."""
    shards = services.settings.discord_shards()
    if services.cluster is not None and shards is not None:
        from bot.platforms.discord.shards import hold_shards

        await hold_shards(services.cluster.leases, shards[1],
                          retry_s=services.settings.lease_ttl_s / 3)
    await client.start(token)


async def _guard(coro: object, name: str) -> None:
    """Run a platform; a crash of one platform is logged and does not stop the others."""
    try:
        await coro  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s stopped with an error", name)


async def _end_sessions(services: Services) -> int:
    """End sessions that cannot outlive the process, or all of them if so configured; how many.

    At most ``SHUTDOWN_PARALLELISM`` at a time: one after the other, 500 sessions whose vendor
    takes 100 ms per stop took 108 s (issue 15), far beyond a service manager's stop timeout.
    One worker of several ends only the sessions it tends that cannot outlive it; the others'
    leases are released on the way out and another worker takes them over at once.
    """
    leases = services.cluster.leases if services.cluster is not None else None
    gate = asyncio.Semaphore(services.settings.shutdown_parallelism)

    async def end(record_id: str) -> None:
        async with gate:
            try:
                await asyncio.wait_for(services.service.stop(record_id, "the server shut down"), 30)
            except Exception:
                log.exception("could not end session %s at shutdown", record_id)

    ending = []
    for record in await services.service.open_sessions():
        provider = services.providers.get(record.provider)
        survives = provider is not None and provider.capabilities.survives_restart
        if leases is not None:
            if survives or not leases.holds(session_lease(record.id)):
                continue
        if services.settings.stop_sessions_on_shutdown or not survives:
            ending.append(end(record.id))
    await asyncio.gather(*ending)
    return len(ending)


def print_banner(settings: Settings) -> None:
    """Print what is on and off, and why."""
    print(f"avatarbot is running on {settings.base_url}", flush=True)
    for item in component_status(settings):
        mark = "on " if item.enabled else "off"
        print(f"  [{mark}] {item.kind:<8} {item.name:<10} {item.detail}", flush=True)
    print(f"  stored credentials are encrypted with {storage_key_source(settings)}", flush=True)


def storage_key_source(settings: Settings) -> str:
    """Where the key of stored credentials comes from, for the banner and ``doctor``."""
    box = secret_box(settings)
    if not box.from_file:
        return "STORAGE_KEY"
    state = "" if box.has_key() else ", made on first use"
    return f"the key file {box.key_file} (STORAGE_KEY unset; back it up with the database{state})"
