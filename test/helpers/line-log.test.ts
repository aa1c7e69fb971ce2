import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { watchLines } from './line-log.js';

/** A node child that writes `script`'s output, then stays until `stayMs` has passed. */
function child(script: string, stayMs = 0) {
  return spawn(process.execPath, ['-e', `${script}; setTimeout(() => {}, ${stayMs})`], { stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('watchLines', () => {
  it('matches lines of both streams, past and future, split across chunks', async () => {
    const c = child(`process.stdout.write('one\\ntw'); setTimeout(() => process.stdout.write('o\\n'), 50); process.stderr.write('ready http=x\\n')`, 300);
    const log = watchLines(c, { name: 'child' });
    expect((await log.waitFor(/^two$/, 5000)).input).toBe('two');
    expect((await log.waitFor(/ready http=(\S+)/, 5000))[1]).toBe('x');
    expect(log.lines).toEqual(expect.arrayContaining(['one', 'two', 'ready http=x']));
    expect(await log.exited).toBe(0);
  });

  it('keeps at most maxLines and still matches the later ones', async () => {
    const c = child(`for (let i = 0; i < 10; i++) console.log('line ' + i)`);
    const log = watchLines(c, { name: 'child', maxLines: 3 });
    await log.waitFor(/line 9/, 5000);
    expect(log.lines).toEqual(['line 0', 'line 1', 'line 2']);
  });

  it('rejects on a timeout, quoting the last lines', async () => {
    const c = child(`console.log('a'); console.log('b')`, 2000);
    const log = watchLines(c, { name: 'child', tailLines: 1 });
    await log.waitFor(/b/, 5000);
    await expect(log.waitFor(/never/, 100)).rejects.toThrow(/child: no line matching \/never\/ within 100 ms; last lines:\nb$/);
    c.kill('SIGKILL');
    expect(await log.exited).toBe(null);
  });

  it('rejects when the process exits before the line', async () => {
    const c = child(`console.log('bye'); process.exit(3)`);
    const log = watchLines(c, { name: 'child' });
    await expect(log.waitFor(/never/, 5000)).rejects.toThrow(/child exited \(code 3\) before a line matching \/never\/; last lines:\nbye/);
  });
});
