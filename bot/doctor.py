"""``avatarbot doctor``: checks that what is configured can actually work here."""

from __future__ import annotations

import httpx

from bot.core.errors import ConfigError, StoreUnavailable
from bot.core.ice import display_url
from bot.core.ports import SecretsStore
from bot.platforms.token_checks import check_discord, check_slack, check_slack_app_token
from bot.providers.registry import VENDORS
from bot.settings import Settings

Check = tuple[str, bool, str]


async def run_checks(settings: Settings, *, espeak: str | None) -> list[Check]:
    """Run every check; each is (name, passed, detail). Secrets are never printed."""
    checks = [await _database(settings)]
    missing = "not found: the local avatar cannot speak (apt-get install espeak-ng)"
    checks.append(("espeak-ng", espeak is not None, espeak or missing))
    async with httpx.AsyncClient(timeout=5.0) as http:
        for name, url in _endpoints(settings):
            checks.append(await _reachable(http, name, url))
    # The chat platforms: the tokens themselves, asked of Slack and Discord.
    for slack in (await check_slack(settings), await check_slack_app_token(settings)):
        if slack is not None:
            checks.append(slack)
    checks.extend(await check_discord(settings))
    return checks


async def _database(settings: Settings) -> Check:
    from bot.app import open_database

    where = settings.database_path if settings.database_url is None else "DATABASE_URL"
    try:
        backend = await open_database(settings)
    except StoreUnavailable as exc:  # names the database and the cause itself
        return ("database", False, exc.user_message)
    except Exception as exc:  # noqa: BLE001 - any failure to open is what this check reports
        # A PostgreSQL driver's text may quote the URL: only the error's kind is shown then.
        why = str(exc) if settings.database_url is None else type(exc).__name__
        return ("database", False, f"{where}: {why}")
    try:
        problems = await backend.store.verify()
        in_doubt = await backend.store.list_bookings(("in_doubt",))
        key_check = await _storage_key(settings, backend.store)
    finally:
        await backend.close()
    if key_check is not None:
        return key_check
    if in_doubt and not problems:
        charge = sum(b.likely_charge for b in in_doubt)
        return ("database", True, f"WARNING: {len(in_doubt)} vendor booking(s) in doubt "
                f"(likely charge {charge} credits): check them at the vendor; "
                "avatarbot sessions list shows them")
    if problems:
        detail = f"{len(problems)} ledger mismatch(es): run avatarbot ledger verify"
        return ("database", False, detail)
    return ("database", True, f"{backend.where} (ledger ok)")


async def _storage_key(settings: Settings, store: SecretsStore) -> Check | None:
    """A failed check when the configured key cannot open the stored credentials."""
    from bot.app import secret_box

    try:
        box = secret_box(settings)
        if box.has_key():  # doctor does not make the key file
            await store.check_storage_key(box)
    except ConfigError as exc:
        return ("database", False, exc.user_message)
    return None


def _endpoints(settings: Settings) -> list[tuple[str, str]]:
    found = []
    for vendor in VENDORS:
        if getattr(settings, f"{vendor}_api_key") is not None:
            found.append((vendor, str(getattr(settings, f"{vendor}_base_url"))))
    # Discord, and Slack with a bot token, are checked with their tokens (token_checks.py).
    if settings.slack_enabled and settings.slack_bot_token is None:
        found.append(("slack", str(settings.slack_api_url).rstrip("/") + "/api.test"))
    if settings.llm_base_url is not None:
        found.append(("llm", str(settings.llm_base_url)))
    return found


async def _reachable(http: httpx.AsyncClient, name: str, url: str) -> Check:
    """Any HTTP answer counts: this checks the network path, not the credentials."""
    shown = display_url(url)  # a password in a base URL is not printed
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        return (name, False, f"{shown} unreachable ({type(exc).__name__})")
    return (name, True, f"{shown} answered HTTP {response.status_code}")
