"""Migration files: one number each, in an unbroken sequence (two branches adding the same
number would apply in name order by accident, and a released database would miss one)."""

from __future__ import annotations

import pytest

from bot.storage import migrations as sqlite_migrations
from bot.storage import pg_migrations


@pytest.mark.parametrize("package", [sqlite_migrations, pg_migrations], ids=["sqlite", "postgres"])
def test_each_migration_has_its_own_number_in_sequence(package) -> None:
    found = package.migrations()
    numbers = [int(m.name[:4]) for m in found]
    assert numbers == list(range(1, len(numbers) + 1)), [m.name for m in found]
