"""One retry helper: retries only errors that say they are retryable, within a time bound."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.core.errors import ProviderError

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryPolicy(BaseModel):
    """How often and how long to retry a retryable vendor error."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(default=3, ge=1, le=10)
    base_delay_s: float = Field(default=0.5, gt=0)
    max_delay_s: float = Field(default=5.0, gt=0)
    total_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must be at least base_delay_s")
        return self

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based), with jitter."""
        capped = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        return capped * (0.5 + random.random() / 2)


async def with_retry(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy,
    retry_if: Callable[[ProviderError], bool] | None = None,
) -> T:
    """Run ``call``, retrying ``ProviderError``s marked retryable, within ``policy``.

    ``retry_if`` narrows which retryable errors are retried (a booking call: only a definite
    refusal, after which nothing was booked; ``bot/core/bookings.py``).
    """
    deadline = time.monotonic() + policy.total_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except ProviderError as exc:
            # A vendor that says when to come back (429 Retry-After) is believed, up to the cap.
            told = min(exc.retry_after_s or 0.0, policy.max_delay_s)
            wait = max(policy.delay(attempt), told)
            out_of_time = time.monotonic() + wait > deadline
            unwanted = retry_if is not None and not retry_if(exc)
            if not exc.retryable or unwanted or attempt == policy.attempts or out_of_time:
                raise
            log.info("retrying %s after %r (attempt %d)", exc.provider, exc, attempt)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
