"""Signed viewer links: ``/v/<token>``, token = session id + expiry + role, HMAC-SHA256.

The token says which session a link opens, until when, and with which role; the signature
makes it unforgeable. Verification is constant-time and reveals nothing about why it failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Literal

from pydantic import BaseModel

Role = Literal["viewer", "host"]
_ROLES = ("viewer", "host")


class LinkClaims(BaseModel):
    """What a valid token says."""

    session_id: str
    expires_at: int
    role: Role


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode the one canonical form ``_b64`` writes, else ``ValueError``.

    Python's decoder is lenient: it drops characters outside the alphabet, accepts ``+``/``/``
    and padding, and ignores the unused low bits of the last character. Any of those would let
    several strings open the same link, so the decoded bytes must encode back to ``text``.
    """
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical encoding")
    return data


class ViewerLinks:
    """Signs and checks viewer tokens and builds absolute viewer URLs.

    Args:
        secret: the server's signing secret.
        base_url: absolute base of the web server (``PUBLIC_URL``), no trailing slash.
    """

    def __init__(self, secret: bytes, base_url: str) -> None:
        if len(secret) < 16:
            raise ValueError("the link secret must be at least 16 bytes")
        self._secret = secret
        self.base_url = base_url.rstrip("/")

    def token(self, session_id: str, expires_at: float, role: Role = "viewer") -> str:
        """A signed token for ``session_id`` valid until ``expires_at`` (epoch seconds)."""
        payload = f"{session_id}.{int(expires_at)}.{role}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def url(self, session_id: str, expires_at: float, role: Role = "viewer") -> str:
        """The absolute viewer URL of a session."""
        return f"{self.base_url}/v/{self.token(session_id, expires_at, role)}"

    def verify(self, token: str, now: float | None = None) -> LinkClaims | None:
        """The token's claims, or ``None`` if it is malformed, forged or expired."""
        try:
            payload_b64, sig_b64 = token.split(".")
            payload, sig = _unb64(payload_b64), _unb64(sig_b64)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            session_id, expires, role = payload.decode().split(".")
            claims = LinkClaims(session_id=session_id, expires_at=int(expires), role=role)  # type: ignore[arg-type]
        except (ValueError, UnicodeDecodeError):
            return None
        if claims.expires_at < (time.time() if now is None else now):
            return None
        return claims

    def sign_value(self, value: str) -> str:
        """``value`` (no dot in it) with its signature: a cookie the server can later trust."""
        return f"{value}.{_b64(self._sign(b'value:' + value.encode()))}"

    def check_value(self, signed: str) -> str | None:
        """The value of a ``sign_value`` result, or ``None`` if malformed or tampered."""
        value, _, sig = signed.rpartition(".")
        if not value or "." in value:
            return None
        try:
            ok = hmac.compare_digest(_unb64(sig), self._sign(b"value:" + value.encode()))
        except (ValueError, TypeError):
            return None
        return value if ok else None

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()
