"""Real speech audio made with espeak-ng, as 16-bit mono PCM at the rate a caller needs.

Used on both sides of the voice loop: the caller's voice fed into the agent, and the fake
OpenAI speech endpoint's answer. Synthesis is cached: tests and benchmarks say the same few
sentences many times, and espeak-ng's CPU time must not be charged to the agent.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import threading
import wave
from functools import lru_cache

import numpy as np
from livekit import rtc

# espeak-ng voices for the personas' languages.
ESPEAK_VOICES = {"fr": "fr", "en": "en"}
# espeak-ng pauses 150-400 ms at punctuation. A caller's line is said in one breath (the
# fake Deepgram gives one transcript per stretch of speech, as Deepgram's endpointing
# would cut at such a pause), so `flowing` speech drops the marks; the transcript the
# fake returns keeps them.
_PAUSE_MARKS = str.maketrans(dict.fromkeys(",;:.!?", " "))

_cache_lock = threading.Lock()


class SpeechSynthesisError(RuntimeError):
    pass


def _espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise SpeechSynthesisError("espeak-ng is not installed (scripts/bootstrap installs it)")
    return binary


def _espeak_command(text: str, language: str, words_per_minute: int, flowing: bool) -> list[str]:
    voice = ESPEAK_VOICES.get(language)
    if voice is None:
        raise SpeechSynthesisError(f"no espeak-ng voice for language {language!r}")
    spoken = " ".join((text.translate(_PAUSE_MARKS) if flowing else text).split())
    return [_espeak_binary(), "-v", voice, "-s", str(words_per_minute), "--stdout", spoken]


def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise SpeechSynthesisError("espeak-ng returned something other than 16-bit mono")
        rate = wav.getframerate()
        # espeak-ng writes a streaming header with a bogus frame count: read what is there.
        frames = wav.readframes(1 << 30)
    return np.frombuffer(frames, dtype=np.int16).copy(), rate


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample int16 mono audio with LiveKit's own resampler (the one the agent uses)."""
    if in_rate == out_rate or samples.size == 0:
        return samples.astype(np.int16, copy=True)
    resampler = rtc.AudioResampler(
        in_rate, out_rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
    )
    frame = rtc.AudioFrame(
        data=samples.astype(np.int16).tobytes(),
        sample_rate=in_rate,
        num_channels=1,
        samples_per_channel=samples.size,
    )
    chunks = [np.frombuffer(f.data, dtype=np.int16) for f in resampler.push(frame)]
    chunks += [np.frombuffer(f.data, dtype=np.int16) for f in resampler.flush()]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


@lru_cache(maxsize=256)
def _speech_cached(text: str, language: str, sample_rate: int, wpm: int, flowing: bool) -> bytes:
    result = subprocess.run(
        _espeak_command(text, language, wpm, flowing),
        capture_output=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0 or not result.stdout:
        raise SpeechSynthesisError(f"espeak-ng failed: {result.stderr.decode(errors='replace')}")
    samples, rate = _decode_wav(result.stdout)
    return resample(samples, rate, sample_rate).tobytes()


def speech(
    text: str,
    language: str,
    sample_rate: int,
    words_per_minute: int = 165,
    *,
    flowing: bool = False,
) -> np.ndarray:
    """`text` spoken in `language` as int16 mono samples at `sample_rate` (cached);
    `flowing`: without the pauses at punctuation."""
    with _cache_lock:
        data = _speech_cached(text, language, sample_rate, words_per_minute, flowing)
    return np.frombuffer(data, dtype=np.int16)


async def speech_async(
    text: str, language: str, sample_rate: int, words_per_minute: int = 165
) -> np.ndarray:
    """`speech` off the event loop: a fake server must keep answering while espeak-ng runs."""
    return await asyncio.to_thread(speech, text, language, sample_rate, words_per_minute)


def trim_silence(samples: np.ndarray, threshold: int = 200) -> np.ndarray:
    """Drop the leading and trailing silence espeak-ng adds (~300 ms at the end)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]
