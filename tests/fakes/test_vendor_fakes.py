"""The vendor fakes, driven by the real livekit plugins: if these pass, the plugins parse
what the fakes send, so the end-to-end tests exercise real protocol handling."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import function_tool
from livekit.agents import llm as lk_llm
from livekit.agents.stt import SpeechEventType
from livekit.plugins import deepgram
from livekit.plugins import openai as lk_openai

from tests.fakes.audio_io import CallerMicrophone, CallerSpeaker
from tests.fakes.deepgram_listen import ListenSettings
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn
from tests.fakes.openai_chat import ChatSettings
from tests.fakes.openai_speech import SpeechSettings
from tests.fakes.server import VendorFakes, running_vendor_fakes
from tests.fakes.speech_audio import speech, trim_silence

pytestmark = pytest.mark.voice

KEY = "sk-local-fake-key"


@function_tool
async def book_visit(slot_id: str) -> str:
    """Book a visit slot."""
    return slot_id


async def test_chat_streams_text_tool_calls_and_usage_and_records_the_request():
    script = Script(
        Turn(
            "book",
            Reply("Let me see.", tools=(ToolCall("book_visit", {"slot_id": "VW-01"}),)),
            Reply("Booked for tomorrow."),
        )
    )
    async with running_vendor_fakes(chat_script=script) as fakes:
        model = lk_openai.LLM(
            model="gpt-4.1-mini",
            base_url=fakes.openai_base_url,
            api_key=KEY,
            extra_body={"store": False},
        )
        ctx = lk_llm.ChatContext()
        ctx.add_message(role="system", content="You are Emma.")
        ctx.add_message(role="user", content="Can I book a visit?")
        chunks = []
        async with model.chat(chat_ctx=ctx, tools=[book_visit]) as stream:
            async for chunk in stream:
                chunks.append(chunk)
        text = "".join(c.delta.content or "" for c in chunks if c.delta)
        calls = [t for c in chunks if c.delta for t in c.delta.tool_calls]
        usage = [c.usage for c in chunks if c.usage]
        assert text == "Let me see."
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("book_visit", {"slot_id": "VW-01"})
        ]
        assert usage and usage[0].completion_tokens > 0 and usage[0].prompt_tokens > 0

        # the tool result comes back: step 1 of the same turn
        ctx.insert(
            [
                lk_llm.FunctionCall(call_id=c.call_id, name=c.name, arguments=c.arguments)
                for c in calls
            ]
        )
        ctx.insert(
            lk_llm.FunctionCallOutput(
                call_id=calls[0].call_id, name="book_visit", output="ok", is_error=False
            )
        )
        async with model.chat(chat_ctx=ctx, tools=[book_visit]) as stream:
            again = "".join([c.delta.content or "" async for c in stream if c.delta])
        assert again == "Booked for tomorrow."

        first, second = fakes.chat.requests
        assert first.model == "gpt-4.1-mini" and first.store is False
        assert first.system_prompt == "You are Emma." and first.tools == ["book_visit"]
        assert (first.step, second.step) == (0, 1)
        assert first.body["stream_options"] == {"include_usage": True}
        assert not fakes.chat.errors
        await model.aclose()


async def test_chat_paces_first_token_and_rate():
    script = Script(fallback=Reply("one two three four five"))
    settings = ChatSettings(time_to_first_token_s=0.2, tokens_per_second=50)
    async with running_vendor_fakes(chat_script=script, chat=settings) as fakes:
        model = lk_openai.LLM(model="gpt-4.1-mini", base_url=fakes.openai_base_url, api_key=KEY)
        ctx = lk_llm.ChatContext()
        ctx.add_message(role="user", content="hi")
        start = time.monotonic()
        arrivals = []
        async with model.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    arrivals.append(time.monotonic() - start)
        assert 0.2 <= arrivals[0] < 0.35
        assert arrivals[-1] - arrivals[0] >= 4 / 50 * 0.9
        await model.aclose()


async def test_chat_refuses_what_openai_refuses(vendor_fakes: VendorFakes):
    fakes = vendor_fakes
    fakes.chat.script = Script(fallback=Reply("x"))
    url = fakes.openai_base_url + "/chat/completions"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"model": "m", "messages": []}) as res:
            assert res.status == 401
            assert (await res.json())["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": f"Bearer {KEY}"}
        async with http.post(url, json={"messages": [{"role": "user"}]}, headers=auth) as res:
            assert res.status == 400 and (await res.json())["error"]["param"] == "model"
        async with http.post(url, json={"model": "m", "messages": []}, headers=auth) as res:
            assert res.status == 400
    assert fakes.chat.requests == []


async def test_chat_unscripted_turn_is_an_error_the_test_can_see():
    async with running_vendor_fakes(chat_script=Script()) as fakes:
        url = fakes.openai_base_url + "/chat/completions"
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hm"}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 500
        assert fakes.chat.errors == ["no scripted reply for 'hm' at step 0"]


@pytest.mark.parametrize(
    ("model", "response_format"),
    [
        ("gpt-4o-mini-tts", "pcm"),
        ("tts-1", "pcm"),
        ("gpt-4o-mini-tts", "mp3"),
        ("tts-1", "opus"),
        ("tts-1", "wav"),
    ],
)
async def test_speech_is_real_audio_in_every_format(model, response_format):
    text = "Hello, Garonne Realty, this is Emma speaking."
    async with running_vendor_fakes() as fakes:
        tts = lk_openai.TTS(
            model=model,
            voice="sage",
            base_url=fakes.openai_base_url,
            api_key=KEY,
            response_format=response_format,
        )
        frames = [ev.frame async for ev in tts.synthesize(text)]
        await tts.aclose()
        request = fakes.speech.requests[0]
    assert {f.sample_rate for f in frames} == {24000}
    got = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    expected = speech(text, "en", 24000)
    # the same speech as espeak-ng's, within codec padding
    assert abs(got.size - expected.size) / 24000 < 0.12
    assert np.sqrt(np.mean(got.astype(np.float64) ** 2)) > 500
    assert request.body["voice"] == "sage" and request.body["response_format"] == response_format
    assert request.body["stream_format"] == ("audio" if model == "tts-1" else "sse")


async def test_speech_time_to_first_byte_and_chunking():
    settings = SpeechSettings(time_to_first_byte_s=0.2, chunk_s=0.1, realtime_factor=10)
    async with running_vendor_fakes(speech=settings) as fakes:
        tts = lk_openai.TTS(
            model="tts-1",
            voice="alloy",
            base_url=fakes.openai_base_url,
            api_key=KEY,
            response_format="pcm",
        )
        start = time.monotonic()
        first = None
        async for _event in tts.synthesize("Bonjour et bienvenue."):
            first = first or time.monotonic() - start
        total = time.monotonic() - start
        await tts.aclose()
        request = fakes.speech.requests[0]
    assert first is not None and 0.2 <= first < 0.35
    # chunks of 100 ms at ten times real time: the whole sentence streams over ~audio/10
    assert total >= 0.2 + (request.audio_seconds - 0.1) / 10 * 0.9


async def test_speech_rejects_bad_requests():
    async with running_vendor_fakes() as fakes:
        url = fakes.openai_base_url + "/audio/speech"
        auth = {"Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession() as http:
            for body, param in [
                ({"model": "tts-1", "voice": "x"}, "input"),
                (
                    {"model": "tts-1", "voice": "x", "input": "hi", "response_format": "ogg"},
                    "response_format",
                ),
            ]:
                async with http.post(url, json=body, headers=auth) as res:
                    assert res.status == 400 and (await res.json())["error"]["param"] == param
        assert fakes.speech.requests == []


async def _transcribe(fakes, mic: CallerMicrophone, *, seconds: float, **stt_options):
    async with aiohttp.ClientSession() as http:
        stt = deepgram.STT(
            api_key="dg-key", base_url=fakes.deepgram_url, http_session=http, **stt_options
        )
        stream = stt.stream()
        events: list[tuple[float, object, str]] = []

        async def pump() -> None:
            deadline = time.monotonic() + seconds
            async for frame in mic:
                stream.push_frame(frame)
                if time.monotonic() > deadline:
                    break
            stream.end_input()

        async def read() -> None:
            async for ev in stream:
                text = ev.alternatives[0].text if ev.alternatives else ""
                events.append((time.monotonic(), ev.type, text))

        await asyncio.gather(pump(), read())
        await stream.aclose()
        return events


async def test_listen_finds_utterances_in_the_audio_and_answers_like_deepgram():
    transcripts = ["Hello, I'd like to book a viewing.", "Tomorrow at eleven, please."]
    async with running_vendor_fakes(transcripts=transcripts) as fakes:
        mic = CallerMicrophone()
        first = mic.say("Hello, I'd like to book a viewing.", "en")
        loop = asyncio.get_running_loop()
        loop.call_later(3.6, mic.say, "Tomorrow at eleven, please.", "en")
        events = await _transcribe(
            fakes, mic, seconds=6.5, language="en", mip_opt_out=True, model="nova-3"
        )
        conn = fakes.listen.connections[0]

    finals = [(t, text) for t, kind, text in events if kind == SpeechEventType.FINAL_TRANSCRIPT]
    assert [text for _, text in finals] == transcripts
    kinds = [kind for _, kind, _ in events]
    assert kinds.count(SpeechEventType.START_OF_SPEECH) == 2
    assert kinds.count(SpeechEventType.END_OF_SPEECH) == 2
    assert SpeechEventType.INTERIM_TRANSCRIPT in kinds
    # the final arrives ~150 ms after the speech ended in the audio (+ the 10 ms frames
    # the energy detector needs, + loopback)
    assert first.speech_end_wall is not None
    delay = finals[0][0] - first.speech_end_wall
    assert 0.14 <= delay <= 0.3, delay

    assert conn.param("mip_opt_out") == "true" and conn.param("language") == "en"
    assert conn.param("model") == "nova-3" and conn.param("encoding") == "linear16"
    assert conn.authorization == "Token dg-key"
    assert conn.control_messages[-1] == "CloseStream" and conn.close_reason == "close_stream"
    metadata = [m for m in conn.sent if m["type"] == "Metadata"]
    assert len(metadata) == 1 and metadata[0]["duration"] == pytest.approx(6.5, abs=0.3)
    started = [m for m in conn.sent if m["type"] == "SpeechStarted"]
    assert len(started) == 2 and started[0]["channel"] == [0, 1]


async def test_listen_finalize_returns_the_words_at_once_and_utterance_end():
    async with running_vendor_fakes(transcripts=["Un, deux, trois."]) as fakes:
        url = (
            fakes.deepgram_url + "?encoding=linear16&sample_rate=24000&interim_results=true"
            "&utterance_end_ms=1000&vad_events=true&language=fr"
        )
        audio = trim_silence(speech("Un deux trois quatre cinq six", "fr", 24000))
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, headers={"Authorization": "Token k"}) as ws:
                for i in range(0, audio.size // 2, 1200):
                    await ws.send_bytes(audio[i : i + 1200].tobytes())
                await ws.send_str(json.dumps({"type": "Finalize"}))
                finalized = await _next(ws, lambda m: m.get("is_final") is True)
                assert finalized["from_finalize"] is True
                assert finalized["channel"]["alternatives"][0]["transcript"] == "Un, deux, trois."
                # the rest of the sentence, then silence: speech_final with nothing new
                rest = np.concatenate([audio[audio.size // 2 :], np.zeros(24000, np.int16)])
                for i in range(0, rest.size, 1200):
                    await ws.send_bytes(rest[i : i + 1200].tobytes())
                final = await _next(ws, lambda m: m.get("speech_final") is True)
                assert final["channel"]["alternatives"][0]["transcript"] == ""
                end = await _next(ws, lambda m: m["type"] == "UtteranceEnd")
                assert end["last_word_end"] == pytest.approx(audio.size / 24000, abs=0.05)


async def _next(ws, predicate, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        if predicate(data):
            return data


async def test_listen_refuses_bad_credentials_and_drops_idle_streams():
    async with running_vendor_fakes(listen=ListenSettings(idle_timeout_s=0.3)) as fakes:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(fakes.deepgram_url)
            assert refused.value.status == 401
            url = fakes.deepgram_url + "?encoding=linear16&sample_rate=16000"
            async with http.ws_connect(url, headers={"Authorization": "Token k"}) as ws:
                msg = await ws.receive(timeout=2)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
        assert fakes.listen.connections[0].close_reason == "idle_timeout"


async def test_microphone_is_real_time_and_dates_the_end_of_speech():
    mic = CallerMicrophone(frame_ms=20)
    spoken = mic.say("Bonjour", "fr")
    start = time.monotonic()
    frames = []
    async for frame in mic:
        frames.append(frame)
        if len(frames) == 50:
            break
    elapsed = time.monotonic() - start
    assert 0.95 <= elapsed <= 1.1  # 50 frames of 20 ms
    assert {f.samples_per_channel for f in frames} == {480}
    assert spoken.done.is_set() and spoken.started_wall is not None
    assert spoken.speech_end_wall is not None
    assert spoken.speech_end_wall - spoken.started_wall == pytest.approx(
        spoken.duration_s, abs=0.03
    )


async def test_speaker_plays_in_real_time_and_stops_on_clear_buffer():
    speaker = CallerSpeaker()
    finished: list[tuple[float, bool]] = []
    speaker.on(
        "playback_finished", lambda ev: finished.append((ev.playback_position, ev.interrupted))
    )
    tone = (np.sin(np.arange(2400) / 24000 * 2 * np.pi * 440) * 8000).astype(np.int16)
    for _ in range(3):  # 300 ms, delivered at once
        await speaker.capture_frame(rtc.AudioFrame(tone.tobytes(), 24000, 1, 2400))
    speaker.flush()
    assert speaker.playing
    played = await speaker.wait_for_playout()
    assert played.interrupted is False and played.playback_position == pytest.approx(0.3)
    segment = speaker.segments[0]
    assert segment.finished_wall is not None
    assert segment.finished_wall - segment.first_frame_wall >= 0.29

    for _ in range(10):  # a second, cut after 150 ms
        await speaker.capture_frame(rtc.AudioFrame(tone.tobytes(), 24000, 1, 2400))
    await asyncio.sleep(0.15)
    speaker.clear_buffer()
    assert finished[-1][1] is True and 0.14 <= finished[-1][0] <= 0.3
    assert not speaker.playing and speaker.segments[1].interrupted
