"""The two anchors of ``bench/system.py``, each run as its own process so its CPU can be read
from ``/proc/<pid>/stat``. Not a benchmark on its own.

* ``plain``: a bare aiohttp handler on ``POST /slack/events``: one Slack signature check
  (slack-sdk's ``SignatureVerifier``), one SQLite read (thread -> vendor room, through
  aiosqlite's thread) and one forward (an httpx POST to the fake vendor's ``ask``). It answers
  200 before the forward, as Slack wants events acknowledged at once.
* ``bolt``: a slack-bolt "hello" ``AsyncApp`` served by its own aiohttp adapter
  (``AsyncApp.web_app``), whose ``message`` listener does the same read and forward (bolt acks
  events before running listeners).

    python bench/system_anchor.py plain|bolt PORT DB_PATH VENDOR_URL
    (secrets in the environment: BENCH_SLACK_SECRET, BENCH_VENDOR_KEY, BENCH_SLACK_TOKEN,
     BENCH_SLACK_API_URL)

Prints ``ready`` on stdout once it listens on 127.0.0.1:PORT.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiosqlite
import httpx
from aiohttp import web
from child import until_stdin_closes

ASK = "/api/v1/streaming-avatar/ask"  # the path the bot's A2E provider posts to


class Forwarder:
    """The work both anchors share: look the thread up, forward the text to the vendor."""

    def __init__(self, db_path: str, vendor_url: str, vendor_key: str) -> None:
        self.db_path = db_path
        self.http = httpx.AsyncClient(
            base_url=vendor_url, timeout=15.0, headers={"Authorization": f"Bearer {vendor_key}"}
        )
        self.db: aiosqlite.Connection | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.db_path)

    async def room_of(self, channel: str, thread_ts: str) -> str | None:
        assert self.db is not None
        async with self.db.execute(
            "SELECT room FROM threads WHERE thread_key = ?", (f"{channel}:{thread_ts}",)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def forward(self, event: dict[str, Any]) -> None:
        if not event.get("thread_ts") or event.get("bot_id"):
            return
        room = await self.room_of(str(event.get("channel")), str(event["thread_ts"]))
        if room is not None:
            await self.http.post(ASK, json={"channel": room, "text": event.get("text") or ""})

    async def forward_or_log(self, event: dict[str, Any]) -> None:
        """``forward`` in a task of its own: a failure is one line on stderr (the bench counts
        the loss at the vendor)."""
        try:
            await self.forward(event)
        except Exception as exc:  # noqa: BLE001 - an anchor has nobody else to tell
            print(f"forward failed: {exc!r}", file=sys.stderr, flush=True)


def plain_app(fwd: Forwarder, secret: str) -> web.Application:
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(secret)

    async def events(request: web.Request) -> web.Response:
        raw = await request.read()
        if not verifier.is_valid_request(raw, dict(request.headers)):
            return web.Response(status=401)
        body = json.loads(raw)
        event = body.get("event") or {}
        if event.get("type") == "message":
            task = asyncio.create_task(fwd.forward_or_log(event))
            fwd.tasks.add(task)
            task.add_done_callback(fwd.tasks.discard)
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/slack/events", events)
    return app


def bolt_app(fwd: Forwarder, secret: str, token: str, api_url: str) -> web.Application:
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    app = AsyncApp(signing_secret=secret, client=AsyncWebClient(token=token, base_url=api_url))

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        await fwd.forward(event)

    return app.web_app(path="/slack/events")


async def main(kind: str, port: int, db_path: str, vendor_url: str) -> None:
    env = os.environ
    fwd = Forwarder(db_path, vendor_url, env["BENCH_VENDOR_KEY"])
    await fwd.open()
    if kind == "plain":
        app = plain_app(fwd, env["BENCH_SLACK_SECRET"])
    else:
        app = bolt_app(fwd, env["BENCH_SLACK_SECRET"], env["BENCH_SLACK_TOKEN"],
                       env["BENCH_SLACK_API_URL"])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await until_stdin_closes()
    await runner.cleanup()
    await fwd.http.aclose()
    assert fwd.db is not None
    await fwd.db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
