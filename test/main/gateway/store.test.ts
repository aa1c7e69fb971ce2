/** The session store (src/main/gateway/store.ts): better-sqlite3 on this Node, WAL, what it keeps, migrations, and refusing a bad file. */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SessionStore, STORE_FILE, StoreError, type StoredSession } from '../../../src/main/gateway/store.js';
import { tempDir } from '../../helpers/chorus-process.js';

const dirs: string[] = [];
function freshDir(): string {
  const dir = tempDir('chorus-store-');
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

const a: StoredSession = { id: 'a', track: { url: 'tone:440?seconds=60', format: 'opus', gain: 0.5, duration: 60 }, positionFrames: 1234, paused: true };
const b: StoredSession = { id: 'b', track: { url: 'song.flac', format: 'web' }, positionFrames: 0, paused: false, queue: { items: [{ url: 'x' }], index: 0, repeat: 'queue' } };

describe('SessionStore', () => {
  it(`loads better-sqlite3's native module on this Node (${process.version}) and keeps the database in WAL mode`, () => {
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(20);
    const dir = freshDir();
    const store = SessionStore.open(dir);
    store.sync([a]);
    store.close();
    const db = new Database(path.join(dir, STORE_FILE), { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.prepare('SELECT version FROM schema_version').all()).toEqual([{ version: 1 }]);
    db.close();
  });

  it('gives back what was written after a reopen: track, frame position, paused, queue; deletes sessions no longer given', () => {
    const dir = freshDir();
    let store = SessionStore.open(dir);
    expect(store.load()).toEqual([]);
    expect(store.sync([a, b])).toBe(2);
    // Unchanged rows are not written again; a moved position is.
    expect(store.sync([a, b])).toBe(0);
    expect(store.sync([{ ...a, positionFrames: 1300 }, b])).toBe(1);
    store.close();

    store = SessionStore.open(dir);
    const loaded = store.load();
    expect(loaded.sort((x, y) => x.id.localeCompare(y.id))).toEqual([{ ...a, positionFrames: 1300 }, b]);
    expect(store.sync([b])).toBe(1);
    store.close();

    store = SessionStore.open(dir);
    expect(store.load()).toEqual([b]);
    store.close();
  });

  it('refuses a file that is not a database with one line naming the file and what to do', () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, STORE_FILE), Buffer.alloc(8192, 0x5a));
    const err = captured(() => SessionStore.open(dir));
    expect(err).toBeInstanceOf(StoreError);
    expect(err.message).toContain(path.join(dir, STORE_FILE));
    expect(err.message).toMatch(/not a database/);
    expect(err.message).toMatch(/move it aside/);
    expect(err.message).not.toContain('\n');
  });

  it('refuses a database whose pages are damaged', () => {
    const dir = freshDir();
    const store = SessionStore.open(dir);
    store.sync(Array.from({ length: 400 }, (_, i) => ({ ...a, id: `s${i}`, track: { url: `tone:${100 + i}?seconds=600`, format: 'opus' as const } })));
    store.close();
    const file = path.join(dir, STORE_FILE);
    const bytes = fs.readFileSync(file);
    // Page 1 (the header and schema) stays; the table's pages past it are overwritten.
    bytes.fill(0xa5, 4096 + 100, bytes.length - 100);
    fs.writeFileSync(file, bytes);
    const err = captured(() => SessionStore.open(dir));
    expect(err).toBeInstanceOf(StoreError);
    expect(err.message).toContain(file);
  });

  it('refuses a store a newer chorus wrote', () => {
    const dir = freshDir();
    SessionStore.open(dir).close();
    const db = new Database(path.join(dir, STORE_FILE));
    db.prepare('UPDATE schema_version SET version = 99').run();
    db.close();
    expect(captured(() => SessionStore.open(dir)).message).toMatch(/schema version 99, newer than this chorus knows \(1\)/);
  });

  it('refuses a data directory it cannot create', () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'file'), '');
    expect(captured(() => SessionStore.open(path.join(dir, 'file', 'data'))).message).toMatch(/cannot create the data directory .*CHORUS_DATA_DIR/);
  });
});

function captured(op: () => unknown): Error {
  try {
    op();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}
