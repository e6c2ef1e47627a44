// UI language: French or English, from ?lang=, else the browser's preferred languages.
// Nothing is stored: the choice lives in the URL so a shared link keeps it.
import STRINGS from './strings.json' with { type: 'json' };

export const LANGUAGES = Object.keys(STRINGS);

export function pickLanguage(search, preferred) {
  const asked = new URLSearchParams(search).get('lang');
  if (asked && LANGUAGES.includes(asked)) return asked;
  for (const tag of preferred || []) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return 'en';
}

export class Translator {
  constructor(lang) {
    this.lang = lang;
  }

  // "{name}"-style slots filled from params; a missing key is a bug in strings.json, so say which.
  t(key, params = {}) {
    const text = STRINGS[this.lang][key] ?? STRINGS.en[key];
    if (typeof text !== 'string') throw new Error(`missing UI string ${key}`);
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
  }

  plural(key, n) {
    const forms = STRINGS[this.lang][key];
    const form = new Intl.PluralRules(this.lang).select(n);
    return (forms[form] ?? forms.other).replace('{n}', String(n));
  }

  // Retry-After seconds as words: "3 minutes", "2 hours", "a moment".
  wait(seconds) {
    if (!Number.isFinite(seconds) || seconds <= 0) return this.t('wait_moment');
    const minutes = Math.ceil(seconds / 60);
    if (minutes < 90) return this.plural('wait_minutes', minutes);
    return this.plural('wait_hours', Math.ceil(minutes / 60));
  }

  // Seconds with one decimal, the language's way: "0.9" / "0,9".
  seconds(value) {
    const format = new Intl.NumberFormat(this.lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
    return format.format(value);
  }

  // A call length for the cards: "5 minutes", "90 s" would read oddly, so whole minutes.
  duration(seconds) {
    return this.plural('wait_minutes', Math.max(1, Math.round(seconds / 60)));
  }
}

export function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}
