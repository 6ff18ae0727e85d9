"""Migration files: one number each, in an unbroken sequence (two branches adding the same
number would apply in name order by accident, and a released database would miss one)."""

from __future__ import annotations

from bot.storage.migrations import migrations


def test_each_migration_has_its_own_number_in_sequence() -> None:
    numbers = [int(m.name[:4]) for m in migrations()]
    assert numbers == list(range(1, len(numbers) + 1)), [m.name for m in migrations()]
