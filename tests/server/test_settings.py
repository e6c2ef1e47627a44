"""Settings: production refuses missing or weak secrets, naming the variable."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import httpx
import pytest

from server.settings import ConfigError, Settings
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
        "PUBLIC_ORIGIN": "https://demo.onecallflow.test",
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
        # Long enough and varied enough for a length rule, but little entropy in them.
        ({"LIVEKIT_API_SECRET": "Password123!Password123!Password"}, "LIVEKIT_API_SECRET is weak"),
        (
            {"VISITOR_HASH_SECRET": "abcdefghijklmnopqrstuvwxyz012345"},
            "VISITOR_HASH_SECRET is weak",
        ),
        ({"VISITOR_HASH_SECRET": "0123456789" * 4}, "VISITOR_HASH_SECRET is weak"),
        ({"OPS_TOKEN": "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"}, "OPS_TOKEN is weak"),
        ({"PUBLIC_ORIGIN": ""}, "PUBLIC_ORIGIN"),
        ({"PUBLIC_ORIGIN": "http://demo.onecallflow.test"}, "PUBLIC_ORIGIN"),
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
    # 32 random hex digits (128 bits) are strong: the entropy estimate does not refuse them.
    for _ in range(200):
        hexed = settings_from(production(LIVEKIT_API_SECRET=secrets.token_hex(16)), monkeypatch)
        hexed.check_server_secrets()


@pytest.mark.parametrize(
    "cidr",
    [
        "0.0.0.0/0", "::/0", "0.0.0.0/1", "10.0.0.0/7", "2000::/3", "2001:db8::/31",
        # IPv6 ranges that hold IPv4 addresses, as wide as the IPv4 internet or near it
        "::ffff:0:0/96", "::/64", "64:ff9b::/96", "64:ff9b::/100", "2002::/16", "2002::/20",
    ],
)  # fmt: skip
def test_trusted_proxies_refuse_ranges_wider_than_a_proxy_network(
    monkeypatch: pytest.MonkeyPatch, cidr: str
) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", f"10.0.0.0/8, {cidr}")
    with pytest.raises(ValueError, match=rf"TRUSTED_PROXIES: '{re.escape(cidr)}' is far wider"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_trusted_proxies_accept_proxy_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    networks = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "fd00:1::/48",
                "64:ff9b::a00:0/104", "::ffff:10.0.0.0/104", "2002:a00::/24"]  # fmt: skip
    monkeypatch.setenv("TRUSTED_PROXIES", ",".join(networks))
    assert Settings(_env_file=None).trusted_proxies == networks  # type: ignore[call-arg]


def test_public_origin_is_an_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_ORIGIN", "https://Demo.OneCallFlow.test/")
    assert Settings(_env_file=None).public_origin == "https://demo.onecallflow.test"  # type: ignore[call-arg]
    for wrong in ("demo.onecallflow.test", "https://demo.onecallflow.test/page"):
        monkeypatch.setenv("PUBLIC_ORIGIN", wrong)
        with pytest.raises(ValueError, match="PUBLIC_ORIGIN"):
            Settings(_env_file=None)  # type: ignore[call-arg]


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


def test_env_example_documents_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} <= documented
