// The demo page: persona cards, one call at a time, every refusal in plain words, the
// recap and reply times of a call, and the sales request form (request_panel.js).
// All text goes through textContent (never innerHTML): persona data, what the agent sends
// and server answers cannot inject markup. Nothing is stored in the browser.
import { LogLevel, LoggerNames, getLogger } from 'livekit-client';

import { Refusal, fetchAgents, giveBack, requestToken } from './api.js';
import { recapAsMessage } from './agent_signals.js';
import { CallSession, recordingMicrophone, releaseMicrophone } from './call.js';
import { LANGUAGES, Translator, clock, pickLanguage } from './i18n.js';
import { RequestPanel } from './request_panel.js';

const config = JSON.parse(document.getElementById('ocf-config').textContent);
const params = new URLSearchParams(window.location.search);
// The library's own console logging helps nobody on a prospect's screen; ?debug=1 brings it
// back. Not livekit-client's setLogLevel: loglevel would persist the level in localStorage,
// or in a cookie where storage is off, and this page stores nothing.
const logLevel = params.get('debug') === '1' ? LogLevel.debug : LogLevel.silent;
for (const name of Object.values(LoggerNames)) getLogger(name).setLevel(logLevel, false);

const $ = (id) => document.getElementById(id);
const ui = {
  notice: $('notice'),
  call: $('call'),
  callHeading: $('call-heading'),
  callDescription: $('call-description'),
  status: $('call-status'),
  agentState: $('agent-state'),
  timeLeft: $('time-left'),
  step: $('step'),
  start: $('start'),
  mute: $('mute'),
  enableAudio: $('enable-audio'),
  end: $('end'),
  transcript: $('transcript'),
  transcriptEmpty: $('transcript-empty'),
  latencyToggle: $('latency-toggle'),
  showLatency: $('show-latency'),
  recap: $('recap'),
  recapItems: $('recap-items'),
  recapPrefill: $('recap-prefill'),
  afterCall: $('after-call'),
  afterCallOpen: $('after-call-open'),
  requestOpen: $('request-open'),
  requestPrivacyLink: $('request-privacy-link'),
  listStatus: $('list-status'),
  listRetry: $('list-retry'),
  cards: $('agents'),
  privacyLink: $('privacy-link'),
};

const state = {
  tr: new Translator(pickLanguage(window.location.search, navigator.languages || [navigator.language])),
  agents: null, // null while loading, [] when none
  listError: false,
  selected: null,
  // idle | starting | connected | in_call
  phase: 'idle',
  calledOnce: false,
  attempt: null,
  session: null,
  // The last unused token being given back: the next attempt waits for it, so its own token
  // request is not refused for the one still held.
  givingBack: null,
  step: null, // {key, params}
  notice: null, // {key, params, kind: 'error' | 'info'}
  agentState: 'connecting',
  timeLeft: null,
  muted: false,
  audioBlocked: false,
  segments: new Map(),
  // The agent's latest transcript line: a reply time that arrives goes on it.
  lastAgentLine: null,
  // Reply times shown beside the agent's lines; the visitor may hide them (this page only).
  showLatency: true,
  // The last call the agent took: {sessionId, persona, session}, the context of a request.
  lastCall: null,
  recap: null, // {lang, items} of the last call, until another call starts
};

const t = (key, p) => state.tr.t(key, p);

const requests = new RequestPanel({
  rules: config.request_form,
  translator: () => state.tr,
  // The demo the visitor was looking at, and the call they had with it, if any (the server
  // keeps the session id only if that call was this visitor's).
  context: () => {
    const call = state.lastCall;
    return {
      persona: state.selected ? state.selected.id : call && call.persona,
      sessionId: call ? call.sessionId : null,
    };
  },
});

// Placeholders holding seconds to wait are turned into words in the current language.
function words(p = {}) {
  return 'wait' in p ? { ...p, wait: state.tr.wait(p.wait) } : p;
}

function setUrl(changes) {
  const url = new URL(window.location.href);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) url.searchParams.delete(key);
    else url.searchParams.set(key, value);
  }
  window.history.replaceState(null, '', url);
}

// --- rendering ------------------------------------------------------------------------

function renderStatic() {
  document.documentElement.lang = state.tr.lang;
  document.title = t('page_title');
  for (const element of document.querySelectorAll('[data-i18n]')) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const element of document.querySelectorAll('[data-i18n-label]')) {
    element.setAttribute('aria-label', t(element.dataset.i18nLabel));
  }
  for (const button of document.querySelectorAll('[data-lang]')) {
    button.setAttribute('aria-pressed', String(button.dataset.lang === state.tr.lang));
  }
  ui.privacyLink.href = config.privacy_policy_url;
  ui.requestPrivacyLink.href = config.privacy_policy_url;
}

function renderNotice() {
  const notice = state.notice;
  ui.notice.hidden = !notice;
  ui.notice.textContent = notice ? t(notice.key, words(notice.params)) : '';
  ui.notice.className = `notice ${notice ? notice.kind : ''}`;
}

function cardFor(agent) {
  const item = document.createElement('li');
  item.className = 'card';
  item.dataset.agentId = agent.id;
  const selected = state.selected && state.selected.id === agent.id;
  if (selected) item.setAttribute('aria-current', 'true');

  const title = document.createElement('h3');
  title.textContent = agent.display_name;
  title.lang = agent.language;

  const meta = document.createElement('p');
  meta.className = 'meta';
  const language = document.createElement('span');
  language.className = 'badge';
  language.textContent = t('speaks', { language: t(`language_${agent.language}`) });
  const length = document.createElement('span');
  length.textContent = t('minutes_max', { duration: state.tr.duration(agent.max_duration_s) });
  meta.append(language, ' ', length);

  const pitch = document.createElement('p');
  pitch.className = 'pitch';
  pitch.lang = agent.language;
  pitch.textContent = agent.pitch;

  const tags = document.createElement('ul');
  tags.className = 'tags';
  tags.lang = agent.language;
  for (const tag of agent.tags) {
    const chip = document.createElement('li');
    chip.textContent = tag;
    tags.append(chip);
  }

  const choose = document.createElement('button');
  choose.type = 'button';
  choose.className = selected ? 'choose chosen' : 'choose';
  choose.textContent = selected ? t('chosen') : t('choose');
  // The visible label is short; screen readers hear which agent the button is for.
  choose.setAttribute(
    'aria-label',
    t(selected ? 'chosen_label' : 'choose_label', { name: agent.display_name }),
  );
  choose.disabled = state.phase !== 'idle';
  choose.addEventListener('click', () => selectAgent(agent.id, { focus: true, scroll: true }));

  item.append(title, meta, pitch, tags, choose);
  return item;
}

function renderList() {
  const agents = state.agents;
  ui.listRetry.hidden = !state.listError;
  if (state.listError) ui.listStatus.textContent = t('list_failed');
  else if (agents === null) ui.listStatus.textContent = t('list_loading');
  else if (agents.length === 0) ui.listStatus.textContent = t('list_empty');
  else ui.listStatus.textContent = '';
  ui.listStatus.hidden = !ui.listStatus.textContent;
  ui.cards.replaceChildren(...(agents || []).map(cardFor));
}

function renderCall() {
  const agent = state.selected;
  ui.call.hidden = !agent;
  if (!agent) return;
  const phase = state.phase;
  ui.callHeading.textContent = t('call_heading', { name: agent.display_name });
  ui.callDescription.textContent = agent.description;
  ui.callDescription.lang = agent.language;

  ui.start.hidden = phase !== 'idle';
  ui.start.textContent = state.calledOnce ? t('call_again') : t('start_call');
  ui.end.hidden = phase === 'idle';
  ui.end.textContent = phase === 'in_call' ? t('end_call') : t('cancel');
  ui.mute.hidden = phase !== 'in_call' && phase !== 'connected';
  ui.mute.textContent = state.muted ? t('unmute') : t('mute');
  ui.mute.setAttribute('aria-pressed', String(state.muted));
  ui.enableAudio.hidden = !(state.audioBlocked && phase === 'in_call');
  ui.enableAudio.textContent = t('enable_audio');

  ui.status.hidden = phase === 'idle';
  ui.agentState.textContent = t(`state_${state.agentState}`);
  ui.agentState.dataset.state = state.agentState;
  ui.timeLeft.textContent = state.timeLeft === null ? '–' : clock(state.timeLeft);
  ui.timeLeft.classList.toggle('low', state.timeLeft !== null && state.timeLeft <= config.warn_remaining_s);

  const step = state.step;
  ui.step.textContent = step ? t(step.key, { name: agent.display_name, ...words(step.params) }) : '';
  ui.transcriptEmpty.hidden = state.segments.size > 0;
  // The end of a call the agent took: the form is offered.
  ui.afterCall.hidden = !(phase === 'idle' && state.lastCall && state.lastCall.persona === agent.id);
  renderRecap();
}

function renderSpeakers() {
  for (const entry of ui.transcript.querySelectorAll('[data-speaker]')) {
    const who = entry.dataset.speaker;
    const name = state.selected ? state.selected.display_name : '';
    entry.querySelector('.speaker').textContent =
      who === 'you' ? t('speaker_you') : t('speaker_agent', { name });
    const latency = entry.querySelector('.latency');
    if (latency) {
      latency.textContent = t('latency', { seconds: state.tr.seconds(Number(entry.dataset.latency)) });
    }
  }
  ui.latencyToggle.hidden = !ui.transcript.querySelector('.latency');
  ui.showLatency.checked = state.showLatency;
  ui.transcript.classList.toggle('hide-latency', !state.showLatency);
}

// What the agent did in the call, each item in the call's own language.
let shownRecap = null;

function renderRecap() {
  const recap = state.recap;
  ui.recap.hidden = !recap;
  if (recap === shownRecap) return;
  shownRecap = recap;
  ui.recapItems.lang = recap ? recap.lang : '';
  ui.recapItems.replaceChildren(
    ...(recap ? recap.items : []).map((item) => {
      const entry = document.createElement('li');
      entry.dataset.type = item.type;
      entry.textContent = item.text;
      return entry;
    }),
  );
}

function render() {
  renderStatic();
  renderNotice();
  renderList();
  renderCall();
  renderSpeakers();
  requests.render();
}

// --- the persona list -------------------------------------------------------------------

async function loadAgents({ fresh = false } = {}) {
  state.listError = false;
  state.agents = null;
  render();
  try {
    state.agents = await fetchAgents({ fresh });
  } catch (error) {
    console.warn('could not load the demo agents', error);
    state.listError = true;
    state.agents = [];
  }
  if (state.selected && !state.agents.some((a) => a.id === state.selected.id)) {
    state.selected = null;
  }
  render();
}

function selectAgent(id, { focus = false, scroll = false } = {}) {
  if (state.phase !== 'idle') return;
  const agent = (state.agents || []).find((a) => a.id === id);
  if (!agent) return;
  state.selected = agent;
  state.calledOnce = false;
  state.step = null;
  if (state.notice && state.notice.key === 'unknown_agent_link') state.notice = null;
  clearTranscript();
  setUrl({ agent: id });
  render();
  // Chosen from a card further down: bring the call panel (above the list) into view.
  if (scroll) ui.call.scrollIntoView({ block: 'start', behavior: 'smooth' });
  if (focus) ui.start.focus({ preventScroll: true });
}

// --- the call ---------------------------------------------------------------------------

const MIC_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

async function getMicrophone() {
  if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== 'function') {
    throw new Refusal('mic_unsupported');
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: MIC_CONSTRAINTS, video: false });
  } catch (error) {
    const name = error && error.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') throw new Refusal('mic_denied');
    if (name === 'NotFoundError' || name === 'OverconstrainedError') throw new Refusal('mic_missing');
    if (name === 'NotReadableError' || name === 'AbortError') throw new Refusal('mic_busy');
    if (name === 'TypeError') throw new Refusal('mic_unsupported');
    throw new Refusal('mic_failed');
  }
  const [track] = stream.getAudioTracks();
  if (!track) throw new Refusal('mic_missing');
  return track;
}

// A new call (or another persona) starts from a blank slate: transcript, reply times, recap.
function clearTranscript() {
  state.segments.clear();
  state.lastAgentLine = null;
  state.recap = null;
  ui.transcript.replaceChildren();
  renderSpeakers();
  renderRecap();
}

function onTranscript({ segment, speaker, text, reset }) {
  let entry = state.segments.get(segment);
  if (!entry) {
    entry = document.createElement('li');
    entry.dataset.speaker = speaker;
    entry.className = `line ${speaker}`;
    const who = document.createElement('span');
    who.className = 'speaker';
    const words = document.createElement('span');
    words.className = 'words';
    entry.append(who, words);
    ui.transcript.append(entry);
    state.segments.set(segment, entry);
    if (speaker === 'agent') state.lastAgentLine = entry;
    renderSpeakers();
    ui.transcriptEmpty.hidden = true;
  }
  const wordsEl = entry.querySelector('.words');
  if (reset) wordsEl.textContent = text;
  else wordsEl.textContent += text;
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

// How long the visitor waited for the agent's latest reply, beside that reply.
function onLatency(seconds) {
  const entry = state.lastAgentLine;
  if (!entry || entry.querySelector('.latency')) return;
  const figure = document.createElement('span');
  figure.className = 'latency';
  entry.dataset.latency = String(seconds);
  entry.append(figure);
  renderSpeakers();
}

function onRecap(session, recap) {
  // Only the last call's recap (it may arrive while that call is ending).
  if (!state.lastCall || state.lastCall.session !== session) return;
  state.recap = recap;
  renderRecap();
}

function showNotice(key, p = {}, kind = 'error') {
  state.notice = { key, params: p, kind };
}

function endAttempt() {
  state.phase = 'idle';
  state.session = null;
  state.attempt = null;
  state.muted = false;
  state.audioBlocked = false;
  state.timeLeft = null;
  state.agentState = 'connecting';
  render();
  ui.start.focus({ preventScroll: true });
}

// An attempt that ends before any agent took the call gives its token back: the slot and
// minutes it holds come back at once (the server refuses if an agent took it meanwhile).
function giveBackUnused(grantPromise) {
  const previous = state.givingBack || Promise.resolve();
  const done = Promise.all([previous, grantPromise.then(giveBackOnce, () => false)]);
  state.givingBack = done;
  done.then(() => {
    if (state.givingBack === done) state.givingBack = null;
  });
}

// The page may learn twice that a token is unused (the call failed, then the page is left).
function giveBackOnce(grant) {
  if (!grant || grant.givenBack) return Promise.resolve(false);
  grant.givenBack = true;
  return giveBack(grant);
}

// Waits for the last give-back, at most a few seconds (a token not given back frees itself
// when its join window ends; this only spares the visitor a refusal meanwhile).
function givenBack() {
  if (!state.givingBack) return Promise.resolve();
  return Promise.race([state.givingBack, new Promise((resolve) => setTimeout(resolve, 5000))]);
}

async function startCall() {
  const agent = state.selected;
  if (!agent || state.phase !== 'idle') return;
  const attempt = { cancelled: false, grant: null };
  state.attempt = attempt;
  state.phase = 'starting';
  state.calledOnce = true;
  state.notice = null;
  state.step = { key: 'step_microphone' };
  clearTranscript();
  render();
  ui.end.focus({ preventScroll: true });

  let microphone = null;
  try {
    const micTrack = await getMicrophone();
    // Recording from now: words said before the agent joins reach it (pre-connect buffer).
    try {
      microphone = recordingMicrophone(micTrack, MIC_CONSTRAINTS);
    } catch (error) {
      micTrack.stop();
      throw error;
    }
    if (attempt.cancelled) return;
    state.step = { key: 'step_token' };
    render();
    await givenBack();
    if (attempt.cancelled) return;
    // Not aborted by Cancel: a token minted meanwhile must still be given back (endOrCancel).
    attempt.grant = requestToken(agent.id);
    const grant = await attempt.grant;
    if (attempt.cancelled) return;
    const session = new CallSession({
      microphone,
      grant,
      timeouts: config.timeouts,
      on: {
        step: (key) => {
          if (key === 'connecting') state.phase = 'starting';
          if (key === 'waiting_agent') state.phase = 'connected';
          if (key === 'in_call') {
            state.phase = 'in_call';
            state.lastCall = { sessionId: grant.session_id, persona: agent.id, session };
          }
          state.step = { key: `step_${key}` };
          render();
        },
        agentState: (value) => {
          state.agentState = value;
          renderCall();
        },
        transcript: onTranscript,
        latency: onLatency,
        recap: (recap) => onRecap(session, recap),
        tick: (left) => {
          const shown = Math.ceil(left);
          if (shown === state.timeLeft) return;
          state.timeLeft = shown;
          renderCall();
        },
        audioBlocked: (blocked) => {
          state.audioBlocked = blocked;
          renderCall();
        },
        ended: ({ key, params: p, asError }) => {
          if (!session.agentJoined) giveBackUnused(Promise.resolve(grant));
          if (state.session !== session) return;
          state.step = null;
          showNotice(key, p, asError ? 'error' : 'info');
          endAttempt();
        },
      },
    });
    microphone = null; // the session owns it now and stops it when the call ends
    state.session = session;
    await session.start();
  } catch (error) {
    if (attempt.cancelled) return;
    state.step = null;
    if (error instanceof Refusal) {
      showNotice(error.key, error.params);
      if (error.refreshList) {
        state.selected = null;
        setUrl({ agent: null });
        endAttempt();
        await loadAgents({ fresh: true });
        // The call panel is gone with the persona: give the keyboard a place in the list.
        const first = ui.cards.querySelector('button');
        if (first) first.focus();
        return;
      }
    } else {
      console.warn('call could not start', error);
      showNotice('server_error', { status: error && error.name ? error.name : '?' });
    }
    endAttempt();
  } finally {
    // Whatever went wrong before the session took it, the microphone is released.
    if (microphone) releaseMicrophone(microphone);
  }
}

function endOrCancel() {
  if (state.session) {
    state.session.hangUp();
    return;
  }
  const attempt = state.attempt;
  if (!attempt) return;
  attempt.cancelled = true;
  if (attempt.grant) giveBackUnused(attempt.grant);
  state.step = null;
  showNotice('call_ended_user', {}, 'info');
  endAttempt();
}

function toggleMute() {
  const session = state.session;
  if (!session) return;
  const muted = !state.muted;
  session
    .setMuted(muted)
    .then(() => {
      state.muted = muted;
      renderCall();
    })
    .catch((error) => console.warn('mute failed', error));
}

function enableAudio() {
  const session = state.session;
  if (!session) return;
  session
    .startAudio()
    .then(() => {
      state.audioBlocked = false;
      renderCall();
    })
    .catch((error) => console.warn('audio could not start', error));
}

function switchLanguage(lang) {
  if (!LANGUAGES.includes(lang) || lang === state.tr.lang) return;
  state.tr = new Translator(lang);
  setUrl({ lang });
  render();
}

// --- wiring -----------------------------------------------------------------------------

function fireAndReport(action) {
  return () => {
    Promise.resolve()
      .then(action)
      .catch((error) => {
        // Every expected failure is handled where it happens; this is the last resort so
        // that a bug shows as a message instead of a silent dead button.
        console.warn('unexpected failure', error);
        showNotice('server_error', { status: error && error.name ? error.name : '?' });
        endAttempt();
      });
  };
}

ui.start.addEventListener('click', fireAndReport(startCall));
// Closing or leaving the page while no agent has taken the call: the token goes back too
// (the give-back request is sent with keepalive, so it outlives the page).
window.addEventListener('pagehide', () => {
  const session = state.session;
  if (session && !session.agentJoined) giveBackUnused(Promise.resolve(session.grant));
});
ui.end.addEventListener('click', endOrCancel);
ui.mute.addEventListener('click', toggleMute);
ui.enableAudio.addEventListener('click', enableAudio);
ui.listRetry.addEventListener('click', fireAndReport(() => loadAgents({ fresh: true })));
ui.showLatency.addEventListener('change', () => {
  state.showLatency = ui.showLatency.checked;
  renderSpeakers();
});
ui.recapPrefill.addEventListener('click', () => {
  const recap = state.recap;
  const name = state.selected ? state.selected.display_name : '';
  if (recap) requests.prefill(recapAsMessage(recap, t('recap_prefill_intro', { name })));
});
for (const link of [ui.requestOpen, ui.afterCallOpen]) {
  link.addEventListener('click', (event) => {
    event.preventDefault();
    requests.open();
  });
}
for (const button of document.querySelectorAll('[data-lang]')) {
  button.addEventListener('click', () => switchLanguage(button.dataset.lang));
}

async function boot() {
  render();
  await loadAgents();
  const wanted = params.get('agent');
  if (!wanted) return;
  if ((state.agents || []).some((a) => a.id === wanted)) {
    selectAgent(wanted, { focus: true });
  } else if (!state.listError) {
    showNotice('unknown_agent_link', { id: wanted.slice(0, 64) });
    setUrl({ agent: null });
    render();
  }
}

fireAndReport(boot)();
