"""The demo page in a call through the real LiveKit server: Chromium's fake microphone
playing a caller's lines (espeak-ng speech in a WAV file), and what the page instruments
in the browser to prove the call really happened over WebRTC:

- the agent's voice: the RMS level of the remote audio track, sampled every 50 ms through
  Web Audio from the very MediaStream the page plays (not a DOM change);
- the agent states the page showed, in order;
- every ICE candidate of every peer connection, and the pairs in use, so a test fails if
  anything but 127.0.0.0/8 was offered or used.
"""

from __future__ import annotations

import ipaddress
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from playwright.sync_api import Browser, Page, Playwright

from tests.fakes.speech_audio import speech, trim_silence
from tests.web.support import BASE_ARGS, CHROMIUM

RATE = 48000

INSTRUMENT = """
(() => {
  const ocf = (window.__ocf = { states: [], levels: [], candidates: [], pairs: [], pcs: [] });
  const Native = window.RTCPeerConnection;
  class Recorded extends Native {
    constructor(...args) {
      super(...args);
      ocf.pcs.push(this);
      this.addEventListener('icecandidate', (e) => {
        const line = e.candidate && e.candidate.candidate;
        if (line) ocf.candidates.push(['local', line]);
      });
    }
    async setRemoteDescription(desc) {
      for (const line of ((desc && desc.sdp) || '').split(/\\r?\\n/)) {
        if (line.startsWith('a=candidate:')) ocf.candidates.push(['remote', line.slice(2)]);
      }
      return super.setRemoteDescription(desc);
    }
    async addIceCandidate(candidate) {
      if (candidate && candidate.candidate) ocf.candidates.push(['remote', candidate.candidate]);
      return super.addIceCandidate(candidate);
    }
  }
  window.RTCPeerConnection = Recorded;

  // The pairs actually in use (polled: they are gone once the call's connections close).
  setInterval(async () => {
    for (const pc of ocf.pcs) {
      if (pc.connectionState === 'closed') continue;
      try {
        const stats = await pc.getStats();
        const byId = new Map();
        stats.forEach((s) => byId.set(s.id, s));
        stats.forEach((s) => {
          if (s.type !== 'candidate-pair' || s.state !== 'succeeded') return;
          const local = byId.get(s.localCandidateId) || {};
          const remote = byId.get(s.remoteCandidateId) || {};
          ocf.pairs.push([local.address || local.ip, remote.address || remote.ip]);
        });
      } catch (e) { /* closing */ }
    }
  }, 500);

  let audio = null;
  const watchAudio = (element) => {
    if (!element.srcObject) return;
    audio = audio || new AudioContext();
    const source = audio.createMediaStreamSource(element.srcObject);
    const analyser = audio.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    const buffer = new Float32Array(analyser.fftSize);
    setInterval(() => {
      analyser.getFloatTimeDomainData(buffer);
      let sum = 0;
      for (const v of buffer) sum += v * v;
      ocf.levels.push([Date.now(), Math.sqrt(sum / buffer.length)]);
    }, 50);
  };

  document.addEventListener('DOMContentLoaded', () => {
    const state = document.getElementById('agent-state');
    new MutationObserver(() => {
      const value = state.dataset.state;
      if (ocf.states[ocf.states.length - 1] !== value) ocf.states.push(value);
    }).observe(state, { attributes: true, attributeFilter: ['data-state'] });
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) {
          if (node.nodeName === 'AUDIO' && 'agentAudio' in node.dataset) watchAudio(node);
        }
      }
    }).observe(document.body, { childList: true });
  });
})();
"""


@dataclass(frozen=True)
class CallerLine:
    """The caller says `text` `at_s` seconds after the microphone opens."""

    at_s: float
    text: str


def caller_wav(path: Path, lines: list[CallerLine], language: str, total_s: float) -> Path:
    """A mono 16-bit WAV of the caller's lines at their times, silence between them (what
    Chromium's --use-file-for-fake-audio-capture plays from the moment the page opens the
    microphone)."""
    audio = np.zeros(int(total_s * RATE), dtype=np.int16)
    for line in lines:
        start = int(line.at_s * RATE)
        spoken = trim_silence(speech(line.text, language, RATE, flowing=True))
        if start + spoken.size > audio.size:
            raise ValueError(f"line at {line.at_s} s does not fit in {total_s} s")
        audio[start : start + spoken.size] = spoken
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(audio.tobytes())
    return path


def launch_with_microphone(playwright: Playwright, wav: Path) -> Browser:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            *BASE_ARGS,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            # %noloop: the caller says each line once.
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )


def instrumented(page: Page) -> Page:
    page.add_init_script(INSTRUMENT)
    return page


def measures(page: Page) -> dict[str, Any]:
    data: dict[str, Any] = page.evaluate(
        "() => ({states: __ocf.states, levels: __ocf.levels, candidates: __ocf.candidates,"
        " pairs: __ocf.pairs})"
    )
    return data


_CANDIDATE_ADDRESS = re.compile(r"candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ")


def candidate_addresses(candidates: list[list[str]]) -> list[str]:
    found = []
    for _side, line in candidates:
        match = _CANDIDATE_ADDRESS.search(line)
        if match is None:
            raise AssertionError(f"unreadable ICE candidate: {line}")
        found.append(match.group(1))
    return found


def off_loopback(addresses: list[str]) -> list[str]:
    """Addresses that are not in 127.0.0.0/8 (an mDNS name or anything else counts)."""
    bad = []
    for address in addresses:
        try:
            if ipaddress.ip_address(address).version == 4 and ipaddress.ip_address(
                address
            ) in ipaddress.ip_network("127.0.0.0/8"):
                continue
        except ValueError:
            pass
        bad.append(address)
    return bad
