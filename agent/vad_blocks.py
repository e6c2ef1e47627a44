"""Silero VAD fed the caller's audio in blocks rather than frame by frame.

The caller's audio arrives in small frames (turns.input_frame_ms) so that Deepgram hears
the end of speech early. Silero does not need them small: it runs its model on fixed
32 ms windows, once per window however the audio is cut. Fed small frames, it wakes for
every frame and runs each window alone, with the model's weights gone from the CPU caches
since the previous one, which costs several times the CPU of windows run back to back.
Fed blocks of turns.vad_block_ms, it wakes once per block and runs that block's windows
together, so a silent line costs the agent less CPU (figures, with their date and commit:
docs/benchmarks.md; bench/concurrency.py, listening table).

What it costs: the VAD hears the audio up to one block later. Its end of speech comes
after Silero's min_silence_duration anyway and is hidden behind preemptive generation
(the LLM and TTS start on Deepgram's final, not on the VAD); its start of speech
(barge-in) comes up to a block later, well inside turns.min_interruption_s.
"""

from __future__ import annotations

from typing import cast

from livekit import rtc
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model
from livekit.plugins.silero import vad as silero_vad


class BlockedSileroVAD(silero.VAD):
    """silero.VAD whose streams take their audio in blocks of `block_ms` (0: as it comes)."""

    block_ms: int = 0

    @classmethod
    def load_in_blocks(cls, block_ms: int) -> BlockedSileroVAD:
        if block_ms < 0:
            raise ValueError("block_ms must be >= 0")
        vad = cast(BlockedSileroVAD, cls.load())  # load() builds a `cls`
        vad.block_ms = block_ms
        return vad

    def stream(self) -> silero_vad.VADStream:
        if self.block_ms <= 0:
            return super().stream()
        model = onnx_model.OnnxModel(
            onnx_session=self._onnx_session, sample_rate=self._opts.sample_rate
        )
        stream = _BlockStream(self, self._opts, model, block_ms=self.block_ms)
        self._streams.add(stream)
        return stream


class _BlockStream(silero_vad.VADStream):
    def __init__(
        self,
        vad: BlockedSileroVAD,
        opts: silero_vad._VADOptions,
        model: onnx_model.OnnxModel,
        *,
        block_ms: int,
    ) -> None:
        super().__init__(vad, opts, model)
        self._block_ms = block_ms
        self._pending: list[rtc.AudioFrame] = []
        self._pending_samples = 0

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._check_input_not_ended()
        self._check_not_closed()
        self._pending.append(frame)
        self._pending_samples += frame.samples_per_channel
        if self._pending_samples * 1000 >= self._block_ms * frame.sample_rate:
            self._push_pending()

    def flush(self) -> None:
        # a segment boundary: what is held back belongs to the segment being closed
        self._push_pending()
        super().flush()

    def _push_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_samples = self._pending, [], 0
        block = pending[0] if len(pending) == 1 else rtc.combine_audio_frames(pending)
        super().push_frame(block)
