"""The one way adapters talk HTTP to a vendor: timeouts, envelopes, typed errors, retries.

Every call carries an ``httpx.Timeout``; transport failures, timeouts, 429s and 5xx become
``ProviderUnavailable`` (retryable); an adapter's ``error_for`` hook maps the vendor's own codes
first. Nothing here logs or raises a header, a key or a response body.

The timeout bounds the vendor, not the bot: waiting for a free connection in the shared client's
pool has its own, longer bound (``POOL_WAIT_S``), so requests queued inside a busy process are not
reported as "the vendor did not answer in time" (docs/backpressure.md).

A call that is not idempotent (``idempotent=False``: ask, say) is retried only when it never left
(no connection could be made) or after an answer that says the vendor did not process it (429,
503); a read timeout or a dropped connection after the request went out may mean it arrived, and
sending it again would make the avatar speak twice.
Both rules are one mechanism: ``idempotent=False`` narrows ``retry_if``.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import httpx

from bot.core.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from bot.core.retry import RetryPolicy, with_retry

log = logging.getLogger(__name__)

# How long a request may wait for a connection from the shared pool before it is sent. Separate
# from the vendor timeout: this is time spent queued inside the bot, not the vendor being slow.
POOL_WAIT_S = 120.0
# Statuses that say the vendor did not process the request: rate limited, or not accepting work.
_NOT_PROCESSED = frozenset({429, 503})
# Transport failures that happen before any byte of the request reached the vendor.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _RequestLinesAtDebug(logging.Filter):
    """Turn httpx's per-request INFO lines ("HTTP Request: POST ...") into DEBUG lines.

    At INFO they were one line per thread message (issue 15). Kept when the process logs at
    DEBUG, dropped otherwise; httpx's warnings and errors are untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


if not any(isinstance(f, _RequestLinesAtDebug) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RequestLinesAtDebug())

class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's client interface over aiohttp's connections: the transport of vendor calls.

    httpx's own transport (httpcore on anyio) cost about 1 ms of CPU per vendor call in
    ``bench/system.py``, two thirds of it below httpx's client layer; aiohttp's client, already
    the bot's for Slack, does the same exchange for about a third of that (issue 15, figures in
    bench/README.md). Adapters keep httpx's API (``VendorHTTP`` and the tests' clients alike);
    only what crosses the wire changes.

    httpx-aiohttp (PyPI) does this too, but maps every ``aiohttp.ClientConnectionError`` to
    ``httpx.ConnectTimeout``, which would tell ``VendorHTTP`` that a request cut off after it
    was sent never left, and ``ask`` would be sent twice. Here the mapping keeps httpx's
    meaning: ``ConnectError``/``ConnectTimeout``/``PoolTimeout`` only when nothing was sent.

    Timeouts come from the request as httpx sets them: ``pool`` bounds the wait for a free
    connection (with connecting), ``connect`` the TCP/TLS connect, ``read`` each wait for the
    vendor's bytes. The body is read whole here (vendor answers are small JSON).

    Args:
        max_connections: connections open at once (across hosts).
        verify: TLS verification as httpx takes it (True: certifi's CA bundle, like httpx).
        keepalive_s: how long an idle connection is kept.
    """

    def __init__(self, *, max_connections: int = 100, verify: ssl.SSLContext | bool = True,
                 keepalive_s: float = 15.0) -> None:
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else (
            httpx.create_ssl_context(verify=verify))
        self._limit = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made at the first request: an aiohttp session belongs to the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl,
                                               keepalive_timeout=self._keepalive_s),
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies, as before
                auto_decompress=False,  # httpx decodes by Content-Encoding
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its whole answer; aiohttp errors become httpx's."""
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            async with self._client().request(
                request.method, str(request.url),
                # As written (``raw`` keeps the names' case, as httpx's transport sends them).
                headers=[(k.decode("latin-1"), v.decode("latin-1"))
                         for k, v in request.headers.raw],
                data=body or None,
                allow_redirects=False,  # httpx follows redirects itself when asked to
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"), sock_read=timeout.get("read"),
                ),
            ) as resp:
                content = await resp.read()
                status, headers, reason = resp.status, resp.raw_headers, resp.reason
        except aiohttp.ConnectionTimeoutError as exc:  # no free connection, or connect too slow
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS: never sent
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:  # it may have arrived
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:  # cut off after sending: it may have arrived
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("latin-1", "replace")
        return httpx.Response(status, headers=list(headers), content=content, request=request,
                              extensions=extensions)

    async def aclose(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def vendor_client(*, timeout_s: float, max_connections: int = 100,
                  verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The httpx client that vendor calls share (built by the composition root).

    ``AiohttpTransport`` underneath; ``timeout_s`` bounds the vendor, and waiting for a free
    connection has its own, longer bound (``POOL_WAIT_S``).
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, pool=POOL_WAIT_S),
        transport=AiohttpTransport(max_connections=max_connections, verify=verify),
    )


# Maps (HTTP status, parsed JSON object or {}) to a typed error, or None to use the defaults.
ErrorHook = Callable[[int, dict[str, Any]], ProviderError | None]
# Says whether a parsed 2xx body is the vendor's success envelope.
SuccessCheck = Callable[[dict[str, Any]], bool]


class VendorHTTP:
    """A small JSON client bound to one vendor's base URL, auth headers and envelope.

    Args:
        provider: the provider's name, used in errors.
        display_name: the vendor's name as people read it.
        http: the shared client (its lifetime belongs to the caller).
        base_url: the vendor's base URL.
        headers: auth headers sent on every call unless a call overrides them.
        is_success: whether a 2xx body is a success envelope.
        error_for: the adapter's mapping of vendor codes to typed errors.
        timeout_s: the bound of every call.
        retry: how retryable failures are retried.
    """

    def __init__(
        self,
        *,
        provider: str,
        display_name: str,
        http: httpx.AsyncClient,
        base_url: str,
        headers: Mapping[str, str],
        is_success: SuccessCheck,
        error_for: ErrorHook,
        timeout_s: float,
        retry: RetryPolicy,
    ) -> None:
        self.provider = provider
        self.display_name = display_name
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._is_success = is_success
        self._error_for = error_for
        self._timeout = httpx.Timeout(timeout_s, pool=max(POOL_WAIT_S, timeout_s))
        self.retry = retry

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
        idempotent: bool = True,
        retry_if: Callable[[ProviderError], bool] | None = None,
    ) -> dict[str, Any]:
        """Send one request (retried when the failure is retryable) and return its JSON body.

        Args:
            method: the HTTP method.
            path: the path under the base URL.
            json_body: the JSON body, if any.
            params: query parameters.
            headers: headers instead of the auth headers.
            retry: whether retryable failures are retried at all.
            idempotent: False for a call that must never run twice (ask, say): it is retried
                only when the failure proves the vendor did not process it.
            retry_if: when given, only failures it accepts are retried (a booking call is
                retried only after a definite refusal).

        Raises:
            ProviderError: typed by ``error_for`` or by the HTTP status.
        """

        async def once() -> dict[str, Any]:
            return await self._once(method, path, json_body, params, headers)

        if not retry:
            return await once()
        if not idempotent:
            retry_if = _unprocessed if retry_if is None else _both(_unprocessed, retry_if)
        return await with_retry(once, self.retry, retry_if)

    async def _once(
        self,
        method: str,
        path: str,
        json_body: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        try:
            resp = await self._http.request(
                method,
                self._base + path,
                json=json_body,
                params=params,
                headers=dict(headers) if headers is not None else self._headers,
                timeout=self._timeout,
            )
        except _NOT_SENT as exc:
            log.warning("%s %s not sent: %s", self.provider, path, type(exc).__name__)
            raise _NotSent(
                self.provider, f"{self.display_name} cannot be reached right now; try again soon."
            ) from None
        except httpx.TimeoutException:
            log.warning("%s %s timed out", self.provider, path)
            raise ProviderUnavailable(
                self.provider, f"{self.display_name} did not answer in time; try again in a minute."
            ) from None
        except httpx.HTTPError as exc:
            log.warning("%s %s failed: %s", self.provider, path, type(exc).__name__)
            raise ProviderUnavailable(
                self.provider, f"{self.display_name} cannot be reached right now; try again soon."
            ) from None
        body = _parse(resp)
        if resp.is_success and body is not None and self._is_success(body):
            return body
        log.info("%s %s answered HTTP %d code %r", self.provider, path, resp.status_code,
                 (body or {}).get("code"))
        error = self._error(resp.status_code, body)
        if resp.status_code == 429:
            error.retry_after_s = retry_after(resp.headers.get("Retry-After"))
        raise error

    def unreadable(self) -> ProviderUnavailable:
        """The error for a success envelope whose ``data`` lacks what the adapter needs."""
        return ProviderUnavailable(
            self.provider, f"{self.display_name} gave an answer we could not read; try again soon."
        )

    def _error(self, status: int, body: dict[str, Any] | None) -> ProviderError:
        mapped = self._error_for(status, body or {})
        if mapped is not None:
            return mapped
        code = (body or {}).get("code")
        name = self.display_name
        if status in (401, 403):
            return auth_error(self.provider, name, status, code)
        if status == 429:
            return ProviderUnavailable(
                self.provider, f"{name} is rate limiting us; try again in a minute.",
                status_code=status, code=code,
            )
        if status >= 500 or status == 408:
            return ProviderUnavailable(
                self.provider, f"{name} is not answering right now; try again in a minute.",
                status_code=status, code=code,
            )
        if body is None:
            return ProviderUnavailable(
                self.provider, f"{name} gave an answer we could not read; try again soon.",
                status_code=status,
            )
        return ProviderRejected(
            self.provider, f"{name} refused the request.", status_code=status, code=code
        )


class _NotSent(ProviderUnavailable):
    """No connection to the vendor was made (or none was free): the request never left."""


def _unprocessed(exc: ProviderError) -> bool:
    """The retry rule of a call that must not run twice: the vendor cannot have processed it.

    Either it never left (no connection) or the vendor said so (429, 503). A timeout or a dropped
    connection after sending is neither: it may have arrived.
    """
    return isinstance(exc, _NotSent) or exc.status_code in _NOT_PROCESSED


def _both(
    first: Callable[[ProviderError], bool], second: Callable[[ProviderError], bool]
) -> Callable[[ProviderError], bool]:
    return lambda exc: first(exc) and second(exc)


def auth_error(provider: str, display_name: str, status: int, code: Any) -> ProviderAuthError:
    """The error for a refused key: people learn an operator must act, never the key."""
    return ProviderAuthError(
        provider, f"The {display_name} account key was refused; an operator must fix it.",
        status_code=status, code=code,
    )


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (an HTTP date is ignored)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 3600 else None


def _parse(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(resp.content)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep ("[[[[...")
        return None
    return body if isinstance(body, dict) else None


def message_of(body: Mapping[str, Any]) -> str:
    """The vendor's error text, lower-cased, for keyword checks (never shown to people)."""
    for key in ("msg", "message", "error"):
        value = body.get(key)
        if isinstance(value, str):
            return value.lower()
        if isinstance(value, Mapping) and isinstance(value.get("message"), str):
            return value["message"].lower()
    return ""


def decode_json(payload: Any) -> Any:
    """Decode a data message the viewer relayed: bytes, text or already-parsed JSON.

    Returns ``None`` for anything that is not JSON.
    """
    if isinstance(payload, bytes | bytearray):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(payload, str):
        try:
            return json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep ("[[[[...")
            return None
    return payload


class EchoFilter:
    """Remembers the last texts we had an avatar say, to drop the vendor's echo of them.

    A verbatim ``say`` is published as the avatar's line when it is sent; if the vendor later
    reports the same words through the viewer, that report would show the line twice.
    """

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._said: dict[str, list[str]] = {}

    def said(self, session_id: str, text: str) -> None:
        """Record that ``text`` was published as the avatar's words."""
        recent = self._said.setdefault(session_id, [])
        recent.append(_norm(text))
        del recent[: -self._keep]

    def is_echo(self, session_id: str, text: str) -> bool:
        """Whether ``text`` repeats a recorded line (each record matches once)."""
        recent = self._said.get(session_id, [])
        norm = _norm(text)
        if norm in recent:
            recent.remove(norm)
            return True
        return False

    def forget(self, session_id: str) -> None:
        """Drop what is remembered for a session."""
        self._said.pop(session_id, None)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()
