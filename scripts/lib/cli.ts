/**
 * The scripts' command lines: node:util parseArgs, with each flag's help written beside it so
 * that --help lists every flag. An unknown flag or a bad value stops the script with one line
 * (exit code 2).
 */
import { parseArgs } from 'node:util';

export interface Flag {
  type: 'string' | 'boolean';
  /** The flag may be given several times (its values come as a list). */
  multiple?: boolean;
  /** What the value is, for --help (N, FILE, …); string flags only. */
  value?: string;
  /** One or more lines (\n) for --help. */
  help: string;
}

export type Flags = Record<string, Flag>;

export interface Command<F extends Flags> {
  /** Names the script in its error lines. */
  name: string;
  /** How to run it, first line of --help. */
  usage: string;
  /** What it does, printed under the usage line. */
  about?: string;
  flags: F;
  /** Printed after the flags (examples, lists). */
  notes?: string;
}

type Values<F extends Flags> = {
  [K in keyof F]?: F[K]['type'] extends 'boolean' ? boolean : F[K]['multiple'] extends true ? string[] : string;
};

/** `command`, with its flags' types kept literal (for the values' types). */
export function defineCommand<const F extends Flags>(command: Command<F>): Command<F> {
  return command;
}

/** A flag given a value it does not take: reported as one line, with the exit code 2. */
export class UsageError extends Error {}

/**
 * Parses `argv` (default: this process's arguments) against `command.flags` and converts the
 * values with `read` (which throws UsageError for a bad one); prints help and exits on --help,
 * prints the problem and exits 2 on a bad command line.
 */
export function parseCommandLine<F extends Flags, T>(command: Command<F>, read: (values: Values<F>) => T, argv = process.argv.slice(2)): T {
  try {
    const options = Object.fromEntries(
      Object.entries(command.flags).map(([flag, f]) => [flag, { type: f.type, ...(f.multiple ? { multiple: true } : {}) }]),
    );
    const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false });
    if (values.help) {
      process.stdout.write(helpText(command));
      process.exit(0);
    }
    return read(values as Values<F>);
  } catch (err) {
    const parseError = err instanceof Error && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS');
    if (!(err instanceof UsageError) && !parseError) throw err;
    process.stderr.write(`${command.name}: ${(err as Error).message} (see --help)\n`);
    process.exit(2);
  }
}

function helpText(command: Command<Flags>): string {
  const label = (flag: string, f: Flag) => `--${flag}${f.type === 'string' ? ` ${f.value ?? 'VALUE'}` : ''}`;
  const entries = Object.entries(command.flags);
  const column = Math.max(...entries.map(([flag, f]) => label(flag, f).length), '-h, --help'.length) + 2;
  const lines = entries.flatMap(([flag, f]) =>
    f.help.split('\n').map((text, i) => `  ${(i === 0 ? label(flag, f) : '').padEnd(column)}${text}`),
  );
  lines.push(`  ${'-h, --help'.padEnd(column)}this list`);
  return [`usage: ${command.usage}`, ...(command.about ? ['', command.about] : []), '', ...lines, ...(command.notes ? ['', command.notes] : []), ''].join('\n');
}

/** `text` as a number from `min` to `max` (a whole one when `integer`). */
export function numberFlag(flag: string, text: string, min: number, max: number, integer = false): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new UsageError(`--${flag}: expected ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return v;
}

/** `text` if it is one of `choices`. */
export function choiceFlag<C extends string>(flag: string, text: string, choices: readonly C[]): C {
  if (!(choices as readonly string[]).includes(text)) throw new UsageError(`--${flag}: one of ${choices.join(', ')}, got ${JSON.stringify(text)}`);
  return text as C;
}
