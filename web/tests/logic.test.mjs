// The page's pure logic, with node's own test runner (`npm test`, run by
// tests/test_web_logic.py): wording of refusals and waits, language choice, agent signals,
// and that French and English say the same things.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { GIVE_BACK_PATH, giveBackRequest, refusalFor } from '../src/api.js';
import { endMessageFor, uiAgentState } from '../src/agent_signals.js';
import { Translator, clock, pickLanguage } from '../src/i18n.js';

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
