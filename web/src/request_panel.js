// The sales request form on the page ("I want this for my agency"): checked before it is
// sent, the server's answer shown per field or in plain words, the reference on success.
// What the visitor types lives only in the form's fields: nothing is stored in the browser,
// and the only request is POST /api/requests to this page's own origin.
import { Refusal, sendRequest } from './api.js';
import { FIELDS, checkRequest, fieldMessage, requestBody, requestOutcome } from './request_form.js';

export class RequestPanel {
  /**
   * @param {object} options
   * @param {object} options.rules the page config's `request_form` (bounds, languages, limit)
   * @param {() => object} options.translator the page's current Translator
   * @param {() => object} options.context {persona, sessionId} of the demo the visitor saw
   */
  constructor({ rules, translator, context }) {
    this.rules = rules;
    this.translator = translator;
    this.context = context;
    const $ = (id) => document.getElementById(id);
    this.section = $('request');
    this.form = $('request-form');
    this.send = $('request-send');
    this.result = $('request-result');
    this.error = $('request-error');
    this.website = $('request-website');
    this.language = $('request-language');
    this.fields = Object.fromEntries(FIELDS.map((name) => [name, $(`request-${name}`)]));
    this.errors = Object.fromEntries(FIELDS.map((name) => [name, $(`request-${name}-error`)]));
    this.problems = {}; // field -> {key, params}, in strings.json terms
    this.notice = null; // {key, params} of a refusal, or null
    this.sent = null; // the reference of the request just sent
    this.sending = false;
    // The answer language follows the page's until the visitor picks one.
    this.languageChosen = false;
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit().catch((error) => {
        console.warn('request failed', error);
        this.finishSending({ key: 'request_failed', params: { status: error && error.name ? error.name : '?' } });
      });
    });
    this.language.addEventListener('change', () => {
      this.languageChosen = true;
    });
    // A field the visitor corrects loses its message (the others keep theirs until sent).
    for (const name of FIELDS) {
      this.fields[name].addEventListener('input', () => {
        if (!(name in this.problems)) return;
        delete this.problems[name];
        this.render();
      });
    }
  }

  t(key, params) {
    return this.translator().t(key, params);
  }

  words(params) {
    return 'wait' in params ? { ...params, wait: this.translator().wait(params.wait) } : params;
  }

  render() {
    const tr = this.translator();
    if (!this.languageChosen) this.language.value = tr.lang;
    const hint = document.getElementById('request-message-hint');
    hint.textContent = this.t('request_message_hint', { max: this.rules.fields.message.max });
    const months = Math.max(1, Math.round(this.rules.retention_days / 30.4));
    document.getElementById('request-consent').textContent = this.t('request_consent', {
      months: tr.plural('months', months),
    });
    for (const name of FIELDS) {
      const problem = this.problems[name];
      const field = this.fields[name];
      const message = this.errors[name];
      message.hidden = !problem;
      message.textContent = problem ? this.t(problem.key, problem.params) : '';
      if (problem) field.setAttribute('aria-invalid', 'true');
      else field.removeAttribute('aria-invalid');
    }
    const count = Object.keys(this.problems).length;
    const notice = this.notice || (count ? { key: null } : null);
    this.error.hidden = !notice;
    this.error.textContent = !notice
      ? ''
      : notice.key
        ? this.t(notice.key, this.words(notice.params))
        : tr.plural('request_errors', count);
    this.result.hidden = !this.sent;
    this.result.textContent = this.sent ? this.t('request_sent', { reference: this.sent }) : '';
    this.send.disabled = this.sending;
    this.send.textContent = this.t(this.sending ? 'request_sending' : 'request_send');
  }

  // The visitor asked for it (a button): the recap goes into the message, after what is there.
  prefill(text) {
    const message = this.fields.message;
    message.value = message.value.trim() ? `${message.value.trimEnd()}\n\n${text}` : text;
    delete this.problems.message;
    this.render();
    message.focus();
    message.scrollIntoView({ block: 'center' });
  }

  open() {
    this.fields.name.focus({ preventScroll: true });
    this.section.scrollIntoView({ block: 'start' });
  }

  focusFirstProblem() {
    const first = FIELDS.find((name) => name in this.problems);
    if (first) this.fields[first].focus();
  }

  async submit() {
    if (this.sending) return;
    const typed = Object.fromEntries(FIELDS.map((name) => [name, this.fields[name].value]));
    const { values, problems } = checkRequest(typed, this.rules);
    this.sent = null;
    this.notice = null;
    this.problems = Object.fromEntries(
      Object.entries(problems).map(([name, problem]) => [name, fieldMessage(problem)]),
    );
    if (Object.keys(problems).length) {
      this.render();
      this.focusFirstProblem();
      return;
    }
    this.sending = true;
    this.render();
    const { persona, sessionId } = this.context();
    const body = requestBody(values, {
      persona,
      sessionId,
      pageLanguage: this.translator().lang,
      website: this.website.value,
    });
    let answer;
    try {
      answer = await sendRequest(body);
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      this.finishSending({ key: error.key, params: error.params });
      return;
    }
    const outcome = requestOutcome(answer.status, answer.body, answer.retryAfter, {
      limit: this.rules.per_visitor_per_day,
    });
    if (outcome.kind === 'sent') {
      this.sending = false;
      this.sent = outcome.reference;
      const language = this.language.value;
      this.form.reset();
      this.language.value = language;
      this.render();
      this.result.focus();
      return;
    }
    if (outcome.kind === 'invalid') {
      this.problems = outcome.fields;
      this.finishSending(outcome.key ? { key: outcome.key, params: outcome.params } : null);
      this.focusFirstProblem();
      return;
    }
    this.finishSending({ key: outcome.key, params: outcome.params });
  }

  finishSending(notice) {
    this.sending = false;
    this.notice = notice;
    this.render();
  }
}
