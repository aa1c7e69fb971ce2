/**
 * The process's open-file limit (RLIMIT_NOFILE): every connection, listener and engine socket
 * costs a descriptor, and running out of them fails /health, plays and new listeners alike.
 *
 * Node itself raises the soft limit to the hard one when it starts (PlatformInit in node.cc);
 * Node has no setrlimit for a process that was started otherwise (embedded, or a Node built
 * without it), so there raiseFdLimit() asks util-linux's `prlimit` to do it for our own pid —
 * raising the soft limit up to the hard one needs no privilege. It reads the limits from
 * /proc/self/limits (Linux) and says what it found, so the operator can compare them with
 * CHORUS_MAX_CONNECTIONS.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

export interface FdLimit {
  soft: number;
  hard: number;
}

/** RLIMIT_NOFILE of this process from /proc/self/limits, or undefined where there is none. */
export function readFdLimit(limits = '/proc/self/limits'): FdLimit | undefined {
  let text: string;
  try {
    text = fs.readFileSync(limits, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
  if (!m) return undefined;
  const n = (v: string) => (v === 'unlimited' ? Infinity : Number(v));
  return { soft: n(m[1]!), hard: n(m[2]!) };
}

export interface FdLimitReport {
  before: FdLimit | undefined;
  after: FdLimit | undefined;
  /** How the soft limit came to equal the hard one (`already`, `prlimit`), or why it does not. */
  how: string;
}

/** Raises the soft open-file limit to the hard limit if it is below it. */
export function raiseFdLimit(): FdLimitReport {
  const before = readFdLimit();
  if (!before) return { before, after: before, how: 'unknown' };
  if (before.soft >= before.hard) return { before, after: before, how: 'already' };
  const hard = Number.isFinite(before.hard) ? String(before.hard) : 'unlimited';
  const run = spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], { encoding: 'utf8', timeout: 5000 });
  const after = readFdLimit();
  if (after && after.soft >= after.hard) return { before, after, how: 'prlimit' };
  const why = run.error ? `prlimit could not run (${(run.error as NodeJS.ErrnoException).code ?? run.error.message})` : `prlimit failed: ${run.stderr.trim() || `exit ${run.status}`}`;
  return { before, after, how: why };
}
