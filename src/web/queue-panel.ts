/**
 * The queue panel and the now-playing card: the session's queue (GET /sessions/:id/queue and
 * every `queue` event) as a list whose items jump on click, move up and down, and go; the queue's
 * controls (previous, next, shuffle, repeat, clear); and what plays now with its artwork, title,
 * author and a progress bar that seeks where it is clicked.
 */
import type { QueueItem, QueueState, RepeatMode } from '../shared/queue.js';
import { fmtClock, setText } from './ui.js';

export interface QueueActions {
  jump(index: number): void;
  remove(index: number): void;
  move(from: number, to: number): void;
  /** Seek within what plays now, to `seconds`. */
  seek(seconds: number): void;
}

export interface QueueElements {
  list: HTMLOListElement;
  empty: HTMLElement;
  meta: HTMLElement;
  repeat: HTMLSelectElement;
  artwork: HTMLElement;
  title: HTMLElement;
  author: HTMLElement;
  progress: HTMLElement;
  elapsed: HTMLElement;
  length: HTMLElement;
}

export class QueuePanel {
  private state: QueueState | undefined;
  private duration: number | undefined;

  constructor(
    private readonly el: QueueElements,
    private readonly actions: QueueActions,
  ) {
    el.progress.addEventListener('click', (e) => {
      const duration = this.duration;
      if (duration === undefined || duration <= 0) return;
      const box = el.progress.getBoundingClientRect();
      const ratio = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
      actions.seek(Math.floor(ratio * duration * 10) / 10);
    });
  }

  get queue(): QueueState | undefined {
    return this.state;
  }

  /** The item the listeners hear, if the queue plays. */
  get current(): QueueItem | undefined {
    return this.state?.items[this.state.index];
  }

  /** Shows a queue (undefined: the session has none). */
  update(state: QueueState | undefined): void {
    this.state = state;
    const items = state?.items ?? [];
    this.el.empty.hidden = items.length > 0;
    this.el.repeat.value = state?.repeat ?? 'off';
    const total = items.reduce((sum, i) => sum + (i.durationMs ?? 0), 0);
    setText(this.el.meta, items.length === 0 ? '' : `${items.length} item${items.length === 1 ? '' : 's'} · ${fmtClock(total / 1000)}`);
    const rows = items.map((item, index) => this.row(item, index, index === state!.index, items.length));
    this.el.list.replaceChildren(...rows);
    this.renderNow();
  }

  /** Where the listener is in what plays now (seconds), and its length if known. */
  progress(position: number | undefined, duration: number | undefined): void {
    this.duration = duration;
    const ratio = position !== undefined && duration ? Math.min(1, position / duration) : 0;
    (this.el.progress.firstElementChild as HTMLElement).style.width = `${(ratio * 100).toFixed(2)}%`;
    this.el.progress.setAttribute('aria-valuenow', String(Math.round(position ?? 0)));
    this.el.progress.setAttribute('aria-valuemax', String(Math.round(duration ?? 0)));
    this.el.progress.classList.toggle('seekable', duration !== undefined && duration > 0);
    setText(this.el.elapsed, position === undefined ? '–:––' : fmtClock(position));
    setText(this.el.length, duration === undefined ? '–:––' : fmtClock(duration));
  }

  private renderNow(): void {
    const item = this.current;
    setText(this.el.title, item?.title ?? 'Nothing queued');
    setText(this.el.author, item ? `${item.author} · ${item.source}` : 'Add tracks to the queue: a URL, a file or tone:440');
    const art = this.el.artwork;
    const url = item?.artworkUrl;
    if (url) {
      const img = art.querySelector('img') ?? document.createElement('img');
      img.alt = '';
      if (img.getAttribute('src') !== url) img.src = url;
      art.replaceChildren(img);
    } else {
      // No artwork: the item's initial on a colour of its own.
      art.replaceChildren(item ? initialOf(item.title) : '♪');
      art.style.setProperty('--hue', String(item ? hueOf(item.url) : 240));
    }
  }

  private row(item: QueueItem, index: number, current: boolean, count: number): HTMLLIElement {
    const li = document.createElement('li');
    li.dataset.item = String(item.id);
    li.setAttribute('aria-current', String(current));
    const jump = document.createElement('button');
    jump.type = 'button';
    jump.className = 'q-jump';
    jump.title = `Play ${item.title}`;
    const n = document.createElement('span');
    n.className = 'q-n num';
    n.textContent = current ? '▶' : String(index + 1);
    const text = document.createElement('span');
    text.className = 'q-text';
    const title = document.createElement('span');
    title.className = 'q-title';
    title.textContent = item.title;
    const author = document.createElement('span');
    author.className = 'q-author';
    author.textContent = item.author;
    text.append(title, author);
    const length = document.createElement('span');
    length.className = 'q-len num';
    length.textContent = item.durationMs === undefined ? 'live' : fmtClock(item.durationMs / 1000);
    jump.append(n, text, length);
    jump.addEventListener('click', () => this.actions.jump(index));
    const tools = document.createElement('span');
    tools.className = 'q-tools';
    tools.append(
      tool('↑', `Move ${item.title} up`, index === 0, () => this.actions.move(index, index - 1)),
      tool('↓', `Move ${item.title} down`, index === count - 1, () => this.actions.move(index, index + 1)),
      tool('✕', `Remove ${item.title}`, false, () => this.actions.remove(index)),
    );
    li.append(jump, tools);
    return li;
  }
}

function tool(label: string, title: string, disabled: boolean, run: () => void): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'q-tool';
  b.textContent = label;
  b.title = title;
  b.setAttribute('aria-label', title);
  b.disabled = disabled;
  b.addEventListener('click', run);
  return b;
}

function initialOf(title: string): string {
  return (/[\p{L}\p{N}]/u.exec(title)?.[0] ?? '♪').toUpperCase();
}

function hueOf(text: string): number {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
  return h;
}

export function isRepeatMode(value: string): value is RepeatMode {
  return value === 'off' || value === 'track' || value === 'queue';
}
