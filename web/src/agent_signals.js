// What the agent worker tells the page through LiveKit: its state, why it ended the call,
// and the transcript topic. Plain data and functions (no livekit-client) so node can test them.

// The agent worker sets this participant attribute before it leaves the room, so the page
// can say why the call ended (see README, "Demo page": the end-reason contract).
export const END_REASON_ATTRIBUTE = 'ocf.end_reason';
export const AGENT_STATE_ATTRIBUTE = 'lk.agent.state';
export const TRANSCRIPTION_TOPIC = 'lk.transcription';

const END_REASON_MESSAGES = {
  end_call: 'call_ended_end_call',
  max_duration: 'call_ended_max_duration',
  silence: 'call_ended_silence',
  error: 'call_ended_error',
  shutdown: 'call_ended_shutdown',
  user_hangup: 'call_ended_user',
};

// livekit-agents' AgentState values, folded into the four states the page shows.
const AGENT_STATES = {
  initializing: 'connecting',
  idle: 'listening',
  listening: 'listening',
  thinking: 'thinking',
  speaking: 'speaking',
};

export function endMessageFor(reason) {
  return END_REASON_MESSAGES[reason] || null;
}

export function uiAgentState(raw) {
  return AGENT_STATES[raw] || 'connecting';
}
