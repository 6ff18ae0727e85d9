"""Debian's nginx in front of test workers, configured from the README's own example.

``docs/nginx.conf`` is the config the README shows for several workers; ``render`` turns it into
this test's (its upstream lists the test's worker ports, it listens on a free loopback port in
plain HTTP) and ``serve`` runs nginx as a foreground process whose every file (config, pid, logs,
temp paths) is inside a tmp dir. The access log names the worker each request went to
(``$upstream_addr``), so a test can tell how requests were spread.

Without nginx (``make test-system-deps`` installs it) the test is skipped, saying why, and fails
under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import in_ci
from tests.process import free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "docs/nginx.conf"
# nginx lives in /usr/sbin, which a non-root PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

_UPSTREAM = re.compile(r"(upstream avatarbot \{\n)(?:\s*server [^;\n]+;\n)+(\})")
_LISTEN = re.compile(r"^(\s*)listen 443 ssl;$", re.MULTILINE)
_CERTIFICATES = re.compile(r"^\s*ssl_certificate(?:_key)? [^;\n]+;\n", re.MULTILINE)


def _once(pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str], text: str, *,
          count: int = 1) -> str:
    new, made = pattern.subn(repl, text)
    assert made == count, f"docs/nginx.conf no longer has what the test replaces: {pattern.pattern}"
    return new


def render(listen_port: int, worker_ports: Sequence[int], template: str | None = None) -> str:
    """``docs/nginx.conf`` for these ports: plain HTTP on 127.0.0.1, the workers as upstream."""
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in worker_ports)
    text = _once(_UPSTREAM, lambda m: m.group(1) + servers + m.group(2), text)
    text = _once(_LISTEN, rf"\g<1>listen 127.0.0.1:{listen_port};", text)
    return _once(_CERTIFICATES, "", text, count=2)


def main_config(prefix: Path, site: str) -> str:
    """A whole nginx.conf around ``site``: one worker process, every file under ``prefix``."""
    # One worker process: round-robin state is per process, so one process takes turns exactly.
    # Run as root (a CI container), nginx would switch its worker to "nobody", which cannot
    # enter a tmp dir of root's; it keeps the user it was started as otherwise.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log notice;\n"
        "events {\n    worker_connections 256;\n}\n"
        "http {\n"
        "    log_format upstreams '$request_method $uri $status $upstream_addr';\n"
        f"    access_log {prefix}/access.log upstreams;\n{temp}"
        + "".join(f"    {line}\n" if line else "\n" for line in site.splitlines())
        + "}\n"
    )


@dataclass
class Nginx:
    url: str
    prefix: Path

    def access_log(self) -> list[tuple[str, str, int, str]]:
        """(method, path, status, upstream address) of each request answered so far."""
        # The last piece is '' after a whole line, or a line nginx is still writing.
        lines = (self.prefix / "access.log").read_text(encoding="utf-8").split("\n")[:-1]
        rows = []
        for line in lines:
            method, path, status, upstream = line.split(" ", 3)
            rows.append((method, path, int(status), upstream))
        return rows

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""


def nginx_binary() -> str:
    """The nginx executable; skipped (failed under CI=true) when it is not installed."""
    found = shutil.which("nginx", path=SEARCH_PATH)
    if found is None:
        reason = "nginx is not installed (make test-system-deps installs Debian's nginx)"
        if in_ci():
            pytest.fail(reason + " (CI=true: the several-workers test must run)")
        pytest.skip(reason)
    return found


@asynccontextmanager
async def serve(prefix: Path, worker_ports: Sequence[int]) -> AsyncIterator[Nginx]:
    """nginx in the foreground in front of ``worker_ports``, until the block ends."""
    binary = nginx_binary()
    port = free_port()
    conf = _write_config(prefix, port, worker_ports)
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
        "-g", "daemon off;", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    nginx = Nginx(f"http://127.0.0.1:{port}", prefix)
    try:
        await _listening(proc, port, nginx)
        yield nginx
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown: open connections are closed
        await asyncio.wait_for(proc.communicate(), 20)


def _write_config(prefix: Path, port: int, worker_ports: Sequence[int]) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, render(port, worker_ports)), encoding="utf-8")
    return conf


async def _listening(proc: asyncio.subprocess.Process, port: int, nginx: Nginx) -> None:
    """Wait until nginx accepts connections (a bare connect: no request takes a worker's turn)."""
    async with asyncio.timeout(20):
        while True:
            if proc.returncode is not None:
                out = (await proc.stdout.read()).decode() if proc.stdout else ""
                pytest.fail(f"nginx exited ({proc.returncode}):\n{out}\n{nginx.error_log()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return
