"""Deepgram streaming STT that sends the caller's audio as soon as it arrives.

livekit-plugins-deepgram 1.8.9 re-cuts the audio into fixed 50 ms chunks before sending
it. With RoomIO delivering smaller frames (turns.input_frame_ms), the end of the caller's
speech then waits up to a whole chunk in that buffer before Deepgram can hear the silence
that ends the utterance, and every turn's final transcript (what preemptive generation
starts the LLM on) is late by as much. bench/voice_latency.py measures it ("audio end at
Deepgram"; the figures, with their date and commit, are in docs/benchmarks.md).

`SpeechStream._run` below is the plugin's own (1.8.9) with one change in `send_task`: each
frame is sent as it was received, with no re-chunking. Deepgram accepts any chunk size.
Everything else (keepalive, reconnection, Finalize on flush, CloseStream, the billing
remainder) is unchanged; tests/voice/test_deepgram_stream.py pins the plugin version this was
copied from, so an upgrade makes us look again.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.plugins import deepgram
from livekit.plugins.deepgram import stt as deepgram_stt
from livekit.plugins.deepgram.log import logger

# The plugin version `_PromptSpeechStream._run` was copied from.
PLUGIN_VERSION = "1.8.9"


class PromptDeepgramSTT(deepgram.STT):
    """deepgram.STT whose streams send each audio frame as it arrives."""

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> deepgram_stt.SpeechStream:
        config = self._sanitize_options(language=language)
        stream = _PromptSpeechStream(
            stt=self,
            conn_options=conn_options,
            opts=config,
            api_key=self._api_key,
            http_session=self._ensure_session(),
            base_url=self._opts.endpoint_url,
        )
        self._streams.add(stream)
        return stream


class _PromptSpeechStream(deepgram_stt.SpeechStream):
    async def _run(self) -> None:
        closing_ws = False

        async def keepalive_task(ws: aiohttp.ClientWebSocketResponse) -> None:
            # Deepgram closes a stream that gets neither audio nor KeepAlive for 10 s
            nonlocal closing_ws
            try:
                while True:
                    await ws.send_str(deepgram_stt.SpeechStream._KEEPALIVE_MSG)
                    await asyncio.sleep(5)
            except (aiohttp.ClientError, ConnectionError) as e:
                if closing_ws or self._session.closed:
                    return
                raise APIConnectionError("deepgram connection closed unexpectedly") from e
            except Exception as e:
                logger.warning(f"Deepgram keepalive task exited: {e}")
                return

        @utils.log_exceptions(logger=logger)
        async def send_task(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal closing_ws
            try:
                async for data in self._input_ch:
                    if isinstance(data, rtc.AudioFrame):
                        # the one change: the frame goes out as it came (see module doc)
                        self._audio_duration_collector.push(data.duration)
                        await ws.send_bytes(data.data.tobytes())
                    elif isinstance(data, self._FlushSentinel):
                        self._audio_duration_collector.flush()
                        await ws.send_str(deepgram_stt.SpeechStream._FINALIZE_MSG)

                closing_ws = True
                await ws.send_str(deepgram_stt.SpeechStream._CLOSE_MSG)
            except (aiohttp.ClientError, ConnectionError) as e:
                if closing_ws or self._session.closed:
                    return
                raise APIConnectionError("deepgram connection closed unexpectedly") from e

        @utils.log_exceptions(logger=logger)
        async def recv_task(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal closing_ws
            while True:
                msg = await ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    if closing_ws or self._session.closed:
                        return
                    # a close nobody asked for: _run reconnects
                    raise APIStatusError(
                        message="deepgram connection closed unexpectedly",
                        status_code=ws.close_code or -1,
                        body=f"{msg.data=} {msg.extra=}",
                    )

                if msg.type == aiohttp.WSMsgType.ERROR:
                    if closing_ws or self._session.closed:
                        return
                    raise APIConnectionError("deepgram connection lost") from ws.exception()

                if msg.type != aiohttp.WSMsgType.TEXT:
                    logger.warning("unexpected deepgram message type %s", msg.type)
                    continue

                try:
                    self._process_stream_event(json.loads(msg.data))
                except Exception:
                    logger.exception("failed to process deepgram message")

        ws: aiohttp.ClientWebSocketResponse | None = None

        while True:
            conn_start_time = 0.0
            try:
                ws = await self._connect_ws()
                conn_start_time = time.perf_counter()
                tasks = [
                    asyncio.create_task(send_task(ws)),
                    asyncio.create_task(recv_task(ws)),
                    asyncio.create_task(keepalive_task(ws)),
                ]
                tasks_group = asyncio.gather(*tasks)
                wait_reconnect_task = asyncio.create_task(self._reconnect_event.wait())
                try:
                    done, _ = await asyncio.wait(
                        (tasks_group, wait_reconnect_task),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for task in done:
                        if task != wait_reconnect_task:
                            task.result()

                    if wait_reconnect_task not in done:
                        break

                    self._reconnect_event.clear()
                finally:
                    await utils.aio.gracefully_cancel(*tasks, wait_reconnect_task)
                    tasks_group.cancel()
                    tasks_group.exception()  # retrieve the exception
            finally:
                if ws is not None:
                    await ws.close()
                    # Deepgram bills the websocket's lifetime, not only the audio sent
                    if conn_start_time:
                        self._audio_duration_collector.flush()
                        lifetime = time.perf_counter() - conn_start_time
                        remainder = lifetime - self._reported_duration
                        if remainder > 0:
                            self._on_audio_duration_report(remainder)
                        self._reported_duration = 0.0
