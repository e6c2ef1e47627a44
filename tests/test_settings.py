"""Settings: production refuses missing or weak secrets, naming the variable."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import httpx
import pytest

from settings import ConfigError, Settings
from tests.support import ROOT, ServerProcess, free_port

STRONG_LIVEKIT = secrets.token_urlsafe(36)
STRONG_PEPPER = secrets.token_urlsafe(36)


def production(**overrides: str) -> dict[str, str]:
    env = {
        "ENVIRONMENT": "production",
        "LIVEKIT_URL": "wss://livekit.example.test",
        "LIVEKIT_API_KEY": "APIprodkey123",
        "LIVEKIT_API_SECRET": STRONG_LIVEKIT,
        "VISITOR_HASH_SECRET": STRONG_PEPPER,
        "OPS_TOKEN": "",
    }
    env.update(overrides)
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_development_defaults_start_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENVIRONMENT", "LIVEKIT_API_SECRET", "VISITOR_HASH_SECRET", "AGENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    settings.check_server_secrets()
    assert settings.agent_name == "onecallflow-demo"
    assert settings.trusted_proxies == []


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"LIVEKIT_API_SECRET": "secret"}, "LIVEKIT_API_SECRET is weak"),
        ({"LIVEKIT_API_SECRET": "short-but-random-9f3k"}, "LIVEKIT_API_SECRET is weak"),
        ({"LIVEKIT_API_SECRET": "a" * 40}, "LIVEKIT_API_SECRET is weak"),
        ({"VISITOR_HASH_SECRET": ""}, "VISITOR_HASH_SECRET is missing"),
        (
            {"VISITOR_HASH_SECRET": "dev-only-visitor-hash-secret-change-me"},
            "VISITOR_HASH_SECRET is weak",
        ),
        ({"LIVEKIT_API_KEY": "devkey"}, "LIVEKIT_API_KEY"),
        ({"LIVEKIT_URL": "ws://livekit.example.test"}, "LIVEKIT_URL"),
        ({"OPS_TOKEN": "letmein"}, "OPS_TOKEN is weak"),
    ],
)
def test_production_refuses_weak_or_missing_secrets(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], variable: str
) -> None:
    settings = settings_from(production(**overrides), monkeypatch)
    with pytest.raises(ConfigError, match=variable):
        settings.check_server_secrets()


@pytest.mark.parametrize("variable", ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
@pytest.mark.parametrize("environment", ["development", "production"])
def test_an_empty_livekit_credential_is_refused_in_any_mode(
    monkeypatch: pytest.MonkeyPatch, variable: str, environment: str
) -> None:
    # .env.example leaves them empty for make run to generate; a process started by hand
    # must not mint tokens no LiveKit server accepts.
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv(variable, " ")
    with pytest.raises(ValueError, match=r"is empty: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_production_accepts_strong_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(production(OPS_TOKEN=secrets.token_urlsafe(40)), monkeypatch)
    settings.check_server_secrets()


def test_list_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://www.onecallflow.com/")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.trusted_proxies == ["10.0.0.0/8", "2001:db8::/32"]
    assert settings.allowed_origins == ["https://www.onecallflow.com"]
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, not-a-network")
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("TRUSTED_PROXIES", "")
    monkeypatch.setenv("ALLOWED_ORIGINS", "onecallflow.com")
    with pytest.raises(ValueError, match="ALLOWED_ORIGINS"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def _run_server(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(free_port())}
    return subprocess.run(
        [sys.executable, str(ROOT / "token_server.py")],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"LIVEKIT_API_SECRET": "secret"}, "LIVEKIT_API_SECRET"),
        ({"VISITOR_HASH_SECRET": ""}, "VISITOR_HASH_SECRET"),
    ],
)
def test_production_server_exits_naming_the_variable(
    overrides: dict[str, str], variable: str
) -> None:
    result = _run_server(production(**overrides))
    assert result.returncode != 0
    assert variable in result.stderr
    assert "refusing to start in production" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_server_starts_with_strong_secrets(redis_url: str) -> None:
    server = ServerProcess(env={**production(), "REDIS_URL": redis_url}).start()
    try:
        assert httpx.get(server.base_url + "/healthz").status_code == 200
        assert httpx.get(server.base_url + "/readyz").status_code == 200
    finally:
        server.stop()
    # The secrets themselves never reach the log.
    assert STRONG_LIVEKIT not in server.logs()
    assert STRONG_PEPPER not in server.logs()
