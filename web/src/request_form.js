// The sales request form's rules, the same as the server's (sales/form.py, bounds from
// policies/requests.yaml handed to the page in its config): each field checked in the same
// order, every problem named by the server's message key, so the page words both its own
// findings and the server's `fields` answer from strings.json. Plain functions, tested by node.

// The form's fields in the order they are shown (the first one with a problem gets the focus).
export const FIELDS = ['name', 'email', 'phone', 'company', 'message', 'language'];
const TEXT_FIELDS = new Set(['name', 'email', 'phone', 'company', 'message']);

// What Python's str.strip() removes (its whitespace, not JavaScript's: \x1c-\x1f and \x85
// are spaces there, U+FEFF is not).
const SPACE = '[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const EDGE_SPACES = new RegExp(`^${SPACE}+|${SPACE}+$`, 'g');
// Control characters and line or paragraph separators: allowed in the message (as \n, \t) only.
const LINE_BREAK = /[\p{Cc}\u2028\u2029]/u;

const ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const LABEL = '(?!-)[A-Za-z0-9-]{1,63}(?<!-)';
const TLD = '(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})';
const EMAIL = new RegExp(`^${ATOM}(?:\\.${ATOM})*@(?:${LABEL}\\.)+${TLD}$`);
const PHONE = /^\+?[0-9 ().-]+$/;
const PHONE_DIGITS = [6, 15]; // E.164 numbers have at most 15 digits

class Problem extends Error {
  constructor(key, params = {}) {
    super(key);
    this.key = key;
    this.params = params;
  }
}

// Characters as the server counts them (code points, not UTF-16 units).
function length(text) {
  return [...text].length;
}

// An international domain is checked as the ASCII form a mail server would use
// (the browser's URL parser does the IDNA conversion).
function asciiDomain(domain) {
  if (/^[\x00-\x7f]*$/.test(domain)) return domain;
  try {
    return new URL(`http://${domain}/`).hostname;
  } catch {
    return null;
  }
}

export function validEmail(value) {
  const at = value.lastIndexOf('@');
  const local = value.slice(0, Math.max(0, at));
  if (at < 0 || !local || length(local) > 64) return false;
  const domain = asciiDomain(value.slice(at + 1));
  return domain !== null && domain.length <= 253 && EMAIL.test(`${local}@${domain}`);
}

export function validPhone(value) {
  const digits = (value.match(/[0-9]/g) || []).length;
  return PHONE.test(value) && digits >= PHONE_DIGITS[0] && digits <= PHONE_DIGITS[1];
}

function checkText(name, raw, bounds) {
  let value = raw ?? '';
  if (typeof value !== 'string') throw new Problem('not_text');
  if (name === 'message') value = value.replace(/\r\n?/g, '\n');
  value = value.replace(EDGE_SPACES, '');
  if (!value) {
    if (name === 'phone') return null;
    throw new Problem('required');
  }
  const allowed = name === 'message' ? ['\n', '\t'] : [];
  for (const char of value) {
    if (LINE_BREAK.test(char) && !allowed.includes(char)) throw new Problem('invalid_characters');
  }
  if (length(value) > bounds.max) throw new Problem('too_long', { max: bounds.max });
  if (name === 'email' && !validEmail(value)) throw new Problem('invalid_email');
  if (name === 'phone' && !validPhone(value)) throw new Problem('invalid_phone');
  if (length(value) < bounds.min) throw new Problem('too_short', { min: bounds.min });
  return value;
}

function checkLanguage(raw, languages) {
  if (raw === null || raw === undefined || raw === '') throw new Problem('required');
  if (typeof raw !== 'string') throw new Problem('not_text');
  const value = raw.replace(EDGE_SPACES, '').toLowerCase();
  if (!languages.includes(value)) throw new Problem('not_allowed', { allowed: languages });
  return value;
}

/**
 * Checks what the visitor typed.
 * @param {object} values the form's fields as typed (strings)
 * @param {object} rules the page config's `request_form`: {fields: {name: {min, max}, ...}, languages}
 * @returns {{values: object, problems: object}} the cleaned values, and {field: {key, params}}
 *   for every field with a problem (empty when the form may be sent)
 */
export function checkRequest(values, rules) {
  const cleaned = {};
  const problems = {};
  for (const name of FIELDS) {
    const { value, problem } = checkField(name, values[name], rules);
    if (problem) problems[name] = problem;
    else cleaned[name] = value;
  }
  return { values: cleaned, problems };
}

// One field as the server's check_field sees it: {value} (trimmed; null for no phone) or
// {problem: {key, params}}.
export function checkField(name, raw, rules) {
  try {
    const value = TEXT_FIELDS.has(name)
      ? checkText(name, raw, rules.fields[name])
      : checkLanguage(raw, rules.languages);
    return { value, problem: null };
  } catch (error) {
    if (!(error instanceof Problem)) throw error;
    return { value: null, problem: { key: error.key, params: error.params } };
  }
}

/**
 * The JSON body of POST /api/requests: the form, the context the page adds, and the honeypot
 * as it is (people never see it, so it is empty unless a script filled it in).
 */
export function requestBody(values, { persona = null, sessionId = null, pageLanguage, website = '' }) {
  const body = {
    name: values.name,
    email: values.email,
    company: values.company,
    message: values.message,
    language: values.language,
    page_language: pageLanguage,
    website,
  };
  if (values.phone) body.phone = values.phone;
  if (persona) body.persona = persona;
  if (sessionId) body.session_id = sessionId;
  return body;
}

// A field problem (the page's own or the server's) as a strings.json key and its slots.
export function fieldMessage(problem) {
  const params = {};
  if (problem && problem.min !== undefined) params.min = problem.min;
  if (problem && problem.max !== undefined) params.max = problem.max;
  if (problem && problem.params) Object.assign(params, problem.params);
  delete params.allowed; // the language list is a choice on the page, never typed
  const key = problem && typeof problem.key === 'string' ? problem.key : '';
  const known = ['required', 'too_short', 'too_long', 'not_text', 'invalid_characters',
    'invalid_email', 'invalid_phone', 'not_allowed'];
  return { key: known.includes(key) ? `field_${key}` : 'field_invalid', params };
}

/**
 * The server's answer to POST /api/requests, as what the page shows:
 * {kind: 'sent', reference} | {kind: 'invalid', fields: {field: {key, params}}, key?} |
 * {kind: 'refused', key, params}. Wait (seconds) stays a number: the page words it; `limit`
 * is the day's number of requests per visitor (the page config's, the server's own policy).
 */
export function requestOutcome(status, body, retryAfter, { limit } = {}) {
  const code = body && typeof body.error === 'string' ? body.error : '';
  if (status === 201 && body && typeof body.reference === 'string' && body.reference) {
    return { kind: 'sent', reference: body.reference };
  }
  if (status === 422 && code === 'invalid_request' && body.fields && typeof body.fields === 'object') {
    const fields = {};
    let elsewhere = false;
    for (const [name, problem] of Object.entries(body.fields)) {
      if (FIELDS.includes(name)) fields[name] = fieldMessage(problem);
      else elsewhere = true;
    }
    // A problem with what the page added itself (persona, session id, page language) or a
    // field this page does not know: the visitor cannot fix it in the form.
    if (elsewhere || Object.keys(fields).length === 0) {
      return { kind: 'invalid', fields, key: 'request_outdated', params: {} };
    }
    return { kind: 'invalid', fields };
  }
  if (status === 429 || code === 'rate_limited') {
    const key = body && body.reason === 'global_daily' ? 'request_limit_global' : 'request_limit_visitor';
    return { kind: 'refused', key, params: { wait: retryAfter ?? 0, limit } };
  }
  if (code === 'unavailable' || status === 503) return { kind: 'refused', key: 'request_unavailable', params: {} };
  if (code === 'origin_not_allowed') return { kind: 'refused', key: 'request_origin_not_allowed', params: {} };
  if (status === 413) return { kind: 'refused', key: 'request_too_large', params: {} };
  if (status === 422 || status === 415) return { kind: 'refused', key: 'request_outdated', params: {} };
  return { kind: 'refused', key: 'request_failed', params: { status } };
}
