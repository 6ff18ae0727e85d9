"""Text and knowledge bounds come from the session's provider; limit bounds from ``Limits``."""

from __future__ import annotations

import pytest

from bot.core.errors import InsufficientCredits, InvalidRequest, LimitReached, NotAllowed
from bot.core.models import Limits, TenantId, limit_bounds
from bot.core.rules import check_start
from tests.core.conftest import TENANT, cmd


@pytest.fixture
def small(fake):
    """The fake provider, declaring a short text bound and a short knowledge bound."""
    fake.capabilities = fake.capabilities.model_copy(
        update={"max_text_chars": 10, "max_knowledge_chars": 20}
    )
    return fake


async def test_say_and_knowledge_are_bounded_by_the_session_providers_capabilities(
    service, store, small
):
    await store.grant(TENANT, 100, "test")
    with pytest.raises(InvalidRequest, match="over 20 characters"):
        await service.start(cmd(knowledge="k" * 21))
    assert await store.open_sessions() == []  # refused before anything was reserved
    record = await service.start(cmd(knowledge="k" * 20))
    await service.say(record.id, "0123456789")
    with pytest.raises(InvalidRequest, match=r"11 characters; this avatar takes at most 10"):
        await service.say(record.id, "0123456789X")
    with pytest.raises(InvalidRequest, match="over 20 characters"):
        await service.set_context(record.id, "c" * 21)
    assert small.called("say") == ["0123456789"]


def test_limit_bounds_are_the_fields_own():
    assert limit_bounds("max_concurrent") == (0, 50)
    assert limit_bounds("max_minutes") == (1, 240)
    assert limit_bounds("daily_user_credits") == (0, 1_000_000)
    with pytest.raises(ValueError):
        Limits(max_minutes=241)
    with pytest.raises(KeyError):
        limit_bounds("allowed_roles")


async def test_a_tenant_id_is_accepted_wherever_a_tenant_is(service, store):
    tenant = TenantId.parse(TENANT)
    await store.grant(TENANT, 100, "test")
    record = await service.start(cmd(tenant=tenant))
    assert record.tenant == TENANT
    assert [r.id for r in await service.open_sessions(tenant)] == [record.id]
    assert (await service.get(record.id, tenant=tenant)).id == record.id


def _facts(**changes: object) -> dict[str, object]:
    facts = {"limits": Limits(), "active": True, "running": 0, "spent_today": 0,
             "available": 100, "cost": 5, "minutes": 5, "user": "u1", "roles": []}
    return facts | changes


def test_the_rules_check_the_inactive_tenant_first_and_credits_last():
    check_start(**_facts())
    with pytest.raises(NotAllowed, match="removed"):
        check_start(**_facts(active=False, available=0))
    with pytest.raises(LimitReached, match="at most 3 minutes"):
        check_start(**_facts(limits=Limits(max_minutes=3), available=0))
    allowed = Limits(allowed_users=["u2"], allowed_roles=["r1"])
    with pytest.raises(NotAllowed, match="not among"):
        check_start(**_facts(limits=allowed))
    check_start(**_facts(limits=allowed, roles=["r1"]))
    check_start(**_facts(limits=allowed, user="u2"))
    with pytest.raises(InsufficientCredits, match="this needs 5, 4 available"):
        check_start(**_facts(available=4))
