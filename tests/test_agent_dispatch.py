"""Job acceptance: the dispatch metadata check, and the real worker (`python -m agent start`)
registering with a local fake of LiveKit's `/agent` websocket, accepting a job for a valid
persona and declining jobs with bad metadata or an unknown or disabled persona."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from agent.dispatch import JobRejected, parse_job_metadata
from agents_catalog import Catalog
from tests.agent_support import CATALOG, POLICIES
from tests.fakes.livekit_agent_ws import running_livekit_agent_fake
from tests.support import ROOT, free_port

API_KEY = "test-worker-key"
API_SECRET = "test-worker-secret-of-32-characters-at-least"
AGENT_NAME = "onecallflow-test"


def meta(**override: object) -> str:
    base: dict[str, object] = {
        "persona": "agence-immo-fr",
        "session_id": "AbCdEfGh12345678",
        "language": "fr",
        "max_duration_s": 300,
        "issued_at": 1.8e9,
    }
    base.update(override)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def test_valid_metadata_gives_the_persona_and_its_limits():
    spec = parse_job_metadata(meta(), CATALOG, POLICIES)
    assert spec.persona.id == "agence-immo-fr" and spec.session_id == "AbCdEfGh12345678"
    assert spec.max_duration_s == 300 and spec.issued_at == 1.8e9
    # A persona's own shorter maximum, and the policy's cap, always win over the metadata.
    capped = parse_job_metadata(
        meta(persona="after-hours-en", language="en", max_duration_s=3000), CATALOG, POLICIES
    )
    assert capped.max_duration_s == 240


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ("x" * 5000, "too large"),
        (meta(persona=None), "persona is missing"),
        (meta(persona="nobody-here"), "unknown persona"),
        (meta(session_id="../../x"), "session_id"),
        (meta(session_id=None), "session_id"),
        (meta(language="en"), "language"),
        (meta(max_duration_s=0), "max_duration_s"),
        (meta(max_duration_s=True), "max_duration_s"),
        (meta(max_duration_s="300"), "max_duration_s"),
        (meta(issued_at="yesterday"), "issued_at"),
    ],
)
def test_bad_metadata_is_rejected_with_the_reason(raw, reason):
    with pytest.raises(JobRejected, match=reason):
        parse_job_metadata(raw, CATALOG, POLICIES)


def test_disabled_persona_is_rejected_also_by_a_run_time_override():
    disabled = {
        pid: (p.model_copy(update={"enabled": False}) if pid == "agence-immo-fr" else p)
        for pid, p in CATALOG.personas.items()
    }
    with pytest.raises(JobRejected, match="disabled"):
        parse_job_metadata(meta(), Catalog(disabled), POLICIES)
    # Ops' showcase override (issue 6) plugs in here: enabled in the file, off at run time.
    with pytest.raises(JobRejected, match="disabled"):
        parse_job_metadata(meta(), CATALOG, POLICIES, enabled=lambda p: p.id != "agence-immo-fr")


def catalog_with_disabled(tmp: Path, persona_id: str) -> Path:
    directory = tmp / "personas"
    shutil.copytree(ROOT / "agents_catalog" / "personas", directory)
    path = directory / f"{persona_id}.yaml"
    data = yaml.safe_load(path.read_text())
    data["enabled"] = False
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return directory


async def test_worker_registers_accepts_valid_jobs_and_declines_the_rest(tmp_path):
    async with running_livekit_agent_fake(API_KEY, API_SECRET) as livekit:
        health_port = free_port()
        env = {
            **os.environ,
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "AGENT_NAME": AGENT_NAME,
            "OPENAI_API_KEY": "sk-test-not-used",
            "DEEPGRAM_API_KEY": "dg-test-not-used",
            "AGENT_HEALTH_PORT": str(health_port),
            "AGENT_NUM_IDLE_PROCESSES": "0",
            # The shared test machine may be busy; acceptance must not depend on its load.
            "AGENT_LOAD_THRESHOLD": "1",
            "CATALOG_DIR": str(catalog_with_disabled(tmp_path, "gestion-incidents-fr")),
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
        log = (tmp_path / "worker.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "start", cwd=ROOT, env=env, stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            registration = await livekit.registered(timeout=60)
            assert registration.request.agent_name == AGENT_NAME
            assert registration.request.type == 0  # JT_ROOM: one agent per room
            assert registration.request.allowed_permissions.agent
            assert livekit.refused_tokens == 0

            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{health_port}/")
                info = await client.get(f"http://127.0.0.1:{health_port}/worker")
            assert health.status_code == 200
            assert info.json()["agent_name"] == AGENT_NAME

            for job_id, metadata in [
                ("J2", meta(persona="nobody-here")),
                ("J3", "{not json"),
                ("J4", ""),
                ("J5", meta(persona="gestion-incidents-fr")),  # disabled in its file
                ("J6", meta(language="en")),
            ]:
                declined = await livekit.offer(job_id, metadata, AGENT_NAME)
                # Declined by our check (terminate: no other worker should try it), not
                # merely unavailable for load.
                assert not declined.available and declined.terminate, job_id

            # Last: an accepted job holds its slot until LiveKit assigns it (7.5 s at most).
            for attempt in range(5):
                job_id = f"J1-{attempt}"
                accepted = await livekit.offer(job_id, meta(), AGENT_NAME)
                if accepted.available:
                    break
                # Only a momentary full CPU on this shared machine may decline it, and that
                # answer says "not now" (no terminate), unlike a refused job.
                assert not accepted.terminate
                await asyncio.sleep(1)
            assert accepted.available
            assert accepted.participant_identity == f"agent-{job_id}"
            assert accepted.participant_attributes["persona"] == "agence-immo-fr"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
        logs = (tmp_path / "worker.log").read_text(errors="replace")
        assert "job declined" in logs and "unknown persona 'nobody-here'" in logs


async def test_worker_refuses_to_start_without_provider_keys(tmp_path):
    env = {
        **os.environ,
        "OPENAI_API_KEY": "",
        "DEEPGRAM_API_KEY": "",
        "LIVEKIT_URL": "ws://127.0.0.1:1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "start", cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    message = err.decode()
    assert "OPENAI_API_KEY" in message and "DEEPGRAM_API_KEY" in message
    assert out == b""
