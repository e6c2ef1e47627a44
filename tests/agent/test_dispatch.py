"""Job acceptance: the dispatch metadata check, and the real worker (`python -m agent start`)
registering with a local fake of LiveKit's `/agent` websocket, accepting a job for a valid
persona and declining jobs with bad metadata or an unknown or disabled persona."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from livekit.protocol import agent as agent_proto

from agent.dispatch import JobRejected, parse_job_metadata
from agents_catalog import Catalog
from policies.admission import Admission
from policies.claim import Claims
from redisdb import keys
from redisdb.connection import connect
from tests.agent.support import CATALOG, POLICIES
from tests.fakes.livekit_agent_ws import LiveKitAgentFake, running_livekit_agent_fake
from tests.server.support import session_record
from tests.support import ROOT, free_port
from tests.voice.harness import admit_session

API_KEY = "test-worker-key"
API_SECRET = "test-worker-secret-of-32-characters-at-least"
AGENT_NAME = "onecallflow-test"
SESSION_ID = "AbCdEfGh12345678"


def meta(**override: object) -> str:
    base: dict[str, object] = {
        "persona": "agence-immo-fr",
        "session_id": SESSION_ID,
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


@contextlib.asynccontextmanager
async def running_worker(
    tmp_path: Path, livekit: LiveKitAgentFake, redis_url: str
) -> AsyncIterator[tuple[int, Path]]:
    """`python -m agent start` against the fake; yields its health port and its log."""
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
        "REDIS_URL": redis_url,
    }
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "start", cwd=ROOT, env=env, stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield health_port, log_path
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def decided(
    livekit: LiveKitAgentFake, job_id: str, metadata: str, room_name: str | None = None
) -> agent_proto.AvailabilityResponse:
    """The worker's answer to a job, offered again while the worker only said "not now"
    for its load: such an answer comes before the job request is even looked at. Its load
    is a momentary full CPU on this shared machine, or a job it accepted and LiveKit (this
    fake) never assigns, which holds a slot for livekit-agents' 7.5 s assignment timeout."""
    for _ in range(20):
        answer = await livekit.offer(job_id, metadata, AGENT_NAME, room_name=room_name)
        if answer.available or answer.terminate:
            return answer
        await asyncio.sleep(1)
    raise AssertionError(f"{job_id}: the worker never decided")


async def test_worker_registers_accepts_valid_jobs_and_declines_the_rest(
    tmp_path, redis_url, redis_client
):
    redis = connect(redis_url)
    # The token server issued this session (the worker claims only what was issued).
    await admit_session(redis, "agence-immo-fr", SESSION_ID, 300)
    await redis.aclose()
    async with (
        running_livekit_agent_fake(API_KEY, API_SECRET) as livekit,
        running_worker(tmp_path, livekit, redis_url) as (health_port, log_path),
    ):
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
        # Bad metadata is declined before any claim: the session is still unclaimed.
        assert session_record(redis_client, SESSION_ID)["status"] == "issued"

        # Last: an accepted job holds its slot until LiveKit assigns it (7.5 s at most).
        accepted = await decided(livekit, "J1", meta())
        assert accepted.available
        assert accepted.participant_identity == "agent-J1"
        assert accepted.participant_attributes["persona"] == "agence-immo-fr"
    logs = log_path.read_text(errors="replace")
    assert "job declined" in logs and "unknown persona 'nobody-here'" in logs


async def test_worker_takes_each_session_once(tmp_path, own_redis):
    """Two dispatches of one session (a visitor rejoining with the same token): the first
    is accepted, the second declined. A closed session is declined and its room deleted;
    an unknown one declined; with Redis down every job is declined for now."""
    client = own_redis.client()
    redis = connect(own_redis.url)
    live, ended, down = "LiveSession00001", "EndedSession0001", "DownSession00001"
    for session_id in (live, ended, down):
        await admit_session(redis, "agence-immo-fr", session_id, 300)
    # The ended session's call ran (claimed by its job) and is over.
    assert (await Claims(redis, POLICIES).claim(ended, "AJ_past_call")).ours
    assert (await Admission(redis, POLICIES).release(ended, 90, "user_hangup",
                                                     {"status": "ended"})).released  # fmt: skip
    ended_record = session_record(client, ended)
    await redis.aclose()

    async with (
        running_livekit_agent_fake(API_KEY, API_SECRET) as livekit,
        running_worker(tmp_path, livekit, own_redis.url) as (_, log_path),
    ):
        await livekit.registered(timeout=60)

        first = await decided(livekit, "AJ_first", meta(session_id=live), f"demo-{live}")
        assert first.available
        claimed = session_record(client, live)
        assert claimed["status"] == "started" and claimed["claimed_by"] == "AJ_first"
        # The same metadata again, in a new room of the same name: declined for good.
        second = await decided(livekit, "AJ_second", meta(session_id=live), f"demo-{live}")
        assert not second.available and second.terminate
        assert session_record(client, live) == claimed

        replay = await decided(livekit, "AJ_replay", meta(session_id=ended), f"demo-{ended}")
        assert not replay.available and replay.terminate
        assert session_record(client, ended) == ended_record  # still ended, one release
        # The replaying visitor is not left in an empty room (deleted after the answer).
        deadline = asyncio.get_running_loop().time() + 10
        while livekit.deleted_rooms != [f"demo-{ended}"]:
            assert asyncio.get_running_loop().time() < deadline, livekit.deleted_rooms
            await asyncio.sleep(0.1)

        unknown = await decided(livekit, "AJ_unknown", meta(session_id="NeverIssued00001"))
        assert not unknown.available and unknown.terminate
        assert client.exists(keys.session("NeverIssued00001")) == 0

        own_redis.stop()
        outage = await livekit.offer("AJ_outage", meta(session_id=down), AGENT_NAME)
        # Fail closed, but only for now: no terminate, so LiveKit may offer it again.
        assert not outage.available and not outage.terminate
        # Never a room of a session another job holds (the live call is in it).
        assert livekit.deleted_rooms == [f"demo-{ended}"]
    entries = [json.loads(line) for line in log_path.read_text().splitlines()
               if line.startswith("{")]  # fmt: skip
    declined = {e["job_id"]: e for e in entries if e.get("message", "").startswith("job declined")}
    assert "another job" in declined["AJ_second"]["reason"]
    assert "closed" in declined["AJ_replay"]["reason"]
    assert "unknown" in declined["AJ_unknown"]["reason"]
    assert "redis unavailable" in declined["AJ_outage"]["message"]  # not a load refusal
    assert "AJ_first" not in declined


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
