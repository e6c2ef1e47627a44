// What the agent worker tells the page through LiveKit: its state, why it ended the call,
// the transcript topic, the reply latency and the end-of-call recap (docs/agent.md, "What the
// page receives"). Plain data and functions (no livekit-client) so node can test them.

// The agent worker sets this participant attribute before it leaves the room, so the page
// can say why the call ended (see README, "Demo page": the end-reason contract).
export const END_REASON_ATTRIBUTE = 'ocf.end_reason';
export const AGENT_STATE_ATTRIBUTE = 'lk.agent.state';
export const TRANSCRIPTION_TOPIC = 'lk.transcription';
// One JSON object each, sent by the agent to this visitor alone.
export const LATENCY_TOPIC = 'ocf.latency';
export const RECAP_TOPIC = 'ocf.recap';
// The version of both messages this page understands; another one is ignored.
const SIGNAL_VERSION = 1;

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

function versioned(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!value || typeof value !== 'object' || value.v !== SIGNAL_VERSION) return null;
  return value;
}

// `{"v": 1, "seconds": 0.873}` -> 0.873; null for anything this page cannot show.
export function parseLatency(text) {
  const value = versioned(text);
  if (!value) return null;
  const seconds = value.seconds;
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

// The recap: what the agent did, each item a ready sentence in the call's language. Items of
// a type the page does not know are shown by their text too; an item without text is not
// shown. Null when there is nothing to show (no items, or a version this page does not know).
export function parseRecap(text) {
  const value = versioned(text);
  if (!value || !Array.isArray(value.items)) return null;
  const items = value.items
    .filter((item) => item && typeof item === 'object' && typeof item.text === 'string')
    .map((item) => ({ type: typeof item.type === 'string' ? item.type : '', text: item.text.trim() }))
    .filter((item) => item.text);
  if (items.length === 0) return null;
  return {
    lang: typeof value.lang === 'string' ? value.lang : '',
    endReason: typeof value.end_reason === 'string' ? value.end_reason : '',
    items,
  };
}

// The message the visitor may choose to start their request with: the recap, one line per item.
export function recapAsMessage(recap, intro) {
  return [intro, ...recap.items.map((item) => `- ${item.text}`)].join('\n');
}
