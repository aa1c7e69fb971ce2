/**
 * Sessions across restarts: at start, every stored session comes back paused at its frame
 * position (released: no engine play, no worker, until resumed); while running, what changed is
 * written behind, at most every WRITE_EVERY_MS, in one transaction (store.ts).
 *
 * A session's queue is an optional part of its row. Its owner plugs in with `PersistentQueues`:
 * snapshot() is read for a session only after queueChanged(id) said it changed, and restore()
 * gets the stored state back once the session itself has come back.
 */
import { logger } from '../../shared/log.js';
import type { SessionStore, StoredSession } from './store.js';

const log = logger('gateway.store');

/** Longest a change waits before it is written. */
export const WRITE_EVERY_MS = 250;

/** What the gateway gives the store and takes back from it. */
export interface PersistentSessions {
  /** Every session with a track worth coming back to (queues aside). */
  storedSessions(): StoredSession[];
  /** Brings a stored session back, paused at its position; false if it cannot be (an id refused). */
  restoreSession(stored: StoredSession): boolean;
}

export interface PersistentQueues {
  /** The session's queue state, JSON-safe; undefined when it has none worth keeping. */
  snapshot(sessionId: string): unknown;
  /** The stored state back, after the session came back (or on its own, for a queue with no track). */
  restore(sessionId: string, state: unknown): void;
}

export class SessionPersistence {
  private timer: NodeJS.Timeout | undefined;
  /** The queue state of each session that has one, as last read from its owner. */
  private readonly queues = new Map<string, unknown>();
  private failing = false;

  constructor(
    private readonly store: SessionStore,
    private readonly sessions: PersistentSessions,
    private readonly queueOwner?: PersistentQueues,
  ) {}

  /** Brings back what the store holds; returns how many sessions came back. */
  restore(): number {
    let restored = 0;
    for (const stored of this.store.load()) {
      if (stored.track && this.sessions.restoreSession(stored)) restored++;
      if (stored.queue !== undefined && this.queueOwner) {
        this.queues.set(stored.id, stored.queue);
        this.queueOwner.restore(stored.id, stored.queue);
      }
    }
    if (restored > 0) log.info(`restored ${restored} session(s) from ${this.store.file}, paused at their positions`);
    return restored;
  }

  start(): void {
    this.timer ??= setInterval(() => this.flush(), WRITE_EVERY_MS);
  }

  /** The queue of `sessionId` changed: it is read and written with the next flush. */
  queueChanged(sessionId: string): void {
    const state = this.queueOwner?.snapshot(sessionId);
    if (state === undefined) this.queues.delete(sessionId);
    else this.queues.set(sessionId, state);
  }

  /** Writes what changed since the last flush. A failed write is logged and tried again next time. */
  flush(): void {
    const rows = new Map<string, StoredSession>();
    for (const s of this.sessions.storedSessions()) rows.set(s.id, s);
    for (const [id, queue] of this.queues) {
      const row = rows.get(id);
      if (row) row.queue = queue;
      else rows.set(id, { id, positionFrames: 0, paused: true, queue });
    }
    try {
      this.store.sync([...rows.values()]);
      if (this.failing) log.info('session store writable again', { file: this.store.file });
      this.failing = false;
    } catch (err) {
      if (!this.failing) log.error('cannot write the session store; retrying', { file: this.store.file, message: (err as Error).message });
      this.failing = true;
    }
  }

  /** A last write, then the store is closed. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
    this.store.close();
  }
}
