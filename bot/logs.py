"""Logging set-up with a last line of defence: configured secrets are masked in every line."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class RedactingFormatter(logging.Formatter):
    """Format a record as usual, then replace every configured secret with ``***``.

    Masking the formatted text covers the message, its arguments and any traceback or stack
    text alike.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        """The record's text with secrets masked."""
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def configure_logging(level: str, secrets: Iterable[str]) -> None:
    """Log to stderr at ``level``, masking ``secrets`` in every line."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs each request at INFO, which bot/providers/_http.py turns into a DEBUG line:
    # unless the process logs at DEBUG, those records are not even made (one per thread
    # message's vendor call; issue 15). Its warnings and errors still pass.
    debugging = root.isEnabledFor(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.DEBUG if debugging else logging.WARNING)
