/**
 * Processes of a load test: spawning a role and waiting for its ready line, stopping it (and
 * only it: by pid), and reading its RSS, CPU time and thread count from /proc (Linux).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { descendantsOf } from '../../test/helpers/chorus-process.js';
import { watchLines } from '../../test/helpers/line-log.js';

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 on every Linux this runs on.
}
const PAGE_BYTES = 4096;

export interface ProcSample {
  /** ms, the test's clock. */
  at: number;
  rssBytes: number;
  /** CPU seconds (user + system) since the process began. */
  cpuSeconds: number;
  /** CPU seconds of its children that have ended and been waited for (ffmpeg runs gone by). */
  reapedChildrenCpuSeconds: number;
  threads: number;
}

/** One /proc reading of `pid`, or undefined when it is gone. */
export function readProc(pid: number, at: number): ProcSample | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after the command: state(3) … utime(14) stime(15) cutime(16) cstime(17) …
    // num_threads(20) … rss(24).
    const field = (n: number) => Number(f[n - 3]);
    return {
      at,
      rssBytes: field(24) * PAGE_BYTES,
      cpuSeconds: (field(14) + field(15)) / clkTck,
      reapedChildrenCpuSeconds: (field(16) + field(17)) / clkTck,
      threads: field(20),
    };
  } catch {
    return undefined;
  }
}

/** A process and all its descendants (ffmpeg under the real engine), summed: CPU and RSS. */
export function readTree(pid: number, at: number): ProcSample | undefined {
  const root = readProc(pid, at);
  if (!root) return undefined;
  const sum = { ...root };
  for (const child of descendantsOf(pid)) {
    const s = readProc(child, at);
    if (!s) continue;
    sum.cpuSeconds += s.cpuSeconds;
    sum.rssBytes += s.rssBytes;
    sum.threads += s.threads;
  }
  return sum;
}

/** CPU seconds of a process's main thread (tid = pid) and of all its other threads. */
export function readThreadsCpu(pid: number): { main: number; others: number } | undefined {
  try {
    let main = 0;
    let others = 0;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const cpu = (Number(f[14 - 3]) + Number(f[15 - 3])) / clkTck;
        if (Number(tid) === pid) main += cpu;
        else others += cpu;
      } catch {
        // The thread ended meanwhile.
      }
    }
    return { main, others };
  } catch {
    return undefined;
  }
}

/** Busy and total jiffies of the whole machine (/proc/stat), for "how busy were the cores". */
export function readMachineCpu(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export interface Spawned {
  name: string;
  child: ChildProcess;
  pid: number;
  logs: string[];
  /** The first match of `pattern` in its output (past or future). */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  kill9(): Promise<void>;
}

const MAX_LOG_LINES = 2000;

export function spawnRole(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { nodeArgs?: string[]; ipc?: boolean; echo?: boolean } = {},
): Spawned {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...args], {
    env,
    stdio: opts.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  const log = watchLines(child, {
    name,
    maxLines: MAX_LOG_LINES,
    tailLines: 20,
    ...(opts.echo ? { onLine: (line: string) => process.stderr.write(`  [${name}] ${line}\n`) } : {}),
  });
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    child,
    pid: child.pid!,
    logs: log.lines,
    waitFor: log.waitFor,
    exited: log.exited,
    async stop(graceMs = 5000) {
      if (!alive()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (alive()) child.kill('SIGKILL');
      }, graceMs);
      await log.exited;
      clearTimeout(timer);
    },
    async kill9() {
      if (!alive()) return;
      child.kill('SIGKILL');
      await log.exited;
    },
  };
}

/**
 * The real engine of the built CLI `cli`, its socket and media root in `dir`: resolves once it
 * says it is ready, with its HTTP URL.
 */
export async function startEngineIn(
  cli: string,
  dir: string,
  env: NodeJS.ProcessEnv,
  opts: { nodeArgs?: string[] } = {},
): Promise<{ engine: Spawned; url: string; socketPath: string }> {
  const socketPath = path.join(dir, 'engine.sock');
  const engine = spawnRole('engine', [cli, 'engine'], { ...process.env, CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socketPath, CHORUS_MEDIA_ROOT: dir, ...env }, opts);
  try {
    const url = (await engine.waitFor(/engine ready http=(\S+)/, 60_000))[1]!;
    return { engine, url, socketPath };
  } catch (err) {
    // An engine that never said ready is not left running.
    await engine.stop();
    throw err;
  }
}
