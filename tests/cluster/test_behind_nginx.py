"""Three ``avatarbot run`` workers behind Debian's nginx, as the README's "Running several
workers" sets them up: one PostgreSQL database, one Redis, the fake Slack and A2E.

nginx takes turns between the workers (docs/nginx.conf, rendered by tests/cluster/nginx.py), so the
three Slack starts land on three workers, and so do the viewers' WebSockets and the thread
messages: each viewer sees lines sent through the other workers. One worker is then SIGKILLed
mid-session. Its sessions' leases pass to the others within LEASE_TTL_S plus one reaper tick;
thread messages sent meanwhile still reach the avatar (nginx skips the dead worker); the viewer
it served reconnects through nginx and sees the session live. At the end every thread message
reached the vendor (or its writer was told why not) and is in the transcript a viewer downloads,
every session is stopped through nginx with its vendor room left, and ``avatarbot ledger verify``
is clean on PostgreSQL.

Vendor sessions are A2E's, driven from the server: any worker can send a session's messages. (The
local avatar and the page-driven vendors need forwarding to their owning worker; see
docs/scale-out.md, "Not done yet".)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.backends import open_store
from tests.cluster.harness import Workers, fake_vendors, lease_value, worker_env
from tests.cluster.nginx import serve
from tests.fakes.slack import ApiCall
from tests.process import cli, free_port
from tests.slack.conftest import SlackHarness
from tests.test_product import AVATAR

TTL_S, TICK_S = 2, 1
CHANNELS = ("C1", "C2", "C3")
WS = "/ws"


@dataclass
class Viewer:
    """A viewer page's WebSocket through nginx: what it received, and whether it was dropped."""

    ws: aiohttp.ClientWebSocketResponse
    hello: dict[str, Any]
    received: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str) -> Viewer:
        ws = await http.ws_connect(url + WS, timeout=aiohttp.ClientWSTimeout(ws_close=5))
        viewer = cls(ws, await ws.receive_json(timeout=15))
        viewer.task = asyncio.create_task(viewer._read())
        return viewer

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.received.append(json.loads(message.data))
        self.closed.set()

    def user_lines(self) -> list[str]:
        return [m["text"] for m in self.received
                if m.get("type") == "transcript" and m.get("speaker") == "user"]

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


@dataclass
class Session:
    channel: str
    thread_ts: str
    id: str
    viewer_url: str
    room: str = ""  # the A2E channel booked for it
    sent: list[str] = field(default_factory=list)


async def until(check: Any, within: float, what: str) -> None:
    """Poll ``check()`` (sync or async) until true; fail saying ``what`` otherwise."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


_texts = itertools.count(1)


async def thread_message(slack: SlackHarness, session: Session) -> None:
    """A person's reply in the session's thread, delivered as Slack does: an answer other than
    200 is retried (same event id, ``X-Slack-Retry-Num``), at most three times."""
    text = f"Question {next(_texts)} for {session.channel}?"
    ts = f"{time.time():.6f}"
    event = {"type": "message", "channel": session.channel, "user": "U1", "text": text,
             "ts": ts, "thread_ts": session.thread_ts, "channel_type": "channel", "event_ts": ts}
    event_id = f"Ev{session.channel}{ts.replace('.', '')}"
    session.sent.append(text)
    for attempt in range(4):
        status, body = await slack.event(event, event_id=event_id,
                                         retry=attempt if attempt else None)
        if status == 200:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"Slack's event was never accepted: {status} {body}")


async def test_three_workers_behind_nginx_survive_a_killed_worker(
    fakes, pg_url, redis_client, prefix, tmp_path
):
    slack, a2e = fakes
    await (await open_store("postgres", pg_url)).close()  # the tables, empty
    ports = {name: free_port() for name in ("a", "b", "c")}
    async with contextlib.AsyncExitStack() as stack:
        nginx = await stack.enter_async_context(serve(tmp_path / "nginx", list(ports.values())))
        env = worker_env(
            pg_url=pg_url, prefix=prefix, tmp_path=tmp_path, lease_ttl_s=TTL_S,
            reaper_interval_s=TICK_S, PUBLIC_URL=nginx.url, TRUSTED_PROXIES="127.0.0.1",
            DEFAULT_MAX_CONCURRENT="3", **fake_vendors(slack, a2e),
        )
        workers = await stack.enter_async_context(Workers(env, tmp_path))
        # Discord joins here: DISCORD_TOKEN and DISCORD_SHARD_COUNT=2 in ``env`` (the fake
        # gateway of tests/fakes/discord.py), and DISCORD_SHARD_IDS per worker in ``extra``
        # ("0" for a, "1" for b); c runs without Discord.
        extra: dict[str, dict[str, str]] = {}
        await asyncio.gather(workers.start(*ports, ports=ports, extra=extra),
                             cli(env, "credits", "grant", "slack:T1", "500"))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        harness = SlackHarness(slack, None, nginx.url, None)
        stack.push_async_callback(harness.http.close)
        try:
            await _scenario(slack, a2e, harness, http, workers, nginx, redis_client, prefix)
        except BaseException:
            print(workers.outputs(), "\n--- nginx\n", nginx.error_log())
            raise
    # Everything has stopped: no vendor room is left open and the ledger adds up.
    assert a2e.open_rooms() == []
    assert "ledger ok" in await cli(env, "ledger", "verify")
    assert not (tmp_path / "never-made.db").exists()
    _spread_as_logged(nginx.access_log(), workers)


async def _scenario(slack, a2e, harness, http, workers, nginx, redis_client, prefix) -> None:
    # --- three starts through nginx: one per worker
    sessions: list[Session] = []
    for channel in CHANNELS:
        status, _ = await harness.command(f"start a2e:{AVATAR} 3", channel=channel)
        assert status == 200
        post = await _anchor(slack, channel)
        viewer, stop = post.params["blocks"][1]["elements"]
        sessions.append(Session(channel, post.result["ts"], stop["value"], viewer["url"]))
        assert viewer["url"].startswith(nginx.url + "/v/")  # links point at the proxy
    assert len(a2e.rooms) == 3
    for session, room in zip(sessions, a2e.rooms, strict=True):  # booked in this order
        session.room = room
    holders = {}
    for session in sessions:
        await until(lambda s=session: lease_value(redis_client, prefix, s.id), 15,
                    f"a worker tends {session.id}")
        holders[session.id] = workers.by_lease(await lease_value(redis_client, prefix, session.id))
    # Each starter claims its session at once (a reaper tick elsewhere may beat it to it: nginx's
    # log, not the leases, shows that the starts were spread).
    assert all(holders.values())

    # --- a viewer per session, through nginx, and thread messages spread over the workers
    viewers = {s.id: await Viewer.open(http, s.viewer_url) for s in sessions}
    assert all(v.hello["state"] == "live" for v in viewers.values())
    for _ in range(2):
        for session in sessions:
            await thread_message(harness, session)
    await _lines_seen(sessions, viewers)
    # The viewers showed them: each line is also in the transcript a viewer downloads, whichever
    # worker wrote it.
    await _kept(http, {s.viewer_url: list(s.sent) for s in sessions})

    # --- a worker dies mid-session; its sessions are taken over within the bound
    victim = holders[sessions[0].id]
    assert victim is not None
    orphans = [s for s in sessions if holders[s.id] is victim]
    await workers.kill(victim.name)
    killed = time.monotonic()
    taken_over = asyncio.create_task(_taken_over(orphans, workers, redis_client, prefix))
    for session in sessions:  # meanwhile, people keep talking; nginx skips the dead worker
        await thread_message(harness, session)
    took = await taken_over - killed
    assert took <= TTL_S + TICK_S + 2, f"takeover took {took:.1f} s"
    for session in sessions:  # the others' sessions stay where they were
        holder = workers.by_lease(await lease_value(redis_client, prefix, session.id))
        assert holder is not None and holder.alive

    # The viewer the dead worker served was dropped; the page reconnects through nginx.
    await until(lambda: any(v.closed.is_set() for v in viewers.values()), 15,
                "the dead worker's viewer notices")
    dropped = [sid for sid, v in viewers.items() if v.closed.is_set()]
    assert len(dropped) == 1
    for sid in dropped:
        session = next(s for s in sessions if s.id == sid)
        viewers[sid] = await Viewer.open(http, session.viewer_url)
        assert viewers[sid].hello["state"] == "live"
    for session in sessions:
        await thread_message(harness, session)
    await _lines_seen(sessions, viewers, last=1)

    # --- nothing was lost: each message reached the avatar, or its writer got a reply
    def delivered(session: Session) -> list[str]:
        room = a2e.rooms[session.room]
        return [t for t in session.sent if t in room.asked or t in room.spoken]

    def told(session: Session) -> list[ApiCall]:
        return [c for c in slack.called("chat.postEphemeral")
                if c.params.get("thread_ts") == session.thread_ts]

    await until(lambda: all(len(delivered(s)) + len(told(s)) >= len(s.sent) for s in sessions),
                20, "every thread message reached A2E or was answered")
    for session in sessions:
        assert len(session.sent) == 4
        room = a2e.rooms[session.room]
        assert len(delivered(session)) + len(told(session)) == len(session.sent), (
            session, room, told(session))
        assert all((room.asked + room.spoken).count(t) <= 1 for t in session.sent)  # once each

    # --- each session is stopped through nginx, whichever worker gets the command
    for session in sessions:
        status, _ = await harness.command("stop", channel=session.channel)
        assert status == 200
    await until(lambda: a2e.open_rooms() == [], 20, "every A2E room is left")
    await until(lambda: all(v.closed.is_set() for v in viewers.values()), 15,
                "every viewer page sees its session end")
    for viewer in viewers.values():
        await viewer.close()
    # The transcript each page offers to download has every line the avatar got, from every worker.
    await _kept(http, {s.viewer_url: delivered(s) for s in sessions})


async def _anchor(slack, channel: str) -> ApiCall:
    """The channel message that anchors a session's thread."""
    def found() -> list[ApiCall]:
        return [c for c in slack.called("chat.postMessage")
                if c.params.get("channel") == channel and not c.params.get("thread_ts")
                and c.result is not None]
    await until(found, 20, f"a session starts in {channel}")
    (post,) = found()
    return post


async def _lines_seen(sessions: list[Session], viewers: dict[str, Viewer], last: int = 0) -> None:
    """Each viewer shows its session's user lines (the ``last`` ones, or all)."""
    for session in sessions:
        wanted = session.sent[-last:] if last else session.sent
        viewer = viewers[session.id]
        await until(lambda v=viewer, w=wanted: all(t in v.user_lines() for t in w), 15,
                    f"the viewer of {session.channel} shows {wanted}")


async def _kept(http: aiohttp.ClientSession, wanted: dict[str, list[str]]) -> None:
    """Each session's transcript download (through nginx) has the ``wanted`` lines."""
    for url, lines in wanted.items():
        async def has_all(url: str = url, lines: list[str] = lines) -> bool:
            async with http.get(url + "/transcript.txt") as resp:
                assert resp.status == 200
                text = await resp.text()
            return all(f"asked: {line}" in text for line in lines)
        await until(has_all, 15, f"the transcript at {url} keeps {lines}")


async def _taken_over(orphans: list[Session], workers: Workers, redis_client, prefix) -> float:
    """When every orphaned session's lease is held by a live worker (monotonic time)."""
    async def held() -> bool:
        for session in orphans:
            holder = workers.by_lease(await lease_value(redis_client, prefix, session.id))
            if holder is None or not holder.alive:
                return False
        return True
    await until(held, TTL_S + TICK_S + 15, "the dead worker's sessions are taken over")
    return time.monotonic()


def _spread_as_logged(log: list[tuple[str, str, int, str]], workers: Workers) -> None:
    """nginx's access log: requests went to every worker, and none failed at the proxy."""
    addresses = {f"127.0.0.1:{w.port}": w.name for w in workers.all.values()}

    def answered_by(upstream: str) -> str:
        return addresses[upstream.split(", ")[-1]]  # after a dead worker: the one that answered

    # A viewer's request is logged when its socket closes; its first line is its first socket.
    sockets: dict[str, str] = {}
    for _, path, _, upstream in log:
        if path.endswith(WS):
            sockets.setdefault(path, answered_by(upstream))
    assert sorted(sockets.values()) == ["a", "b", "c"]  # the three viewers: one per worker
    posts = [answered_by(u) for _, path, _, u in log if path == "/slack/events"]
    assert sorted(posts[:3]) == ["a", "b", "c"]  # the three starts (one after the other)
    assert all(status < 500 for _, _, status, _ in log), log
