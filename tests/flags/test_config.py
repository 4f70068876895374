from __future__ import annotations

from pathlib import Path

import pytest

from flags import (
    PACKAGED_TOGGLES_FILE,
    FlagsConfigError,
    FlagSettings,
    default_toggles_path,
)
from shim.stages import Stage


def test_defaults_are_embedded_with_a_file_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = FlagSettings.from_env({})
    assert settings.mode == "embedded"
    # Never the packaged copy: an installed app would read site-packages' file.
    assert settings.toggles_file == tmp_path / "ws-migration-toggles.json"
    assert settings.create_missing
    assert PACKAGED_TOGGLES_FILE.is_file()
    assert settings.force_stage is None
    assert settings.refresh_interval == 5


def test_the_toggles_variable_beats_the_older_name_and_the_cwd(tmp_path: Path) -> None:
    both = {"WS_MIGRATION_TOGGLES": "/tmp/a.json", "FLAGS_FILE": "/tmp/b.json"}
    assert default_toggles_path(both) == Path("/tmp/a.json")
    assert default_toggles_path({"FLAGS_FILE": "/tmp/b.json"}) == Path("/tmp/b.json")
    assert FlagSettings.from_env(both).toggles_file == Path("/tmp/a.json")


def test_keyword_settings_do_not_create_a_missing_file() -> None:
    assert not FlagSettings().create_missing


def test_from_env_reads_every_variable() -> None:
    settings = FlagSettings.from_env(
        {
            "FLAGS_FILE": "/tmp/t.json",
            "UNLEASH_URL": "http://127.0.0.1:4242/api",
            "UNLEASH_API_TOKEN": "*:development.secret",
            "UNLEASH_APP_NAME": "backend",
            "UNLEASH_ENVIRONMENT": "production",
            "UNLEASH_REFRESH_INTERVAL": "2",
            "WS_MIGRATION_FORCE_STAGE": "Shadow",
        }
    )
    assert settings.mode == "server"
    assert settings.toggles_file == Path("/tmp/t.json")
    assert settings.unleash_url == "http://127.0.0.1:4242/api"
    assert settings.api_token == "*:development.secret"
    assert (settings.app_name, settings.environment) == ("backend", "production")
    assert settings.refresh_interval == 2
    assert settings.force_stage is Stage.SHADOW


def test_blank_values_count_as_unset() -> None:
    settings = FlagSettings.from_env({"UNLEASH_URL": " ", "WS_MIGRATION_FORCE_STAGE": ""})
    assert settings.mode == "embedded"
    assert settings.force_stage is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"WS_MIGRATION_FORCE_STAGE": "canary"}, "WS_MIGRATION_FORCE_STAGE"),
        ({"UNLEASH_REFRESH_INTERVAL": "0.5"}, "UNLEASH_REFRESH_INTERVAL"),
        ({"UNLEASH_REFRESH_INTERVAL": "0"}, "UNLEASH_REFRESH_INTERVAL"),
        ({"UNLEASH_URL": "127.0.0.1:4242"}, "UNLEASH_URL"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(FlagsConfigError) as info:
        FlagSettings.from_env(env)
    assert info.value.name == name
    assert name in str(info.value)
