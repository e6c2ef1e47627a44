"""A local OpenAI speech endpoint (`POST /v1/audio/speech`) answering with real speech.

The audio is espeak-ng saying the requested text, at 24 kHz 16-bit mono (what OpenAI's
`pcm` is and what the livekit plugin declares), encoded in the requested
`response_format` (pcm, wav, mp3, opus, aac, flac). With `stream_format="sse"` (the plugin's
choice for gpt-4o-mini-tts) it streams `speech.audio.delta` events with base64 audio, then
`speech.audio.done` with the usage, as OpenAI does; otherwise the raw audio bytes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
from dataclasses import dataclass
from typing import Any, cast

import av
import numpy as np
from aiohttp import web
from av.audio.stream import AudioStream

from tests.fakes.clock import sleep_until
from tests.fakes.speech_audio import speech_async

SAMPLE_RATE = 24000
CONTENT_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
# PyAV container and codec for each compressed format.
_ENCODERS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}
MAX_INPUT_CHARS = 4096


@dataclass
class SpeechSettings:
    time_to_first_byte_s: float = 0.0
    chunk_s: float = 0.1  # audio per streamed chunk
    realtime_factor: float = 0.0  # chunks sent this many times faster than real time; 0: burst
    language: str = "en"  # espeak-ng voice used for every request
    # espeak-ng's speaking rate at speed 1.0; tests raise it so agent turns play quicker
    words_per_minute: int = 165


@dataclass
class SpeechRequest:
    body: dict[str, Any]
    authorization: str | None
    received_wall: float
    first_byte_wall: float | None = None
    audio_seconds: float = 0.0
    client_closed: bool = False

    @property
    def text(self) -> str:
        return str(self.body.get("input", ""))


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        },
        status=status,
    )


def _wav_header(sample_rate: int) -> bytes:
    # a streamed WAV: sizes unknown up front, so set to the maximum as OpenAI does
    data_size = 0xFFFFFFFF - 36
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def encode(samples: np.ndarray, response_format: str) -> bytes:
    """int16 mono 24 kHz samples in `response_format`."""
    if response_format == "pcm":
        return samples.tobytes()
    if response_format == "wav":
        return _wav_header(SAMPLE_RATE) + samples.tobytes()
    container_name, codec = _ENCODERS[response_format]
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_name) as container:
        rate = 48000 if codec == "libopus" else SAMPLE_RATE
        stream = cast(AudioStream, container.add_stream(codec, rate=rate))
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        resampler = av.AudioResampler(
            format=stream.format.name,
            layout="mono",
            rate=rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


class OpenAISpeechFake:
    def __init__(self, settings: SpeechSettings | None = None) -> None:
        self.settings = settings or SpeechSettings()
        self.requests: list[SpeechRequest] = []
        self._encoded: dict[tuple[str, str, str, float], bytes] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        auth = request.headers.get("Authorization")
        if not auth or not auth.startswith("Bearer ") or len(auth) < 12:
            return web.json_response(
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        for name in ("model", "input", "voice"):
            if not isinstance(body.get(name), str) or not body[name]:
                return _error(400, f"Missing required parameter: '{name}'.", param=name)
        if len(body["input"]) > MAX_INPUT_CHARS:
            return _error(400, f"input is longer than {MAX_INPUT_CHARS} characters", "input")
        response_format = body.get("response_format", "mp3")
        if response_format not in CONTENT_TYPES:
            return _error(400, f"Invalid response_format {response_format!r}", "response_format")
        speed = float(body.get("speed", 1.0))
        if not 0.25 <= speed <= 4.0:
            return _error(400, "speed must be between 0.25 and 4.0", "speed")
        stream_format = body.get("stream_format", "audio")
        if stream_format == "sse" and body["model"] in ("tts-1", "tts-1-hd"):
            return _error(
                400, "stream_format 'sse' is not supported for this model", "stream_format"
            )

        record = SpeechRequest(body=body, authorization=auth, received_wall=received)
        self.requests.append(record)
        language = self.settings.language
        samples = await speech_async(
            body["input"], language, SAMPLE_RATE, int(self.settings.words_per_minute * speed)
        )
        record.audio_seconds = samples.size / SAMPLE_RATE
        key = (body["input"], language, response_format, speed)
        if key not in self._encoded:
            self._encoded[key] = await asyncio.to_thread(encode, samples, response_format)
        audio = self._encoded[key]

        # the chunk size that carries `chunk_s` of audio in this format
        per_second = len(audio) / max(record.audio_seconds, 1e-3)
        chunk_bytes = max(64, int(per_second * self.settings.chunk_s))
        if response_format in ("pcm", "wav"):
            chunk_bytes -= chunk_bytes % 2
        chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]

        sse = stream_format == "sse"
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream" if sse else CONTENT_TYPES[response_format],
                "x-request-id": f"req_{int(received * 1e6):x}",
            }
        )
        try:
            await self._send(request, response, record, chunks, sse)
        except ConnectionResetError:
            # the agent stopped listening (an interrupted or cancelled speech)
            record.client_closed = True
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: SpeechRequest,
        chunks: list[bytes],
        sse: bool,
    ) -> None:
        body = record.body
        received = record.received_wall
        await response.prepare(request)
        due = received + self.settings.time_to_first_byte_s
        await sleep_until(due)
        gap = (
            self.settings.chunk_s / self.settings.realtime_factor
            if self.settings.realtime_factor > 0
            else 0.0
        )
        for index, chunk in enumerate(chunks):
            if index and gap:
                due += gap
                await sleep_until(due)
            if sse:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
                payload = f"data: {json.dumps(event)}\n\n".encode()
            else:
                payload = chunk
            await response.write(payload)
            if record.first_byte_wall is None:
                record.first_byte_wall = time.monotonic()
        if sse:
            input_tokens = max(1, len(body["input"]) // 4)
            output_tokens = int(record.audio_seconds * 50)
            done = {
                "type": "speech.audio.done",
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
            await response.write(f"data: {json.dumps(done)}\n\n".encode())
        await response.write_eof()
