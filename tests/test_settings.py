from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.runtime.settings import load_settings


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert s.max_reply_tokens < s.context_tokens
    assert s.models_path == (s.model_dir or s.data_dir / "models")


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("PARLEY_THREADS", "many", "PARLEY_THREADS"),
        ("PARLEY_DEVICE", "tpu", "PARLEY_DEVICE"),
        ("PARLEY_TEMPERATURE", "-1", "PARLEY_TEMPERATURE"),
        ("PARLEY_TOP_P", "0", "PARLEY_TOP_P"),
        ("PARLEY_CONVERSATION_TTL", "5", "PARLEY_CONVERSATION_TTL"),
        ("PARLEY_MAX_REPLY_TOKENS", "4096", "PARLEY_MAX_REPLY_TOKENS"),
        ("TELEGRAM_ADMINS", "12,alice", "TELEGRAM_ADMINS: must be comma-separated numeric ids"),
        ("DISCORD_ALLOWED_ROLES", "[1, 2]", "DISCORD_ALLOWED_ROLES: must be comma-separated numeric ids"),
    ],
)
def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_id_lists_are_read_as_sets_of_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_ALLOWED_USERS", " 12, 34,,56 ")
    monkeypatch.setenv("DISCORD_GUILD_IDS", "")
    s = load_settings()
    assert s.telegram_allowed_users == frozenset({12, 34, 56})
    assert s.discord_guild_ids == frozenset()


def test_reads_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PARLEY_MODEL=other\nREDIS_URL=redis://example:1/2\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("PARLEY_MODEL", raising=False)
    s = load_settings()
    assert s.model == "other"
    assert s.redis_url == "redis://example:1/2"


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PARLEY_THREADS=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARLEY_THREADS", "1")
    assert load_settings().threads == 1


def test_env_example_documents_every_setting() -> None:
    from engine.runtime.settings import Settings

    example = (Path(__file__).parent.parent / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias if isinstance(alias, str) else "REDIS_URL" if name == "redis_url" else f"PARLEY_{name.upper()}"
        assert f"# {env}=" in example, f"{env} is not documented in .env.example"
