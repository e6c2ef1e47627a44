"""The worker's job-request check honours sales' showcase override (ops): a persona
disabled at run time is declined, re-enabled it is accepted, with no restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent import worker
from policies.admission import Admission
from redisdb.connection import connect
from tests.ops.support import ops_env, run_ops
from tests.voice.harness import POLICIES, admit_session


@dataclass
class _Job:
    metadata: str


@dataclass
class JobRequestStandIn:
    """The two calls on_request makes on LiveKit's JobRequest, recorded."""

    job: _Job
    id: str = "AJ_test"
    outcome: list[Any] = field(default_factory=list)

    async def reject(self, *, terminate: bool = False) -> None:
        self.outcome.append(("reject", terminate))

    async def accept(self, **kwargs: Any) -> None:
        self.outcome.append(("accept", kwargs["attributes"]["persona"]))


@pytest.fixture
def worker_data(redis_url: str, redis_client: Any) -> Iterator[worker.WorkerData]:
    from server.settings import Settings

    settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
    data = worker.load_worker_data(settings)
    worker._MAIN["data"] = data
    worker._SHOWCASE.clear()
    worker._CLAIMS.clear()
    yield data
    worker._MAIN.clear()
    worker._SHOWCASE.clear()
    worker._CLAIMS.clear()


def metadata(persona: str, language: str, session_id: str) -> str:
    return json.dumps(
        {"persona": persona, "session_id": session_id, "language": language,
         "max_duration_s": 120, "issued_at": 1.0}
    )  # fmt: skip


_jobs = itertools.count(1)


async def decide(persona: str, language: str) -> list[Any]:
    """One job request for a session the token server issued (the worker claims it)."""
    n = next(_jobs)
    session_id = f"sess-showcase-{n:04d}"
    redis = connect(worker._MAIN["data"].settings.redis_url, 2.0)
    try:
        await admit_session(redis, persona, session_id, 120)
        request = JobRequestStandIn(_Job(metadata(persona, language, session_id)), f"AJ_{n}")
        await worker.on_request(request)  # type: ignore[arg-type]
        # Many sessions are decided here: each gives its slot back, as a finished call does.
        await Admission(redis, POLICIES).release(session_id, 0, "test_done")
    finally:
        await redis.aclose()
    return request.outcome


async def test_job_request_follows_the_showcase(worker_data: Any, redis_url: str) -> None:
    env = ops_env(redis_url)
    assert await decide("realty-desk-en", "en") == [("accept", "realty-desk-en")]
    done = run_ops(env, "showcase", "set", "realty-desk-en", "--disable")
    assert done.returncode == 0, done.stderr
    outcomes: list[Any] = []

    async def declined() -> bool:
        outcomes[:] = await decide("realty-desk-en", "en")
        return outcomes == [("reject", True)]

    # The worker reads the override again within showcase.cache_s.
    deadline = time.monotonic() + 5
    while not await declined():
        assert time.monotonic() < deadline, outcomes
        await asyncio.sleep(0.2)
    assert await decide("agence-immo-fr", "fr") == [("accept", "agence-immo-fr")]

    assert run_ops(env, "showcase", "reset", "--all").returncode == 0
    deadline = time.monotonic() + 5
    while await decide("realty-desk-en", "en") != [("accept", "realty-desk-en")]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
