// The page's pure logic, with node's own test runner (`npm test`, run by
// tests/test_web_logic.py): wording of refusals and waits, language choice, agent signals
// (reply times, the recap), the request form's checks and answers, and that French and
// English say the same things. (The form's checks against the server's own code:
// tests/test_web_logic.py.)
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { GIVE_BACK_PATH, giveBackRequest, refusalFor } from '../src/api.js';
import { endMessageFor, parseLatency, parseRecap, recapAsMessage, uiAgentState } from '../src/agent_signals.js';
import { Translator, clock, pickLanguage } from '../src/i18n.js';
import { FIELDS, checkRequest, fieldMessage, requestBody, requestOutcome } from '../src/request_form.js';

const src = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
const STRINGS = JSON.parse(await readFile(join(src, 'strings.json'), 'utf8'));

test('French and English have the same strings and placeholders', () => {
  assert.deepEqual(Object.keys(STRINGS.fr).sort(), Object.keys(STRINGS.en).sort());
  const holes = (text) => JSON.stringify(text).match(/\{\w+\}/g)?.sort() ?? [];
  for (const key of Object.keys(STRINGS.en)) {
    assert.deepEqual(holes(STRINGS.fr[key]), holes(STRINGS.en[key]), key);
  }
});

test('every string key the code names exists', async () => {
  const files = (await readdir(src)).filter((f) => f.endsWith('.js') || f.endsWith('.html'));
  const named = new Set();
  for (const file of files) {
    const code = await readFile(join(src, file), 'utf8');
    for (const [, key] of code.matchAll(/(?:\bt\(|Refusal\(|key: |data-i18n(?:-label)?=)['"]([a-z_]+)['"]/g)) {
      named.add(key);
    }
    for (const [, key] of code.matchAll(/'(call_ended_[a-z_]+|step_[a-z_]+|state_[a-z_]+)'/g)) {
      named.add(key);
    }
  }
  assert.ok(named.size > 30, `found only ${named.size} keys: the scan is broken`);
  for (const key of named) assert.ok(key in STRINGS.en, `strings.json has no ${key}`);
});

test('Retry-After becomes minutes, then hours, in each language', () => {
  const en = new Translator('en');
  const fr = new Translator('fr');
  assert.equal(en.wait(30), '1 minute');
  assert.equal(en.wait(61), '2 minutes');
  assert.equal(en.wait(3600), '60 minutes');
  assert.equal(en.wait(5 * 3600 + 1), '6 hours');
  assert.equal(en.wait(0), 'a moment');
  assert.equal(fr.wait(61), '2 minutes');
  assert.equal(fr.wait(7200), '2 heures');
  assert.equal(fr.wait(null), 'un instant');
});

test('each refusal code gets its own plain message', () => {
  const cases = [
    [429, { error: 'rate_limited' }, 120, 'rate_limited', { wait: 120 }],
    [429, { error: 'rate_limited', reason: 'visitor_daily' }, 9, 'rate_limited_visitor_daily', { wait: 9 }],
    [429, { error: 'rate_limited', reason: 'made_up' }, 9, 'rate_limited', { wait: 9 }],
    [429, { error: 'rate_limited', reason: 'visitor_unjoined' }, 9, 'rate_limited_visitor_unjoined', { wait: 9 }],
    [429, { error: 'rate_limited', reason: 'network_concurrent' }, 9, 'rate_limited_network_concurrent', { wait: 9 }],
    [429, { error: 'rate_limited', reason: 'network_unjoined' }, 9, 'rate_limited_network_unjoined', { wait: 9 }],
    [429, { error: 'rate_limited', reason: 'network_hourly' }, 9, 'rate_limited_network_hourly', { wait: 9 }],
    [429, { error: 'rate_limited', reason: 'network_daily' }, 9, 'rate_limited_network_daily', { wait: 9 }],
    [503, { error: 'capacity', reason: 'global_unjoined' }, 60, 'capacity', { wait: 60 }],
    [503, { error: 'capacity' }, 60, 'capacity', { wait: 60 }],
    [503, { error: 'capacity' }, null, 'capacity_no_wait', {}],
    [403, { error: 'blocked' }, null, 'blocked', {}],
    [403, { error: 'origin_not_allowed' }, null, 'origin_not_allowed', {}],
    [404, { error: 'unknown_agent' }, null, 'unknown_agent', {}],
    [503, { error: 'unavailable' }, 5, 'unavailable', {}],
    [502, null, null, 'server_error', { status: 502 }],
  ];
  for (const [status, body, retry, key, params] of cases) {
    const refusal = refusalFor(status, body, retry);
    assert.equal(refusal.key, key, `${status} ${JSON.stringify(body)}`);
    assert.deepEqual(refusal.params, params);
    assert.ok(key in STRINGS.en);
  }
  assert.equal(refusalFor(404, { error: 'unknown_agent' }, null).refreshList, true);
});

test('language from ?lang=, else the browser, else English', () => {
  assert.equal(pickLanguage('?lang=fr', ['en-US']), 'fr');
  assert.equal(pickLanguage('?lang=de', ['fr-CA', 'en']), 'fr');
  assert.equal(pickLanguage('', ['de-DE', 'en-GB']), 'en');
  assert.equal(pickLanguage('', ['de-DE']), 'en');
  assert.equal(pickLanguage('', []), 'en');
});

test('agent signals: end reasons and states', () => {
  for (const reason of ['end_call', 'max_duration', 'silence', 'error', 'shutdown', 'user_hangup']) {
    assert.ok(endMessageFor(reason) in STRINGS.en, reason);
  }
  assert.equal(endMessageFor('nonsense'), null);
  assert.equal(endMessageFor(undefined), null);
  assert.equal(uiAgentState('speaking'), 'speaking');
  assert.equal(uiAgentState('idle'), 'listening');
  assert.equal(uiAgentState('initializing'), 'connecting');
  assert.equal(uiAgentState(undefined), 'connecting');
});

test('the countdown reads m:ss and never goes negative', () => {
  assert.equal(clock(300), '5:00');
  assert.equal(clock(61.2), '1:02');
  assert.equal(clock(9), '0:09');
  assert.equal(clock(-3), '0:00');
});

test('an unused token is given back with its own secret only, surviving the page', () => {
  const grant = { session_id: 'abc_DEF-123', release_secret: 'S'.repeat(32), participant_token: 'jwt' };
  const request = giveBackRequest(grant);
  assert.equal(request.url, GIVE_BACK_PATH);
  assert.equal(request.url, '/api/token/release');
  assert.equal(request.init.method, 'POST');
  assert.equal(request.init.keepalive, true);
  assert.equal(request.init.headers['Content-Type'], 'application/json');
  // The session and its secret, nothing else of the grant (never the LiveKit token).
  assert.deepEqual(JSON.parse(request.init.body), { session_id: 'abc_DEF-123', release_secret: 'S'.repeat(32) });
  // No secret (an older server), no grant: nothing to send.
  assert.equal(giveBackRequest({ session_id: 'abc' }), null);
  assert.equal(giveBackRequest(null), null);
});

// The shipped rules (policies/requests.yaml), as the page config hands them over.
const RULES = {
  fields: {
    name: { min: 2, max: 100 },
    email: { min: 6, max: 254 },
    phone: { min: 6, max: 32 },
    company: { min: 1, max: 120 },
    message: { min: 1, max: 2000 },
  },
  languages: ['fr', 'en'],
  per_visitor_per_day: 3,
  retention_days: 365,
};
const GOOD = {
  name: '  Zéphyrine Quaglia ',
  email: 'zq@agence-exemple.fr',
  phone: '',
  company: 'Agence Quaglia',
  message: 'Bonjour,\r\nla démo pour nos agences.\n',
  language: 'fr',
};

test('a good form is cleaned as the server cleans it', () => {
  const { values, problems } = checkRequest(GOOD, RULES);
  assert.deepEqual(problems, {});
  assert.deepEqual(values, {
    name: 'Zéphyrine Quaglia',
    email: 'zq@agence-exemple.fr',
    phone: null,
    company: 'Agence Quaglia',
    message: 'Bonjour,\nla démo pour nos agences.',
    language: 'fr',
  });
});

test('every field with a problem is named at once, in the order shown', () => {
  const { problems } = checkRequest(
    { name: 'A', email: 'nope@', phone: '12', company: ' ', message: 'x'.repeat(2001), language: 'de' },
    RULES,
  );
  assert.deepEqual(Object.keys(problems), FIELDS);
  assert.deepEqual(problems.name, { key: 'too_short', params: { min: 2 } });
  assert.equal(problems.email.key, 'invalid_email');
  assert.equal(problems.phone.key, 'invalid_phone');
  assert.equal(problems.company.key, 'required');
  assert.deepEqual(problems.message, { key: 'too_long', params: { max: 2000 } });
  assert.deepEqual(problems.language, { key: 'not_allowed', params: { allowed: ['fr', 'en'] } });
  // Characters are counted as the server counts them: 2000 emoji are 2000 characters.
  assert.deepEqual(checkRequest({ ...GOOD, message: '😀'.repeat(2000) }, RULES).problems, {});
});

test('each field problem has words in both languages, with its bounds', () => {
  const en = new Translator('en');
  const fr = new Translator('fr');
  for (const key of ['required', 'too_short', 'too_long', 'not_text', 'invalid_characters',
    'invalid_email', 'invalid_phone', 'not_allowed', 'unknown_persona']) {
    const message = fieldMessage({ key, min: 2, max: 100, allowed: ['fr', 'en'], message: 'server words' });
    assert.ok(message.key in STRINGS.en, key);
    assert.doesNotMatch(en.t(message.key, message.params), /[{}]/, key);
    assert.doesNotMatch(fr.t(message.key, message.params), /[{}]/, key);
  }
  assert.equal(en.t(...Object.values(fieldMessage({ key: 'too_short', min: 2 }))), 'At least 2 characters, please.');
  assert.equal(fr.t(...Object.values(fieldMessage({ key: 'too_long', max: 100 }))), 'Au plus 100 caractères, s\'il vous plaît.');
  assert.equal(fieldMessage({ key: 'something_new' }).key, 'field_invalid');
});

test('the request body: the form, the context the page adds, the honeypot as typed', () => {
  const { values } = checkRequest({ ...GOOD, phone: ' +33 6 12 34 56 78 ' }, RULES);
  const body = requestBody(values, { persona: 'agence-immo-fr', sessionId: 'sVOtICXW8ECCSKzl', pageLanguage: 'en' });
  assert.deepEqual(body, {
    name: 'Zéphyrine Quaglia',
    email: 'zq@agence-exemple.fr',
    phone: '+33 6 12 34 56 78',
    company: 'Agence Quaglia',
    message: 'Bonjour,\nla démo pour nos agences.',
    language: 'fr',
    page_language: 'en',
    persona: 'agence-immo-fr',
    session_id: 'sVOtICXW8ECCSKzl',
    website: '',
  });
  // No phone, no call: those keys are left out; a filled honeypot goes as it is.
  const bare = requestBody(checkRequest(GOOD, RULES).values, { pageLanguage: 'fr', website: 'http://spam' });
  assert.deepEqual(Object.keys(bare).sort(), ['company', 'email', 'language', 'message', 'name', 'page_language', 'website']);
  assert.equal(bare.website, 'http://spam');
});

test('each answer of POST /api/requests becomes what the page shows', () => {
  assert.deepEqual(requestOutcome(201, { reference: 'K7QM-2XHD-9PFA' }, null), { kind: 'sent', reference: 'K7QM-2XHD-9PFA' });
  const invalid = requestOutcome(422, {
    error: 'invalid_request',
    fields: { email: { key: 'invalid_email', message: '…' }, name: { key: 'too_short', min: 2, message: '…' } },
  }, null);
  assert.deepEqual(invalid, {
    kind: 'invalid',
    fields: { email: { key: 'field_invalid_email', params: {} }, name: { key: 'field_too_short', params: { min: 2 } } },
  });
  // A problem in what the page added (not a field the visitor can fix): reload.
  const context = requestOutcome(422, { error: 'invalid_request', fields: { persona: { key: 'unknown_persona' } } }, null);
  assert.equal(context.key, 'request_outdated');
  const cases = [
    [429, { error: 'rate_limited', reason: 'visitor_daily' }, 50000, 'request_limit_visitor', { wait: 50000, limit: 3 }],
    [429, { error: 'rate_limited', reason: 'global_daily' }, 600, 'request_limit_global', { wait: 600, limit: 3 }],
    [429, null, null, 'request_limit_visitor', { wait: 0, limit: 3 }],
    [503, { error: 'unavailable' }, 5, 'request_unavailable', {}],
    [403, { error: 'origin_not_allowed' }, null, 'request_origin_not_allowed', {}],
    [413, { error: 'body_too_large' }, null, 'request_too_large', {}],
    [422, { error: 'invalid_json' }, null, 'request_outdated', {}],
    [500, null, null, 'request_failed', { status: 500 }],
    [201, {}, null, 'request_failed', { status: 201 }],
  ];
  for (const [status, body, retry, key, params] of cases) {
    const outcome = requestOutcome(status, body, retry, { limit: 3 });
    assert.equal(outcome.kind, 'refused', `${status} ${JSON.stringify(body)}`);
    assert.equal(outcome.key, key, `${status} ${JSON.stringify(body)}`);
    assert.deepEqual(outcome.params, params);
    assert.ok(key in STRINGS.en && key in STRINGS.fr, key);
  }
  // The server out of reach: said by the page itself (api.js), in both languages.
  assert.ok('request_unreachable' in STRINGS.en && 'request_unreachable' in STRINGS.fr);
  // The day's limit with the wait in words.
  const en = new Translator('en');
  const fr = new Translator('fr');
  assert.equal(en.t('request_limit_visitor', { limit: 3, wait: en.wait(50000) }),
    'You have already sent 3 requests today. You can send another one in 14 hours.');
  assert.equal(fr.t('request_limit_visitor', { limit: 3, wait: fr.wait(50000) }),
    "Vous avez déjà envoyé 3 demandes aujourd'hui. Vous pourrez en envoyer une autre dans 14 heures.");
});

test('a reply time is shown the language\'s way', () => {
  assert.equal(parseLatency('{"v": 1, "seconds": 0.873}'), 0.873);
  for (const bad of ['{"v": 2, "seconds": 0.8}', '{"v": 1}', '{"v": 1, "seconds": "0.8"}', '{"v": 1, "seconds": -1}', 'nope', '[]']) {
    assert.equal(parseLatency(bad), null, bad);
  }
  const en = new Translator('en');
  const fr = new Translator('fr');
  assert.equal(en.t('latency', { seconds: en.seconds(0.873) }), 'answered in 0.9\u00a0s');
  assert.equal(fr.t('latency', { seconds: fr.seconds(0.873) }), 'répondu en 0,9\u00a0s');
  assert.equal(en.seconds(12.04), '12.0');
});

test('the recap: each item by its text, in the call\'s language; nothing to show is null', () => {
  const recap = parseRecap(JSON.stringify({
    v: 1,
    lang: 'fr',
    end_reason: 'end_call',
    items: [
      { type: 'viewing', reference: 'VIS-4821', text: 'Visite réservée : appartement à Croix-Rousse.' },
      { type: 'hologram', text: ' Un type que la page ne connaît pas. ' },
      { type: 'message' },
      'not an item',
    ],
  }));
  assert.deepEqual(recap, {
    lang: 'fr',
    endReason: 'end_call',
    items: [
      { type: 'viewing', text: 'Visite réservée : appartement à Croix-Rousse.' },
      { type: 'hologram', text: 'Un type que la page ne connaît pas.' },
    ],
  });
  assert.equal(parseRecap('{"v": 1, "lang": "en", "items": []}'), null);
  assert.equal(parseRecap('{"v": 2, "lang": "en", "items": [{"type": "x", "text": "y"}]}'), null);
  assert.equal(parseRecap('not json'), null);
  assert.equal(
    recapAsMessage(recap, 'Suite à mon appel :'),
    'Suite à mon appel :\n- Visite réservée : appartement à Croix-Rousse.\n- Un type que la page ne connaît pas.',
  );
});
