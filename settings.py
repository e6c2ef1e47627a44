"""Typed settings from the environment / `.env` (every variable is in `.env.example`)."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that ship in docs and `livekit-server --dev`: fine on a laptop, never in production.
DEV_LIVEKIT_KEY = "devkey"
DEV_LIVEKIT_SECRET = "secret"  # noqa: S105 - the public dev secret of `livekit-server --dev`
DEV_VISITOR_HASH_SECRET = "dev-only-visitor-hash-secret-change-me"  # noqa: S105
KNOWN_WEAK = {DEV_LIVEKIT_SECRET, DEV_VISITOR_HASH_SECRET, "changeme", "change-me", "secret"}
MIN_SECRET_LEN = 32


class ConfigError(RuntimeError):
    """Settings unusable for the requested mode; the message names the variable."""


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"

    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = DEV_LIVEKIT_KEY
    livekit_api_secret: str = DEV_LIVEKIT_SECRET
    agent_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "onecallflow-demo"

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Seconds before a Redis call is given up: the token endpoint answers 503 quickly
    # instead of hanging when Redis is down.
    redis_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5

    visitor_hash_secret: str = DEV_VISITOR_HASH_SECRET
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ops_token: str = ""
    # Read-only: /metrics only (Prometheus' scrape config holds it, not the ops token).
    metrics_token: str = ""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    privacy_policy_url: str = "https://onecallflow.com/privacy"

    policies_dir: Path | None = None
    catalog_dir: Path | None = None

    # Worker (agent/) settings.
    openai_api_key: str = ""
    openai_base_url: str | None = None
    deepgram_api_key: str = ""
    deepgram_base_url: str | None = None
    agent_health_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    agent_num_idle_processes: Annotated[int, Field(ge=0, le=64)] = 1
    # CPU load (0-1, averaged) above which the worker declines new calls.
    agent_load_threshold: Annotated[float, Field(gt=0, le=1)] = 0.7
    # When set, the worker is full at this many simultaneous calls instead of by CPU load
    # (a host shared with other work, or capacity planned from measured calls per core).
    agent_max_calls: Annotated[int, Field(ge=0, le=1000)] = 0

    @field_validator("livekit_api_key", "livekit_api_secret")
    @classmethod
    def _livekit_credential(cls, value: str) -> str:
        # Empty in .env means "make run generates them" (.run/livekit-keys); a process
        # started by hand with them empty would mint tokens no LiveKit server accepts.
        if not value.strip():
            raise ValueError(
                "is empty: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET (make run generates "
                "development keys into .run/livekit-keys: `set -a; . .run/livekit-keys`)"
            )
        return value

    @field_validator("trusted_proxies", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {cidr!r} is not an address or CIDR") from exc
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # Browsers send the Origin without a trailing slash; accept one in the setting.
        value = [o.rstrip("/") for o in value]
        for origin in value:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(f"ALLOWED_ORIGINS: {origin!r} must look like https://host[:port]")
        return value

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def check_server_secrets(self) -> None:
        """In production, refuse to start on a missing or weak secret (named in the error);
        in any mode, on one credential doing for both ops and metrics scraping."""
        if self.metrics_token and self.metrics_token == self.ops_token:
            raise ConfigError(
                "METRICS_TOKEN must differ from OPS_TOKEN (scrapers get no ops rights)"
            )
        if not self.production:
            return
        problems = [
            _weak("LIVEKIT_API_SECRET", self.livekit_api_secret),
            _weak("VISITOR_HASH_SECRET", self.visitor_hash_secret),
        ]
        if self.livekit_api_key in ("", DEV_LIVEKIT_KEY):
            problems.append("LIVEKIT_API_KEY is missing or the public dev key")
        if self.ops_token:
            problems.append(_weak("OPS_TOKEN", self.ops_token))
        if self.metrics_token:
            problems.append(_weak("METRICS_TOKEN", self.metrics_token))
        if not self.livekit_url.startswith("wss://"):
            problems.append("LIVEKIT_URL must be a wss:// URL in production")
        found = [p for p in problems if p]
        if found:
            raise ConfigError("refusing to start in production: " + "; ".join(found))


def _weak(name: str, value: str) -> str | None:
    if not value:
        return f"{name} is missing"
    if value in KNOWN_WEAK or len(value) < MIN_SECRET_LEN or len(set(value)) < 10:
        return f"{name} is weak (use at least {MIN_SECRET_LEN} random characters)"
    return None


def get_settings() -> Settings:
    return Settings()
