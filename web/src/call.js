// One demo call: a LiveKit room joined with the token server's token, the visitor's
// microphone published, the agent's voice played, its state, transcript, reply latency and
// end-of-call recap reported. Every way the call can end goes through finish(), exactly once.
import { DisconnectReason, LocalAudioTrack, Room, RoomEvent, Track } from 'livekit-client';

import {
  AGENT_STATE_ATTRIBUTE,
  END_REASON_ATTRIBUTE,
  LATENCY_TOPIC,
  RECAP_TOPIC,
  TRANSCRIPTION_TOPIC,
  endMessageFor,
  parseLatency,
  parseRecap,
  uiAgentState,
} from './agent_signals.js';

/**
 * The visitor's microphone (granted by the page's own getUserMedia, so its permission
 * messages stay the page's), recording from now into livekit-client's pre-connect buffer:
 * what the visitor says before the agent has joined is sent to the agent once it is there
 * (the `lk.agent.pre-connect-audio-buffer` byte stream; the worker hears it before greeting).
 * The recording stops when the agent subscribes, or after livekit-client's 10 s.
 */
export function recordingMicrophone(mediaStreamTrack, constraints) {
  const microphone = new LocalAudioTrack(mediaStreamTrack, constraints, true);
  microphone.startPreConnectBuffer();
  return microphone;
}

// Stops the microphone and its recording, whether or not it was ever published.
export function releaseMicrophone(microphone) {
  microphone.stopPreConnectBuffer();
  microphone.stop();
}

export class CallSession {
  /**
   * @param {object} options
   * @param {LocalAudioTrack} options.microphone from recordingMicrophone()
   * @param {object} options.grant the token server's answer (server_url, participant_token, max_duration_s)
   * @param {object} options.timeouts connect_timeout_s, agent_join_timeout_s, end_grace_s
   * @param {object} options.on callbacks: step, agentState, transcript, latency, recap, tick,
   *   audioBlocked, ended
   */
  constructor({ microphone, grant, timeouts, on }) {
    this.microphone = microphone;
    this.grant = grant;
    this.timeouts = timeouts;
    this.on = on;
    this.room = new Room({
      adaptiveStream: false,
      dynacast: false,
      disconnectOnPageLeave: true,
      // Two peer connections (one to publish, one to receive), not livekit-client 2.23's
      // default single one. With a single one, Chromium and Safari send the first offer with
      // the join request and set it locally only when the answer comes; the renegotiation
      // room.connect() itself asks for can start in that gap, and its offer (made before the
      // answer rejected the unused video sections) then fails to apply: "Transceiver not found
      // based on m-line index", and the call dies right after connecting (docs/demo-page.md).
      singlePeerConnection: false,
    });
    this.agent = null;
    this.agentEndReason = null;
    this.finished = false;
    this.connected = false;
    this.userEnded = false;
    this.timers = [];
    this.micPublication = null;
  }

  // Never rejects: every failure ends the call through finish() and on.ended.
  async start() {
    this.listen();
    this.on.step('connecting');
    const connectTimeoutMs = this.timeouts.connect_timeout_s * 1000;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('connect timeout')), connectTimeoutMs);
    });
    try {
      await Promise.race([
        this.room.connect(this.grant.server_url, this.grant.participant_token, {
          autoSubscribe: true,
          maxRetries: 1,
        }),
        timeout,
      ]);
      // Its pre-connect recording makes livekit-client publish it with the
      // TF_PRECONNECT_BUFFER feature and send the recording to the agent when it is active.
      this.micPublication = await this.room.localParticipant.publishTrack(this.microphone, {
        source: Track.Source.Microphone,
        name: 'microphone',
      });
    } catch (error) {
      // Finished already: the visitor cancelled while we were connecting.
      this.finish('livekit_unreachable', { asError: true, cause: error });
      return;
    } finally {
      clearTimeout(timer);
    }
    if (this.finished) return;
    this.connected = true;
    for (const participant of this.room.remoteParticipants.values()) {
      if (participant.isAgent) this.onAgentJoined(participant);
    }
    if (!this.agent) {
      this.on.step('waiting_agent');
      const seconds = this.timeouts.agent_join_timeout_s;
      this.later(seconds, () => {
        if (!this.agent) this.finish('agent_no_show', { asError: true, params: { seconds } });
      });
    }
  }

  listen() {
    const room = this.room;
    room
      .on(RoomEvent.ParticipantConnected, (participant) => {
        if (participant.isAgent && !this.agent) this.onAgentJoined(participant);
      })
      .on(RoomEvent.ParticipantAttributesChanged, (changed, participant) => {
        if (participant !== this.agent) return;
        if (AGENT_STATE_ATTRIBUTE in changed) {
          this.on.agentState(uiAgentState(changed[AGENT_STATE_ATTRIBUTE]));
        }
        if (END_REASON_ATTRIBUTE in changed) this.agentEndReason = changed[END_REASON_ATTRIBUTE];
      })
      .on(RoomEvent.ParticipantDisconnected, (participant) => {
        if (participant !== this.agent) return;
        const reason = this.agentEndReason || participant.attributes[END_REASON_ATTRIBUTE];
        this.finish(endMessageFor(reason) || 'call_ended_agent_left');
      })
      .on(RoomEvent.TrackSubscribed, (track, _publication, participant) => {
        if (track.kind !== Track.Kind.Audio || !participant.isAgent) return;
        const element = track.attach();
        element.dataset.agentAudio = '';
        document.body.appendChild(element);
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        for (const element of track.detach()) element.remove();
      })
      .on(RoomEvent.Reconnecting, () => {
        if (this.connected && !this.finished) this.on.step('reconnecting');
      })
      .on(RoomEvent.Reconnected, () => {
        if (this.connected && !this.finished) this.on.step(this.agent ? 'in_call' : 'waiting_agent');
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        this.on.audioBlocked(!room.canPlaybackAudio);
      })
      .on(RoomEvent.Disconnected, (reason) => {
        // Before connect() resolved, its rejection reports the failure instead.
        if (this.finished || !this.connected) return;
        const agentReason =
          this.agentEndReason || (this.agent && this.agent.attributes[END_REASON_ATTRIBUTE]);
        if (endMessageFor(agentReason)) this.finish(endMessageFor(agentReason));
        else if (reason === DisconnectReason.ROOM_DELETED) this.finish('call_ended_agent_left');
        else this.finish('call_ended_connection_lost', { asError: true });
      });
    room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, sender) => {
      this.readTranscript(reader, sender.identity).catch((error) => {
        // A broken stream loses one transcript line, never the call.
        console.warn('transcript stream failed', error);
      });
    });
    room.registerTextStreamHandler(LATENCY_TOPIC, (reader, sender) => {
      this.readSignal(reader, sender, parseLatency, (seconds) => {
        if (!this.finished) this.on.latency(seconds);
      });
    });
    // Kept until the room is gone (finish() does not unregister it): the recap comes just
    // before the agent leaves, and may still be read while the call is ending.
    room.registerTextStreamHandler(RECAP_TOPIC, (reader, sender) => {
      this.readSignal(reader, sender, parseRecap, (recap) => this.on.recap(recap));
    });
  }

  // One JSON message from the agent (never from anyone else), parsed; a broken or unknown
  // one is dropped without a word: it only ever adds to the page.
  readSignal(reader, sender, parse, deliver) {
    if (!this.agent || sender.identity !== this.agent.identity) return;
    reader
      .readAll()
      .then((text) => {
        const value = parse(text);
        if (value !== null) deliver(value);
      })
      .catch((error) => console.warn(`${reader.info.topic} stream failed`, error));
  }

  // An agent took the call: the session is claimed, its token is no longer ours to give back.
  get agentJoined() {
    return this.agent !== null;
  }

  onAgentJoined(participant) {
    this.agent = participant;
    this.on.agentState(uiAgentState(participant.attributes[AGENT_STATE_ATTRIBUTE]));
    this.on.step('in_call');
    this.startCountdown();
  }

  // The worker counts the maximum duration from its own start, which is when it joins.
  startCountdown() {
    const deadline = Date.now() + this.grant.max_duration_s * 1000;
    const tick = () => {
      const left = (deadline - Date.now()) / 1000;
      this.on.tick(Math.max(0, left));
      if (left <= 0) {
        // The agent says goodbye and leaves by itself; if it does not, hang up for it.
        this.later(this.timeouts.end_grace_s, () => this.finish('call_ended_time_up'));
        return;
      }
      this.timers.push(setTimeout(tick, 250));
    };
    tick();
  }

  async readTranscript(reader, identity) {
    const attributes = reader.info.attributes || {};
    const segment = attributes['lk.segment_id'] || reader.info.id;
    const speaker = identity === this.room.localParticipant.identity ? 'you' : 'agent';
    // Interim user transcripts arrive as new streams for the same segment, each with the
    // whole text so far; the agent's speech is one stream of deltas. Reset, then append,
    // covers both.
    this.on.transcript({ segment, speaker, text: '', reset: true });
    for await (const delta of reader) {
      if (this.finished) return;
      this.on.transcript({ segment, speaker, text: delta, reset: false });
    }
  }

  setMuted(muted) {
    const track = this.micPublication && this.micPublication.track;
    if (!track) return Promise.resolve();
    return muted ? track.mute() : track.unmute();
  }

  startAudio() {
    return this.room.startAudio();
  }

  hangUp() {
    this.userEnded = true;
    this.finish('call_ended_user');
  }

  later(seconds, action) {
    this.timers.push(setTimeout(action, seconds * 1000));
  }

  finish(key, { asError = false, params = {}, cause = null } = {}) {
    if (this.finished) return;
    this.finished = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
    this.room.unregisterTextStreamHandler(TRANSCRIPTION_TOPIC);
    this.room.unregisterTextStreamHandler(LATENCY_TOPIC);
    for (const element of document.querySelectorAll('audio[data-agent-audio]')) element.remove();
    releaseMicrophone(this.microphone);
    // disconnect() never rejects in practice, but a rejection here must not go unhandled.
    this.room.disconnect(true).catch((error) => console.warn('disconnect failed', error));
    if (cause) console.warn('call failed', cause);
    this.on.ended({ key, params, asError });
  }
}
