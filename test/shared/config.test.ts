import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, configTable, loadConfig, SCHEMA, type VarName } from '../../src/shared/config.js';

const NAMES = Object.keys(SCHEMA) as VarName[];

/** loadConfig's error for `env`, or a failure if it did not throw a ConfigError. */
function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`no ConfigError for ${JSON.stringify(env)}`);
}

describe('config', () => {
  it('loads with nothing set, using the documented defaults', () => {
    const cfg = loadConfig({});
    expect(cfg).toMatchObject({
      CHORUS_LOG_LEVEL: 'info',
      CHORUS_ENGINE_HOST: '127.0.0.1',
      CHORUS_ENGINE_PORT: 8180,
      CHORUS_MAX_SESSIONS: 256,
      CHORUS_IDLE_TIMEOUT_S: 1800,
      CHORUS_ENGINE_BUFFER_MS: 5000,
      CHORUS_ENGINE_URL: 'http://127.0.0.1:8180',
      CHORUS_SESSIONS_PER_THREAD: 1,
      CHORUS_SLOW_LISTENER: 'wait',
      CHORUS_DEBUG_ENDPOINTS: false,
      CHORUS_RTP_ALLOW: [],
      CHORUS_SOCKET: path.join(os.tmpdir(), 'chorus.sock'),
      CHORUS_MEDIA_ROOT: path.join(process.cwd(), 'media'),
      CHORUS_ENCODER_THREADS: os.availableParallelism(),
    });
    expect(cfg.CHORUS_OPUS_BITRATE).toBeUndefined();
    // every variable gets a value (or a deliberate undefined), none is forgotten
    expect(Object.keys(cfg).sort()).toEqual([...NAMES].sort());
  });

  it('every default is itself an allowed value', () => {
    for (const name of NAMES) {
      const spec = SCHEMA[name] as { defaultText: string; parse(raw: string): unknown; defaultValue?: () => unknown };
      if (spec.defaultValue || spec.defaultText === '') continue; // computed, or empty = default
      expect({ name, value: spec.parse(spec.defaultText) }).not.toEqual({ name, value: undefined });
    }
  });

  it('an empty or blank value means the default', () => {
    const defaults = loadConfig({});
    for (const name of NAMES) {
      for (const blank of ['', '   ', '\t']) {
        expect({ name, blank, value: loadConfig({ [name]: blank })[name] }).toEqual({ name, blank, value: defaults[name] });
      }
    }
  });

  it('reads good values, trimming the surrounding space of numbers and choices', () => {
    const cfg = loadConfig({
      CHORUS_ENGINE_PORT: ' 0 ',
      CHORUS_PORT: '65535',
      CHORUS_MAX_SESSIONS: '100000',
      CHORUS_OPUS_BITRATE: '64000',
      CHORUS_LOG_LEVEL: 'debug ',
      CHORUS_SLOW_LISTENER: 'drop',
      CHORUS_DEBUG_ENDPOINTS: '1',
      CHORUS_RTP_ALLOW: ' 10.0.0.2, fd00::7 ,,',
      CHORUS_ENGINE_URL: 'http://engine.internal:9000/',
      CHORUS_ENGINE_HOST: '0.0.0.0',
      CHORUS_HOST: 'localhost',
    });
    expect(cfg).toMatchObject({
      CHORUS_ENGINE_PORT: 0,
      CHORUS_PORT: 65535,
      CHORUS_MAX_SESSIONS: 100000,
      CHORUS_OPUS_BITRATE: 64000,
      CHORUS_LOG_LEVEL: 'debug',
      CHORUS_SLOW_LISTENER: 'drop',
      CHORUS_DEBUG_ENDPOINTS: true,
      CHORUS_RTP_ALLOW: ['10.0.0.2', 'fd00::7'],
      CHORUS_ENGINE_URL: 'http://engine.internal:9000',
      CHORUS_ENGINE_HOST: '0.0.0.0',
      CHORUS_HOST: 'localhost',
    });
    expect(loadConfig({ CHORUS_HOST: '::1' }).CHORUS_HOST).toBe('::1');
  });

  it.each([
    ['an integer that is not a number', 'CHORUS_ENGINE_PORT', 'eighty', 'an integer from 0 to 65535'],
    ['a fraction', 'CHORUS_MAX_SESSIONS', '1.5', 'an integer from 1 to 100000'],
    ['an exponent', 'CHORUS_MAX_SESSIONS', '1e3', 'an integer from 1 to 100000'],
    ['hex', 'CHORUS_RING_MS', '0x100', 'an integer from 100 to 60000'],
    ['a number with a unit', 'CHORUS_IDLE_TIMEOUT_S', '30s', 'an integer from 1 to 31536000'],
    ['an integer above the range', 'CHORUS_PORT', '65536', 'an integer from 0 to 65535'],
    ['an integer below the range', 'CHORUS_MAX_SESSIONS', '0', 'an integer from 1 to 100000'],
    ['a negative integer', 'CHORUS_PREBUFFER_MS', '-5', 'an integer from 0 to 10000'],
    ['a huge integer', 'CHORUS_ENGINE_BUFFER_MS', '99999999999999999999', 'an integer from 100 to 600000'],
    ['an optional integer out of range', 'CHORUS_OPUS_BITRATE', '1000', 'empty, or an integer from 6000 to 510000'],
    ['a choice not on the list', 'CHORUS_SLOW_LISTENER', 'skip', 'one of wait, drop'],
    ['a choice in the wrong case', 'CHORUS_LOG_LEVEL', 'INFO', 'one of debug, info, warn, error'],
    ['a flag that is not 0 or 1', 'CHORUS_DEBUG_ENDPOINTS', 'yes', '0 or 1'],
    ['an https URL where http is required', 'CHORUS_ENGINE_URL', 'https://127.0.0.1:8180', 'an http:// URL'],
    ['a URL that is not one', 'CHORUS_ENGINE_URL', '127.0.0.1:8180', 'an http:// URL'],
    ['a host with a port', 'CHORUS_HOST', '127.0.0.1:8080', 'an IP address or host name'],
    ['a host that is a URL', 'CHORUS_ENGINE_HOST', 'http://0.0.0.0', 'an IP address or host name'],
    ['a host with a space', 'CHORUS_HOST', 'my host', 'an IP address or host name'],
    ['a value with a newline', 'CHORUS_ENGINE_PORT', '80\n81', 'an integer from 0 to 65535'],
    ['a host name where addresses are required', 'CHORUS_RTP_ALLOW', '10.0.0.2,host.example', 'comma-separated IPv4 or IPv6 addresses'],
  ])('refuses %s with one line naming the variable, the value and what is allowed', (_kind, name, value, allowed) => {
    const err = configError({ [name]: value });
    expect(err.name).toBe('ConfigError');
    expect(err.message).not.toMatch(/[\n\r]/);
    expect(err.message).toContain(name);
    expect(err.message).toContain(JSON.stringify(value));
    expect(err.message).toContain(allowed);
    // the other variables do not matter: the same value alongside good ones is still refused
    expect(configError({ CHORUS_LOG_LEVEL: 'warn', [name]: value }).message).toBe(err.message);
  });

  it('every variable that can refuse a value says which one and what is allowed', () => {
    const probes = ['☃', '-1', '99999999999999', 'a b', 'x\ny', 'https://x'];
    let refused = 0;
    for (const name of NAMES) {
      const spec = SCHEMA[name] as { allowed: string; parse(raw: string): unknown; secret?: boolean };
      for (const value of probes) {
        if (spec.parse(value) !== undefined) continue;
        refused++;
        const err = configError({ [name]: value });
        expect(err.message).not.toMatch(/[\n\r]/);
        // A secret (CHORUS_TOKEN) is named but never echoed, not even a wrong one.
        expect(err.message).toContain(spec.secret ? `${name}=<hidden>` : `${name}=${JSON.stringify(value)}`);
        if (spec.secret) expect(err.message).not.toContain(JSON.stringify(value));
        expect(err.message).toContain(spec.allowed);
      }
    }
    expect(refused).toBeGreaterThan(NAMES.length);
  });

  it('refuses an unknown CHORUS_ variable by name, and ignores everything else', () => {
    const err = configError({ CHORUS_PROT: '8080' });
    expect(err.message).toContain('CHORUS_PROT');
    expect(err.message).not.toMatch(/\n/);
    expect(configError({ CHORUS_: 'x' }).message).toContain('CHORUS_');
    expect(() => loadConfig({ PATH: '/bin', HOME: '/root', NODE_ENV: 'test', CHORUSX: '1', chorus_port: 'x' })).not.toThrow();
  });
});

describe('README env table', () => {
  it('equals configTable() (regenerate with: npx tsc -p tsconfig.json && node dist/main/cli.js env --markdown)', () => {
    const readme = readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../README.md'), 'utf8');
    const start = '<!-- env-table:start -->';
    const end = '<!-- env-table:end -->';
    const from = readme.indexOf(start);
    const to = readme.indexOf(end);
    expect(from, `README.md has no ${start} marker`).toBeGreaterThanOrEqual(0);
    expect(to, `README.md has no ${end} marker after ${start}`).toBeGreaterThan(from);
    const table = readme.slice(from + start.length, to).trim();
    expect(
      table,
      `README.md's environment table is out of date with src/shared/config.ts. Regenerate it: ` +
        `run \`npx tsc -p tsconfig.json && node dist/main/cli.js env --markdown\` and put its output ` +
        `between the ${start} and ${end} lines of README.md.`,
    ).toBe(configTable());
  });

  it('every row of the table is one well-formed markdown row', () => {
    const rows = configTable().split('\n');
    expect(rows).toHaveLength(NAMES.length + 2);
    for (const row of rows) {
      // 4 pipes: a `|` inside a meaning or default would add a column
      expect({ row, pipes: row.split('|').length - 1 }).toEqual({ row, pipes: 4 });
    }
    for (const name of NAMES) expect(rows.some((r) => r.startsWith(`| \`${name}\` |`))).toBe(true);
  });
});
