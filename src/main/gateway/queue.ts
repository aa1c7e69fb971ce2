/**
 * A session's queue: its items, the index of the item heard, the repeat mode, and the rules for
 * what comes next. Plain state (src/shared/queue.ts) with snapshot() and restore(), and one
 * onChange hook called after every change: what a store needs to keep it across restarts.
 * Playing it is queue-player.ts's job.
 */
import { randomInt } from 'node:crypto';
import { MAX_QUEUE_ITEMS, REPEAT_MODES, type QueueChange, type QueueItem, type QueueState, type RepeatMode } from '../../shared/queue.js';
import { HttpError } from '../http-kit.js';

export type NewItem = Omit<QueueItem, 'id'>;

export class Queue {
  private items: QueueItem[] = [];
  private current = -1;
  private repeatMode: RepeatMode = 'off';
  private nextId = 1;
  /** Called after every change, with what changed. */
  onChange: ((change: QueueChange, state: QueueState) => void) | undefined;

  get length(): number {
    return this.items.length;
  }

  get index(): number {
    return this.current;
  }

  get repeat(): RepeatMode {
    return this.repeatMode;
  }

  /** A copy of the whole state, as plain JSON. */
  snapshot(): QueueState {
    return { items: this.items.map((item) => ({ ...item })), index: this.current, repeat: this.repeatMode, nextId: this.nextId };
  }

  /** Takes a saved state back; throws on one that is not a queue's (a damaged store). */
  restore(state: QueueState): void {
    const problem = stateProblem(state);
    if (problem) throw new Error(`not a queue state: ${problem}`);
    this.items = state.items.map((item) => ({ ...item }));
    this.current = state.index;
    this.repeatMode = state.repeat;
    this.nextId = Math.max(state.nextId, ...this.items.map((i) => i.id + 1), 1);
    this.changed('restore');
  }

  item(index: number): QueueItem | undefined {
    return this.items[index];
  }

  indexOf(id: number): number {
    return this.items.findIndex((item) => item.id === id);
  }

  /** Adds items at `at` (default: the end); returns the index of the first. */
  add(items: NewItem[], at = this.items.length): number {
    if (this.items.length + items.length > MAX_QUEUE_ITEMS) {
      throw new HttpError(409, `the queue would hold more than ${MAX_QUEUE_ITEMS} items`);
    }
    const where = Math.min(at, this.items.length);
    this.items.splice(where, 0, ...items.map((item) => ({ id: this.nextId++, ...item })));
    if (this.current < 0) this.current = where;
    else if (where <= this.current) this.current += items.length;
    this.changed('add');
    return where;
  }

  /** Removes the item at `index`; the current index follows the item it pointed to. */
  remove(index: number): QueueItem {
    this.check(index);
    const [removed] = this.items.splice(index, 1);
    if (index < this.current) this.current--;
    if (this.current >= this.items.length) this.current = this.items.length - 1;
    this.changed('remove');
    return removed!;
  }

  move(from: number, to: number): void {
    this.check(from);
    this.check(to);
    const [item] = this.items.splice(from, 1);
    this.items.splice(to, 0, item!);
    if (this.current === from) this.current = to;
    else if (from < this.current && to >= this.current) this.current--;
    else if (from > this.current && to <= this.current) this.current++;
    this.changed('move');
  }

  /** Removes every item but `keep` (the one playing), if given. */
  clear(keep?: number): void {
    const kept = keep === undefined ? undefined : this.items[keep];
    this.items = kept ? [kept] : [];
    this.current = kept ? 0 : -1;
    this.changed('clear');
  }

  /** Shuffles the items after the current one (the one playing stays, and so does what was heard). */
  shuffle(): void {
    const from = this.current + 1;
    for (let i = this.items.length - 1; i > from; i--) {
      const j = from + randomInt(i - from + 1);
      [this.items[i], this.items[j]] = [this.items[j]!, this.items[i]!];
    }
    this.changed('shuffle');
  }

  setRepeat(mode: RepeatMode): void {
    this.repeatMode = mode;
    this.changed('repeat');
  }

  /** Makes `index` the current item. */
  select(index: number, change: QueueChange): void {
    this.check(index);
    this.current = index;
    this.changed(change);
  }

  /** What plays after the item at `index` ends by itself (repeat applies); undefined: nothing. */
  following(index: number): number | undefined {
    if (index < 0 || index >= this.items.length) return undefined;
    if (this.repeatMode === 'track') return index;
    if (index + 1 < this.items.length) return index + 1;
    return this.repeatMode === 'queue' ? 0 : undefined;
  }

  /** What `next` goes to from the current item (repeat track does not hold it). */
  after(): number | undefined {
    if (this.current + 1 < this.items.length) return this.current + 1;
    return this.repeatMode !== 'off' && this.items.length > 0 ? 0 : undefined;
  }

  /** What `previous` goes to. */
  before(): number | undefined {
    if (this.current > 0) return this.current - 1;
    return this.repeatMode !== 'off' && this.items.length > 0 ? this.items.length - 1 : undefined;
  }

  /** Says a change happened without one (an item that failed to play). */
  notify(change: QueueChange): void {
    this.changed(change);
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.items.length) {
      throw new HttpError(400, `index ${index} is out of range (the queue has ${this.items.length} items)`);
    }
  }

  private changed(change: QueueChange): void {
    this.onChange?.(change, this.snapshot());
  }
}

function stateProblem(state: QueueState): string | undefined {
  if (typeof state !== 'object' || state === null) return 'not an object';
  if (!Array.isArray(state.items)) return 'items is not an array';
  if (state.items.length > MAX_QUEUE_ITEMS) return `more than ${MAX_QUEUE_ITEMS} items`;
  for (const item of state.items) {
    if (typeof item !== 'object' || item === null || !Number.isInteger(item.id) || typeof item.url !== 'string' || typeof item.title !== 'string') {
      return 'an item lacks id, url or title';
    }
  }
  if (!Number.isInteger(state.index) || state.index < -1 || state.index >= Math.max(state.items.length, 1) || (state.items.length === 0 && state.index !== -1)) {
    return `index ${String(state.index)} does not fit ${state.items.length} items`;
  }
  if (!REPEAT_MODES.includes(state.repeat)) return `repeat ${String(state.repeat)} is not off, track or queue`;
  if (!Number.isInteger(state.nextId)) return 'nextId is not an integer';
  return undefined;
}
