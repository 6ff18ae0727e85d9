"""What the fake vendor servers share: an aiohttp server on an ephemeral port, a record of every
request, and injectable faults.

Use from any test suite, with or without pytest::

    async with FakeA2E() as fake:
        settings = load_settings(a2e_api_key=fake.api_key, a2e_base_url=fake.url)

A slow vendor: ``fake.delay_s["/ask"] = 0.2``.

Faults: ``fake.fail("500")`` makes the next matching request fail. Generic kinds are ``"500"``,
``"503"``, ``"429"``, ``"timeout"`` (hang until the client gives up) and ``"malformed"`` (a 200
whose body is not JSON); each fake adds its vendor's error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.serve import serve_local

JSON_BODY = web.RequestKey("json_body", object)


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any


@dataclass
class Fault:
    """A failure to serve instead of the real answer."""

    kind: str
    path: str | None = None
    times: int = 1


@dataclass
class _State:
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


class FakeVendor:
    """Base of the fake vendor servers (A2E, AKool, HeyGen)."""

    api_key = "test-key"

    def __init__(self, *, api_key: str | None = None, hang_s: float = 30.0) -> None:
        if api_key is not None:
            self.api_key = api_key
        self.hang_s = hang_s
        # A slow vendor: requests whose path ends with a key wait that many seconds before being
        # answered (recorded on arrival, so ``requests`` keeps the order they came in).
        self.delay_s: dict[str, float] = {}
        self._state = _State()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeVendor:
        """Serve on 127.0.0.1 on a free port; ``self.url`` is the base URL."""
        app = web.Application(middlewares=[self._middleware])
        self.routes(app.router)
        self._runner, port = await serve_local(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        """Stop serving; hanging requests are released at once."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ test API
    def fail(self, kind: str, *, times: int = 1, path: str | None = None) -> None:
        """Serve fault ``kind`` for the next ``times`` requests (whose path ends with ``path``)."""
        self._state.faults.append(Fault(kind, path, times))

    def clear_faults(self) -> None:
        """Forget faults not yet served."""
        self._state.faults.clear()

    def calls(self, path: str | None = None) -> list[Recorded]:
        """Requests received, optionally only those whose path ends with ``path``."""
        return [r for r in self._state.requests if path is None or r.path.endswith(path)]

    @property
    def requests(self) -> list[Recorded]:
        """Every request received, in order."""
        return list(self._state.requests)

    # ------------------------------------------------------------------ subclass hooks
    def routes(self, router: web.UrlDispatcher) -> None:
        """Add the vendor's routes."""
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries valid credentials."""
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        """The vendor's answer to bad credentials."""
        raise NotImplementedError

    def vendor_fault(self, kind: str) -> web.Response:
        """The vendor's answer for a vendor-specific fault kind."""
        raise ValueError(f"unknown fault {kind!r}")

    def error_body(self, status: int) -> dict[str, Any]:
        """The vendor's JSON body for a bare HTTP error status."""
        return {"code": status, "message": "error"}

    # ------------------------------------------------------------------ machinery
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self._state.requests.append(Recorded(
            request.method, request.path, dict(request.headers), dict(request.query), body,
        ))
        fault = self._take_fault(request.path)
        if fault is not None:
            return await self._serve_fault(fault)
        delay = next((d for p, d in self.delay_s.items() if request.path.endswith(p)), 0.0)
        if delay:
            await asyncio.sleep(delay)
        if not self.authorized(request):
            return self.unauthorized()
        request[JSON_BODY] = body
        return await handler(request)

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._state.faults:
            if fault.times > 0 and (fault.path is None or path.endswith(fault.path)):
                fault.times -= 1
                if fault.times == 0:
                    self._state.faults.remove(fault)
                return fault
        return None

    async def _serve_fault(self, fault: Fault) -> web.StreamResponse:
        if fault.kind == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.hang_s)
            return web.json_response(self.error_body(504), status=504)
        if fault.kind == "malformed":
            return web.Response(text='{"code": 0, "data": {"tok', content_type="application/json")
        if fault.kind.isdigit() and 400 <= int(fault.kind) < 600:
            status = int(fault.kind)
            return web.json_response(self.error_body(status), status=status)
        return self.vendor_fault(fault.kind)


def body_of(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` when absent or not an object)."""
    body = request.get(JSON_BODY)
    return body if isinstance(body, dict) else {}
