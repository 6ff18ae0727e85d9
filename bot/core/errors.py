"""The one error tree of avatarbot.

Every error a user can cause or a vendor can return is a subclass of ``AvatarBotError``.
Each carries ``user_message``: a short text that is safe to show in a chat or on a page
(never a secret, never a raw vendor payload).

::

    AvatarBotError
    ├── ConfigError
    ├── WorkerUnreachable         the worker that holds a session does not answer (cluster)
    ├── Forwarded                 an error the session's worker answered a forwarded call with
    ├── StoreUnavailable          the database cannot be opened: corrupt, unreadable, read-only
    ├── InvalidRequest            bad argument: duration, amount, avatar, mode ...
    │   └── UnknownProvider
    ├── TenantNotFound
    ├── SessionNotFound
    ├── SessionNotLive            the session has ended or has not started yet
    ├── NotAllowed                role/user not allowed, admin command by a non-admin
    ├── LimitReached              concurrent sessions, longest session, daily cap
    │   ├── InsufficientCredits
    │   ├── SpeechBusy            too many texts already waiting to be spoken
    │   └── SessionBusy           a session's message queue is full (bot/core/dispatch.py)
    └── ProviderError             a vendor said no or did not answer (see ``retryable``)
        ├── ProviderAuthError     the key is wrong or the account is blocked
        ├── ProviderUnavailable   timeout, 5xx, no capacity, rate limited (retryable)
        │   └── AtCapacity        this process serves as many sessions/viewers as it may
        └── ProviderRejected      the vendor refused this request (unknown avatar, no credits ...)
            └── ProviderSessionGone   the vendor session has already ended (a stop succeeds)
"""

from __future__ import annotations

from datetime import datetime


class AvatarBotError(Exception):
    """Root of every avatarbot error; ``user_message`` is safe to show to people."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ConfigError(AvatarBotError):
    """The configuration is missing or invalid."""


class WorkerUnreachable(AvatarBotError):
    """The worker that holds a session (renders it, or keeps its relay outbox) does not answer.

    Several workers only (docs/scale-out.md): nothing was done; the same request may work once
    that worker is back or another has taken the session over.
    """


class Forwarded(AvatarBotError):
    """An error the session's worker answered a forwarded call with (``status``: its HTTP one)."""

    def __init__(self, user_message: str, status: int) -> None:
        super().__init__(user_message)
        self.status = status


class StoreUnavailable(AvatarBotError):
    """The database cannot be opened or used; ``user_message`` names the path and the cause.

    Args:
        path: the database file.
        cause: what went wrong, in plain words.
    """

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(f"Cannot use the database {path}: {cause}.")
        self.path = path
        self.cause = cause


class StoreFault(AvatarBotError):
    """The open database failed an operation (locked past the busy timeout, read-only, full).

    The operation's transaction was rolled back: nothing it would have changed was changed.
    ``user_message`` names no path; ``cause`` says what went wrong, for the log.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(
            "The database is not available right now; nothing was changed. Try again shortly."
        )
        self.cause = cause


class InvalidRequest(AvatarBotError):
    """A command argument is out of range or malformed."""


class UnknownProvider(InvalidRequest):
    """The named provider is not configured."""

    def __init__(self, name: str, available: list[str]) -> None:
        options = ", ".join(sorted(available)) or "none"
        super().__init__(f"Unknown provider {name!r}. Available: {options}.")
        self.name = name


class TenantNotFound(AvatarBotError):
    """The tenant has never been seen (no grants, no limits)."""

    def __init__(self, tenant: str) -> None:
        super().__init__(f"Unknown tenant {tenant}.")
        self.tenant = tenant


class SessionNotFound(AvatarBotError):
    """No session has this id (or it belongs to another tenant)."""

    def __init__(self, session_id: str) -> None:
        super().__init__("There is no such session.")
        self.session_id = session_id


class SessionNotLive(AvatarBotError):
    """The session exists but is not live (ended, failed or still starting)."""

    def __init__(self, session_id: str, state: str) -> None:
        super().__init__(f"The session is {state}, not live.")
        self.session_id = session_id
        self.state = state


class NotAllowed(AvatarBotError):
    """The caller may not do this here."""


class LimitReached(AvatarBotError):
    """A tenant limit refuses the request."""


class InsufficientCredits(LimitReached):
    """The tenant's available credits do not cover the reservation."""

    def __init__(self, available: int, required: int) -> None:
        super().__init__(
            f"Not enough credits: this needs {required}, {available} available. "
            "Ask an admin to grant more, or start a shorter session."
        )
        self.available = available
        self.required = required


class SpeechBusy(LimitReached):
    """The avatar has as many texts waiting to be spoken as it accepts."""

    def __init__(self) -> None:
        super().__init__("The avatar is still speaking; wait or interrupt.")


class SessionBusy(LimitReached):
    """A session already has as many messages waiting for its avatar as it accepts.

    Args:
        avatar: the avatar's name, as people know it.
        waiting: how many messages are ahead (the one refused is not among them).
    """

    def __init__(self, avatar: str, waiting: int) -> None:
        noun = "message" if waiting == 1 else "messages"
        super().__init__(
            f"{avatar} is still busy with {waiting} {noun}; wait a moment and send this again."
        )
        self.avatar = avatar
        self.waiting = waiting


class ProviderError(AvatarBotError):
    """A vendor call failed.

    Args:
        provider: the provider's name.
        user_message: what to tell people.
        status_code: HTTP status, when there was one.
        code: the vendor's own error code, when there was one.
        retryable: whether the same call may succeed later.
        retry_after_s: how long the vendor asked us to wait (HTTP ``Retry-After``), if it did.
    """

    def __init__(
        self,
        provider: str,
        user_message: str,
        *,
        status_code: int | None = None,
        code: str | int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(user_message)
        self.provider = provider
        self.status_code = status_code
        self.code = code
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, status={self.status_code}, "
            f"code={self.code!r}, retryable={self.retryable}, msg={self.user_message!r})"
        )


class ProviderAuthError(ProviderError):
    """The vendor refused our credentials."""

    def __init__(self, provider: str, user_message: str | None = None, **kw: object) -> None:
        msg = user_message or f"The {provider} account key was refused; an operator must fix it."
        super().__init__(provider, msg, retryable=False, **kw)  # type: ignore[arg-type]


class ProviderUnavailable(ProviderError):
    """The vendor timed out, failed or has no capacity now; a retry may help."""

    def __init__(self, provider: str, user_message: str | None = None, **kw: object) -> None:
        msg = user_message or f"{provider} is not answering right now; try again in a minute."
        kw.setdefault("retryable", True)
        super().__init__(provider, msg, **kw)  # type: ignore[arg-type]


class ProviderRejected(ProviderError):
    """The vendor refused this particular request."""

    def __init__(self, provider: str, user_message: str, **kw: object) -> None:
        super().__init__(provider, user_message, retryable=False, **kw)  # type: ignore[arg-type]


class AtCapacity(ProviderUnavailable):
    """The process already serves as many sessions or viewers as its settings allow.

    Nothing was started or connected; the same request may succeed once another ends.
    """

    def __init__(self, provider: str, user_message: str) -> None:
        super().__init__(provider, user_message)


class ProviderSessionGone(ProviderRejected):
    """The vendor says the session has already ended or never existed.

    Stopping such a session counts as stopped; callers test for this type, never for the text.
    Raised on say, ask, keep-alive ..., it means the vendor ended the session on its own: the
    service then ends it as vendor-ended instead of leaving it live with credits reserved.

    Args:
        provider: the provider's name.
        user_message: what to tell the person whose command failed.
        reason: why the session ended, in plain words, for the end summary.
        ended_at: when the vendor ended it, if known (credits settle there); else "now".
    """

    def __init__(
        self,
        provider: str,
        user_message: str | None = None,
        *,
        reason: str | None = None,
        ended_at: datetime | None = None,
        **kw: object,
    ) -> None:
        msg = user_message or f"That {provider} session has already ended."
        super().__init__(provider, msg, **kw)
        self.reason = reason or "the vendor ended the session"
        self.ended_at = ended_at


class ServiceClosing(AvatarBotError):
    """The server is shutting down and takes no new sessions."""

    def __init__(self) -> None:
        super().__init__(
            "The server is restarting and takes no new sessions; try again in a minute."
        )
