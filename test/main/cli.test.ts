/** The `chorus` command line (src/main/cli.ts) as a user runs it: what it prints, how it ends. */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLI } from '../helpers/chorus-process.js';

function run(args: string[], env: Record<string, string> = {}, closeStdout = false) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  // A reader that has gone before the first line, as `| head` is after its lines.
  if (closeStdout) child.stdout.destroy();
  let stdout = '';
  let stderr = '';
  if (!closeStdout) child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code) => resolve({ code, stdout, stderr })),
  );
}

describe('chorus cli', () => {
  it('`chorus env | head`: a reader that goes away early ends it quietly', async () => {
    const { code, stderr } = await run(['env'], {}, true);
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it('`chorus engine` with a media root that does not exist: exits with one line naming it', async () => {
    const { code, stderr } = await run(['engine'], { CHORUS_MEDIA_ROOT: '/nonexistent/media', CHORUS_ENGINE_PORT: '0' });
    expect(code).toBe(1);
    expect(stderr).toBe(
      'chorus engine: CHORUS_MEDIA_ROOT /nonexistent/media does not exist: create it, or point CHORUS_MEDIA_ROOT at your media folder\n',
    );
  });
});
