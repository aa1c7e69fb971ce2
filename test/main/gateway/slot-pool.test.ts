/**
 * The gateway's session slots on real piscina threads (the built worker, dist/): pre-warmed
 * threads, k sessions to a thread, and a call into a slot whose thread died failing at once.
 */
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Ring } from '../../../src/shared/ring.js';
import { CONTROL_WORDS, type SessionInit } from '../../../src/shared/worker-messages.js';
import { REPO_ROOT } from '../../helpers/chorus-process.js';

type SlotPoolModule = typeof import('../../../src/main/gateway/slot-pool.js');
// The built module: its threads run the built worker (session-worker.js beside it).
const { SlotPool, SlotEndedError } = (await import(path.join(REPO_ROOT, 'dist/main/gateway/slot-pool.js'))) as SlotPoolModule;

let pool: InstanceType<SlotPoolModule['SlotPool']> | undefined;
afterEach(async () => {
  await pool?.close();
  pool = undefined;
});

let sids = 0;
function init(): SessionInit {
  const sid = ++sids;
  return {
    sid,
    sessionId: `slot-${sid}`,
    format: 'opus',
    ring: Ring.create(16 * 1024).buffer,
    control: new SharedArrayBuffer(CONTROL_WORDS * 4),
    prebufferFrames: 5,
    noListener: 'play',
    listeners: 0,
    nextSeq: 0,
    nextTimestamp: 0,
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('SlotPool', () => {
  it('keeps its pre-warmed threads: an attach takes one, and another starts in its place', async () => {
    const p = (pool = new SlotPool({ sessionsPerThread: 1, prewarm: 1, maxSessions: 4 }, () => undefined));
    await until('the pre-warmed thread', () => p.threads === 1);
    const { slot } = await p.attach(init());
    expect(slot.alive).toBe(true);
    await until('a new warm thread', () => p.threads === 2);
  });

  it('puts CHORUS_SESSIONS_PER_THREAD sessions on one thread, and the next on another', async () => {
    const p = (pool = new SlotPool({ sessionsPerThread: 2, prewarm: 0, maxSessions: 4 }, () => undefined));
    const a = await p.attach(init());
    const b = await p.attach(init());
    const c = await p.attach(init());
    expect(b.threadId).toBe(a.threadId);
    expect(c.threadId).not.toBe(a.threadId);
    expect(p.threads).toBe(2);
  });

  it('a call into a slot whose thread has died fails with SlotEndedError instead of waiting forever', async () => {
    const p = (pool = new SlotPool({ sessionsPerThread: 1, prewarm: 0, maxSessions: 2 }, () => undefined));
    const { slot } = await p.attach(init());
    expect((await slot.call((api) => api.stats())).status).toBe('idle');
    await slot.call((api) => api.crash('thread')).catch(() => undefined);
    await expect(slot.done).rejects.toThrow();
    expect(slot.alive).toBe(false);
    await expect(slot.call((api) => api.stats())).rejects.toBeInstanceOf(SlotEndedError);
    // The pool goes on: the next session gets a thread of its own.
    const next = await p.attach(init());
    expect((await next.slot.call((api) => api.stats())).status).toBe('idle');
  });
});
