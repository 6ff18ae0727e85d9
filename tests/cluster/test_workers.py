"""Workers as separate processes, at the bus and lease level, and the composition root's wiring.

A worker here is a child Python process running the real ``bot.cluster`` code against the same
Redis. (Whole ``avatarbot run`` workers need the shared PostgreSQL store: several processes
writing one SQLite file is not what the cluster is for.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.app import build_services
from bot.cluster import RedisEventBus, RedisLeases, SharedDedupeInstallStore
from bot.core.errors import ConfigError
from bot.core.events import EventHub, Transcript
from bot.settings import Settings
from tests.cluster.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent('''
    import asyncio, sys
    import redis.asyncio as aioredis
    from bot.cluster import RedisEventBus, RedisLeases
    from bot.core.events import EventHub, Transcript

    async def main(url, prefix):
        client = aioredis.Redis.from_url(url)
        hub = EventHub()
        async with RedisEventBus(client, hub, prefix=prefix, worker_id="child"), \\
                RedisLeases(client, prefix=prefix, ttl_s=1.0, worker_id="child") as leases, \\
                hub.subscribe(None) as queue:
            assert await leases.claim(["session:s1"]) == {"session:s1"}
            print("ready", flush=True)
            while True:  # answer each question from the parent, through Redis
                event = await queue.get()
                if event.speaker == "user":
                    hub.publish(Transcript(session_id=event.session_id, speaker="avatar",
                                           text="echo: " + event.text))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
''')


async def test_a_killed_worker_process_loses_its_lease_within_the_bound(redis_client, prefix):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, REDIS_URL, prefix, env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        assert line.strip() == b"ready"
        hub = EventHub()
        leases = RedisLeases(redis_client, prefix=prefix, ttl_s=1.0, worker_id="parent")
        async with (
            RedisEventBus(redis_client, hub, prefix=prefix, worker_id="parent"),
            hub.subscribe("s1") as queue,
        ):
            # Events cross processes both ways.
            hub.publish(Transcript(session_id="s1", speaker="user", text="hello"))
            got = [await asyncio.wait_for(queue.get(), 5) for _ in range(2)]
            assert [e.text for e in got] == ["hello", "echo: hello"]
            # The live child renews its lease well past the TTL.
            for _ in range(6):
                assert await leases.claim(["session:s1"]) == set()
                await asyncio.sleep(0.4)
            # SIGKILL: no clean release. The lease is ours within the TTL (plus polling).
            child.send_signal(signal.SIGKILL)
            await child.wait()
            killed = time.monotonic()
            while not await leases.claim(["session:s1"]):
                assert time.monotonic() - killed < 3.0, "lease not taken over"
                await asyncio.sleep(0.05)
            assert time.monotonic() - killed <= 1.0 + 1.0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_redis_url_wires_the_cluster_into_the_services(redis_client, prefix, tmp_path):
    settings = Settings(
        _env_file=None, database_path=tmp_path / "w.db", redis_url=REDIS_URL,
        redis_prefix=prefix, lease_ttl_s=3, playground_enabled=False,
    )
    async with build_services(settings) as services:
        cluster = services.cluster
        assert cluster is not None
        assert services.events.bus is cluster.bus
        assert services.reaper.leases is cluster.leases
        assert isinstance(services.slack_installs, SharedDedupeInstallStore)
        assert await services.slack_installs.remember_event("Ev1", "T1") is True
        assert await services.slack_installs.remember_event("Ev1", "T1") is False
        assert await services.reaper.leases.claim(["global"]) == {"global"}
        assert await redis_client.get(f"{prefix}lease:global") == cluster.worker_id.encode()
    # Leaving the services released the lease.
    assert await redis_client.get(f"{prefix}lease:global") is None


async def test_without_redis_url_nothing_changes(tmp_path):
    settings = Settings(_env_file=None, database_path=tmp_path / "one.db",
                        playground_enabled=False)
    async with build_services(settings) as services:
        assert services.cluster is None
        assert services.events.bus is None
        assert services.reaper.leases is None


async def test_unreachable_redis_is_a_clear_error_without_the_password(tmp_path):
    settings = Settings(
        _env_file=None, database_path=tmp_path / "x.db",
        redis_url="redis://:hunter2-secret@127.0.0.1:1/0", playground_enabled=False,
    )
    with pytest.raises(ConfigError) as caught:
        async with build_services(settings):
            pass
    assert "REDIS_URL" in caught.value.user_message
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)


async def test_a_worker_shutting_down_ends_only_its_own_local_sessions(
    redis_client, prefix, tmp_path
):
    """A rolling restart: the leaving worker ends what cannot outlive it and that it tends;
    vendor sessions and other workers' sessions stay live for the others to tend."""
    from bot.app import _end_sessions
    from bot.core.models import SessionRecord, SessionState
    from bot.core.service import StartCommand
    from tests.fakes.provider import FakeProvider

    settings = Settings(
        _env_file=None, database_path=tmp_path / "w.db", redis_url=REDIS_URL,
        redis_prefix=prefix, lease_ttl_s=5, playground_enabled=False,
        stop_sessions_on_shutdown=True,
    )
    other = RedisLeases(redis_client, prefix=prefix, ttl_s=5, worker_id="other-worker")
    async with build_services(settings) as services:
        vendor = FakeProvider(services.events, name="vendor")
        rendered = FakeProvider(services.events, name="rendered", survives_restart=False)
        services.providers.update(vendor=vendor, rendered=rendered)
        await services.store.grant("discord:1", 100, "test")
        await services.store.set_limits("discord:1", max_concurrent=5)

        async def start(provider: str) -> SessionRecord:
            return await services.service.start(StartCommand(
                tenant="discord:1", user="u1", provider=provider, minutes=5,
            ))

        mine_vendor, mine_rendered, theirs = (
            await start("vendor"), await start("rendered"), await start("rendered"),
        )
        leases = services.reaper.leases
        assert await other.claim([f"session:{theirs.id}"])
        assert await leases.claim(f"session:{s.id}" for s in (mine_vendor, mine_rendered, theirs)) \
            == {f"session:{mine_vendor.id}", f"session:{mine_rendered.id}"}
        await _end_sessions(services)
        states = {s.id: (await services.store.get_session(s.id)).state
                  for s in (mine_vendor, mine_rendered, theirs)}
    assert states == {
        mine_vendor.id: SessionState.LIVE, mine_rendered.id: SessionState.ENDED,
        theirs.id: SessionState.LIVE,
    }
    assert len(rendered.called("stop")) == 1 and vendor.called("stop") == []
    # On the way out the worker released its vendor session's lease: another takes it at once.
    assert await other.claim([f"session:{mine_vendor.id}"]) == {f"session:{mine_vendor.id}"}
