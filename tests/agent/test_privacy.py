"""Privacy by construction: every persona's providers opt out of data use (Deepgram
`mip_opt_out`, OpenAI `store=False`), nothing routes to a cloud service we did not choose
(turn detection, interruption and VAD are local), and a call logs no conversation text."""

from __future__ import annotations

import logging

import pytest
from livekit.plugins import silero

from agent.conversation import default_conversation
from agent.deepgram_stream import PromptDeepgramSTT
from agent.providers import build_llm, build_session, build_stt, build_tts
from server.settings import Settings
from tests.agent.support import CATALOG, RELAXED, finished, running_call
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn

SETTINGS = Settings(
    openai_api_key="sk-test",
    deepgram_api_key="dg-test",
    openai_base_url="http://127.0.0.1:9/v1",
    deepgram_base_url="ws://127.0.0.1:9/v1/listen",
)
TURNS = default_conversation().turns


@pytest.mark.parametrize("persona_id", [p.id for p in CATALOG])
async def test_providers_of_every_persona_opt_out_of_data_use(persona_id):
    persona = CATALOG.get(persona_id)
    assert persona is not None
    stt = build_stt(persona, SETTINGS)
    llm = build_llm(persona, SETTINGS)
    tts = build_tts(persona, SETTINGS, TURNS)
    try:
        # the plugin's STT, sending each frame as it arrives (agent/deepgram_stream.py)
        assert isinstance(stt, PromptDeepgramSTT)
        assert stt._opts.mip_opt_out is True
        assert stt._opts.language == persona.language and stt.model == persona.stt.model
        assert stt._opts.keyterm == persona.stt.keyterms
        assert stt._opts.endpoint_url == SETTINGS.deepgram_base_url
        assert llm._opts.store is False
        assert llm.model == persona.llm.model and llm._opts.temperature == persona.llm.temperature
        assert str(llm._client.base_url).rstrip("/") == SETTINGS.openai_base_url
        assert tts._opts.voice == persona.voice.voice and tts._opts.model == persona.voice.model
        assert tts._opts.response_format == "pcm"  # no decoder before the first frame
    finally:
        await llm.aclose()
        await tts.aclose()


async def test_turn_handling_is_local():
    vad = silero.VAD.load()
    session = build_session(stt=None, llm=None, tts=None, vad_model=vad, turns=TURNS,
                            user_away_timeout_s=12)  # fmt: skip
    # LiveKit's defaults would be its hosted turn detector, interruption model and VAD.
    assert session._turn_detection == TURNS.turn_detection == "vad"
    assert session._interruption_detection == "vad"
    assert session._vad is vad
    assert session._opts.user_away_timeout == 12
    # the LLM and the TTS both start before the VAD confirms the turn
    assert session.options.preemptive_generation["enabled"] is True
    assert session.options.preemptive_generation["preemptive_tts"] is True


async def test_a_call_logs_no_conversation_text(caplog):
    secret_words = ["Marguerite Duras", "07 98 76 54 32", "fuite sous l'évier", "Tout est noté"]
    message = {"name": "Marguerite Duras", "phone": "07 98 76 54 32",
               "subject": "fuite sous l'évier", "department": "syndic"}  # fmt: skip
    script = Script(
        Turn("fuite", Reply(tools=(ToolCall("take_message", message),)), Reply("Tout est noté.")),
        Turn("merci", Reply("Au revoir.", tools=(ToolCall("end_call"),))),
    )
    caplog.set_level(logging.INFO)
    async with running_call("gestion-incidents-fr", script, timings=RELAXED) as (parts, _):
        await parts.session.run(user_input="J'ai une fuite sous l'évier")
        await parts.session.run(user_input="merci")
        await finished(parts)
    assert parts.call.end_reason == "end_call"
    logged = "\n".join(
        f"{r.getMessage()} {vars(r)}" for r in caplog.records if r.levelno >= logging.INFO
    )
    assert "call ended" in logged
    for word in secret_words:
        assert word not in logged
