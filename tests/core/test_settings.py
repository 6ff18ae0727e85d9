"""Settings: every key documented, one clear error listing every bad key, secrets stay secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.core.errors import ConfigError
from bot.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_env_example_documents_exactly_the_settings():
    text = (ROOT / ".env.example").read_text()
    keys = re.findall(r"^([A-Z0-9_]+)=", text, flags=re.M)
    assert sorted(keys) == sorted(n.upper() for n in Settings.model_fields)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z0-9_]+=", line):
            above = lines[i - 1]
            assert above.startswith("#") or re.match(r"^[A-Z0-9_]+=", above), f"{line} undocumented"


def test_the_example_file_loads_as_it_is(tmp_path):
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    settings = load_settings()
    assert settings.port == 8080 and settings.discord_token is None


def test_every_bad_key_is_listed_in_one_error(monkeypatch):
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.setenv("PUBLIC_URL", "not a url")
    monkeypatch.setenv("IDLE_TIMEOUT_S", "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = info.value.user_message
    for key in ("PORT", "PUBLIC_URL", "IDLE_TIMEOUT_S"):
        assert key in message


def test_secrets_never_show_in_repr_or_errors(monkeypatch):
    monkeypatch.setenv("HEYGEN_API_KEY", "hg-very-secret")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("PORT", "bad")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "very-secret" not in info.value.user_message
    monkeypatch.setenv("PORT", "9000")
    settings = load_settings()
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings.model_dump())
    assert sorted(settings.secrets()) == ["hg-very-secret", "xoxb-very-secret"]


def test_pricing_defaults_follow_the_vendors():
    s = load_settings()
    assert s.pricing("a2e").cost(5) == 1 and s.pricing("a2e").cost(61) == 13  # 1 coin per 5 s
    assert s.pricing("heygen").billed_seconds(10) == 30  # 30 s minimum
    assert s.pricing("heygen").billed_seconds(31.2) == 32  # then per second
    assert s.pricing("akool").billed_seconds(61) == 120  # pre-charged per minute


def test_public_url_builds_absolute_links(monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://avatars.example.org/")
    assert load_settings().base_url == "https://avatars.example.org"


def test_log_lines_never_carry_a_configured_secret(capsys):
    import logging

    from bot.logs import configure_logging

    configure_logging("INFO", ["sk-live-123456", "xoxb-abcdef"])
    log = logging.getLogger("avatarbot.test")
    log.info("calling vendor with key %s", "sk-live-123456")
    log.warning("token xoxb-abcdef refused")
    try:
        raise RuntimeError("vendor said: bad key sk-live-123456")
    except RuntimeError:
        log.exception("call failed")
    err = capsys.readouterr().err
    assert "sk-live-123456" not in err and "xoxb-abcdef" not in err
    assert "calling vendor with key ***" in err and "token *** refused" in err
    assert "RuntimeError: vendor said: bad key ***" in err  # tracebacks are masked too
    logging.getLogger().handlers.clear()
