import { afterEach, describe, expect, it, vi } from 'vitest';
import { choiceFlag, defineCommand, numberFlag, parseCommandLine } from '../../../scripts/lib/cli.js';

const COMMAND = defineCommand({
  name: 'demo',
  usage: 'demo [flags]',
  about: 'A demonstration.',
  flags: {
    sessions: { type: 'string', value: 'N', help: 'how many (5)' },
    mode: { type: 'string', value: 'M', help: 'a or b\nsecond line' },
    env: { type: 'string', multiple: true, value: 'K=V', help: 'repeatable' },
    sweep: { type: 'boolean', help: 'a switch' },
  },
  notes: 'Notes at the end.',
});

const read = (v: { sessions?: string; mode?: string; env?: string[]; sweep?: boolean }) => ({
  sessions: numberFlag('sessions', v.sessions ?? '5', 1, 100, true),
  mode: choiceFlag('mode', v.mode ?? 'a', ['a', 'b'] as const),
  env: v.env ?? [],
  sweep: v.sweep ?? false,
});

/** Runs parseCommandLine on argv; returns what it returned, or the exit code and what it wrote. */
function run(argv: string[]): { value?: unknown; code?: number; out: string; err: string } {
  let out = '';
  let err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  vi.spyOn(process, 'exit').mockImplementation((code) => {
    throw Object.assign(new Error('exit'), { exitCode: code });
  });
  try {
    return { value: parseCommandLine(COMMAND, read, argv), out, err };
  } catch (e) {
    if ((e as { exitCode?: number }).exitCode === undefined) throw e;
    return { code: (e as { exitCode: number }).exitCode, out, err };
  } finally {
    vi.restoreAllMocks();
  }
}

describe('parseCommandLine', () => {
  afterEach(() => vi.restoreAllMocks());

  it('reads values in both spellings, repeated flags as a list, and defaults', () => {
    expect(run(['--sessions', '7', '--mode=b', '--env', 'A=1', '--env', 'B=2', '--sweep']).value).toEqual({ sessions: 7, mode: 'b', env: ['A=1', 'B=2'], sweep: true });
    expect(run([]).value).toEqual({ sessions: 5, mode: 'a', env: [], sweep: false });
  });

  it('prints every flag, its value and every help line on --help, then exits 0', () => {
    const r = run(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^usage: demo \[flags\]\n\nA demonstration\.\n/);
    expect(r.out).toMatch(/ {2}--sessions N +how many \(5\)\n/);
    expect(r.out).toMatch(/ {2}--mode M +a or b\n +second line\n/);
    expect(r.out).toMatch(/ {2}--env K=V +repeatable\n/);
    expect(r.out).toMatch(/ {2}--sweep +a switch\n/);
    expect(r.out).toMatch(/ {2}-h, --help +this list\n\nNotes at the end\.\n$/);
    expect(run(['-h']).code).toBe(0);
  });

  it('refuses an unknown flag, a missing value, a positional and a bad value with one line and exit code 2', () => {
    for (const [argv, message] of [
      [['--bogus'], /^demo: Unknown option '--bogus'/],
      [['--sessions'], /^demo: Option '--sessions <value>' argument missing/],
      [['extra'], /^demo: Unexpected argument 'extra'/],
      [['--sessions', '0'], /^demo: --sessions: expected a whole number from 1 to 100, got "0" \(see --help\)\n$/],
      [['--sessions', '2.5'], /^demo: --sessions: expected a whole number/],
      [['--sessions', ''], /^demo: --sessions: expected a whole number/],
      [['--mode', 'c'], /^demo: --mode: one of a, b, got "c" \(see --help\)\n$/],
    ] as const) {
      const r = run([...argv]);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toMatch(message);
    }
  });

  it('lets an error that is not about the command line through', () => {
    vi.spyOn(process, 'exit').mockImplementation(() => {
      throw new Error('must not exit');
    });
    expect(() =>
      parseCommandLine(COMMAND, () => {
        throw new TypeError('a bug');
      }, []),
    ).toThrow(TypeError);
  });
});
