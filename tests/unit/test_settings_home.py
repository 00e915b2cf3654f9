"""A relative ``home`` in a config file is taken from the file's folder, not the cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_started_from_root_stays_out_of_system_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ZTBRIDGE_HOME", raising=False)
    monkeypatch.chdir("/")  # as systemd starts a service
    example = ROOT / "config" / "ztbridge.example.toml"
    home = load_settings(example).home
    assert home == ROOT / "config" / "var"
    assert home != Path("/var")


def test_relative_home_beside_the_file_absolute_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZTBRIDGE_HOME", raising=False)
    monkeypatch.chdir("/")
    config = tmp_path / "etc" / "ztbridge.toml"
    config.parent.mkdir()
    config.write_text('home = "data/zt"\n')
    assert load_settings(config).home == tmp_path / "etc" / "data" / "zt"
    config.write_text(f'home = "{tmp_path / "abs"}"\n')
    assert load_settings(config).home == tmp_path / "abs"


def test_environment_still_wins_and_is_taken_from_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ztbridge.toml"
    config.write_text('home = "var"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZTBRIDGE_HOME", "elsewhere")
    assert load_settings(config).home == tmp_path / "elsewhere"
