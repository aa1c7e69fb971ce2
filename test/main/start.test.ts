/**
 * `chorus start` (what `npm start` runs): engine child + gateway in one command, audio with no
 * other set-up, and a clean stop on SIGTERM — no ffmpeg left, the socket's temp dir removed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startChorus } from '../helpers/chorus-process.js';
import { TestListener } from '../helpers/listener.js';

describe('chorus start', () => {
  it('plays a tone end to end, then stops everything on SIGTERM', async () => {
    const chorus = await startChorus('start', { CHORUS_PORT: '0' });
    const ready = await chorus.waitForLog(/start ready/);
    const socket = /socket=(\S+)/.exec(ready)![1]!;
    expect(fs.existsSync(socket)).toBe(true);

    const listener = await TestListener.connect(chorus.httpUrl, 'start-test');
    const res = await fetch(`${chorus.httpUrl}/sessions/start-test/play`, {
      method: 'POST',
      body: JSON.stringify({ url: 'tone:523?seconds=30' }),
    });
    expect(res.status).toBe(200);
    await listener.waitForFrames(25, 10_000);
    expect(Math.abs(listener.heardFrequency() - 523)).toBeLessThan(3);
    const running = chorus.descendants();
    expect(running.length).toBeGreaterThanOrEqual(2); // the engine and its ffmpeg at least

    // The listener stays connected: stopping must not wait on it. stop() sends SIGTERM, kills
    // after 5 s, and fails if any process the command started is still running.
    const closed = new Promise<number>((resolve) => listener.ws.once('close', (code) => resolve(code)));
    const stopping = Date.now();
    await chorus.stop();
    expect(Date.now() - stopping).toBeLessThan(4000);
    expect(chorus.child.exitCode).toBe(0);
    expect(await closed).toBe(1001);
    expect(fs.existsSync(path.dirname(socket))).toBe(false);
  });
});
