"""The avatarbot command line on a real database file."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner, Result

from bot.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "cli.db"))
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    invoke.db = tmp_path / "cli.db"
    return invoke


def test_grant_show_and_history(cli):
    result = cli("credits", "grant", "discord:123", "250", "--note", "launch")
    assert result.exit_code == 0 and "available 250" in result.output
    result = cli("credits", "show", "discord:123")
    assert "available 250 (granted 250, used 0, reserved 0)" in result.output
    assert "2 at once, 30 min each" in result.output
    result = cli("credits", "history", "discord:123")
    assert "grant" in result.output and "250" in result.output and "launch" in result.output


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("credits", "grant", "guild123", "5"), "write discord:<guild id>"),
        (("credits", "grant", "discord:1", "--", "-5"), "whole number"),
        (("credits", "grant", "discord:1", "0"), "whole number"),
        (("credits", "show", "slack:TNOPE"), "Unknown tenant slack:TNOPE"),
        (("sessions", "stop", "nope"), "no such session"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(cli, args, text):
    result = cli(*args)
    assert result.exit_code != 0
    assert text in result.output


def test_ledger_verify_fails_on_a_tampered_database(cli):
    cli("credits", "grant", "slack:T1", "10")
    assert cli("ledger", "verify").exit_code == 0
    with sqlite3.connect(cli.db) as conn:
        conn.execute("UPDATE balances SET granted = 11")
    result = cli("ledger", "verify")
    assert result.exit_code == 1 and "MISMATCH slack:T1" in result.output


def test_sessions_list_when_empty(cli):
    assert "no sessions" in cli("sessions", "list").output


def test_bad_configuration_exits_with_the_list(cli, monkeypatch):
    monkeypatch.setenv("PORT", "x")
    result = CliRunner().invoke(main, ["ledger", "verify"])
    assert result.exit_code == 2 and "PORT" in result.output


def test_doctor_marks_heygen_legacy_and_says_how_to_switch(cli, monkeypatch):
    monkeypatch.setenv("HEYGEN_API_KEY", "hg-key-for-doctor")
    monkeypatch.setenv("HEYGEN_BASE_URL", "http://127.0.0.1:9/")  # nothing listens: a FAIL line
    for name in ("A2E_API_KEY", "AKOOL_API_KEY", "LIVEAVATAR_API_KEY", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = cli("doctor")
    (line,) = [x for x in result.output.splitlines() if x.startswith("[on ] heygen")]
    assert "LEGACY" in line and "moved interactive avatars to LiveAvatar" in line
    assert "app.liveavatar.com" in line and "HeyGen keys do not work there" in line
    assert "set LIVEAVATAR_API_KEY, then unset HEYGEN_API_KEY" in line
    assert "hg-key-for-doctor" not in result.output


def test_raw_webrtc_heygen_is_refused_at_startup_with_the_reason(cli, monkeypatch):
    monkeypatch.setenv("HEYGEN_API_KEY", "hg")
    monkeypatch.setenv("HEYGEN_TRANSPORT", "webrtc")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert "HEYGEN_TRANSPORT" in result.output and "2025-02-28" in result.output
    assert "LIVEAVATAR_API_KEY" in result.output
