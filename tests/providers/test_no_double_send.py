"""A call that makes the avatar talk is never sent twice by a retry (docs/backpressure.md).

A read timeout or a 500 after the request went out may mean the vendor got it: ask/say are then
reported, not re-sent. Failures that prove the vendor did not process the call (429, 503, no
connection) are still retried, and so are the idempotent calls (stop, avatar list).
"""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

from bot.core.errors import ProviderUnavailable
from bot.core.events import EventHub
from tests.providers.conftest import FAST_RETRY, Case, build

# A2E speaks ``ask``/``speak`` over REST; HeyGen's ``streaming.task`` (chat/repeat) likewise.
TALK_PATH = {"a2e": {"ask": "/ask", "say": "/speak"},
             "heygen-livekit": {"ask": "/streaming.task", "say": "/streaming.task"}}
STOP_PATH = {"a2e": "/leave", "heygen-livekit": "/streaming.stop"}
REST_TALKERS = ["a2e", "heygen-livekit"]


@pytest.mark.parametrize("case", REST_TALKERS, indirect=True)
@pytest.mark.parametrize("call", ["ask", "say"])
async def test_a_talk_call_whose_answer_times_out_is_sent_once(case: Case, call: str):
    ps = await case.start()
    path = TALK_PATH[case.name][call]
    case.fake.fail("timeout", path=path)  # the vendor got it and never answered in time
    with pytest.raises(ProviderUnavailable) as err:
        await getattr(case.provider, call)(ps, "Only once, please")
    assert "in time" in err.value.user_message
    assert len(case.fake.calls(path)) == 1
    assert case.said(ps) == [] if call == "say" else case.asked(ps) == []


@pytest.mark.parametrize("case", REST_TALKERS, indirect=True)
async def test_a_talk_call_that_failed_with_500_is_not_resent(case: Case):
    ps = await case.start()
    path = TALK_PATH[case.name]["ask"]
    case.fake.fail("500", path=path)
    with pytest.raises(ProviderUnavailable):
        await case.provider.ask(ps, "Did you hear me?")
    assert len(case.fake.calls(path)) == 1


@pytest.mark.parametrize("case", REST_TALKERS, indirect=True)
@pytest.mark.parametrize("status", ["503", "429"])
async def test_a_talk_call_the_vendor_refused_unprocessed_is_retried(case: Case, status: str):
    ps = await case.start()
    path = TALK_PATH[case.name]["ask"]
    case.fake.fail(status, path=path)
    await case.provider.ask(ps, "Second time lucky")
    assert len(case.fake.calls(path)) == 2
    assert case.asked(ps) == ["Second time lucky"]


@pytest.mark.parametrize("case", REST_TALKERS, indirect=True)
async def test_idempotent_calls_are_still_retried_after_a_timeout(case: Case):
    ps = await case.start()
    case.fake.fail("timeout", path=STOP_PATH[case.name])
    await case.provider.stop(ps)
    assert len(case.fake.calls(STOP_PATH[case.name])) == 2
    assert case.open_vendor_ids() == []


@pytest.mark.parametrize("case", REST_TALKERS, indirect=True)
async def test_a_talk_call_that_found_no_connection_is_retried(
    case: Case, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
):
    """Nothing left the process (connection refused): sending again cannot make it speak twice."""
    ps = await case.start()
    with socket.socket() as closed:  # a port nothing listens on: connect() is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = build(case.name, case.fake, http, EventHub(), base_url=f"http://127.0.0.1:{port}")
    caplog.set_level(logging.WARNING, logger="bot.providers._http")
    with pytest.raises(ProviderUnavailable) as err:
        await unreachable.ask(ps, "Anyone there?")
    assert "cannot be reached" in err.value.user_message
    tries = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(tries) == FAST_RETRY.attempts  # every attempt, not one
