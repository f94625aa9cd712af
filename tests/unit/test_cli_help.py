"""``thurrock-streams --help`` speaks of the project's own commands, not Faust's banner."""

from __future__ import annotations

import pytest

from thurrock_streams.cli import main


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_help_lists_the_projects_commands(argv: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    commands = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert commands == ["worker", "dashboard", "stack", "watch", "rules", "topics"]
    assert "Faust" not in out.split("commands:")[0]


def test_no_command_prints_the_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: thurrock-streams COMMAND")


def test_a_bad_dashboard_setting_stops_with_one_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_FEED", "live")
    assert main(["dashboard"]) == 2
    assert capsys.readouterr().err.startswith("thurrock-streams dashboard: DASHBOARD_FEED=")
