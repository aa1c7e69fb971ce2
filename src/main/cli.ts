#!/usr/bin/env node
/** `chorus engine | gateway | start | env`: one binary for every role. */
import { ConfigError, configTable, loadConfig, SCHEMA, type Config } from '../shared/config.js';
import { setLogLevel } from '../shared/log.js';

const USAGE = `usage: chorus <command>

  start     engine (child process) and gateway together, with a socket in a temp dir
  engine    the audio engine: HTTP control API, ffmpeg + Opus pipelines, frame socket
  gateway   the gateway: engine socket client, per-session worker threads, HTTP/WebSocket API
  env       the environment variables chorus reads (--markdown for the README table)

Configuration is by CHORUS_* environment variables; see \`chorus env\`.`;

function config(): Config {
  try {
    const cfg = loadConfig();
    setLogLevel(cfg.CHORUS_LOG_LEVEL);
    return cfg;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`chorus: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

// A reader that goes away early (`chorus env | head`) is no error: the rest of the output is dropped.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
});

async function main(argv: string[]): Promise<void> {
  const command = argv[0];
  switch (command) {
    case 'engine': {
      const { runEngine } = await import('./engine/index.js');
      await runEngine(config());
      return;
    }
    case 'gateway': {
      const { runGateway } = await import('./gateway/index.js');
      await runGateway(config());
      return;
    }
    case 'start': {
      const { runStart } = await import('./start.js');
      await runStart(config());
      return;
    }
    case 'env':
      if (argv.includes('--markdown')) {
        process.stdout.write(configTable() + '\n');
      } else {
        for (const [name, spec] of Object.entries(SCHEMA)) {
          process.stdout.write(`${name.padEnd(28)} ${(spec.defaultText || '(empty)').padEnd(24)} ${spec.meaning}\n`);
        }
      }
      return;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return;
    default:
      process.stderr.write(`chorus: unknown command ${JSON.stringify(command)}\n${USAGE}\n`);
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  // One line for what a user can act on (a port in use, a socket path that cannot be bound);
  // the stack only when asked for with CHORUS_LOG_LEVEL=debug.
  const debug = process.env.CHORUS_LOG_LEVEL === 'debug';
  const text = err instanceof Error ? (debug ? (err.stack ?? err.message) : err.message) : String(err);
  process.stderr.write(`chorus ${process.argv[2] ?? ''}: ${text}\n`);
  process.exit(1);
});
