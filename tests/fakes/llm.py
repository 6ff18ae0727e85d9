"""A fake OpenAI-compatible chat server (``POST /v1/chat/completions``) on an ephemeral port.

It checks the bearer key like the real API (401 with an OpenAI error body otherwise), records
each request, and answers in the OpenAI ``chat.completion`` shape. Tests set ``reply`` (a string
or a function of the request body), ``status`` and ``delay`` to exercise the failure paths.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.serve import serve_local


class FakeLLM:
    def __init__(self, *, api_key: str = "sk-fake-llm-key", reply: str | Callable = "Hello.",
                 status: int = 200, delay: float = 0.0) -> None:
        self.api_key = api_key
        self.reply = reply
        self.status = status
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {
                "message": "Incorrect API key provided.", "type": "invalid_request_error",
                "code": "invalid_api_key"}}, status=401)
        if self.status != 200:
            return web.json_response({"error": {
                "message": "The server had an error.", "type": "server_error"}},
                status=self.status)
        text = self.reply(body) if callable(self.reply) else self.reply
        return web.json_response({
            "id": "chatcmpl-fake1", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    async def __aenter__(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner, self.port = await serve_local(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
