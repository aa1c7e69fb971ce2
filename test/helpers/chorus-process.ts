/**
 * Runs a chorus role (`engine`, `gateway`, `start`) from the built CLI as a child process, the
 * way a user does: waits for its `<role> ready http=http://HOST:PORT` log line, keeps its log,
 * and on stop() makes sure it and every process it started (ffmpeg) are gone.
 *
 *   const engine = await startChorus('engine', { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: sock });
 *   await fetch(`${engine.httpUrl}/health`);
 *   await engine.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { watchLines } from './line-log.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(REPO_ROOT, 'dist/main/cli.js');

export interface ChorusProcess {
  role: string;
  child: ChildProcess;
  pid: number;
  /** From the ready line, e.g. http://127.0.0.1:41234. */
  httpUrl: string;
  /** Every stderr/stdout line so far. */
  logs: string[];
  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Pids of the processes it runs now (ffmpeg and the like), from /proc. */
  descendants(): number[];
  /** SIGTERM, then SIGKILL after a grace period; rejects if it left a child process running. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** How long to wait for the ready line. */
  timeoutMs?: number;
  cwd?: string;
}

/** A fresh directory under the OS temp dir; remove it with fs.rmSync(dir, { recursive: true }). */
export function tempDir(prefix = 'chorus-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startChorus(role: string, env: Record<string, string>, opts: StartOptions = {}): Promise<ChorusProcess> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
  // Only the variables the test gives: a CHORUS_* in the developer's shell must not leak in.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
  // A gateway keeps its sessions in CHORUS_DATA_DIR: one of its own unless the test shares one,
  // or test files running side by side would bring back each other's sessions.
  const dataDir = env.CHORUS_DATA_DIR === undefined && role !== 'engine' ? tempDir('chorus-data-') : undefined;
  const child = spawn(process.execPath, [CLI, role], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: { ...inherited, ...(dataDir ? { CHORUS_DATA_DIR: dataDir } : {}), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = watchLines(child, { name: `chorus ${role}` });
  const waitForLog = async (pattern: RegExp, timeoutMs = 10_000) => (await log.waitFor(pattern, timeoutMs)).input;

  let ready: string;
  try {
    ready = await waitForLog(new RegExp(`${role} ready http=(\\S+)`), opts.timeoutMs ?? 15_000);
  } catch (err) {
    child.kill('SIGKILL');
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const httpUrl = /http=(\S+)/.exec(ready)![1]!;
  const pid = child.pid!;

  return {
    role,
    child,
    pid,
    httpUrl,
    logs: log.lines,
    waitForLog,
    descendants: () => descendantsOf(pid),
    async stop() {
      const running = descendantsOf(pid);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await log.exited;
        clearTimeout(timer);
      }
      if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
      const left = running.filter(isAlive);
      for (const p of left) process.kill(p, 'SIGKILL');
      if (left.length > 0) {
        throw new Error(`chorus ${role} left ${left.length} process(es) running: ${left.map(commandOf).join(', ')}`);
      }
    },
  };
}

/** Children, grandchildren… of `pid`, read from /proc (Linux). */
export function descendantsOf(pid: number): number[] {
  const parentOf = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = parentPid(Number(entry));
    if (ppid === undefined) continue;
    const list = parentOf.get(ppid) ?? [];
    list.push(Number(entry));
    parentOf.set(ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of parentOf.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

function parentPid(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function commandOf(pid: number): string {
  try {
    return `${pid} ${fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}`;
  } catch {
    return String(pid);
  }
}
