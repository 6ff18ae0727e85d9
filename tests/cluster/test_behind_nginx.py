"""Three ``avatarbot run`` workers behind Debian's nginx, as the README's "Running several
workers" sets them up: one PostgreSQL database, one Redis, the fake Slack and A2E (and, in the
second test, the fake Discord).

nginx takes turns between the workers (docs/nginx.conf, rendered by tests/cluster/nginx.py), so the
three Slack starts land on three workers, and so do the viewers' WebSockets and the thread
messages: each viewer sees lines sent through the other workers. One worker is then SIGKILLed
mid-session. Its sessions' leases pass to the others within LEASE_TTL_S plus one reaper tick;
thread messages sent meanwhile still reach the avatar (nginx skips the dead worker); the viewer
it served reconnects through nginx and sees the session live. At the end every thread message
reached the vendor (or its writer was told why not) and is in the transcript a viewer downloads,
every session is stopped through nginx with its vendor room left, and ``avatarbot ledger verify``
is clean on PostgreSQL.

The second test adds the sharding fake Discord (two guilds, on shards 0 and 1 of 2) to the same
three workers: a holds shard 0, b shard 1, and c is a standby with a's DISCORD_SHARD_IDS
(docs/discord-sharding.md); which of a and c connects shard 0 is whichever takes its lease
first, the other is the standby. A start in each guild is handled by its shard's holder; the
viewer pages, steered through nginx to workers without the guild's shard, hand them the vendor's
answers, and each answer is posted into its thread once, by the shard's holder. Shard 0's holder
is SIGKILLed: the standby identifies with shard 0 once the lease runs out, the guild's thread
is answered again (once), both sessions end with one summary each and no A2E room left open,
and the ledger is clean.

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.platforms.discord.shards import shard_lease
from tests.backends import open_store
from tests.cluster.harness import (
    Worker,
    Workers,
    fake_vendors,
    lease_of,
    lease_value,
    worker_env,
)
from tests.cluster.nginx import Nginx, serve
from tests.cluster.test_discord_shards import C0, C1, G0, G1
from tests.discord.conftest import callback
from tests.fakes.a2e import answer_for
from tests.fakes.discord import MEMBER_PERMS, FakeDiscord, PendingInteraction
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


@dataclass
class Cluster:
    """Three workers behind nginx, and what a test talks to them with."""

    nginx: Nginx
    workers: Workers
    env: dict[str, str]
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def behind_nginx(
    tmp_path: Path, pg_url: str, prefix: str, settings: dict[str, str], *, grants: list[str],
    extra: dict[str, dict[str, str]] | None = None,
) -> AsyncIterator[Cluster]:
    """nginx in front of workers a, b and c (``extra``: each one's own variables), every
    tenant in ``grants`` given credits; on failure what the workers and nginx said is printed.
    Leaving the block stops the workers (SIGTERM) and nginx."""
    await (await open_store("postgres", pg_url)).close()  # the tables, empty
    ports = {name: free_port() for name in ("a", "b", "c")}
    async with contextlib.AsyncExitStack() as stack:
        nginx = await stack.enter_async_context(serve(tmp_path / "nginx", list(ports.values())))
        env = worker_env(
            pg_url=pg_url, prefix=prefix, tmp_path=tmp_path, lease_ttl_s=TTL_S,
            reaper_interval_s=TICK_S, PUBLIC_URL=nginx.url, TRUSTED_PROXIES="127.0.0.1",
            DEFAULT_MAX_CONCURRENT="3", **settings,
        )
        workers = await stack.enter_async_context(Workers(env, tmp_path))
        await asyncio.gather(workers.start(*ports, ports=ports, extra=extra),
                             *(cli(env, "credits", "grant", tenant, "500") for tenant in grants))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        try:
            yield Cluster(nginx, workers, env, http)
        except BaseException:
            print(workers.outputs(), "\n--- nginx\n", nginx.error_log())
            raise


async def test_three_workers_behind_nginx_survive_a_killed_worker(
    fakes, pg_url, redis_client, prefix, tmp_path
):
    slack, a2e = fakes
    async with behind_nginx(tmp_path, pg_url, prefix, fake_vendors(slack, a2e),
                            grants=["slack:T1"]) as cluster:
        harness = SlackHarness(slack, None, cluster.nginx.url, None)
        try:
            await _scenario(slack, a2e, harness, cluster.http, cluster.workers, cluster.nginx,
                            redis_client, prefix)
        finally:
            await harness.http.close()
    # Everything has stopped: no vendor room is left open and the ledger adds up.
    assert a2e.open_rooms() == []
    assert "ledger ok" in await cli(cluster.env, "ledger", "verify")
    assert not (tmp_path / "never-made.db").exists()
    _spread_as_logged(cluster.nginx.access_log(), cluster.workers)


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
    taken_over = asyncio.create_task(
        _taken_over([s.id for s in orphans], workers, redis_client, prefix))
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


async def _taken_over(orphans: list[str], workers: Workers, redis_client, prefix) -> float:
    """When the lease of every session in ``orphans`` is held by a live worker (monotonic
    time)."""
    async def held() -> bool:
        for session_id in orphans:
            holder = workers.by_lease(await lease_value(redis_client, prefix, session_id))
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


# --- Discord: two shards held by workers a and b, and c a standby for a's shard

SHARD_IDS = {"a": "0", "b": "1", "c": "0"}  # DISCORD_SHARD_IDS of each worker (count: 2)
GUILDS = ((G0, C0), (G1, C1))  # on shards 0 and 1 of 2: (guild_id >> 22) % 2


@dataclass
class Thread:
    """A session started in a guild's channel: its thread, anchor message and vendor room."""

    guild: int
    thread_id: str
    session_id: str
    viewer_url: str
    stop_id: str
    room: str
    answers: list[str] = field(default_factory=list)


async def test_discord_shards_split_over_workers_behind_nginx_survive_a_killed_shard_holder(
    fakes, pg_url, redis_client, prefix, tmp_path
):
    slack, a2e = fakes
    discord = await FakeDiscord(guild_id=G0, channel_id=C0).start()
    discord.add_guild(G1, C1)
    discord.max_concurrency = 16  # a large bot's limit: shards 0 and 1 may identify at once
    settings = fake_vendors(slack, a2e) | {
        "DISCORD_TOKEN": "discord-shard-token", "DISCORD_API_BASE": discord.api_base,
        "DISCORD_GATEWAY_URL": discord.gateway_url, "DISCORD_SHARD_COUNT": "2",
    }
    extra = {name: {"DISCORD_SHARD_IDS": ids} for name, ids in SHARD_IDS.items()}
    try:
        async with behind_nginx(tmp_path, pg_url, prefix, settings, extra=extra,
                                grants=[f"discord:{G0}", f"discord:{G1}"]) as cluster:
            for worker in cluster.workers.all.values():
                assert "[on ] platform discord" in worker.output[0]
            pages = await _shard_scenario(discord, a2e, cluster, redis_client, prefix)
    finally:
        await discord.close()
    assert a2e.open_rooms() == []
    assert "ledger ok" in await cli(cluster.env, "ledger", "verify")
    # Each viewer's socket went, through nginx, to the worker the test steered it to.
    sockets: dict[str, str] = {}
    for _, path, _, upstream in cluster.nginx.access_log():
        if path.endswith(WS):
            sockets.setdefault(path, upstream.split(", ")[-1])
    assert {path: sockets.get(path) for path in pages} == pages


async def _shard_scenario(discord: FakeDiscord, a2e, cluster: Cluster, redis_client,
                          prefix: str) -> dict[str, str]:
    """The scenario; returns where each viewer's socket was sent (path -> worker address)."""
    workers = cluster.workers

    # --- each shard is connected once, by the worker holding its lease; the standby waits
    await until(lambda: discord.connected_shards() == [(0, 2), (1, 2)], 60,
                "shards 0 and 1 connect")
    holder = {i: workers.by_lease(await lease_of(redis_client, prefix, shard_lease(i)))
              for i in (0, 1)}
    assert holder[1] is workers["b"]
    assert holder[0] is not None and holder[0].name in ("a", "c")  # whichever took it first
    standby = workers["c" if holder[0].name == "a" else "a"]
    assert sorted(i["shard"] for i in discord.identifies) == [[0, 2], [1, 2]]

    # --- a start in each guild: the gateway sends its interaction only to its shard's
    # connection, so the worker holding that shard handles it (the standby has none).
    alice = discord.add_member(discord.user("alice"), [], MEMBER_PERMS)
    threads = [await _discord_start(discord, a2e, alice, guild, channel)
               for guild, channel in GUILDS]

    def starts(worker: Worker) -> int:  # what each worker's log says it started
        return sum("session starting" in line for line in worker.output)

    await until(lambda: starts(holder[0]) == starts(holder[1]) == 1, 15,
                "each shard's holder logs the start in its guild")
    assert starts(standby) == 0
    # A viewer page per session through nginx, each on a worker NOT holding the guild's shard
    # (G0's on b, G1's on the standby): the vendor's answers are published there.
    placed = {threads[0].session_id: workers["b"], threads[1].session_id: standby}
    viewers: dict[str, Viewer] = {}
    for thread in threads:
        await _turn_to(cluster, placed[thread.session_id])
        viewers[thread.session_id] = viewer = await Viewer.open(cluster.http, thread.viewer_url)
        assert viewer.hello["state"] == "live"
    # Thread messages in both guilds reach A2E; the answers, arriving on a worker without the
    # guild's shard, are posted into the thread by the shard's holder.
    for thread in threads:
        await _ask(discord, a2e, alice, thread, viewers[thread.session_id])
    assert len(discord.identifies) == 2  # the standby stayed off the gateway all along

    # --- shard 0's holder dies: the standby takes the shard, the sessions are still tended
    await workers.kill(holder[0].name)
    await _taken_over([t.session_id for t in threads], workers, redis_client, prefix)
    await until(lambda: len(discord.identifies) == 3
                and discord.connected_shards() == [(0, 2), (1, 2)],
                TTL_S + 60, "the standby connects shard 0")
    assert discord.identifies[-1]["shard"] == [0, 2]
    assert workers.by_lease(await lease_of(redis_client, prefix, shard_lease(0))) is standby
    # G0's thread is served again: a message reaches A2E, its answer is posted once.
    await _ask(discord, a2e, alice, threads[0], viewers[threads[0].session_id])

    # --- each session is stopped with its Stop button, in its thread, by its shard's holder
    for thread in threads:
        click = await discord.click(alice, discord.messages[thread.thread_id], thread.stop_id)
        await callback(click)
    await until(lambda: all(_posted(discord, t, "🏁") for t in threads), 30,
                "each thread gets its end summary")
    await until(lambda: a2e.open_rooms() == [], 20, "every A2E room is left")
    await until(lambda: all(v.closed.is_set() for v in viewers.values()), 15,
                "every viewer page sees its session end")
    for viewer in viewers.values():
        await viewer.close()
    await asyncio.sleep(1.0)  # time for a second copy from another worker, if one were sent
    for thread in threads:
        texts = [m["content"] for m in discord.channel_messages(thread.thread_id)]
        for answer in thread.answers:  # every line exactly once, whoever heard it
            assert _posted(discord, thread, answer) == 1, texts
        assert _posted(discord, thread, "🏁") == 1, texts
        assert len(a2e.rooms[thread.room].asked) == len(thread.answers)
    return {urlsplit(t.viewer_url).path + WS: f"127.0.0.1:{placed[t.session_id].port}"
            for t in threads}


async def _discord_start(discord: FakeDiscord, a2e, member: dict[str, Any], guild: int,
                         channel: int) -> Thread:
    """``/avatar start`` of an A2E avatar in a guild's channel; the session it opened."""
    booked = set(a2e.rooms)
    pending = await discord.slash(member, "start", channel_id=str(channel),
                                  avatar=f"a2e:{AVATAR}", minutes=3)
    assert (await callback(pending))["type"] == 5  # deferred, within Discord's 3 s
    thread = await discord.wait_for(lambda: next(
        (t for t in discord.threads() if t["parent_id"] == str(channel)), None), 30)
    reply = await discord.wait_for(lambda: _reply(discord, pending), 30)
    assert f"<#{thread['id']}>" in reply
    link, stop = discord.messages[thread["id"]]["components"][0]["components"]
    await until(lambda: set(a2e.rooms) - booked, 30, f"an A2E room is booked for {guild}")
    (room,) = set(a2e.rooms) - booked
    return Thread(guild, thread["id"], stop["custom_id"].rsplit(":", 1)[1], link["url"],
                  stop["custom_id"], room)


def _reply(discord: FakeDiscord, pending: PendingInteraction) -> str | None:
    """The deferred reply the user ends up seeing (the edited original or a follow-up)."""
    original = pending.original
    if original and original.get("edited_timestamp") and original.get("content"):
        return str(original["content"])
    followups = [m for m in discord.messages.values()
                 if m.get("interaction_token") == pending.token and m is not original]
    return followups[-1]["content"] if followups else None


async def _ask(discord: FakeDiscord, a2e, member: dict[str, Any], thread: Thread,
               page: Viewer) -> None:
    """A person asks in the thread; A2E gets it, its answer comes back through ``page`` (on
    whichever worker that is) and is posted into the thread."""
    question = f"Question {next(_texts)} in guild {thread.guild}?"
    await discord.user_message(member, thread.thread_id, question)
    room = a2e.rooms[thread.room]
    await until(lambda: question in room.asked, 30, f"A2E gets {question!r}")
    for raw in a2e.viewer_messages.pop(thread.room):  # A2E's answer, as the page receives it
        await page.ws.send_json({"type": "data", "payload": raw})
    answer = answer_for(question, room.qa_context)
    thread.answers.append(answer)
    await until(lambda: _posted(discord, thread, answer), 30,
                f"the answer to {question!r} is posted in its thread")


def _posted(discord: FakeDiscord, thread: Thread, text: str) -> int:
    """How many times the bot's messages in the thread hold ``text``."""
    return sum(m["content"].count(text) for m in discord.channel_messages(thread.thread_id)
               if m["author"]["id"] == discord.bot_user["id"])


async def _turn_to(cluster: Cluster, target: Worker) -> None:
    """Make nginx send its next request to ``target``.

    nginx (one process, round robin) takes turns in its upstream's order, a, b, c: a cheap
    request is sent until the worker before ``target`` answered one (the access log names it).
    The test checks the log again afterwards, so a different turn fails it rather than
    weakening it.
    """
    names = list(cluster.workers.all)
    before = cluster.workers[names[names.index(target.name) - 1]]
    for _ in range(len(names) + 1):
        logged = len(cluster.nginx.access_log())
        async with cluster.http.get(cluster.nginx.url + "/healthz") as resp:
            assert resp.status == 200
        await until(lambda n=logged: len(cluster.nginx.access_log()) > n, 10,
                    "nginx logs the request")
        if cluster.nginx.access_log()[-1][3] == f"127.0.0.1:{before.port}":
            return
    raise AssertionError(f"nginx never gave {before.name} its turn: {cluster.nginx.access_log()}")
