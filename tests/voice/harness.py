"""A spoken call to a persona, through the worker's own assembly and the real plugins.

The call is put together exactly as the worker's entrypoint does (agent.assembly with the
providers from agent.providers, built from Settings), except that the LiveKit room is
replaced by the caller's microphone and loudspeaker (tests.fakes.audio_io) and the
vendors by the local fakes. Used by the voice tests and the latency benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from livekit.agents import utils, vad
from redis.asyncio import Redis

from agent.assembly import CallParts, agency_today, assemble_call
from agent.conversation import Conversation, GuardTimings, TurnSettings, default_conversation
from agent.dispatch import JobSpec
from agent.providers import build_llm, build_stt, build_tts
from agent.recording import RecordOutbox, SessionRecorder
from agent.vad_blocks import BlockedSileroVAD
from agents_catalog import load_catalog
from policies import load_policies
from policies.admission import Admission, Admitted
from policies.claim import Claims
from redisdb.connection import connect
from server.settings import Settings
from sessions.store import SessionStore
from tests.fakes.audio_io import CallerMicrophone, CallerSpeaker, Spoken
from tests.fakes.server import RemoteFakes, VendorFakes

Fakes = VendorFakes | RemoteFakes

CATALOG = load_catalog()
POLICIES = load_policies()
# Guards that stay out of the way of a scripted conversation.
CALM = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=60, hangup_grace_s=5)

_vads: dict[int, BlockedSileroVAD] = {}


def shared_vad(block_ms: int | None = None) -> vad.VAD:
    """Silero loaded once per process, as the worker's prewarm does (one per block size:
    benchmarks compare them; None: the default conversation's)."""
    if block_ms is None:
        block_ms = default_conversation().turns.vad_block_ms
    if block_ms not in _vads:
        _vads[block_ms] = BlockedSileroVAD.load_in_blocks(block_ms)
    return _vads[block_ms]


def tomorrow() -> str:
    return (agency_today() + timedelta(days=1)).isoformat()


def provider_settings(fakes: Fakes, redis_url: str | None = None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key="sk-local-fake-key",
        openai_base_url=fakes.openai_base_url,
        deepgram_api_key="local-fake-deepgram-key",
        deepgram_base_url=fakes.deepgram_url,
        redis_url=redis_url or "redis://127.0.0.1:1/0",
    )


def conversation_with(turns: TurnSettings | None = None, **changes: Any) -> Conversation:
    base = default_conversation()
    if turns is None and not changes:
        return base
    new_turns = (turns or base.turns).model_copy(update=changes)
    return base.model_copy(update={"turns": new_turns})


@dataclass
class VoiceCall:
    parts: CallParts
    mic: CallerMicrophone
    speaker: CallerSpeaker
    spec: JobSpec
    conversation: Conversation
    redis: Redis | None = None
    outbox: RecordOutbox | None = None
    # the job process's shared HTTP session (the worker opens it for every job)
    exits: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    started_wall: float = field(default_factory=time.monotonic)

    @property
    def language(self) -> str:
        return self.spec.persona.language

    def say(self, text: str) -> Spoken:
        return self.mic.say(text, self.language)

    async def ended(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.parts.call.finished.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the call did not end: {self.describe()}") from None

    def describe(self) -> str:
        """What each side said and heard, for a failing test's message."""
        said = "; ".join(
            f"said {s.text!r} {(s.started_wall or 0) - self.started_wall:.2f}"
            f"-{(s.speech_end_wall or 0) - self.started_wall:.2f}s"
            for s in self.mic.spoken
        )
        return f"{said} | heard {self.speaker.describe(self.started_wall)}"

    async def __aenter__(self) -> VoiceCall:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.mic.close()
        if not self.parts.call.finished.is_set():
            self.parts.session.shutdown(drain=False)
            try:
                await asyncio.wait_for(self.parts.call.finished.wait(), 10)
            except TimeoutError:
                pass
        await self.parts.session.aclose()
        if self.outbox is not None:
            await self.outbox.flush(5)
            await self.outbox.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.exits.aclose()


async def admit_session(redis: Redis, persona_id: str, session_id: str, max_s: int) -> None:
    """The session record as the token server creates it at mint time."""
    persona = CATALOG.get(persona_id)
    assert persona is not None
    visitor = "v-" + secrets.token_hex(8)  # a pseudonym's shape; no address behind it
    decision = await Admission(redis, POLICIES).admit(
        visitor=visitor,
        session_id=session_id,
        persona=persona_id,
        duration_s=max_s,
        record={
            "session_id": session_id,
            "room": f"demo-{session_id}",
            "persona": persona_id,
            "language": persona.language,
            "visitor": visitor,
            "status": "issued",
            "max_duration_s": str(max_s),
        },
    )
    assert isinstance(decision, Admitted), decision


async def start_voice_call(
    fakes: Fakes,
    persona_id: str,
    *,
    redis_url: str | None = None,
    turns: TurnSettings | None = None,
    timings: GuardTimings = CALM,
    max_duration_s: int = 300,
    frame_ms: int | None = None,
    input_sample_rate: int | None = None,
) -> VoiceCall:
    persona = CATALOG.get(persona_id)
    assert persona is not None, persona_id
    session_id = "voice-" + secrets.token_hex(8)
    spec = JobSpec(persona=persona, session_id=session_id, max_duration_s=max_duration_s,
                   issued_at=time.time())  # fmt: skip
    conversation = conversation_with(turns)
    settings = provider_settings(fakes, redis_url)
    if isinstance(fakes, VendorFakes):  # a spawned fake server is configured up front
        fakes.speech.settings.language = persona.language

    redis = recorder = outbox = None
    if redis_url is not None:
        redis = connect(redis_url, 2.0)
        await admit_session(redis, persona_id, session_id, max_duration_s)
        # As the worker does before it runs a call (agent.claiming).
        assert (await Claims(redis, POLICIES).claim(session_id, "AJ_" + session_id)).ours
        outbox = RecordOutbox()
        recorder = SessionRecorder(
            session_id, SessionStore(redis), Admission(redis, POLICIES), outbox
        )

    parts = assemble_call(
        spec,
        conversation,
        stt=build_stt(persona, settings),
        llm=build_llm(persona, settings),
        tts=build_tts(persona, settings, conversation.turns),
        vad_model=shared_vad(conversation.turns.vad_block_ms),
        timings=timings,
        recorder=recorder,
    )
    # the caller's frames as the worker's RoomIO hands them over (turns.input_frame_ms,
    # turns.input_sample_rate)
    mic = CallerMicrophone(
        frame_ms=frame_ms or conversation.turns.input_frame_ms,
        sample_rate=input_sample_rate or conversation.turns.input_sample_rate,
    )
    speaker = CallerSpeaker()
    parts.session.input.audio = mic
    parts.session.output.audio = speaker
    call = VoiceCall(parts, mic, speaker, spec, conversation, redis, outbox)
    await call.exits.enter_async_context(utils.http_context.open())
    parts.call.begin()
    await parts.session.start(parts.agent, record=False)
    return call
