/**
 * The baseline of `npm run bench:voice`: @discordjs/voice used the ordinary way, as natashi and
 * most bots do — one AudioPlayer per guild, all on the main thread, fed the engine's Opus frames
 * as they come off its socket. Run with NODE_EXTRA_CA_CERTS for the stand-in voice server.
 *
 *   node voice-baseline-main.js --socket PATH --engine URL --spec FILE --frames N [--block-every MS --block-ms MS]
 *
 * Each play is granted credit for its N frames at once, so its stream holds audio ahead of the
 * player, as a bot's ffmpeg pipe does (the engine encodes faster than real time).
 *
 * FILE is JSON: [{ id, url, guildId, channelId, userId, sessionId, token, endpoint }]. Prints
 * `voice-baseline ready` once every connection is ready, `voice-baseline playing` once every play
 * is started; stops on SIGTERM. With --block-every it busy-loops its main thread --block-ms long,
 * that often: the fault chorus's /debug/block makes in the gateway.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import {
  AudioPlayerStatus,
  createAudioPlayer,
  createAudioResource,
  entersState,
  joinVoiceChannel,
  NoSubscriberBehavior,
  StreamType,
  VoiceConnectionStatus,
  type VoiceConnection,
} from '@discordjs/voice';
import { frameKey, sessionIdOfKey } from '../../src/shared/protocol.js';
import { EngineLink } from '../../src/main/gateway/engine-link.js';
import type { VoiceServerState } from '../../src/shared/worker-messages.js';

interface GuildSpec extends VoiceServerState {
  id: string;
  url: string;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function join(spec: GuildSpec): VoiceConnection {
  let methods: Parameters<Parameters<typeof joinVoiceChannel>[0]['adapterCreator']>[0] | undefined;
  const connection = joinVoiceChannel({
    guildId: spec.guildId,
    channelId: spec.channelId,
    selfDeaf: true,
    adapterCreator: (m) => {
      methods = m;
      return { sendPayload: () => true, destroy: () => undefined };
    },
  });
  connection.on('error', () => undefined);
  // What the bot's gateway hands over after its join: the state update, then the server update.
  const adapter = methods!;
  adapter.onVoiceStateUpdate({
    guild_id: spec.guildId,
    channel_id: spec.channelId,
    user_id: spec.userId,
    session_id: spec.sessionId,
    self_deaf: true,
    self_mute: false,
  } as Parameters<typeof adapter.onVoiceStateUpdate>[0]);
  adapter.onVoiceServerUpdate({ guild_id: spec.guildId, token: spec.token, endpoint: spec.endpoint });
  return connection;
}

async function main(): Promise<void> {
  const specs = JSON.parse(fs.readFileSync(arg('--spec')!, 'utf8')) as GuildSpec[];
  const engine = arg('--engine')!;
  const frames = Number(arg('--frames'));
  const streams = new Map<string, Readable>();
  const connections = specs.map(join);
  await Promise.all(connections.map((c) => entersState(c, VoiceConnectionStatus.Ready, 30_000)));
  console.log('voice-baseline ready');

  const link = new EngineLink(arg('--socket')!, 1000, {
    frame: (buf, idStart, payloadStart, payloadEnd) => {
      streams.get(sessionIdOfKey(frameKey(buf, idStart)))?.push(Buffer.from(buf.subarray(payloadStart, payloadEnd)));
    },
    event: (event) => {
      if (event.type === 'finished' || event.type === 'error') streams.get(event.session_id)?.push(null);
    },
    connected: () => undefined,
    creditsEnabled: () => undefined,
    disconnected: () => undefined,
  });
  link.start();
  for (const [i, spec] of specs.entries()) {
    const stream = new Readable({ objectMode: true, read: () => undefined });
    streams.set(spec.id, stream);
    const player = createAudioPlayer({ behaviors: { noSubscriber: NoSubscriberBehavior.Play } });
    player.on('error', () => undefined);
    connections[i]!.subscribe(player);
    player.play(createAudioResource(stream, { inputType: StreamType.Opus }));
    const res = await fetch(`${engine}/session/${encodeURIComponent(spec.id)}/play`, {
      method: 'POST',
      body: JSON.stringify({ url: spec.url, format: 'opus' }),
    });
    if (!res.ok) throw new Error(`play ${spec.id}: ${res.status} ${await res.text()}`);
    link.sendCredits([{ sessionId: spec.id, frames }]);
    void entersState(player, AudioPlayerStatus.Playing, 30_000).catch(() => undefined);
  }
  console.log('voice-baseline playing');

  const every = Number(arg('--block-every') ?? 0);
  const blockMs = Number(arg('--block-ms') ?? 0);
  if (every > 0 && blockMs > 0) {
    setInterval(() => {
      const until = performance.now() + blockMs;
      while (performance.now() < until) {
        // Busy on purpose: a stalled main thread, as a heavy handler or a GC pause makes one.
      }
    }, every);
  }
  process.once('SIGTERM', () => {
    link.close();
    for (const c of connections) c.destroy(false);
    process.exit(0);
  });
}

main().catch((err: Error) => {
  console.error(`voice-baseline: ${err.message}`);
  process.exit(1);
});
