"""The only places that touch another library's private or process-wide internals.

Each module here fences one library: at import it checks that every internal it relies on is
still there and raises ``IncompatibleLibrary`` (naming the library, the installed version and the
version tested) if not, so an upgrade fails at startup instead of misbehaving later.
``pyproject.toml`` pins these libraries below their next minor version for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata


class IncompatibleLibrary(ImportError):
    """An installed library no longer has an internal that avatarbot relies on."""


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``"unknown"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Fence:
    """The import-time checks of one compat module.

    Args:
        distribution: the library's distribution name (``aiortc``, ``discord.py`` ...).
        tested: the library version the compat module was written and tested against.
        where: the compat module, named in the error so the reader knows what to adapt.
    """

    distribution: str
    tested: str
    where: str

    def error(self, what: str) -> IncompatibleLibrary:
        """The error for an internal that is missing or changed (``what`` says which)."""
        installed = installed_version(self.distribution)
        return IncompatibleLibrary(
            f"avatarbot relies on {what}, which the installed {self.distribution} {installed} "
            f"no longer provides (tested with {self.distribution} {self.tested}). Install "
            f"{self.distribution}=={self.tested} or adapt {self.where}."
        )

    def require(self, owner: object, attribute: str, *, callable_: bool = False) -> None:
        """Raise unless ``owner`` has ``attribute`` (and it is callable, if asked)."""
        value = getattr(owner, attribute, None)
        if value is None or (callable_ and not callable(value)):
            raise self.error(f"{self.distribution}'s internal {_name(owner)}.{attribute}")

    def require_read(self, function: object, attribute: str) -> None:
        """Raise unless ``function``'s own code reads (or writes) the name ``attribute``.

        For an instance attribute that exists only once an object is built, or a module global
        looked up at call time: the check is that the library code that matters still uses it.
        """
        code = getattr(function, "__code__", None)
        if code is None or attribute not in code.co_names:
            raise self.error(f"{self.distribution}'s {_name(function)} using .{attribute}")


def _name(owner: object) -> str:
    return str(getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner)))
