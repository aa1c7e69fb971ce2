/**
 * The gateway's session store: SQLite (better-sqlite3) in CHORUS_DATA_DIR/chorus.db, WAL journal.
 * One row per session that has something to come back to after a restart:
 *
 *   sessions(id TEXT PRIMARY KEY, track TEXT, position_frames INTEGER, paused INTEGER,
 *            queue TEXT, updated_at INTEGER)
 *     track            JSON StoredTrack, or NULL (a session with only a queue)
 *     position_frames  20 ms frames from the start of the track: where it comes back
 *     paused           1 when the listener had paused it (it comes back paused either way)
 *     queue            JSON of the session's queue state, or NULL
 *   schema_version(version INTEGER): one row, the layout's version, for migrations
 *
 * open() refuses, with one line that says what to do, a file that is not a database, one whose
 * pages are damaged, one it cannot read or write, and one written by a newer chorus: a store that
 * would lose sessions silently is worse than a gateway that does not start.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { AudioFilters } from '../../shared/audio-filters.js';

export const STORE_FILE = 'chorus.db';

/** The layout this code writes; MIGRATIONS[v] takes a store from version v to v + 1. */
const SCHEMA_VERSION = 1;
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sessions (
     id TEXT PRIMARY KEY,
     track TEXT,
     position_frames INTEGER NOT NULL,
     paused INTEGER NOT NULL,
     queue TEXT,
     updated_at INTEGER NOT NULL
   ) WITHOUT ROWID`,
];

export interface StoredTrack {
  url: string;
  format: 'opus' | 'web';
  /** Linear gain (absent: 1). */
  gain?: number;
  /** The play's filters (absent: none), as a play takes them. */
  filters?: AudioFilters;
  /** The queue item the track plays (queue.ts), when the queue started it. */
  item?: number;
  /** Seconds of the whole source, when known. */
  duration?: number;
}

export interface StoredSession {
  id: string;
  track?: StoredTrack;
  positionFrames: number;
  paused: boolean;
  /** The session's queue state as its owner serialises it (JSON-safe), when it has one. */
  queue?: unknown;
}

export class StoreError extends Error {
  override name = 'StoreError';
}

interface Row {
  id: string;
  track: string | null;
  position_frames: number;
  paused: number;
  queue: string | null;
}

export class SessionStore {
  /** Each id's row as last written, to write only what changed. */
  private readonly written = new Map<string, Written>();
  private readonly upsert: Database.Statement;
  private readonly move: Database.Statement;
  private readonly remove: Database.Statement;
  private readonly syncAll: (rows: StoredSession[]) => number;

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
  ) {
    this.upsert = db.prepare(
      `INSERT INTO sessions (id, track, position_frames, paused, queue, updated_at) VALUES (@id, @track, @position_frames, @paused, @queue, @updated_at)
       ON CONFLICT(id) DO UPDATE SET track = excluded.track, position_frames = excluded.position_frames, paused = excluded.paused,
         queue = excluded.queue, updated_at = excluded.updated_at`,
    );
    this.move = db.prepare('UPDATE sessions SET position_frames = ?, paused = ?, updated_at = ? WHERE id = ?');
    this.remove = db.prepare('DELETE FROM sessions WHERE id = ?');
    this.syncAll = db.transaction((rows: StoredSession[]) => this.write(rows));
  }

  /** Opens (or creates) the store in `dir`; throws StoreError with a one-line reason. */
  static open(dir: string): SessionStore {
    const file = path.join(path.resolve(dir), STORE_FILE);
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
    } catch (err) {
      throw new StoreError(`cannot create the data directory ${path.dirname(file)} (CHORUS_DATA_DIR): ${(err as Error).message}`);
    }
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { fileMustExist: false });
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      const check = db.pragma('quick_check', { simple: true });
      if (check !== 'ok') throw new Error(`integrity check failed: ${String(check)}`);
      migrate(db, file);
      return new SessionStore(db, file);
    } catch (err) {
      db?.close();
      if (err instanceof StoreError) throw err;
      throw new StoreError(
        `session store ${file} cannot be used: ${(err as Error).message}; move it aside to start with no saved sessions, or point CHORUS_DATA_DIR elsewhere`,
      );
    }
  }

  /** Every stored session, as last written. */
  load(): StoredSession[] {
    const rows = this.db.prepare('SELECT id, track, position_frames, paused, queue FROM sessions ORDER BY updated_at, id').all() as Row[];
    return rows.map((row) => {
      const session: StoredSession = { id: row.id, positionFrames: row.position_frames, paused: row.paused !== 0 };
      if (row.track !== null) session.track = JSON.parse(row.track) as StoredTrack;
      if (row.queue !== null) session.queue = JSON.parse(row.queue);
      this.written.set(row.id, { track: row.track, position_frames: row.position_frames, paused: row.paused, queue: row.queue });
      return session;
    });
  }

  /**
   * Makes the store hold exactly `sessions`: rows that changed are written, rows of sessions not
   * in it deleted, in one transaction. Returns the rows written or deleted.
   */
  sync(sessions: StoredSession[]): number {
    return this.syncAll(sessions);
  }

  close(): void {
    this.db.close();
  }

  private write(sessions: StoredSession[]): number {
    let changes = 0;
    const seen = new Set<string>();
    const now = Date.now();
    for (const session of sessions) {
      seen.add(session.id);
      const row: Written = {
        track: session.track === undefined ? null : JSON.stringify(session.track),
        position_frames: Math.max(0, Math.round(session.positionFrames)),
        paused: session.paused ? 1 : 0,
        queue: session.queue === undefined ? null : JSON.stringify(session.queue),
      };
      const last = this.written.get(session.id);
      if (last && last.track === row.track && last.queue === row.queue) {
        // The usual change, a playing track's position: a narrow update.
        if (last.position_frames === row.position_frames && last.paused === row.paused) continue;
        this.move.run(row.position_frames, row.paused, now, session.id);
      } else {
        this.upsert.run({ id: session.id, ...row, updated_at: now });
      }
      this.written.set(session.id, row);
      changes++;
    }
    for (const id of this.written.keys()) {
      if (seen.has(id)) continue;
      this.remove.run(id);
      this.written.delete(id);
      changes++;
    }
    return changes;
  }
}

/** A row as written: track and queue as their JSON text. */
type Written = Omit<Row, 'id'>;

/** Brings the store to SCHEMA_VERSION, one migration per version, each in its own transaction. */
function migrate(db: Database.Database, file: string): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
  let version = row?.version ?? 0;
  if (version > SCHEMA_VERSION) {
    throw new StoreError(`session store ${file} has schema version ${version}, newer than this chorus knows (${SCHEMA_VERSION}): run a newer chorus, or move the file aside`);
  }
  if (row === undefined) db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
  while (version < SCHEMA_VERSION) {
    const step = MIGRATIONS[version]!;
    const to = version + 1;
    db.transaction(() => {
      db.exec(step);
      db.prepare('UPDATE schema_version SET version = ?').run(to);
    })();
    version = to;
  }
}
