"""Whole ``avatarbot run`` workers for the several-worker tests, on one PostgreSQL and one Redis.

``worker_env`` is the environment every worker of a test shares (its database, its Redis key
prefix, one ``SECRET_KEY``, short lease times, the fake vendors and Slack); ``Workers`` starts
processes in it, each on a port of its own, keeps what each prints (for the failure message and
so that no worker blocks on a full pipe), SIGKILLs one, and stops the rest with SIGTERM.
A lease's value holds its worker's pid (``bot/cluster/leases.py``): ``Worker.holds`` tells them
apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.cluster.conftest import REDIS_URL, SLACK_TOKEN
from tests.fakes.a2e import FakeA2E
from tests.fakes.slack import FakeSlack
from tests.process import BIN, free_port
from tests.slack.conftest import SECRET
from tests.test_product import read_banner

SCRUBBED = ("DISCORD_", "SLACK_", "A2E_", "AKOOL_", "LIVEAVATAR_", "HEYGEN_", "LLM_", "REDIS_",
            "DATABASE_")
SECRET_KEY = "one-secret-for-every-worker-0123"
BOOT_S = 120  # until a worker prints its banner


def worker_env(*, pg_url: str, prefix: str, tmp_path: Path, lease_ttl_s: float,
               reaper_interval_s: float, **settings: str) -> dict[str, str]:
    """The environment all workers of a test share; ``settings`` are more variables.

    ``DATABASE_PATH`` points at a file that must never be made: every worker is on PostgreSQL.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    return base | {
        "DATABASE_URL": pg_url, "DATABASE_PATH": str(tmp_path / "never-made.db"),
        "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix, "LEASE_TTL_S": str(lease_ttl_s),
        "REAPER_INTERVAL_S": str(reaper_interval_s), "SECRET_KEY": SECRET_KEY,
    } | settings


def fake_vendors(slack: FakeSlack, a2e: FakeA2E) -> dict[str, str]:
    """The settings that point a worker at the ``fakes`` fixture's Slack (over HTTP) and A2E."""
    return {
        "SLACK_SIGNING_SECRET": SECRET, "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_API_URL": slack.api_url, "A2E_API_KEY": a2e.api_key, "A2E_BASE_URL": a2e.url,
    }


@dataclass
class Worker:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    output: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None  # reads its output after the banner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def holds(self, lease_value: str) -> bool:
        """Whether a lease's value names this worker."""
        return f"-{self.pid}-" in lease_value

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class Workers:
    """``avatarbot run`` processes in one environment; ``async with`` stops those still running."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.all: dict[str, Worker] = {}

    async def start(self, *names: str, ports: dict[str, int] | None = None,
                    extra: dict[str, dict[str, str]] | None = None) -> list[Worker]:
        """Start one worker per name (on ``ports[name]`` or a free port, with ``extra[name]``:
        its own variables) and wait until each serves; they boot side by side."""
        started = []
        for name in names:
            port = (ports or {}).get(name) or free_port()
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "avatarbot"), "run",
                env=self.env | {"PORT": str(port)} | (extra or {}).get(name, {}),
                cwd=self.cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            self.all[name] = worker = Worker(name, port, proc)
            started.append(worker)
        for worker in started:
            # Generous: several workers import and connect at once on a machine that may be busy.
            worker.output.append(await read_banner(worker.proc, within=BOOT_S))
            worker.drain = asyncio.create_task(self._keep(worker))
        return started

    async def _keep(self, worker: Worker) -> None:
        assert worker.proc.stdout is not None
        while line := await worker.proc.stdout.readline():
            worker.output.append(line.decode(errors="replace"))

    def __getitem__(self, name: str) -> Worker:
        return self.all[name]

    def by_lease(self, value: str) -> Worker | None:
        """The worker a lease's value names, if one of ours."""
        return next((w for w in self.all.values() if w.holds(value)), None)

    async def kill(self, name: str) -> None:
        """SIGKILL: the worker gets no chance to release anything."""
        worker = self.all[name]
        worker.proc.send_signal(signal.SIGKILL)
        await worker.proc.wait()

    def outputs(self) -> str:
        """Everything the workers printed, for a failure message."""
        return "\n".join(f"--- worker {w.name} (pid {w.pid}, port {w.port})\n" + "".join(w.output)
                         for w in self.all.values())

    async def stop(self, within_s: float = 40) -> None:
        """SIGTERM each running worker and wait for all of them to exit."""
        for worker in self.all.values():
            if worker.alive:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.all.values():
            await asyncio.wait_for(worker.proc.wait(), within_s)
            if worker.drain is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(worker.drain, 5)

    async def __aenter__(self) -> Workers:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.stop()
        finally:
            for worker in self.all.values():
                if worker.alive:
                    worker.proc.kill()
                    await worker.proc.wait()


async def lease_of(redis: aioredis.Redis, prefix: str, name: str) -> str:
    """The worker id holding the lease ``name`` ('' when none does)."""
    return ((await redis.get(f"{prefix}lease:{name}")) or b"").decode()


async def lease_value(redis: aioredis.Redis, prefix: str, session_id: str) -> str:
    """The worker id holding a session's lease ('' when none does)."""
    return await lease_of(redis, prefix, f"session:{session_id}")
