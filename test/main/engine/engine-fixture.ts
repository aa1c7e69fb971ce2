/** `chorus engine` as a child process with a fresh temp dir for its socket and media root. */
import fs from 'node:fs';
import path from 'node:path';
import { startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';

export interface EngineFixture {
  process: ChorusProcess;
  url: string;
  socketPath: string;
  mediaRoot: string;
  dir: string;
  stop(): Promise<void>;
}

export async function startEngineFixture(env: Record<string, string> = {}): Promise<EngineFixture> {
  const dir = tempDir('chorus-engine-');
  const mediaRoot = path.join(dir, 'media');
  fs.mkdirSync(mediaRoot);
  const socketPath = path.join(dir, 'engine.sock');
  const process = await startChorus('engine', {
    CHORUS_ENGINE_PORT: '0',
    CHORUS_SOCKET: socketPath,
    CHORUS_MEDIA_ROOT: mediaRoot,
    CHORUS_LOG_LEVEL: 'info',
    ...env,
  });
  return {
    process,
    url: process.httpUrl,
    socketPath,
    mediaRoot,
    dir,
    async stop() {
      try {
        await process.stop();
        if (fs.existsSync(socketPath)) throw new Error(`engine left its socket ${socketPath} behind`);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
