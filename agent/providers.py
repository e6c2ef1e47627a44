"""The speech and language providers of a persona, and the AgentSession that joins them.

Deepgram STT (the persona's model and language, keyterms, `mip_opt_out=True`), OpenAI LLM
(`store=False`), OpenAI TTS (the persona's voice, raw PCM), the Silero VAD loaded once per
process, and turn handling pinned to that VAD: AgentSession's defaults would otherwise
call LiveKit Cloud's turn detector and interruption model.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentSession, APIConnectOptions, vad
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.turn import TurnHandlingOptions
from livekit.plugins import deepgram, openai

from agent.conversation import TurnSettings
from agent.deepgram_stream import PromptDeepgramSTT
from agents_catalog.models import Persona
from server.settings import ConfigError, Settings

PROVIDER_KEYS = ("OPENAI_API_KEY", "DEEPGRAM_API_KEY")


def missing_provider_keys(settings: Settings) -> list[str]:
    values = {
        "OPENAI_API_KEY": settings.openai_api_key,
        "DEEPGRAM_API_KEY": settings.deepgram_api_key,
    }
    return [name for name in PROVIDER_KEYS if not values[name].strip()]


def require_provider_keys(settings: Settings) -> None:
    """The worker refuses to start without its provider keys, naming the missing ones."""
    missing = missing_provider_keys(settings)
    if missing:
        raise ConfigError("the agent worker needs " + " and ".join(missing) + " (see .env.example)")


def build_stt(persona: Persona, settings: Settings) -> deepgram.STT:
    kwargs: dict[str, Any] = {}
    if persona.stt.keyterms:
        kwargs["keyterm"] = list(persona.stt.keyterms)
    if settings.deepgram_base_url:
        kwargs["base_url"] = settings.deepgram_base_url
    # the plugin's STT, each audio frame sent as it arrives (agent/deepgram_stream.py)
    return PromptDeepgramSTT(
        model=persona.stt.model,
        language=persona.language,
        api_key=settings.deepgram_api_key,
        punctuate=True,
        interim_results=True,
        # Privacy policy: no model is trained on demo calls.
        mip_opt_out=True,
        **kwargs,
    )


def build_llm(persona: Persona, settings: Settings) -> openai.LLM:
    kwargs: dict[str, Any] = {}
    if settings.openai_base_url:
        kwargs["base_url"] = settings.openai_base_url
    return openai.LLM(
        model=persona.llm.model,
        temperature=persona.llm.temperature,
        api_key=settings.openai_api_key,
        # Privacy policy: completions are not stored by OpenAI (no training, no evals).
        store=False,
        # livekit-plugins-openai 1.8.9 keeps `store` but never sends it on chat
        # completions: put it in the request body so OpenAI actually receives it.
        extra_body={"store": False},
        parallel_tool_calls=False,
        **kwargs,
    )


def build_tts(persona: Persona, settings: Settings, turns: TurnSettings) -> openai.TTS:
    kwargs: dict[str, Any] = {}
    if settings.openai_base_url:
        kwargs["base_url"] = settings.openai_base_url
    if persona.voice.style:
        kwargs["instructions"] = persona.voice.style
    return openai.TTS(
        model=persona.voice.model,
        voice=persona.voice.voice,
        speed=persona.voice.speed,
        api_key=settings.openai_api_key,
        response_format=turns.tts_response_format,
        **kwargs,
    )


def turn_handling(turns: TurnSettings, *, audio: bool = True) -> TurnHandlingOptions:
    return {
        # Text-only sessions (the chat preview, scripted tests) have no audio to detect
        # turns in: each typed line is a turn.
        "turn_detection": turns.turn_detection if audio else "manual",
        "endpointing": {
            "mode": "fixed",
            "min_delay": turns.min_endpointing_delay_s,
            "max_delay": turns.max_endpointing_delay_s,
        },
        "interruption": {"mode": "vad", "min_duration": turns.min_interruption_s},
        "preemptive_generation": {
            "enabled": turns.preemptive_generation,
            "preemptive_tts": turns.preemptive_generation and turns.preemptive_tts,
        },
    }


def build_session(
    *,
    stt: Any,
    llm: Any,
    tts: Any,
    vad_model: vad.VAD | None,
    turns: TurnSettings,
    user_away_timeout_s: float | None,
    llm_max_retry: int = 1,
) -> AgentSession[Any]:
    return AgentSession(
        stt=stt,
        llm=llm,
        tts=tts,
        # Always explicit (None in text-only runs): an omitted VAD means LiveKit's hosted one.
        vad=vad_model,
        turn_handling=turn_handling(turns, audio=vad_model is not None),
        user_away_timeout=user_away_timeout_s,
        # A short call: retry a failed LLM request at most once, quickly.
        conn_options=SessionConnectOptions(
            llm_conn_options=APIConnectOptions(max_retry=llm_max_retry, retry_interval=0.5),
        ),
    )
