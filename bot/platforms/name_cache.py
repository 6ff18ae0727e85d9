"""A bounded, expiring cache of the names behind platform ids (users, roles, channels).

Both chat adapters read names out instead of ids (``bot/platforms/readable.py``); this keeps each
answer of a platform look-up, found or not, for a while, so a busy thread does not ask again.
"""

from __future__ import annotations

import time
from collections import OrderedDict

MAX_ENTRIES = 2048
TTL_S = 600.0
_Key = tuple[str, int | str, int | str]  # (kind, scope such as a server, id)


class NameCache:
    """A bounded, expiring map of (kind, scope, id) -> name (None: looked up, not found).

    Args:
        max_entries: the most names kept; the least recently used go first.
        ttl_s: how long a name (or a miss) is trusted before it is looked up again.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl_s: float = TTL_S) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._names: OrderedDict[_Key, tuple[float, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def get(self, kind: str, scope: int | str, ident: int | str) -> tuple[bool, str | None]:
        """``(known, name)``: ``known`` is False when the id must be looked up."""
        key = (kind, scope, ident)
        entry = self._names.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._names.pop(key, None)
            return False, None
        self._names.move_to_end(key)
        return True, entry[1]

    def put(self, kind: str, scope: int | str, ident: int | str, name: str | None) -> None:
        """Remember ``name`` (or that there is none) for ``ttl_s``."""
        key = (kind, scope, ident)
        self._names[key] = (time.monotonic() + self.ttl_s, name)
        self._names.move_to_end(key)
        while len(self._names) > self.max_entries:
            self._names.popitem(last=False)
