/**
 * The lines a child process writes (stdout and stderr together), kept as they come and matched
 * by waiters: how the tests (chorus-process.ts) and the load scripts (scripts/lib/procs.ts) wait
 * for a ready line or any other log line of a process they started.
 */
import type { ChildProcess } from 'node:child_process';

export interface LineLogOptions {
  /** Names the process in errors. */
  name: string;
  /** Lines kept (later ones are still matched, not kept); default: all. */
  maxLines?: number;
  /** Last lines quoted in a waiter's error; default: all kept. */
  tailLines?: number;
  /** Called with every line, after it is kept. */
  onLine?: (line: string) => void;
}

export interface LineLog {
  /** Every line so far (up to maxLines). */
  readonly lines: string[];
  /** The first line (past or future) matching `pattern`; rejects after `timeoutMs` or when the process exits first. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** Resolves with the exit code (null after a signal) when the process exits. */
  exited: Promise<number | null>;
}

export function watchLines(child: ChildProcess, opts: LineLogOptions): LineLog {
  const lines: string[] = [];
  const maxLines = opts.maxLines ?? Infinity;
  const tail = () => lines.slice(-(opts.tailLines ?? Infinity)).join('\n');
  const watchers = new Set<(line: string) => void>();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const onLines = (stream: NodeJS.ReadableStream | null) => {
    if (!stream) return;
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (text: string) => {
      const split = (rest + text).split('\n');
      rest = split.pop() ?? '';
      for (const line of split) {
        if (lines.length < maxLines) lines.push(line);
        opts.onLine?.(line);
        for (const w of watchers) w(line);
      }
    });
  };
  onLines(child.stdout);
  onLines(child.stderr);

  const waitFor = (pattern: RegExp, timeoutMs: number) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      for (const l of lines) {
        const m = pattern.exec(l);
        if (m) return resolve(m);
      }
      const timer = setTimeout(() => {
        watchers.delete(watch);
        reject(new Error(`${opts.name}: no line matching ${pattern} within ${timeoutMs} ms; last lines:\n${tail()}`));
      }, timeoutMs);
      const watch = (line: string) => {
        const m = pattern.exec(line);
        if (!m) return;
        clearTimeout(timer);
        watchers.delete(watch);
        resolve(m);
      };
      watchers.add(watch);
      void exited.then((code) => {
        if (!watchers.has(watch)) return;
        clearTimeout(timer);
        watchers.delete(watch);
        reject(new Error(`${opts.name} exited (code ${code}) before a line matching ${pattern}; last lines:\n${tail()}`));
      });
    });

  return { lines, waitFor, exited };
}
