"""The policies: shipped ones load and respect the privacy policy; bad ones stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from policies import PolicyError, load_policies
from policies.model import DAY_S, PRIVACY_MAX_DAYS, PRIVACY_MIN_DAYS
from tests.support import ROOT, free_port, write_policies


def test_shipped_policies_load_within_the_privacy_policy() -> None:
    policies = load_policies()
    retention = policies.retention
    for days in (retention.demo_sessions_days, retention.ip_ua_hashes_days):
        assert PRIVACY_MIN_DAYS <= days <= PRIVACY_MAX_DAYS
    assert retention.salt_ttl_s <= PRIVACY_MAX_DAYS * DAY_S
    assert retention.max_ttl_s == PRIVACY_MAX_DAYS * DAY_S
    limits = policies.limits
    assert limits.visitor.sessions_per_hour <= limits.visitor.sessions_per_day
    assert limits.session.max_duration_s <= limits.visitor.minutes_per_day * 60


def test_a_persona_may_shorten_a_call_never_lengthen_it() -> None:
    policies = load_policies()
    cap = policies.limits.session.max_duration_s
    assert policies.session_duration_s(None) == cap
    assert policies.session_duration_s(cap - 60) == cap - 60
    assert policies.session_duration_s(cap + 600) == cap
    s = policies.limits.session
    # A slot is held for the join window until the worker claims the session, then for
    # the call; no lease key is ever set beyond the longest of both.
    assert policies.admission_lease_s() == s.join_window_s + s.lease_margin_s
    assert policies.call_lease_s(100) == 100 + s.lease_margin_s
    assert policies.lease_ceiling_s == s.join_window_s + s.max_duration_s + s.lease_margin_s


ONE_EACH = {"concurrent_sessions": 1, "sessions_per_hour": 1, "sessions_per_day": 1,
            "unjoined_tokens": 1}  # fmt: skip


@pytest.mark.parametrize(
    ("retention", "limits", "field"),
    [
        ({"demo_sessions_days": 29}, None, "demo_sessions_days"),
        ({"demo_sessions_days": 91}, None, "demo_sessions_days"),
        ({"ip_ua_hashes_days": 365}, None, "ip_ua_hashes_days"),
        ({"ip_ua_hashes_days": 10}, None, "ip_ua_hashes_days"),
        ({"salt_period_days": 50, "ip_ua_hashes_days": 45}, None, "salt_period_days"),
        ({"keep_forever": True}, None, "keep_forever"),
        (None, {"visitor": {"sessions_per_hour": 0}}, "visitor.sessions_per_hour"),
        (None, {"visitor": {"sessions_per_hour": 20, "sessions_per_day": 5}}, "sessions_per_hour"),
        (None, {"session": {"max_duration_s": 10}}, "session.max_duration_s"),
        (None, {"global": {"concurrent": 5}}, "global.concurrent"),
        (None, {"global": {"unjoined_tokens": 0}}, "global.unjoined_tokens"),
        # An aggregate must be wider than one visitor (an IPv6 /64, an IPv4 address).
        (None, {"networks": {"ipv6": {64: ONE_EACH}}}, "ipv6 prefix /64"),
        (
            None,
            {"networks": {"ipv4": {24: {"concurrent_sessions": 0}}}},
            "networks.ipv4.24.concurrent_sessions",
        ),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(
    tmp_path: Path,
    retention: dict[str, object] | None,
    limits: dict[str, object] | None,
    field: str,
) -> None:
    directory = write_policies(tmp_path, limits=limits, retention=retention)
    with pytest.raises(PolicyError) as caught:
        load_policies(directory)
    message = str(caught.value)
    assert field in message
    bad_file = "retention.yaml" if retention else "limits.yaml"
    assert str(directory / bad_file) in message


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    write_policies(tmp_path)
    (tmp_path / "limits.yaml").unlink()
    with pytest.raises(PolicyError, match=r"limits\.yaml: policy file missing"):
        load_policies(tmp_path)


def _start(policies_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "POLICIES_DIR": str(policies_dir),
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        # Never reached: start-up must stop before touching Redis.
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "token_server.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        ({"demo_sessions_days": 120}, "demo_sessions_days"),
        ({"salt_period_days": 60, "demo_sessions_days": 45}, "salt_period_days"),
    ],
)
def test_token_server_refuses_to_start_on_a_bad_policy(
    tmp_path: Path, retention: dict[str, object], field: str
) -> None:
    result = _start(write_policies(tmp_path, retention=retention))
    assert result.returncode != 0
    assert "Uvicorn running" not in result.stderr
    assert "retention.yaml" in result.stderr
    assert field in result.stderr
    # A clear message, not a traceback.
    assert "Traceback" not in result.stderr
