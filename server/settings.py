"""Typed settings from the environment / `.env` (every variable is in `.env.example`)."""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections import Counter
from collections.abc import Sequence
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
# Estimated entropy (secret_entropy_bits) a production secret needs. The estimate of a
# random secret is below its true entropy, so the bar sits under what 32 random hex
# digits (128 bits) score and far above patterned passwords (their scores:
# docs/benchmarks.md).
MIN_SECRET_BITS = 88
# Our proxies live in one network of ours; no wider range is ever theirs. Trusting a wider
# one lets anyone inside it write X-Forwarded-For, so choose their own address (pseudonym,
# limits). The widest prefix allowed, per IP version.
WIDEST_PROXY_PREFIX = {4: 8, 6: 32}
# IPv6 ranges that carry IPv4 addresses (mapped, NAT64, 6to4), with the prefix length at
# which their IPv4 part starts: a range in them is judged by the IPv4 addresses it covers.
IPV4_CARRIERS = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), 96),
    (ipaddress.IPv6Network("64:ff9b::/96"), 96),
    (ipaddress.IPv6Network("2002::/16"), 16),
)


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
    # Where the demo page is served (https://host[:port]): the origin token requests must
    # come from besides ALLOWED_ORIGINS. Required in production; in development the page's
    # own host (the Host header) stands in for it when unset.
    public_origin: str = ""
    ops_token: str = ""
    # Read-only: /metrics only (Prometheus' scrape config holds it, not the ops token).
    metrics_token: str = ""
    # Sales: the requests of the demo page's form (/ops/requests, the page's requests
    # section), nothing else of ops.
    sales_token: str = ""

    # Mail to sales for each request (sales/mail.py): all three, or none for no mail.
    smtp_url: str = ""
    sales_email: Annotated[list[str], NoDecode] = Field(default_factory=list)
    smtp_from: str = ""

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
    # The worker's health server (GET / for liveness probes): loopback unless set, e.g.
    # 0.0.0.0 in a container whose probes come from outside it.
    agent_health_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
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

    @field_validator("trusted_proxies", "allowed_origins", "sales_email", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {cidr!r} is not an address or CIDR") from exc
            if too_wide_for_proxies(network):
                raise ValueError(
                    f"TRUSTED_PROXIES: {cidr!r} is far wider than a proxy network (at most "
                    f"/{WIDEST_PROXY_PREFIX[4]} for IPv4, /{WIDEST_PROXY_PREFIX[6]} for IPv6): "
                    "anyone in it could choose the client address we see"
                )
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [_origin("ALLOWED_ORIGINS", origin) for origin in value]

    @field_validator("public_origin")
    @classmethod
    def _public_origin(cls, value: str) -> str:
        return _origin("PUBLIC_ORIGIN", value) if value else value

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
        if self.sales_token and self.sales_token in (self.ops_token, self.metrics_token):
            raise ConfigError(
                "SALES_TOKEN must differ from OPS_TOKEN and METRICS_TOKEN (sales get requests only)"
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
        if self.sales_token:
            problems.append(_weak("SALES_TOKEN", self.sales_token))
        if not self.livekit_url.startswith("wss://"):
            problems.append("LIVEKIT_URL must be a wss:// URL in production")
        if not self.public_origin.startswith("https://"):
            # Without it the Origin check could only trust the Host header, which the
            # client writes.
            problems.append("PUBLIC_ORIGIN (the page's https:// origin) is required in production")
        found = [p for p in problems if p]
        if found:
            raise ConfigError("refusing to start in production: " + "; ".join(found))


def _origin(name: str, value: str) -> str:
    # Browsers send the Origin lower-case and without a trailing slash; accept either here.
    origin = value.rstrip("/").lower()
    if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
        raise ValueError(f"{name}: {value!r} must look like https://host[:port]")
    return origin


def too_wide_for_proxies(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if isinstance(network, ipaddress.IPv6Network):
        for carrier, ipv4_starts in IPV4_CARRIERS:
            if network.overlaps(carrier):
                # The IPv4 prefix it amounts to (negative: it holds the whole carrier).
                return network.prefixlen - ipv4_starts < WIDEST_PROXY_PREFIX[4]
    return network.prefixlen < WIDEST_PROXY_PREFIX[network.version]


def _shannon_bits(symbols: Sequence[object]) -> float:
    """Shannon entropy of the symbols' distribution, times their number."""
    total = len(symbols)
    counts = Counter(symbols).values()
    return -sum(n * math.log2(n / total) for n in counts)


def secret_entropy_bits(secret: str) -> float:
    """A conservative estimate of a secret's entropy: its characters' Shannon entropy
    times its length, lowered when they follow a pattern: steps between neighbours that
    repeat ("abcdef...", "123123..."), or blocks that recur ("Password1Password1")."""
    if len(secret) < 4:
        return 0.0
    by_chars = _shannon_bits(secret)
    by_steps = _shannon_bits([ord(b) - ord(a) for a, b in itertools.pairwise(secret)])
    grams = [secret[i : i + 4] for i in range(len(secret) - 3)]
    distinct = len(set(grams)) / len(grams)
    return min(by_chars, by_steps) * distinct


def _weak(name: str, value: str) -> str | None:
    if not value:
        return f"{name} is missing"
    if (
        value in KNOWN_WEAK
        or len(value) < MIN_SECRET_LEN
        or secret_entropy_bits(value) < MIN_SECRET_BITS
    ):
        return (
            f"{name} is weak (use at least {MIN_SECRET_LEN} random characters, e.g. "
            '`python -c "import secrets; print(secrets.token_urlsafe(48))"`)'
        )
    return None


def get_settings() -> Settings:
    return Settings()
