"""Keys and tokens never reach a log line or an error message, whatever happens in a session."""

from __future__ import annotations

import logging

import pytest

from bot.core.errors import AvatarBotError
from tests.providers.conftest import LIST_PATH_BY_CASE, Case


async def whole_session(case: Case, errors: list[str]) -> None:
    """Everything a session does, including failures and retries."""
    provider = case.provider
    await provider.list_avatars()
    ps = await case.start(knowledge="The office is on the 3rd floor.")
    await provider.say(ps, "Hello!")
    await provider.ask(ps, "Where is the office?")
    for message in case.viewer_messages(ps):
        provider.decode_viewer_data(ps, message)
    caps = provider.capabilities
    for allowed, call in ((caps.interrupt, provider.interrupt(ps)),
                          (caps.set_context, provider.set_context(ps, "New text."))):
        try:
            await call
        except AvatarBotError as exc:
            assert not allowed
            errors.append(f"{exc} {exc!r}")
    await provider.keep_alive(ps)
    await provider.list_open_sessions()
    for kind in ("500", "timeout", "malformed", "429"):
        case.fake.fail(kind, times=3, path=LIST_PATH_BY_CASE[case.name])
        try:
            await provider.list_avatars()
        except AvatarBotError as exc:
            errors.append(f"{exc} {exc!r} {exc.__cause__!r} {exc.__context__!r}")
        case.fake.clear_faults()
    await provider.stop(ps)
    await provider.stop(ps)


async def test_no_key_or_token_appears_in_any_log_line_or_error(case: Case, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    # As with LOG_LEVEL=DEBUG: configure_logging lets httpx's request lines be made only then.
    caplog.set_level(logging.DEBUG, logger="httpx")
    errors: list[str] = []
    await whole_session(case, errors)
    secrets = [case.fake.api_key, *case.fake.issued_tokens()]
    assert len(secrets) >= 2 and all(len(s) >= 12 for s in secrets)
    logged = [r.getMessage() for r in caplog.records]
    logged += [caplog.text]
    assert any("HTTP Request" in line for line in logged)  # httpx's own lines were captured
    for secret in secrets:
        assert not any(secret in line for line in logged), "a secret reached the log"
        assert not any(secret in text for text in errors), "a secret reached an error"
    assert errors  # the failure paths ran


@pytest.mark.parametrize("case", ["heygen-livekit"], indirect=True)
async def test_a_provider_session_repr_shows_no_vendor_answer(case: Case) -> None:
    ps = await case.start()
    for secret in case.fake.issued_tokens():
        assert secret not in repr(ps)
        assert secret not in str(ps.handle)


@pytest.mark.parametrize("case", ["a2e"], indirect=True)
async def test_vendor_requests_are_not_logged_at_info(case: Case, caplog) -> None:
    """One line per vendor request at INFO was one line per thread message (issue 15)."""
    caplog.set_level(logging.INFO)
    ps = await case.start()
    await case.provider.say(ps, "hello")
    await case.provider.stop(ps)
    assert not any("HTTP Request" in r.getMessage() for r in caplog.records)
