"""All settings, read from the environment and `.env` (see `.env.example`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = "You are Parley, a friendly and helpful assistant. Answer clearly and concisely."


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

    # Model
    model: str = "smollm2-135m"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0, le=256)
    context_tokens: int = Field(default=2048, ge=256, le=131_072)
    max_reply_tokens: int = Field(default=512, ge=1, le=32_768)

    # Sampling defaults (temperature 0 is greedy, hence deterministic)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=5.0)
    seed: int | None = None

    # Conversation policy
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_input_chars: int = Field(default=4000, ge=1, le=1_000_000)

    # Unset: INFO for `parley serve`, WARNING for the terminal commands (their output is the answer).
    # OpenAI-compatible HTTP API (`parley serve` starts it when a port is set)
    api_port: int | None = Field(default=None, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    # Comma-separated bearer keys. With none, the API only listens on loopback.
    api_keys: str = ""
    api_max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Requests per minute per API key (per client address without keys); 0 = unlimited.
    api_requests_per_minute: int = Field(default=0, ge=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None

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
    name = "REDIS_URL" if field == "redis_url" else f"PARLEY_{field.upper()}"
    return f"{name}: {msg}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, failing with a message that names the bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid setting: {problems}") from None
