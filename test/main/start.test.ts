/**
 * `chorus start` (what `npm start` runs): engine child + gateway in one command, audio with no
 * other set-up, and a clean stop on SIGTERM — no ffmpeg left, the socket's temp dir removed.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, startChorus, tempDir } from '../helpers/chorus-process.js';
import { TestListener } from '../helpers/listener.js';

describe('chorus start', () => {
  it('plays a tone end to end, then stops everything on SIGTERM', async () => {
    const cwd = tempDir('chorus-start-cwd-');
    const chorus = await startChorus('start', { CHORUS_PORT: '0' }, { cwd });
    const ready = await chorus.waitForLog(/start ready/);
    const socket = /socket=(\S+)/.exec(ready)![1]!;
    expect(fs.existsSync(socket)).toBe(true);

    // The banner: one URL to hear, one command to play, in the same session; and where things are.
    const listenUrl = /listen: +open (\S+) in a browser/.exec((await chorus.waitForLog(/listen: +open/)))![1]!;
    const playCommand = /play: +(curl .*)$/.exec(await chorus.waitForLog(/play: +curl/))![1]!;
    expect(listenUrl).not.toMatch(/token/); // no token set: none asked for
    const where = await chorus.waitForLog(/engine: http/);
    const engineUrl = /engine: (\S+)/.exec(where)![1]!;
    expect(where.replace(/ +/g, ' ')).toContain(`socket: ${socket}`);
    expect((await chorus.waitForLog(/media: /)).replace(/ +/g, ' ')).toContain(`media: ${path.join(fs.realpathSync(cwd), 'media')} `);
    expect(fs.statSync(path.join(cwd, 'media')).isDirectory()).toBe(true); // the default root, made
    expect((await fetch(listenUrl)).status).toBe(200);
    const session = new URL(listenUrl).searchParams.get('session')!;
    expect((await (await fetch(`${engineUrl}/health`)).json()) as object).toMatchObject({ status: 'ok' });

    // The web page listens to the session, the banner's command plays in it: the tone is heard.
    const listener = await TestListener.connect(chorus.httpUrl, session);
    const play = spawnSync('sh', ['-c', `${playCommand} --silent --show-error --fail`], { encoding: 'utf8' });
    expect(play.status, play.stderr).toBe(0);
    expect(JSON.parse(play.stdout)).toMatchObject({ session: { id: session } });
    await listener.waitForFrames(25, 10_000);
    expect(Math.abs(listener.heardFrequency() - 440)).toBeLessThan(3);
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
    fs.rmSync(cwd, { recursive: true, force: true });
  });
});

/** Pids of live processes whose environment holds `entry` (a marker only this test's processes have). */
function processesWithEnv(entry: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(entry)) found.push(Number(name));
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return found;
}

/** `chorus start` as a child of `parent` (a node script), with a TMPDIR of its own to find it by. */
function startUnder(parentScript: string, env: Record<string, string>, tmp: string) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
  const child = spawn(process.execPath, ['-e', parentScript, CLI], {
    env: { ...inherited, TMPDIR: tmp, CHORUS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const ready = new Promise<void>((resolve, reject) => {
    const onText = (t: string) => {
      log += t;
      if (/chorus is running/.test(log)) resolve();
    };
    child.stdout.setEncoding('utf8').on('data', onText);
    child.stderr.setEncoding('utf8').on('data', onText);
    child.once('exit', () => reject(new Error(`the parent exited before chorus was ready:\n${log}`)));
  });
  return { child, ready };
}

async function until(what: string, done: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('chorus start and the process that runs it', () => {
  // What npm does: runs the command under a shell, and on SIGTERM goes away without passing it on.
  const NPM_LIKE = `const c = require('node:child_process').spawn(process.execPath, [process.argv[1], 'start'], { stdio: 'inherit' });
setInterval(() => {}, 1000);`;

  it('run by npm: when npm is gone, chorus stops too and leaves nothing behind', async () => {
    const tmp = tempDir('chorus-start-npm-');
    try {
      const { child, ready } = startUnder(NPM_LIKE, { npm_lifecycle_event: 'start' }, tmp);
      await ready;
      const ours = processesWithEnv(`TMPDIR=${tmp}`);
      expect(ours.length).toBeGreaterThanOrEqual(3); // npm stand-in, chorus start, its engine
      child.kill('SIGKILL');
      await until('chorus to stop after npm went', () => processesWithEnv(`TMPDIR=${tmp}`).length === 0, 10_000);
      await until('the temp dir to be removed', () => fs.readdirSync(tmp).length === 0, 5000);
    } finally {
      for (const pid of processesWithEnv(`TMPDIR=${tmp}`)) process.kill(pid, 'SIGKILL');
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('killed outright (SIGKILL): its engine notices and stops', async () => {
    const tmp = tempDir('chorus-start-kill-');
    try {
      // Here chorus start is the direct child: no npm, so only the engine's IPC channel can tell.
      const { child, ready } = startUnder(
        `require('node:child_process').spawn(process.execPath, [process.argv[1], 'start'], { stdio: 'inherit' }).on('exit', () => process.exit());`,
        // Quiet: an engine that logs the lost gateway would die of its broken stderr pipe by luck.
        { CHORUS_LOG_LEVEL: 'error' },
        tmp,
      );
      await ready;
      const start = processesWithEnv(`TMPDIR=${tmp}`).filter((pid) => pid !== child.pid && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('\0start'));
      expect(start).toHaveLength(1);
      process.kill(start[0]!, 'SIGKILL');
      await until('the engine to stop after chorus start was killed', () => processesWithEnv(`TMPDIR=${tmp}`).length === 0, 10_000);
    } finally {
      for (const pid of processesWithEnv(`TMPDIR=${tmp}`)) process.kill(pid, 'SIGKILL');
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('chorus start that cannot start', () => {
  it('with a media root that does not exist: one line, nothing started', async () => {
    const tmp = tempDir('chorus-start-media-');
    try {
      const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
      const child = spawn(process.execPath, [CLI, 'start'], {
        env: { ...inherited, TMPDIR: tmp, CHORUS_PORT: '0', CHORUS_MEDIA_ROOT: '/nonexistent' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      expect(await new Promise((resolve) => child.once('exit', resolve))).toBe(1);
      expect(stderr).toBe('chorus start: CHORUS_MEDIA_ROOT /nonexistent does not exist: create it, or point CHORUS_MEDIA_ROOT at your media folder\n');
      expect(fs.readdirSync(tmp)).toEqual([]);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('with the gateway port taken: exits 1 with one line, and leaves no engine and no temp dir', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as AddressInfo).port;
    const tmp = tempDir('chorus-start-fail-');
    try {
      const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
      const child = spawn(process.execPath, [CLI, 'start'], {
        env: { ...inherited, TMPDIR: tmp, CHORUS_PORT: String(port) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).toBe(1);
      expect(stderr).toMatch(new RegExp(`chorus start: .*127\\.0\\.0\\.1:${port}.*CHORUS_PORT`));
      expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
      expect(processesWithEnv(`TMPDIR=${tmp}`)).toEqual([]);
      expect(fs.readdirSync(tmp)).toEqual([]);
    } finally {
      for (const pid of processesWithEnv(`TMPDIR=${tmp}`)) process.kill(pid, 'SIGKILL');
      fs.rmSync(tmp, { recursive: true, force: true });
      busy.close();
    }
  });
});
