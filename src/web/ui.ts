/** Small DOM and formatting helpers for the page. */

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el as T;
}

export type Tone = 'ok' | 'warn' | 'bad' | undefined;

export function setTone(el: HTMLElement, tone: Tone): void {
  if (tone) el.dataset.tone = tone;
  else delete el.dataset.tone;
}

export function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

export function fmtMs(ms: number | undefined, digits = 0): string {
  if (ms === undefined || !Number.isFinite(ms)) return '–';
  return `${ms.toFixed(digits)} ms`;
}

export function fmtCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** 75 → "1:15"; 3725 → "1:02:05". */
export function fmtClock(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

/** A short random session id: "web-" and 6 base-36 characters. */
export function randomSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return 'web-' + Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

/** Session ids the gateway accepts: 1–24 printable ASCII characters (no spaces: ids are space-padded on the wire). */
export function isValidSessionId(id: string): boolean {
  return /^[\x21-\x7e]{1,24}$/.test(id);
}

/** The newest-first list of what happened. */
export class EventLog {
  constructor(
    private readonly list: HTMLOListElement,
    private readonly max = 60,
  ) {}

  add(text: string, tone?: Tone, code?: string): void {
    const li = document.createElement('li');
    setTone(li, tone);
    const time = document.createElement('time');
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString('en-GB', { hour12: false });
    const span = document.createElement('span');
    span.textContent = text;
    if (code) {
      span.append(' ');
      const c = document.createElement('code');
      c.textContent = code;
      span.append(c);
    }
    li.append(time, span);
    this.list.prepend(li);
    while (this.list.children.length > this.max) this.list.lastElementChild?.remove();
  }
}
