"""The LiveKit worker: registration, job acceptance, and the entrypoint of a call.

`build_server()` makes the AgentServer that `python -m agent dev|start` runs. It registers
under AGENT_NAME (explicit dispatch: only tokens naming it bring a job), loads the Silero
VAD once per job process (prewarm) and declines at request time every job whose dispatch
metadata does not name an enabled persona (agent.dispatch), or whose session it cannot
claim (agent.claiming: one agent per session, ever).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest
from livekit.agents.voice.room_io import AudioInputOptions, RoomOptions

from agent.assembly import assemble_call
from agent.call import Call
from agent.claiming import claim_at_request, claim_at_start
from agent.connection import ConnectionTracker
from agent.conversation import Conversation, default_conversation
from agent.dispatch import JobRejected, JobSpec, parse_job_metadata
from agent.early_audio import wait_for_early_audio
from agent.ending import END_REASON_ATTRIBUTE, EndReason
from agent.page_signals import PageSignals
from agent.providers import build_llm, build_stt, build_tts, require_provider_keys
from agent.recording import RecordOutbox, SessionRecorder
from agent.vad_blocks import BlockedSileroVAD
from agents_catalog import Catalog, load_catalog
from agents_catalog.showcase import Showcase
from policies.admission import Admission
from policies.claim import Claims
from policies.model import Policies, load_policies
from policies.ops_rules import load_ops_policy
from redisdb.connection import connect
from server.logs import guard_handlers
from server.settings import Settings, get_settings
from sessions.store import SessionStore

log = logging.getLogger("agent.worker")

# After a call ends, how long its job process may keep retrying the record while Redis is
# down before it must exit (the process is then reclaimed). Beyond this the lease frees
# the slot by itself and the LiveKit webhook reconciles the record.
RECORD_FLUSH_TIMEOUT_S = 100.0
# How long the job process is given to close the session and flush (must exceed the above).
SHUTDOWN_PROCESS_TIMEOUT_S = 120.0
# livekit-agents' switch for preloading its local inference models (see build_server).
PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
# How long the end of a call waits for its record to reach Redis before deleting the room.
END_RECORD_WAIT_S = 2.0
# How long a call may take to close after the job was told to shut down.
CALL_CLOSE_WAIT_S = 15.0


@dataclass(frozen=True)
class WorkerData:
    settings: Settings
    catalog: Catalog
    policies: Policies
    conversation: Conversation


def load_worker_data(settings: Settings | None = None) -> WorkerData:
    settings = settings or get_settings()
    return WorkerData(
        settings=settings,
        catalog=load_catalog(settings.catalog_dir),
        policies=load_policies(settings.policies_dir),
        conversation=default_conversation(),
    )


# The main process's data (catalogue, policies) used at job-request time.
_MAIN: dict[str, WorkerData] = {}


def load_vad(data: WorkerData) -> BlockedSileroVAD:
    return BlockedSileroVAD.load_in_blocks(data.conversation.turns.vad_block_ms)


def prewarm(proc: JobProcess) -> None:
    """Once per job process, before any call: the log filter, the VAD model, the data files."""
    # The job process's log handler forwards to the main process: filter before it does.
    guard_handlers()
    started = time.perf_counter()
    data = load_worker_data()
    proc.userdata["vad"] = load_vad(data)
    proc.userdata["data"] = data
    proc.userdata["prewarm_s"] = time.perf_counter() - started
    log.info("job process prewarmed", extra={"prewarm_s": round(proc.userdata["prewarm_s"], 3)})


# Sales' run-time showcase override (ops), read from Redis with a short cache.
_SHOWCASE: dict[str, Showcase] = {}


def showcase_of(data: WorkerData) -> Showcase:
    if "showcase" not in _SHOWCASE:
        rules = load_ops_policy(data.policies, data.settings.policies_dir)
        redis = connect(data.settings.redis_url, data.settings.redis_timeout_s)
        _SHOWCASE["showcase"] = Showcase(
            redis, data.catalog, ttl_s=rules.showcase_ttl_s, cache_s=rules.showcase.cache_s
        )
    return _SHOWCASE["showcase"]


# The main process's claims (job-request time), on a client made once.
_CLAIMS: dict[str, Claims] = {}


def claims_of(data: WorkerData) -> Claims:
    if "claims" not in _CLAIMS:
        redis = connect(data.settings.redis_url, data.settings.redis_timeout_s)
        _CLAIMS["claims"] = Claims(redis, data.policies)
    return _CLAIMS["claims"]


def check_job(metadata: str | None, data: WorkerData, shown: Catalog | None = None) -> JobSpec:
    """`shown`: the catalogue with the showcase override applied; a persona ops disabled
    at run time is declined like one disabled in its file."""
    if shown is None:
        return parse_job_metadata(metadata, data.catalog, data.policies)
    return parse_job_metadata(
        metadata, data.catalog, data.policies, lambda p: (shown.get(p.id) or p).enabled
    )


async def on_request(request: JobRequest) -> None:
    data = _MAIN.get("data") or _MAIN.setdefault("data", load_worker_data())
    # Never fails: on a Redis error it serves the last override read (or the files').
    shown = await showcase_of(data).catalog()
    try:
        spec = check_job(request.job.metadata, data, shown)
    except JobRejected as exc:
        log.warning("job declined", extra={"job_id": request.id, "reason": str(exc)})
        # terminate: no other worker should try a job that names no valid persona.
        await request.reject(terminate=True)
        return
    if not await claim_at_request(request, spec, claims_of(data), data.settings):
        return
    await request.accept(
        name=spec.persona.display_name.split(",")[0],
        identity=f"agent-{request.id}",
        attributes={"persona": spec.persona.id},
    )


async def entrypoint(ctx: JobContext) -> None:
    data: WorkerData = ctx.proc.userdata.get("data") or load_worker_data()
    vad_model = ctx.proc.userdata.get("vad") or load_vad(data)
    try:
        spec = check_job(ctx.job.metadata, data)
    except JobRejected as exc:
        # Accepted by an older worker or changed since: never run a default persona.
        log.error("job metadata refused in entrypoint", extra={"reason": str(exc)})
        ctx.shutdown(reason="bad_metadata")
        return

    settings = data.settings
    redis = connect(settings.redis_url, settings.redis_timeout_s)
    if not await claim_at_start(ctx, spec, Claims(redis, data.policies)):
        await redis.aclose()
        ctx.shutdown(reason="session_not_ours")
        return
    outbox = RecordOutbox()
    recorder = SessionRecorder(
        spec.session_id, SessionStore(redis), Admission(redis, data.policies), outbox
    )
    connection = ConnectionTracker()
    signals = PageSignals(ctx.room)

    async def finished(call: Call) -> None:
        # The visitor's recap first, while they are still in the room (not when they hung
        # up); then say why before leaving (the demo page reads this attribute to tell the
        # visitor: web/src/agent_signals.js), then delete the room: every end deletes it,
        # so the page sees the call is over and LiveKit stops billing an empty room.
        reason = (call.end_reason or EndReason.SHUTDOWN).value
        if call.end_reason is not EndReason.USER_HANGUP:
            await signals.send_recap(parts.recap(reason))
        # The end record first: deleting the room makes LiveKit send participant_left and
        # room_finished, and a webhook that beat the worker's own release would record a
        # healthy call as abandoned. With Redis down this waits briefly, then goes on.
        await outbox.flush(END_RECORD_WAIT_S)
        try:
            await asyncio.wait_for(
                ctx.room.local_participant.set_attributes({END_REASON_ATTRIBUTE: reason}), 2
            )
        except Exception as exc:  # not connected (start failed) or the room is gone
            log.info("end reason not announced", extra={"error": type(exc).__name__})
        try:
            await asyncio.wait_for(ctx.delete_room(), 10)
        except TimeoutError:
            log.warning("room deletion timed out", extra={"session_id": spec.session_id})
        ctx.shutdown(reason=(call.end_reason or "shutdown"))

    parts = assemble_call(
        spec,
        data.conversation,
        stt=build_stt(spec.persona, settings),
        llm=build_llm(spec.persona, settings),
        tts=build_tts(spec.persona, settings, data.conversation.turns),
        vad_model=vad_model,
        recorder=recorder,
        connection=connection,
        on_finished=finished,
    )

    turns = data.conversation.turns

    async def early_audio() -> None:
        try:
            async with asyncio.timeout(turns.pre_connect_audio_timeout_s):
                await wait_for_early_audio(parts.session, ctx.room, ctx.wait_for_participant())
        except TimeoutError:
            log.warning(
                "greeting: the visitor's microphone or its early audio did not come in time"
            )

    parts.agent.before_greeting = early_audio

    async def flush_records(_reason: str) -> None:
        try:
            await asyncio.wait_for(parts.call.finished.wait(), CALL_CLOSE_WAIT_S)
        except TimeoutError:
            log.error("call did not close before shutdown", extra={"session_id": spec.session_id})
        if not await outbox.flush(RECORD_FLUSH_TIMEOUT_S):
            log.error(
                "session record not written before exit (Redis unavailable)",
                extra={"session_id": spec.session_id, "pending": outbox.pending},
            )
        await outbox.aclose()
        await redis.aclose()

    ctx.add_shutdown_callback(flush_records)
    ctx.log_context_fields = {"session_id": spec.session_id, "persona": spec.persona.id}

    try:
        connection.attach(ctx.room)

        def on_participant_left(participant: rtc.RemoteParticipant) -> None:
            if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                parts.call.caller_left()

        ctx.room.on("participant_disconnected", on_participant_left)
        signals.attach(parts.session)
        parts.call.begin()
        # The session connects to the room itself, after RoomIO has registered its handler
        # for the page's pre-connect audio (what the visitor said before the agent joined,
        # sent as soon as the agent is in the room): connecting first could let it arrive
        # with nobody to take it. Every track is subscribed; the visitor's token can only
        # publish a microphone (server/livekit_token.py).
        await parts.session.start(
            parts.agent,
            room=ctx.room,
            # Nothing of the call is recorded or uploaded (audio, transcript, traces).
            record=False,
            # No RemoteSession: by default any room participant (the visitor can publish
            # data) could read the instructions and chat history and drive the LLM by text.
            session_host=False,
            # Voice only: the page never types (it only shows the transcription), and a
            # text input would let a script drive the LLM without speaking.
            room_options=RoomOptions(
                close_on_disconnect=True,
                video_input=False,
                text_input=False,
                audio_input=AudioInputOptions(
                    sample_rate=turns.input_sample_rate,
                    frame_size_ms=turns.input_frame_ms,
                    pre_connect_audio=True,
                    pre_connect_audio_timeout=turns.pre_connect_audio_timeout_s,
                ),
            ),
        )
    except Exception:
        log.exception("call could not start", extra={"session_id": spec.session_id})
        parts.call.start_failed()


def load_policy(settings: Settings) -> tuple[Callable[[AgentServer], float] | None, float]:
    """How full the worker says it is: the framework's CPU load against
    AGENT_LOAD_THRESHOLD, or with AGENT_MAX_CALLS its share of that many calls (full at 1)."""
    if settings.agent_max_calls <= 0:
        return None, settings.agent_load_threshold
    max_calls = settings.agent_max_calls

    def calls_load(server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / max_calls)

    return calls_load, 1.0


def build_server(settings: Settings | None = None, *, check_keys: bool = True) -> AgentServer:
    settings = settings or get_settings()
    if check_keys:
        require_provider_keys(settings)
    _MAIN["data"] = load_worker_data(settings)
    # The framework would preload its local end-of-turn model (most of an idle job
    # process's memory: docs/benchmarks.md) and its own VAD in the forkserver for every job
    # process; turns here are detected by the Silero VAD the prewarm loads, so neither is
    # ever used. An explicit setting still wins.
    os.environ.setdefault(PRELOAD_LOCAL_INFERENCE, "0")
    load_fnc, load_threshold = load_policy(settings)
    server = AgentServer(
        setup_fnc=prewarm,
        num_idle_processes=settings.agent_num_idle_processes,
        # livekit-agents binds every interface by default.
        host=settings.agent_health_host,
        port=settings.agent_health_port,
        load_fnc=load_fnc,
        load_threshold=load_threshold,
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        shutdown_process_timeout=SHUTDOWN_PROCESS_TIMEOUT_S,
        job_memory_warn_mb=400,
    )
    # livekit-agents' CLI installs its log handlers (and in `dev` sets its logger to DEBUG,
    # where it logs what callers say) after this: filter them once the server runs.
    server.on("worker_started", guard_handlers)
    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=on_request)
    return server
