"""LOCAL_ICE_SERVERS is JSON in the environment: bad JSON is one clear configuration error."""

from __future__ import annotations

import pytest

from bot.core.errors import ConfigError
from bot.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_bad_json_in_local_ice_servers_is_a_config_error(monkeypatch):
    # TURN credentials live in this value: the error names the key, never the value.
    monkeypatch.setenv("LOCAL_ICE_SERVERS", '[{"urls": "turn:t.example", "credential": "s3cr3t"')
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = info.value.user_message
    assert "LOCAL_ICE_SERVERS" in message and "PORT" in message
    assert "s3cr3t" not in message


def test_good_json_in_local_ice_servers_still_loads(monkeypatch):
    monkeypatch.setenv("LOCAL_ICE_SERVERS", '[{"urls": "stun:stun.example:3478"}]')
    assert load_settings().local_ice_servers == [{"urls": "stun:stun.example:3478"}]
    monkeypatch.setenv("LOCAL_ICE_SERVERS", " ")
    assert load_settings().local_ice_servers == []
