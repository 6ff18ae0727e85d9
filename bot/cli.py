"""The ``avatarbot`` command line: run the product, manage credits and sessions, run checks."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import click

from bot.core.errors import AvatarBotError, ConfigError
from bot.core.models import SessionState, TenantId
from bot.logs import configure_logging
from bot.settings import Settings, load_settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(exc.user_message, err=True)
        sys.exit(2)


def _tenant(text: str) -> str:
    try:
        return str(TenantId.parse(text))
    except AvatarBotError as exc:
        raise click.BadParameter(exc.user_message) from None


def _async(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; typed errors become one clear line and exit code 1."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except AvatarBotError as exc:
            click.echo(f"error: {exc.user_message}", err=True)
            sys.exit(1)
    return wrapper


async def _with_store(body: Callable[[Any], Awaitable[T]]) -> T:
    from bot.app import open_database

    backend = await open_database(_settings())
    try:
        return await body(backend.store)
    finally:
        await backend.close()


@click.group()
@click.version_option(package_name="avatarbot")
def main() -> None:
    """Real-time talking avatars in Discord and Slack."""


@main.command()
def run() -> None:
    """Start the web server, the configured platforms and the session reaper."""
    from bot.app import run as run_app

    settings = _settings()
    configure_logging(settings.log_level, settings.secrets())
    try:
        asyncio.run(run_app(settings))
    except KeyboardInterrupt:
        pass
    except AvatarBotError as exc:  # e.g. the database cannot be opened: one line, no traceback
        click.echo(f"error: {exc.user_message}", err=True)
        sys.exit(1)


# ---------------------------------------------------------------- credits
@main.group()
def credits() -> None:
    """Grant and show credits; TENANT is discord:<guild>, slack:<team> or web:playground."""


@credits.command("grant")
@click.argument("tenant")
@click.argument("amount", type=int)
@click.option("--note", default=None, help="Why the credits were granted.")
@_async
async def credits_grant(tenant: str, amount: int, note: str | None) -> None:
    """Add AMOUNT credits to TENANT."""
    key = _tenant(tenant)
    balance = await _with_store(lambda s: s.grant(key, amount, "cli", note))
    click.echo(f"{key}: granted {amount}; available {balance.available}")


@credits.command("show")
@click.argument("tenant")
@_async
async def credits_show(tenant: str) -> None:
    """Show TENANT's balance and limits."""
    key = _tenant(tenant)

    async def body(store: Any) -> None:
        if not await store.tenant_exists(key):
            raise AvatarBotError(f"Unknown tenant {key}.")
        bal, limits = await store.balance(key), await store.get_limits(key)
        click.echo(f"{key}: available {bal.available} (granted {bal.granted}, "
                   f"used {bal.settled}, reserved {bal.pending})")
        click.echo(f"  limits: {limits.max_concurrent} at once, {limits.max_minutes} min each, "
                   f"{limits.daily_user_credits} credits per person per day")

    await _with_store(body)


@credits.command("history")
@click.argument("tenant")
@click.option("--limit", default=20, show_default=True)
@_async
async def credits_history(tenant: str, limit: int) -> None:
    """List TENANT's newest ledger entries."""
    key = _tenant(tenant)
    entries = await _with_store(lambda s: s.history(key, limit))
    for e in entries:
        click.echo(f"{e.created_at:%Y-%m-%d %H:%M:%S} {e.kind:<8} {e.amount:>8} "
                   f"{e.session_id or '-':<18} {e.actor or ''} {e.note or ''}".rstrip())
    if not entries:
        click.echo(f"{key}: no entries")


# ---------------------------------------------------------------- sessions
@main.group()
def sessions() -> None:
    """List and stop sessions."""


@sessions.command("list")
@click.option("--tenant", default=None)
@click.option("--all", "show_all", is_flag=True, help="Include ended and failed sessions.")
@_async
async def sessions_list(tenant: str | None, show_all: bool) -> None:
    """List open sessions (or all with --all)."""
    key = _tenant(tenant) if tenant else None
    states = None if show_all else [SessionState.PENDING, SessionState.LIVE, SessionState.ENDING]

    async def read(store: Any) -> tuple[list[Any], list[Any]]:
        return (await store.list_sessions(key, states, 100),
                await store.list_bookings(("in_doubt",)))

    records, in_doubt = await _with_store(read)
    for r in records:
        click.echo(f"{r.id}  {r.state.value:<7} {r.tenant:<24} {r.provider:<7} "
                   f"{r.avatar_name:<16} {r.requested_s // 60:>3} min  reserved {r.reserved}")
    if not records:
        click.echo("no sessions")
    if tenant:
        in_doubt = [b for b in in_doubt if b.tenant == key]
    for b in in_doubt:
        click.echo(f"{b.session_id}  IN DOUBT {b.tenant:<24} {b.provider:<7} likely charge "
                   f"{b.likely_charge}, billed to {b.billed_to}: {b.note or ''}".rstrip())


@sessions.command("stop")
@click.argument("session_id")
@_async
async def sessions_stop(session_id: str) -> None:
    """Stop a session: ends the vendor session and settles its credits."""
    from bot.app import build_services

    async with build_services(_settings()) as services:
        summary = await services.service.stop(session_id, "stopped from the command line")
    click.echo(f"{summary.session_id}: {summary.state.value}, {summary.duration_s} s, "
               f"settled {summary.settled}, released {summary.released}")


# ---------------------------------------------------------------- ledger
@main.group()
def ledger() -> None:
    """Check the credit ledger."""


@ledger.command("verify")
@_async
async def ledger_verify() -> None:
    """Recompute every tenant from its entries; exit 1 on any mismatch."""
    problems = await _with_store(lambda s: s.verify())
    for line in problems:
        click.echo(f"MISMATCH {line}")
    if problems:
        sys.exit(1)
    click.echo("ledger ok")


# ---------------------------------------------------------------- discord
@main.group()
def discord() -> None:
    """Discord helpers."""


@discord.command("sync")
@click.option("--guild", "guild_id", type=int, default=None, help="Sync to one guild at once.")
@_async
async def discord_sync(guild_id: int | None) -> None:
    """Register the /avatar commands with Discord (globally, or in one guild)."""
    from bot.platforms.discord.sync import sync_commands

    settings = _settings()
    if settings.discord_token is None:
        raise ConfigError("DISCORD_TOKEN is not set.")
    names = await sync_commands(settings, guild_id)
    click.echo(f"synced {len(names)} command(s): {', '.join(names)}")


# ---------------------------------------------------------------- doctor
@main.command()
@_async
async def doctor() -> None:
    """Check the configuration, the database and that configured services answer."""
    from bot.app import component_status, storage_key_source
    from bot.doctor import run_checks

    settings = _settings()
    for item in component_status(settings):
        click.echo(f"[{'on ' if item.enabled else 'off'}] {item.name:<10} {item.detail}")
    click.echo(f"stored credentials are encrypted with {storage_key_source(settings)}")
    failed = 0
    for name, ok, detail in await run_checks(settings, espeak=shutil.which("espeak-ng")):
        failed += not ok
        mark = "FAIL" if not ok else "warn" if detail.startswith("WARNING") else "ok  "
        click.echo(f"{mark} {name:<18} {detail}")
    if failed:
        sys.exit(1)


# ---------------------------------------------------------------- secrets
@main.group("secrets")
def secrets_group() -> None:
    """The key that encrypts stored credentials (Slack tokens, the generated link secret)."""


@secrets_group.command("generate")
def secrets_generate() -> None:
    """Print a new key for STORAGE_KEY."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@secrets_group.command("rotate")
@_async
async def secrets_rotate() -> None:
    """Encrypt every stored credential again with the current key.

    With STORAGE_KEY: put the new key first and the old one after it, run this, then remove
    the old key. Without it: a new key is added to the key file, every credential is encrypted
    with it, and the old key is removed from the file.
    """
    from cryptography.fernet import Fernet

    from bot.app import secret_box
    from bot.core.ports import SecretsStore
    from bot.storage.secrets import write_key_file

    settings = _settings()
    box = secret_box(settings)

    async def body(store: SecretsStore) -> int:
        if box.has_key():
            await store.check_storage_key(box)
        if not box.from_file:
            return await store.reseal_secrets(box)
        old = box.keys(create=True)
        # New key first, old ones kept, until every value is sealed with the new one.
        write_key_file(box.key_file, [Fernet.generate_key(), *old])
        box.reload()
        count = await store.reseal_secrets(box)
        write_key_file(box.key_file, box.keys(create=False)[:1])
        box.reload()
        return count

    count = await _with_store(body)
    click.echo(f"re-encrypted {count} stored credential(s) with the current key")
    if not box.from_file and len(box.keys(create=False)) > 1:
        click.echo("every stored credential now opens with the first key of STORAGE_KEY alone: "
                   "you may remove the others")


# ---------------------------------------------------------------- setup (bot/cli_setup.py)
def _add_setup_commands() -> None:
    from bot.cli_setup import discord_invite, slack

    main.add_command(slack)
    discord.add_command(discord_invite)


_add_setup_commands()
