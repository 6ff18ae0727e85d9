"""What only PostgreSQL has to prove: several workers (separate pools) on one database.

Each "worker" here is its own ``PostgresStore`` (its own asyncpg pool and connections) with its
own session service and vendor, as separate ``avatarbot run`` processes would have; the
contract tests on both backends are in test_ledger.py, test_ledger_properties.py and
test_start_races.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.core.errors import InsufficientCredits, StoreUnavailable
from bot.core.events import EventHub
from bot.core.models import SessionState, utcnow
from bot.core.service import SessionService
from bot.storage.postgres import PostgresStore, redact
from tests.backends import ADMIN_URL, create_database, drop_database, open_store, run_sql
from tests.core.conftest import TENANT, cmd
from tests.fakes.provider import FakeProvider
from tests.process import bare_env, run

WORKERS = 3


@pytest.fixture
async def workers(pg_url: str) -> AsyncIterator[list[PostgresStore]]:
    first = await open_store("postgres", pg_url)
    rest = [await open_store("postgres", pg_url, fresh=False) for _ in range(WORKERS - 1)]
    stores = [first, *rest]
    assert isinstance(first, PostgresStore)
    yield stores  # type: ignore[misc]
    for store in stores:
        await store.close()


def _service(store: PostgresStore) -> tuple[SessionService, FakeProvider]:
    hub = EventHub()
    fake = FakeProvider(hub)
    return SessionService(store=store, providers={"fake": fake}, events=hub,
                          start_timeout_s=5.0, stop_timeout_s=2.0), fake


async def test_hundred_starts_over_three_workers_on_a_balance_for_ten_start_exactly_ten(workers):
    first = workers[0]
    await first.grant(TENANT, 100, "admin")  # 10 sessions of 10 minutes at 1 credit a minute
    await first.set_limits(TENANT, max_concurrent=50, daily_user_credits=100_000)
    services = [_service(store) for store in workers]

    results = await asyncio.gather(
        *(services[i % WORKERS][0].start(cmd(user=f"u{i}")) for i in range(100)),
        return_exceptions=True,
    )

    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(started) == 10
    assert all(isinstance(r, InsufficientCredits) for r in refused), refused[:3]
    vendors_started = sum(len(fake.called("start")) for _, fake in services)
    assert vendors_started == 10, "a vendor session was started without credits behind it"
    for store in workers:  # every worker sees the same ledger
        assert (await store.balance(TENANT)).available == 0
    assert await first.verify() == []


async def test_two_workers_ending_one_session_settle_it_once(workers):
    a, b = workers[0], workers[1]
    await a.grant(TENANT, 100, "admin")
    service, _ = _service(a)
    record = await service.start(cmd())
    await a.begin_end(record.id, "stopped", utcnow())

    ends = await asyncio.gather(
        a.finish_session(record.id, 3), b.finish_session(record.id, 7),
        workers[2].finish_session(record.id, 5), b.finish_session(record.id, 9),
    )

    assert {e.state for e in ends} == {SessionState.ENDED}
    settled = {e.settled for e in ends}
    assert len(settled) == 1, f"two settlements: {settled}"
    kinds = [e.kind for e in await b.history(TENANT)]
    assert kinds.count("settle") == 1 and kinds.count("release") == 1
    balance = await b.balance(TENANT)
    assert (balance.settled, balance.pending) == (settled.pop(), 0)
    assert await a.verify() == []


async def test_the_schema_itself_refuses_a_negative_balance_and_a_second_reservation(store_pg):
    await store_pg.grant(TENANT, 10, "admin")
    service, _ = _service(store_pg)
    record = await service.start(cmd(minutes=5))

    with pytest.raises(asyncpg.CheckViolationError):
        await run_sql(store_pg, "UPDATE balances SET pending = granted + 1")
    with pytest.raises(asyncpg.CheckViolationError):
        await run_sql(store_pg, "UPDATE balances SET pending = -1")
    with pytest.raises(asyncpg.UniqueViolationError):
        await run_sql(
            store_pg,
            "INSERT INTO ledger (tenant, kind, amount, session_id, created_at) "
            "VALUES (?, 'reserve', 1, ?, now())",
            TENANT, record.id,
        )
    assert (await store_pg.balance(TENANT)).available == 5
    assert await store_pg.verify() == []


@pytest.fixture
async def store_pg(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = await open_store("postgres", pg_url)
    assert isinstance(store, PostgresStore)
    yield store
    await store.close()


async def test_workers_starting_together_on_a_new_database_migrate_it_once(pg_url):
    url = await create_database()
    try:
        stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(WORKERS)))
        try:
            await stores[0].grant(TENANT, 5, "admin")
            assert (await stores[2].balance(TENANT)).available == 5
            conn = await asyncpg.connect(url)
            try:
                names = [r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")]
            finally:
                await conn.close()
            assert names == sorted(set(names)) and names[0] == "0001_initial"
        finally:
            for store in stores:
                await store.close()
    finally:
        await drop_database(url)


async def test_an_unreachable_server_is_a_plain_error_without_the_password():
    with pytest.raises(StoreUnavailable) as caught:
        await PostgresStore.open("postgresql://bot:hunter2-secret@127.0.0.1:1/avatarbot")
    message = caught.value.user_message
    assert "hunter2" not in message
    assert "no PostgreSQL server answers at 127.0.0.1:1" in message
    assert message.startswith("Cannot use the database postgresql://bot@127.0.0.1:1/avatarbot")


async def test_a_missing_database_is_named_in_the_error(pg_url):
    missing = ADMIN_URL.rpartition("/")[0] + "/avatarbot_no_such_database"
    with pytest.raises(StoreUnavailable, match="the database avatarbot_no_such_database does not"):
        await PostgresStore.open(missing)


def test_the_command_line_works_on_postgresql(pg_url, monkeypatch, tmp_path):
    """``DATABASE_URL`` moves credits, sessions and ``ledger verify`` onto PostgreSQL."""
    from click.testing import CliRunner

    from bot.cli import main

    asyncio.run(_empty(pg_url))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "unused.db"))
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "available 250" in cli("credits", "grant", "discord:123", "250", "--note", "launch")
    shown = cli("credits", "show", "discord:123")
    assert "available 250 (granted 250, used 0, reserved 0)" in shown
    assert "launch" in cli("credits", "history", "discord:123")
    assert "no sessions" in cli("sessions", "list")
    cli("ledger", "verify")
    assert not (tmp_path / "unused.db").exists(), "the SQLite file was used instead"

    # doctor names the database without its password (the local server trusts, so any will do)
    parts = urlsplit(pg_url)
    netloc = f"{parts.username or 'postgres'}:doctor-pw-123@{parts.hostname}:{parts.port or 5432}"
    with_password = urlunsplit(parts._replace(netloc=netloc))
    monkeypatch.setenv("DATABASE_URL", with_password)
    report = runner.invoke(main, ["doctor"], catch_exceptions=False).output
    [line] = [row for row in report.splitlines() if " database " in row]
    assert line.startswith("ok") and line.endswith("(ledger ok)"), line
    assert "doctor-pw-123" not in report
    monkeypatch.setenv("DATABASE_URL", pg_url)

    asyncio.run(_tamper(pg_url))
    result = runner.invoke(main, ["ledger", "verify"], catch_exceptions=False)
    assert result.exit_code == 1 and "MISMATCH discord:123" in result.output


async def _empty(url: str) -> None:
    store = await open_store("postgres", url)
    await store.close()


async def _tamper(url: str) -> None:
    store = await open_store("postgres", url, fresh=False)
    try:
        await run_sql(store, "UPDATE balances SET granted = granted + 1")
    finally:
        await store.close()


@pytest.mark.parametrize("command", [("run",), ("ledger", "verify")], ids=lambda c: c[0])
@pytest.mark.parametrize("where", ["no server", "no database"])
async def test_a_postgresql_that_cannot_be_used_is_one_line_and_an_exit(pg_url, command, where):
    """``avatarbot run`` fails fast, before serving anything, with no password and no trace."""
    base = ADMIN_URL.rpartition("/")[0]
    if where == "no server":
        url, cause = "postgresql://bot:s3cret-pw@127.0.0.1:1/avatarbot", "no PostgreSQL server"
    else:
        url, cause = base + "/avatarbot_missing_db", "the database avatarbot_missing_db does not"
    code, out, text = await run(bare_env() | {"DATABASE_URL": url, "PORT": "0"}, *command)
    assert code != 0, (out, text)
    assert "error: Cannot use the database postgresql://" in text and cause in text, text
    assert "s3cret" not in text + out
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bot:pw@db:5432/x", "postgresql://bot@db:5432/x"),
        ("postgresql://bot:p@ss/w@rd@db/x", "postgresql://bot@db/x"),  # unencoded, still cut
        ("postgresql://bot:p@ss@db/x?sslmode=require", "postgresql://bot@db/x?sslmode=require"),
        ("postgresql://db:5432/x", "postgresql://db:5432/x"),
        ("postgres://bot:pw@db:notaport/x", "postgres://bot@db:notaport/x"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    # A password holding "@" or "/" should be percent-encoded (RFC 3986), but people paste them
    # as they are: the whole of it must still stay out of messages.
    assert redact(url) == shown


async def test_a_malformed_url_is_a_plain_error_without_the_password():
    with pytest.raises(StoreUnavailable, match="the URL is malformed") as caught:
        await PostgresStore.open("postgresql://bot:hunter2@127.0.0.1:notaport/avatarbot")
    assert "hunter2" not in caught.value.user_message
