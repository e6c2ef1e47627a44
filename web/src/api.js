// The token server's public API, and the translation of each refusal into a UI message key.

export class Refusal extends Error {
  // key: a strings.json key; params: the values of its {name} slots (wait in seconds is turned into words
  // by the caller, in the page's language).
  constructor(key, params = {}, { refreshList = false } = {}) {
    super(key);
    this.key = key;
    this.params = params;
    this.refreshList = refreshList;
  }
}

// fresh: revalidate instead of trusting the browser's cached copy (the list is cacheable for
// a few seconds, but after an unknown_agent refusal the cached list is the wrong one).
export async function fetchAgents({ fresh = false } = {}) {
  const response = await fetch('/api/agents', {
    cache: fresh ? 'no-cache' : 'default',
    headers: { Accept: 'application/json' },
  });
  if (!response.ok) throw new Error(`GET /api/agents answered ${response.status}`);
  const body = await response.json();
  if (!body || !Array.isArray(body.agents)) throw new Error('GET /api/agents: no agents list');
  return body.agents;
}

function retryAfterSeconds(response) {
  const value = response.headers.get('Retry-After');
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.round((when - Date.now()) / 1000));
}

const RATE_REASONS = new Set([
  'visitor_concurrent',
  'visitor_unjoined',
  'visitor_hourly',
  'visitor_daily',
  'visitor_minutes',
  // The visitor's wider network (its /56, /48 or /24) reached its share.
  'network_concurrent',
  'network_unjoined',
  'network_hourly',
  'network_daily',
]);

// Map an error answer to the message a visitor should read. The server's English `message`
// is not shown: the page speaks the visitor's language.
export function refusalFor(status, body, retryAfter) {
  const code = body && typeof body.error === 'string' ? body.error : '';
  const wait = retryAfter ?? 0;
  if (status === 429 || code === 'rate_limited') {
    const reason = body && typeof body.reason === 'string' ? body.reason : '';
    const key = RATE_REASONS.has(reason) ? `rate_limited_${reason}` : 'rate_limited';
    return new Refusal(key, { wait });
  }
  if (code === 'capacity') {
    return retryAfter ? new Refusal('capacity', { wait }) : new Refusal('capacity_no_wait');
  }
  if (code === 'blocked') return new Refusal('blocked');
  if (code === 'origin_not_allowed') return new Refusal('origin_not_allowed');
  if (code === 'unknown_agent') return new Refusal('unknown_agent', {}, { refreshList: true });
  if (code === 'unavailable' || status === 503) return new Refusal('unavailable');
  return new Refusal('server_error', { status });
}

// A JSON POST to the token server: {status, body (null when not JSON), retryAfter (seconds or
// null)}. A request that never reached the server throws Refusal(unreachable).
async function postJson(path, payload, unreachable) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(payload),
    });
  } catch {
    throw new Refusal(unreachable);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, body, retryAfter: retryAfterSeconds(response) };
}

export async function requestToken(agentId) {
  const { status, body, retryAfter } = await postJson('/api/token', { agent: agentId }, 'server_unreachable');
  if (status === 201 && body && body.server_url && body.participant_token) {
    return body;
  }
  throw refusalFor(status, body, retryAfter);
}

export const GIVE_BACK_PATH = '/api/token/release';

// The request that gives an unused token back (the token server releases a session no agent
// has taken yet, so "Call again" is admitted at once), or null when the grant holds no
// release secret. keepalive: the request is still sent when the page is being closed.
export function giveBackRequest(grant) {
  if (!grant || typeof grant.session_id !== 'string' || typeof grant.release_secret !== 'string') {
    return null;
  }
  return {
    url: GIVE_BACK_PATH,
    init: {
      method: 'POST',
      keepalive: true,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ session_id: grant.session_id, release_secret: grant.release_secret }),
    },
  };
}

// Never rejects: a token that could not be given back frees itself when its join window ends.
// Answers true when the server released the session now.
export async function giveBack(grant) {
  const request = giveBackRequest(grant);
  if (!request) return false;
  try {
    const response = await fetch(request.url, request.init);
    return response.status === 200;
  } catch {
    return false;
  }
}

// POST /api/requests: the sales request form. Answers {status, body, retryAfter}; a request
// that never reached the server throws Refusal('request_unreachable') (nothing was saved).
export function sendRequest(payload) {
  return postJson('/api/requests', payload, 'request_unreachable');
}
