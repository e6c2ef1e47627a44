"""Spoken calls end to end: espeak-ng speech in, the worker's own call assembly, the real
Deepgram and OpenAI plugins against the local vendor fakes, the agent's audio out, and
the session record in a real Redis. Run alone with `pytest -m voice`."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
import redis

from agent.conversation import GuardTimings
from agent.ending import EndReason
from redisdb import keys
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn
from tests.fakes.loopback_audit import audit_connections
from tests.fakes.openai_speech import SpeechSettings
from tests.fakes.server import VendorFakes, running_vendor_fakes
from tests.voice.harness import POLICIES, VoiceCall, start_voice_call, tomorrow

pytestmark = pytest.mark.voice

# espeak-ng at 300 words a minute for the agent: the same protocol, shorter waits.
QUICK_VOICE = SpeechSettings(words_per_minute=300, realtime_factor=8)


@dataclass(frozen=True)
class SpokenCall:
    persona: str
    question: str
    search: dict[str, object]
    answer: str
    booking: str
    book: dict[str, object]
    confirmation: str
    goodbye: str
    farewell: str
    private_words: tuple[str, ...]  # said in the call: must never reach Redis

    def script(self) -> Script:
        return Script(
            Turn(self.question, Reply(tools=(ToolCall("find_listings", self.search),)),
                 Reply(self.answer)),
            Turn(self.booking, Reply(tools=(ToolCall("book_visit", self.book),)),
                 Reply(self.confirmation)),
            Turn(self.goodbye, Reply(self.farewell, tools=(ToolCall("end_call"),))),
        )  # fmt: skip


def _search(**criteria: object) -> dict[str, object]:
    base: dict[str, object] = dict.fromkeys(
        ("transaction", "kind", "area", "max_price_eur", "min_bedrooms", "min_rooms")
    )
    return {**base, **criteria}


ENGLISH = SpokenCall(
    persona="realty-desk-en",
    question="Do you have a two bedroom flat for sale in the Chartrons?",
    search=_search(transaction="sale", kind="apartment", area="Chartrons", min_bedrooms=2),
    answer="Yes, a two bedroom flat in the Chartrons for three hundred and ninety five "
    "thousand euros. Would you like to see it?",
    booking="Yes please, tomorrow at eleven. I am John Smith, my number is 06 12 34 56 78.",
    book={"listing_ref": "BDX-201", "date": "<tomorrow>", "time": "11:00", "name": "John Smith",
          "phone": "06 12 34 56 78"},
    confirmation="Done, your viewing is booked for tomorrow at eleven.",
    goodbye="That is all, thank you, goodbye.",
    farewell="Goodbye John, have a lovely day!",
    private_words=("John Smith", "12 34 56 78", "two bedroom", "Chartrons?", "goodbye"),
)  # fmt: skip

FRENCH = SpokenCall(
    persona="agence-immo-fr",
    question="Bonjour, je cherche un trois pièces à vendre à la Croix-Rousse.",
    search=_search(transaction="sale", kind="apartment", area="Croix-Rousse", min_rooms=3),
    answer="J'ai un trois pièces de canut à la Croix-Rousse, à trois cent soixante-cinq mille "
    "euros. Voulez-vous le visiter ?",
    booking="Oui, demain à dix heures et demie. Je suis Marie Dupont, au 06 98 76 54 32.",
    book={"listing_ref": "LYO-101", "date": "<tomorrow>", "time": "10:30",
          "name": "Marie Dupont", "phone": "06 98 76 54 32"},
    confirmation="C'est réservé pour demain à dix heures et demie.",
    goodbye="Merci, ce sera tout, au revoir.",
    farewell="Au revoir Marie, bonne journée !",
    private_words=("Marie Dupont", "98 76 54 32", "trois pièces", "au revoir"),
)  # fmt: skip


def _with_dates(call: SpokenCall) -> SpokenCall:
    book = {k: (tomorrow() if v == "<tomorrow>" else v) for k, v in call.book.items()}
    return SpokenCall(**{**call.__dict__, "book": book})


async def _exchange(call: VoiceCall, text: str, *, timeout: float = 15.0) -> float:
    """The caller says `text`; returns the silence before the agent answered."""
    spoken = call.say(text)
    await spoken.done.wait()
    assert spoken.speech_end_wall is not None
    segment = await call.speaker.wait_for_segment_after(spoken.speech_end_wall, timeout)
    await call.speaker.wait_until_quiet(timeout)
    return segment.first_frame_wall - spoken.speech_end_wall


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _redis_text(client: redis.Redis) -> str:
    """Every key and value in the database, as one string."""
    parts: list[str] = []
    for key in client.scan_iter(count=500):
        parts.append(_str(key))
        kind = _str(client.type(key))
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(str(client.hgetall(key)))
        elif kind == "set":
            parts.append(str(client.smembers(key)))
        elif kind == "zset":
            parts.append(str(client.zrange(key, 0, -1, withscores=True)))
        elif kind == "list":
            parts.append(str(client.lrange(key, 0, -1)))
    return "\n".join(parts)


def _assert_vendors_saw_the_persona(fakes: VendorFakes, call: VoiceCall, scripted: SpokenCall):
    persona = call.spec.persona
    # Deepgram: one stream, the persona's language and model, opted out of training
    assert len(fakes.listen.connections) >= 1
    for conn in fakes.listen.connections:
        assert conn.param("mip_opt_out") == "true"
        assert conn.param("language") == persona.language
        assert conn.param("model") == persona.stt.model
        assert set(conn.params.get("keyterm", [])) == set(persona.stt.keyterms)
        assert conn.authorization == "Token local-fake-deepgram-key"
    assert fakes.listen.script.remaining == 0 and fakes.listen.script.unscripted == 0

    # OpenAI chat: store false, the persona's instructions and exactly its tools, every time
    assert fakes.chat.errors == []
    assert fakes.chat.requests
    for request in fakes.chat.requests:
        assert request.store is False
        assert request.model == persona.llm.model
        assert request.body["temperature"] == persona.llm.temperature
        assert persona.instructions.strip() in request.system_prompt
        assert sorted(request.tools) == sorted(persona.tools)
    turns = {r.turn for r in fakes.chat.requests}
    assert turns == {scripted.question, scripted.booking, scripted.goodbye}

    # the tools really ran on the demo data, and the model was given their results
    outputs = [
        json.loads(m["content"])
        for r in fakes.chat.requests
        for m in r.messages
        if m.get("role") == "tool"
    ]
    assert any(o.get("status") == "found" for o in outputs)
    assert any(o.get("status") == "booked" for o in outputs), outputs

    # OpenAI speech: the persona's voice, style and the configured low-latency format
    assert fakes.speech.requests
    for speech in fakes.speech.requests:
        assert speech.body["voice"] == persona.voice.voice
        assert speech.body["model"] == persona.voice.model
        assert speech.body.get("instructions") == persona.voice.style
        assert speech.body["response_format"] == call.conversation.turns.tts_response_format
    said = " ".join(r.text for r in fakes.speech.requests)
    for line in (persona.greeting, scripted.answer, scripted.confirmation, scripted.farewell):
        assert " ".join(line.split()) in " ".join(said.split())


@pytest.mark.parametrize("scripted", [ENGLISH, FRENCH], ids=["en", "fr"])
async def test_spoken_call_books_a_viewing_and_ends_with_end_call(
    scripted: SpokenCall, redis_url: str, redis_client: redis.Redis
):
    scripted = _with_dates(scripted)
    transcripts = [scripted.question, scripted.booking, scripted.goodbye]
    with audit_connections() as audit:
        async with running_vendor_fakes(
            chat_script=scripted.script(), transcripts=transcripts, speech=QUICK_VOICE
        ) as fakes:
            joined = time.monotonic()
            async with await start_voice_call(fakes, scripted.persona, redis_url=redis_url) as call:
                # the greeting comes first, straight from TTS: no LLM request before it
                greeting = await call.speaker.wait_for_segment_after(joined, 5)
                assert greeting.first_frame_wall - joined < 1.0
                assert fakes.chat.requests == []
                assert fakes.speech.requests[0].text in call.spec.persona.greeting
                await call.speaker.wait_until_quiet(15)

                for line in (scripted.question, scripted.booking):
                    silence = await _exchange(call, line)
                    assert silence < 3.0  # generous: CI machines are shared

                farewell = call.say(scripted.goodbye)
                await farewell.done.wait()
                await call.ended(20)

    parts = call.parts
    assert parts.call.end_reason is EndReason.END_CALL
    # the goodbye was heard in full before hanging up
    last = call.speaker.segments[-1]
    assert last.first_frame_wall > (farewell.speech_end_wall or 0)
    assert not last.interrupted and last.playback_position == pytest.approx(last.duration_s)
    assert all(s.samples().std() > 300 for s in call.speaker.segments)  # speech, not silence

    _assert_vendors_saw_the_persona(fakes, call, scripted)

    # the complete record in real Redis, with the retention TTL, the slot released
    key = keys.session(call.spec.session_id)
    record = {_str(k): _str(v) for k, v in redis_client.hgetall(key).items()}
    assert record["status"] == "ended" and record["end_reason"] == "end_call"
    assert record["release_reason"] == "end_call" and "released_at" in record
    assert int(record["turns"]) == 3
    assert float(record["duration_s"]) > 5
    assert int(record["llm_prompt_tokens"]) > 0 and int(record["llm_completion_tokens"]) > 0
    assert float(record["stt_audio_s"]) > 5 and int(record["tts_chars"]) > 50
    assert 0 < redis_client.ttl(key) <= POLICIES.retention.session_ttl_s
    assert redis_client.zscore(keys.global_active(), call.spec.session_id) is None
    stored = _redis_text(redis_client).casefold()
    for words in scripted.private_words:
        assert words.casefold() not in stored, words

    # nothing left the machine: every connection went to loopback (fakes, Redis)
    assert audit.outside == []
    assert ("127.0.0.1", fakes.port) in audit.connects


async def test_caller_talks_over_the_agent_and_the_agent_stops():
    question = "Where is the agency?"
    long_answer = (
        "The agency is at twenty-seven quai des Chartrons, right by the river. We are open "
        "Monday to Friday from nine to seven, and on Saturday from ten to five. You can also "
        "reach us by phone at any time, and I can take a message for the team."
    )
    interruption = "Sorry to cut in, do you have a house to rent in Le Bouscat?"
    reply = "Yes, a family house in Le Bouscat for one thousand eight hundred and fifty euros."
    script = Script(Turn(question, Reply(long_answer)), Turn("Le Bouscat", Reply(reply)))
    async with running_vendor_fakes(
        chat_script=script, transcripts=[question, interruption], speech=QUICK_VOICE
    ) as fakes:
        joined = time.monotonic()
        async with await start_voice_call(fakes, "realty-desk-en") as call:
            await call.speaker.wait_for_segment_after(joined, 5)
            await call.speaker.wait_until_quiet(15)
            asked = call.say(question)
            await asked.done.wait()
            assert asked.speech_end_wall is not None
            answer = await call.speaker.wait_for_segment_after(asked.speech_end_wall, 10)
            # a second into the long answer the caller starts talking over it
            await _sleep_until(answer.first_frame_wall + 1.0)
            spoken = call.say(interruption)
            await spoken.done.wait()
            assert spoken.speech_end_wall is not None and spoken.started_wall is not None
            reply_segment = await call.speaker.wait_for_segment_after(spoken.speech_end_wall, 10)
            await call.speaker.wait_until_quiet(15)

    # the answer stopped soon after the caller began (VAD + min_interruption_s: paused at
    # once, as RoomIO does, then cleared once the words confirm it), long before its end,
    # and was never resumed
    assert answer.interrupted and answer.cleared_wall is not None, call.describe()
    assert answer.stopped_wall is not None
    stopped_after = answer.stopped_wall - spoken.started_wall
    min_interruption = call.conversation.turns.min_interruption_s
    assert min_interruption <= stopped_after < min_interruption + 1.0, call.describe()
    assert answer.playback_position < answer.duration_s - 1.0
    # then the agent answered what the caller said over it, in full
    assert fakes.chat.requests and interruption in fakes.chat.requests[-1].user_text
    assert reply_segment.index > answer.index and not reply_segment.interrupted
    assert reply in " ".join(r.text for r in fakes.speech.requests)


async def _sleep_until(wall: float) -> None:
    delay = wall - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def test_a_caller_gone_during_the_goodbye_ends_the_call_at_once():
    # The agent hangs up on the silence and starts its goodbye; the visitor leaves while it
    # is said. Nobody is left to hear it: the call must end and record now, not once the
    # goodbye (or hangup_grace_s) is over, or the room's departure timeout lets LiveKit's
    # webhook close a healthy call as abandoned first (seen in tests/e2e/test_cluster.py).
    timings = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=0.5, hangup_grace_s=30)
    goodbye = "I can't hear anything any more, so I'll hang up now. Feel free to call again!"
    async with running_vendor_fakes(chat_script=Script(), transcripts=[]) as fakes:
        async with await start_voice_call(fakes, "realty-desk-en", timings=timings) as call:
            started = since = time.monotonic()
            while call.parts.call.end_reason is None:
                assert time.monotonic() - started < 30, call.describe()
                since = time.monotonic()  # before the hang-up: the goodbye comes after
                await asyncio.sleep(0.05)
            segment = await call.speaker.wait_for_segment_after(since, 10)
            await _sleep_until(segment.first_frame_wall + 0.5)
            left = time.monotonic()
            call.parts.call.caller_left()  # what the worker does on participant_disconnected
            await call.ended(timeout=40)
            # The goodbye had over 5 s left to say (about 6 s in all); closing the session
            # after a cut takes livekit-agents up to 2 s of its own.
            ended_after = time.monotonic() - left
            assert ended_after < 4, (ended_after, call.describe())
            assert call.parts.call.end_reason == EndReason.SILENCE
            assert segment.interrupted, call.describe()
            assert goodbye.split(",")[0] in " ".join(r.text for r in fakes.speech.requests)
