"""A local Deepgram streaming endpoint (`GET /v1/listen`, websocket) for the real plugin.

It speaks Deepgram's live protocol: binary linear16 audio in; `SpeechStarted`, interim and
final `Results`, `UtteranceEnd` and `Metadata` out; `KeepAlive`, `Finalize` and
`CloseStream` honoured; the connection dropped after 10 s without audio or KeepAlive, as
Deepgram does (NET-0001). It does not recognise words: utterances are found from the
audio's energy, and each one is given the next transcript of the test's script, so the
timing the agent sees comes from the audio actually sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from tests.fakes.clock import sleep_until

MODEL_INFO = {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}
FRAME_S = 0.01  # energy is measured on 10 ms frames


@dataclass
class ListenSettings:
    """How the fake behaves; delays are measured from the end of speech in the audio."""

    # End of speech in the audio -> final `Results` (Deepgram's endpointing + processing).
    final_delay_s: float = 0.15
    # Silence that ends an utterance. Must not exceed final_delay_s: the fake cannot send
    # the final before it knows the speech is over.
    end_silence_s: float = 0.1
    # Loudness (RMS of int16 samples) above which a 10 ms frame counts as speech.
    energy_threshold: float = 150.0
    # Voiced audio needed before speech is declared started (ignores clicks).
    min_speech_s: float = 0.05
    # Interim results, in audio seconds, while someone speaks.
    interim_every_s: float = 0.25
    # Time to answer a Finalize message.
    finalize_delay_s: float = 0.03
    # Deepgram closes a stream that got neither audio nor KeepAlive for 10 s.
    idle_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.end_silence_s > self.final_delay_s:
            raise ValueError("end_silence_s must not exceed final_delay_s")


class TranscriptScript:
    """The transcripts the fake hands out, one per utterance, in order."""

    def __init__(self, transcripts: Iterable[str] = (), *, cycle: bool = False) -> None:
        self._items = list(transcripts)
        self._cycle = cycle
        self._next = 0
        self.unscripted = 0  # utterances heard after the script ran out

    def next(self) -> str:
        if self._next >= len(self._items):
            if self._cycle and self._items:
                self._next = 0
            else:
                self.unscripted += 1
                return ""
        text = self._items[self._next]
        self._next += 1
        return text

    @property
    def remaining(self) -> int:
        return len(self._items) - self._next


@dataclass
class Utterance:
    transcript: str
    start_s: float  # audio time
    end_s: float | None = None
    end_wall: float | None = None  # time.monotonic() when the last voiced audio arrived
    final_sent_wall: float | None = None
    finalized: bool = False  # a Finalize already returned its words


@dataclass
class ListenConnection:
    """What one websocket connection asked for and was told (for assertions)."""

    params: dict[str, list[str]]
    authorization: str | None
    request_id: str
    opened_wall: float = field(default_factory=time.monotonic)
    audio_bytes: int = 0
    audio_messages: list[int] = field(default_factory=list)  # each binary message's size
    control_messages: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    close_reason: str | None = None

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None

    @property
    def sample_rate(self) -> int:
        return int(self.param("sample_rate") or 16000)

    @property
    def audio_seconds(self) -> float:
        return self.audio_bytes / 2 / self.sample_rate

    def results(self, *, final: bool | None = None) -> list[dict[str, Any]]:
        out = [m for m in self.sent if m.get("type") == "Results"]
        if final is not None:
            out = [m for m in out if m["is_final"] is final]
        return out


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.lower() == "true"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"err_code": code, "err_msg": message}, status=status)


def _words(transcript: str, start: float, end: float, *, final: bool) -> list[dict[str, Any]]:
    tokens = transcript.split()
    if not tokens:
        return []
    span = max(end - start, 0.01) / len(tokens)
    words = []
    for i, token in enumerate(tokens):
        bare = "".join(ch for ch in token if ch.isalnum() or ch in "'-").lower() or token.lower()
        words.append(
            {
                "word": bare,
                "start": round(start + i * span, 3),
                "end": round(start + (i + 1) * span, 3),
                "confidence": 0.99 if final else 0.9,
                "punctuated_word": token,
            }
        )
    return words


class DeepgramListenFake:
    def __init__(
        self, settings: ListenSettings | None = None, script: TranscriptScript | None = None
    ) -> None:
        self.settings = settings or ListenSettings()
        self.script = script or TranscriptScript()
        self.connections: list[ListenConnection] = []

    def use_script(self, transcripts: Iterable[str], *, cycle: bool = False) -> None:
        self.script = TranscriptScript(transcripts, cycle=cycle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        if not auth or not auth.startswith(("Token ", "Bearer ")) or len(auth.split()) != 2:
            return _error(401, "INVALID_AUTH", "Invalid credentials.")
        params = {key: request.query.getall(key) for key in request.query}
        encoding = (params.get("encoding") or ["linear16"])[-1]
        if encoding != "linear16":
            return _error(400, "Bad Request", f"this fake only decodes linear16, not {encoding}")
        if "encoding" in params and "sample_rate" not in params:
            return _error(400, "Bad Request", "sample_rate is required with encoding")
        if (params.get("channels") or ["1"])[-1] != "1":
            return _error(400, "Bad Request", "this fake only decodes one channel")
        conn = ListenConnection(params=params, authorization=auth, request_id=str(uuid.uuid4()))
        self.connections.append(conn)
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        ws.headers["dg-request-id"] = conn.request_id
        await ws.prepare(request)
        session = _ListenSession(self, conn, ws)
        await session.run()
        return ws


class _ListenSession:
    """One websocket: audio analysis and the outgoing message schedule."""

    def __init__(
        self, fake: DeepgramListenFake, conn: ListenConnection, ws: web.WebSocketResponse
    ) -> None:
        self.fake = fake
        self.s = fake.settings
        self.conn = conn
        self.ws = ws
        self.rate = conn.sample_rate
        self.frame = max(1, int(self.rate * FRAME_S))
        self.pending = np.zeros(0, dtype=np.int16)
        self.t = 0.0  # audio seconds analysed
        self.audio_digest = hashlib.sha256()
        self.voiced_run = 0.0
        self.silent_run = 0.0
        self.utt: Utterance | None = None
        self.last_interim_t = 0.0
        self.last_voiced_end_s = 0.0
        self.last_voiced_wall = 0.0
        # (when, message) in send order; an Event marks a point the receiver waits for
        self.outbox: asyncio.Queue[tuple[float, dict[str, Any] | asyncio.Event] | None] = (
            asyncio.Queue()
        )
        self.interim = _flag(conn.param("interim_results"), False)
        self.vad_events = _flag(conn.param("vad_events"), False)
        endpointing = conn.param("endpointing")
        self.endpointing = endpointing is None or endpointing.lower() != "false"
        utterance_end_ms = conn.param("utterance_end_ms")
        self.utterance_end_s = int(utterance_end_ms) / 1000 if utterance_end_ms else None
        self.utterance_end_task: asyncio.Task[None] | None = None

    # -- outgoing -----------------------------------------------------------------
    def send_at(self, wall: float, message: dict[str, Any]) -> None:
        self.outbox.put_nowait((wall, message))

    async def sender(self) -> None:
        while (item := await self.outbox.get()) is not None:
            wall, message = item
            if isinstance(message, asyncio.Event):
                message.set()
                continue
            await sleep_until(wall)
            if self.ws.closed:
                continue
            utt = message.pop("_utt", None)
            if isinstance(utt, Utterance) and utt.final_sent_wall is None:
                utt.final_sent_wall = time.monotonic()
            self.conn.sent.append(message)
            with contextlib.suppress(ConnectionError):
                await self.ws.send_str(json.dumps(message))

    def results(
        self,
        utt: Utterance,
        text: str,
        *,
        end_s: float,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        words = _words(text, utt.start_s, end_s, final=is_final)
        message: dict[str, Any] = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end_s - utt.start_s, 3),
            "start": round(utt.start_s, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.99 if (is_final and text) else (0.9 if text else 0.0),
                        "words": words,
                    }
                ]
            },
            "metadata": {
                "request_id": self.conn.request_id,
                "model_info": MODEL_INFO,
                "model_uuid": "00000000-0000-4000-8000-00000000f0a3",
            },
            "from_finalize": from_finalize,
        }
        if is_final:
            message["_utt"] = utt  # internal: lets the sender date the final
        return message

    # -- audio analysis -------------------------------------------------------------
    def feed(self, data: bytes, wall: float) -> None:
        self.conn.audio_bytes += len(data)
        self.conn.audio_messages.append(len(data))
        self.audio_digest.update(data)
        samples = np.frombuffer(data[: len(data) - len(data) % 2], dtype=np.int16)
        self.pending = np.concatenate([self.pending, samples])
        usable = self.pending.size - self.pending.size % self.frame
        if usable == 0:
            return
        frames = self.pending[:usable].reshape(-1, self.frame).astype(np.float64)
        self.pending = self.pending[usable:]
        rms = np.sqrt((frames * frames).mean(axis=1))
        for value in rms:
            self.t += FRAME_S
            self.step(bool(value > self.s.energy_threshold), wall)

    def step(self, voiced: bool, wall: float) -> None:
        if voiced:
            self.voiced_run += FRAME_S
            self.silent_run = 0.0
            self.last_voiced_end_s = self.t
            self.last_voiced_wall = wall
            if self.utt is None and self.voiced_run >= self.s.min_speech_s - 1e-9:
                self.start_utterance(self.t - self.voiced_run, wall)
            elif self.utt is not None and self.interim:
                if self.t - self.last_interim_t >= self.s.interim_every_s:
                    self.send_interim(wall)
        else:
            self.voiced_run = 0.0
            self.silent_run += FRAME_S
            if self.utt is not None and self.silent_run >= self.s.end_silence_s - 1e-9:
                self.end_utterance()

    def start_utterance(self, start_s: float, wall: float) -> None:
        if self.utterance_end_task is not None:
            self.utterance_end_task.cancel()
            self.utterance_end_task = None
        self.utt = Utterance(transcript=self.fake.script.next(), start_s=start_s)
        self.conn.utterances.append(self.utt)
        self.last_interim_t = self.t
        if self.vad_events:
            self.send_at(
                wall,
                {"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(start_s, 3)},
            )

    def send_interim(self, wall: float) -> None:
        assert self.utt is not None
        self.last_interim_t = self.t
        if self.utt.finalized:
            return
        words = self.utt.transcript.split()
        # roughly one word per 300 ms heard, never the whole sentence before the final
        shown = min(max(len(words) - 1, 0), int((self.t - self.utt.start_s) / 0.3) + 1)
        if shown == 0:
            return
        self.send_at(
            wall,
            self.results(
                self.utt, " ".join(words[:shown]), end_s=self.t, is_final=False, speech_final=False
            ),
        )

    def end_utterance(self) -> None:
        utt = self.utt
        assert utt is not None
        self.utt = None
        utt.end_s = self.last_voiced_end_s
        utt.end_wall = self.last_voiced_wall
        text = "" if utt.finalized else utt.transcript
        self.send_at(
            utt.end_wall + self.s.final_delay_s,
            self.results(utt, text, end_s=utt.end_s, is_final=True, speech_final=self.endpointing),
        )
        if self.utterance_end_s is not None:
            self.utterance_end_task = asyncio.create_task(self.utterance_end(utt))

    async def utterance_end(self, utt: Utterance) -> None:
        # Sent once that much silence followed the last word; new speech cancels it.
        assert utt.end_wall is not None and self.utterance_end_s is not None
        await sleep_until(utt.end_wall + max(self.utterance_end_s, self.s.final_delay_s))
        self.send_at(
            time.monotonic(),
            {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(utt.end_s or 0, 3)},
        )

    def finalize(self, *, from_finalize: bool) -> None:
        """Finalize/CloseStream: return what the current utterance holds, now."""
        utt = self.utt
        if utt is None or utt.finalized:
            return
        utt.finalized = True
        self.send_at(
            time.monotonic() + self.s.finalize_delay_s,
            self.results(
                utt,
                utt.transcript,
                end_s=self.t,
                is_final=True,
                speech_final=False,
                from_finalize=from_finalize,
            ),
        )

    def metadata(self) -> dict[str, Any]:
        model_uuid = "00000000-0000-4000-8000-00000000f0a3"
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.conn.request_id,
            "sha256": self.audio_digest.hexdigest(),
            "created": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(self.conn.audio_seconds, 3),
            "channels": 1,
            "models": [model_uuid],
            "model_info": {model_uuid: MODEL_INFO},
        }

    # -- connection -----------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self.sender())
        try:
            await self.receive()
        finally:
            if self.utterance_end_task is not None:
                self.utterance_end_task.cancel()
            self.outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            if not self.ws.closed:
                await self.ws.close()

    async def receive(self) -> None:
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), self.s.idle_timeout_s)
            except TimeoutError:
                self.conn.close_reason = "idle_timeout"
                await self.drain()
                await self.ws.close(code=1011, message=b"NET-0001")
                return
            if msg.type == WSMsgType.BINARY:
                self.feed(msg.data, time.monotonic())
            elif msg.type == WSMsgType.TEXT:
                kind = self.control_type(msg.data)
                self.conn.control_messages.append(kind)
                if kind == "Finalize":
                    self.finalize(from_finalize=True)
                elif kind == "CloseStream":
                    self.conn.close_reason = "close_stream"
                    self.finalize(from_finalize=False)
                    self.send_at(time.monotonic(), self.metadata())
                    await self.drain()
                    await self.ws.close()
                    return
                elif kind != "KeepAlive":
                    self.conn.close_reason = f"bad_message:{kind}"
                    await self.drain()
                    await self.ws.close(code=1008, message=b"DATA-0000")
                    return
            else:
                self.conn.close_reason = self.conn.close_reason or "client_closed"
                return

    async def drain(self) -> None:
        """Wait until every message scheduled so far has been sent."""
        reached = asyncio.Event()
        self.outbox.put_nowait((time.monotonic(), reached))
        await reached.wait()

    @staticmethod
    def control_type(data: str) -> str:
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError:
            return "invalid-json"
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        return kind if isinstance(kind, str) else "untyped"
