"""The relay outbox (``bot/core/relay.py``): order, ids, acknowledgements, hand-over between pages,
barriers, the bound, the thread's notices, and how reported text is made inert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.errors import LimitReached
from bot.core.events import EventHub, Warning
from bot.core.relay import RelayConfig, RelayItem, RelayOutboxFull, neutralise

CONFIG = RelayConfig(max_message_bytes=950, bytes_per_second=5000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Thread:
    """The warnings published on session s1 (what the Discord and Slack relays would post)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.seen: list[Any] = []

    def warnings(self) -> list[str]:
        while not self.queue.empty():
            self.seen.append(self.queue.get_nowait())
        return [e.text for e in self.seen if isinstance(e, Warning)]


Hub = tuple[EventHub, "Clock", "Thread"]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    events = EventHub(queue_size=10_000)
    clock = Clock()
    events.relay.clock = clock
    async with events.subscribe("s1") as queue:
        yield events, clock, Thread(queue)


def put(events: EventHub, *texts: str, label: str = "say: hi", barrier: bool = False) -> list[str]:
    items = [RelayItem({"text": t}, barrier=barrier and i == 0, key=f"k-{t}" if barrier else None)
             for i, t in enumerate(texts)]
    return events.relay.put("s1", items, label=label, config=CONFIG)


def texts(handed: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [payload["text"] for _, payload in handed]


async def test_messages_go_out_in_order_with_unique_ids_until_acknowledged(hub: Hub) -> None:
    events, _, _ = hub
    first = put(events, "a", "b")
    second = put(events, "c", label="say: again")
    assert len(set(first + second)) == 3
    handed = events.relay.take("s1", "p1")
    assert [i for i, _ in handed] == first + second and texts(handed) == ["a", "b", "c"]
    assert events.relay.take("s1", "p1") == []  # already in that page's hands
    assert events.relay.acked("s1", "p1", first) == 2
    assert events.relay.waiting("s1") == 1
    assert events.relay.acked("s1", "p1", first) == 0  # acknowledged once only


async def test_a_page_can_only_acknowledge_what_it_was_handed(hub: Hub) -> None:
    events, _, _ = hub
    ids = put(events, "a")
    assert events.relay.acked("s1", "stranger", ids) == 0
    events.relay.take("s1", "p1")
    assert events.relay.acked("s1", "stranger", ids) == 0
    assert events.relay.waiting("s1") == 1


async def test_what_a_page_held_and_did_not_send_goes_to_the_next_page_in_order(hub: Hub) -> None:
    events, _, _ = hub
    ids = put(events, "a", "b", "c")
    events.relay.take("s1", "p1")
    events.relay.acked("s1", "p1", ids[:1])
    # While p1 still holds b and c, p2 gets nothing (they might be on their way).
    assert events.relay.take("s1", "p2") == []
    events.relay.release("s1", "p1")
    handed = events.relay.take("s1", "p2")
    assert [i for i, _ in handed] == ids[1:] and texts(handed) == ["b", "c"]
    # p1's late acknowledgement of a message it really sent still counts (no second send).
    assert events.relay.acked("s1", "p1", ids[1:2]) == 1
    assert events.relay.acked("s1", "p2", ids[1:]) == 1


async def test_the_outbox_is_bounded_and_refuses_a_message_whole(hub: Hub) -> None:
    events, _, _ = hub
    events.relay.max_queued = 5
    put(events, "a", "b", "c")
    with pytest.raises(RelayOutboxFull) as refused:
        put(events, "d", "e", "f")
    assert isinstance(refused.value, LimitReached)
    assert "3 messages are still waiting" in refused.value.user_message
    assert texts(events.relay.take("s1", "p1")) == ["a", "b", "c"]


async def test_a_barrier_holds_what_follows_until_the_vendor_confirms_it(hub: Hub) -> None:
    events, clock, thread = hub
    put(events, "switch", "chat", barrier=True)
    [(switch_id, _)] = events.relay.take("s1", "p1")
    events.relay.acked("s1", "p1", [switch_id])
    assert events.relay.take("s1", "p1") == []  # sent, not confirmed
    clock.now += 0.5
    events.relay.check("s1")
    assert events.relay.take("s1", "p1") == []
    assert events.relay.confirm("s1", "k-switch")
    assert texts(events.relay.take("s1", "p1")) == ["chat"]


async def test_an_unconfirmed_barrier_is_handed_again_under_a_new_id(hub: Hub) -> None:
    events, clock, thread = hub
    put(events, "switch", "chat", barrier=True)
    [(old_id, _)] = events.relay.take("s1", "p1")
    events.relay.acked("s1", "p1", [old_id])
    clock.now += events.relay.confirm_timeout_s
    events.relay.check("s1")
    [(new_id, payload)] = events.relay.take("s1", "p1")
    assert new_id != old_id and payload == {"text": "switch"}
    events.relay.acked("s1", "p1", [new_id])
    events.relay.confirm("s1", None)
    assert texts(events.relay.take("s1", "p1")) == ["chat"]


async def test_a_refused_barrier_drops_its_message_with_a_notice(hub: Hub) -> None:
    events, _, thread = hub
    put(events, "switch", "chat", barrier=True, label="say: Read this")
    put(events, "later", label="ask: And then?")
    assert events.relay.fail("s1", "k-switch", "AKool refused to switch the avatar's mode.")
    assert thread.warnings() == ["AKool refused to switch the avatar's mode. So this was not sent: "
                              "“say: Read this”"]
    assert texts(events.relay.take("s1", "p1")) == ["later"]


async def test_the_thread_is_told_once_while_no_page_relays(hub: Hub) -> None:
    events, clock, thread = hub
    put(events, "a", "b", label="say: one")
    put(events, "c", label="ask: two")
    events.relay.check("s1")
    assert thread.warnings() == []
    clock.now += events.relay.notice_after_s
    events.relay.check("s1")
    put(events, "d", label="say: three")
    clock.now += 10
    events.relay.check("s1")
    assert thread.warnings() == [
        "Open the viewer link so that the avatar can hear you: 2 messages waiting."]
    # A page comes and goes: a new absence may be told again, once.
    events.relay.set_present("s1", True)
    events.relay.set_present("s1", False)
    events.relay.check("s1")
    events.relay.check("s1")
    assert len(thread.warnings()) == 2


async def test_messages_waiting_too_long_are_dropped_with_one_notice_naming_them(hub: Hub) -> None:
    events, clock, thread = hub
    events.relay.set_present("s1", True)
    ids = put(events, "a", "b", label="say: " + "x" * 100)
    put(events, "c", label="ask: @everyone come")
    # A message partly sent is finished, not dropped.
    events.relay.take("s1", "p1")
    events.relay.acked("s1", "p1", ids[:1])
    events.relay.release("s1", "p1")
    clock.now += events.relay.max_wait_s
    put(events, "e", label="say: newest")
    events.relay.check("s1")
    [notice] = thread.warnings()
    assert notice.startswith("No viewer page sent this to the avatar within 2 minutes, so it "
                             "was dropped: “ask: @\u200beveryone come”")
    # The notice is clipped and inert; what is not too old stays.
    assert texts(events.relay.take("s1", "p2")) == ["b", "e"]


def test_mentions_and_links_are_made_inert_but_read_the_same() -> None:
    text = ("@everyone @here @channel <@123> <@!45> <@&6> <#7> <!here> <!channel> see "
            "https://evil.example/x, HTTP://A.B and ftp://c.d; mail me@host.org")
    out = neutralise(text)
    for live in ("@everyone", "@here", "@channel", "<@", "<#", "<!", "://"):
        assert live not in out, live
    assert out.replace("\u200b", "") == text
    assert neutralise("a plain line, 3 < 4 and 5 > 2") == "a plain line, 3 < 4 and 5 > 2"
