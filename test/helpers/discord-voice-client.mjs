// A bot-side @discordjs/voice client in its own process, driven over IPC by a test, so that it can
// run with NODE_EXTRA_CA_CERTS (read only at process start) pointing at the stand-in's test CA.
// Plain JavaScript: `node` runs it as is.
//
// Commands (process.send from the parent):
//   { cmd: 'join', guildId, channelId, userId, sessionId, token, endpoint }
//       joinVoiceChannel with an adapter fed VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE as a bot's
//       gateway would; every payload the library asks the bot to send comes back as 'payload'.
//   { cmd: 'server-update', token, endpoint }   a new VOICE_SERVER_UPDATE
//   { cmd: 'play', hz, frames }   a tone, Opus-encoded 20 ms at a time (@discordjs/opus), sent with
//       playOpusPacket on a 20 ms deadline clock, then five silence frames and speaking off
//   { cmd: 'player', hz, frames }   the same tone the ordinary way: an AudioPlayer playing an Opus
//       AudioResource (the library's own 20 ms clock, silence padding and speaking)
//   { cmd: 'destroy' }
// Events (to the parent): 'hello' (versions), 'state' (status changes), 'payload', 'played', 'error'.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';

const require = createRequire(import.meta.url);
const voice = require('@discordjs/voice');
const davey = require('@snazzah/davey');
const { OpusEncoder } = require('@discordjs/opus');

const SAMPLE_RATE = 48_000;
const FRAME_SAMPLES = 960;
const SILENCE = Buffer.from([0xf8, 0xff, 0xfe]);

const send = (msg) => process.send?.(msg);
let connection;
let adapterMethods;
let joinConfig;

// DAVE cannot be negotiated with the stand-in (no MLS there), so this only shows that the native
// module does its local part on this Node: a session and an MLS key package.
const daveSession = new davey.DAVESession(davey.DAVE_PROTOCOL_VERSION, '100000000000000002', '100000000000000003');
send({
  event: 'hello',
  node: process.version,
  voiceVersion: voice.version,
  // The package exports no package.json: read it beside its entry point (dist/index.js).
  voiceEngines: JSON.parse(fs.readFileSync(path.join(path.dirname(require.resolve('@discordjs/voice')), '..', 'package.json'), 'utf8')).engines,
  daveyVersion: davey.VERSION,
  daveProtocolVersion: davey.DAVE_PROTOCOL_VERSION,
  daveKeyPackageBytes: daveSession.getSerializedKeyPackage().length,
  dependencyReport: voice.generateDependencyReport(),
});

function voiceServerUpdate(token, endpoint) {
  adapterMethods.onVoiceServerUpdate({ token, guild_id: joinConfig.guildId, endpoint });
}

function join(msg) {
  joinConfig = msg;
  connection = voice.joinVoiceChannel({
    guildId: msg.guildId,
    channelId: msg.channelId,
    selfDeaf: true,
    adapterCreator: (methods) => {
      adapterMethods = methods;
      return {
        sendPayload: (payload) => {
          send({ event: 'payload', payload });
          return true;
        },
        destroy: () => send({ event: 'adapter-destroyed' }),
      };
    },
  });
  connection.on('stateChange', (from, to) => {
    if (from.status === to.status) return;
    send({ event: 'state', status: to.status, reason: to.reason, closeCode: to.closeCode, at: performance.now() });
  });
  connection.on('error', (err) => send({ event: 'error', message: err.message }));
  // What a bot's gateway hands over after the join payload: the state update, then the server update.
  adapterMethods.onVoiceStateUpdate({
    guild_id: msg.guildId,
    channel_id: msg.channelId,
    user_id: msg.userId,
    session_id: msg.sessionId,
    self_deaf: true,
    self_mute: false,
  });
  voiceServerUpdate(msg.token, msg.endpoint);
}

function toneFrame(encoder, hz, index) {
  const pcm = Buffer.alloc(FRAME_SAMPLES * 2 * 2);
  for (let i = 0; i < FRAME_SAMPLES; i++) {
    const n = index * FRAME_SAMPLES + i;
    const v = Math.round(Math.sin((2 * Math.PI * hz * n) / SAMPLE_RATE) * 12_000);
    pcm.writeInt16LE(v, i * 4);
    pcm.writeInt16LE(v, i * 4 + 2);
  }
  return encoder.encode(pcm);
}

function tone(hz, frames) {
  const encoder = new OpusEncoder(SAMPLE_RATE, 2);
  const packets = [];
  for (let i = 0; i < frames; i++) packets.push(toneFrame(encoder, hz, i));
  return packets;
}

async function play({ hz, frames }) {
  const packets = tone(hz, frames);
  for (let i = 0; i < 5; i++) packets.push(SILENCE);
  // playOpusPacket returns true when the packet went out, undefined when the connection was not ready.
  const sent = [];
  const start = performance.now();
  for (let i = 0; i < packets.length; i++) {
    const wait = start + i * 20 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    sent.push(connection.playOpusPacket(packets[i]) === true);
  }
  connection.setSpeaking(false);
  send({ event: 'played', sent, opus: packets.map((p) => p.toString('base64')) });
}

function playWithPlayer({ hz, frames }) {
  const packets = tone(hz, frames);
  const player = voice.createAudioPlayer();
  player.on('error', (err) => send({ event: 'error', message: err.message }));
  player.on('stateChange', (from, to) => {
    if (from.status !== voice.AudioPlayerStatus.Idle && to.status === voice.AudioPlayerStatus.Idle) {
      send({ event: 'played', opus: packets.map((p) => p.toString('base64')) });
    }
  });
  connection.subscribe(player);
  player.play(voice.createAudioResource(Readable.from(packets), { inputType: voice.StreamType.Opus }));
}

// The library loads its XChaCha20 package with dynamic imports, in this order, when it is first
// required; a connection made before that settles fails with "no valid encryption package". The
// same imports awaited here settle after the library's, so commands wait for them.
const encryptionLoaded = (async () => {
  for (const name of ['sodium-native', 'sodium', 'libsodium-wrappers', '@stablelib/xchacha20poly1305', '@noble/ciphers/chacha.js']) {
    try {
      await import(name);
      break;
    } catch {
      // not installed: the library tries the next one too
    }
  }
})();

process.on('message', async (msg) => {
  await encryptionLoaded;
  try {
    if (msg.cmd === 'join') join(msg);
    else if (msg.cmd === 'server-update') voiceServerUpdate(msg.token, msg.endpoint);
    else if (msg.cmd === 'play') play(msg).catch((err) => send({ event: 'error', message: err.message }));
    else if (msg.cmd === 'player') playWithPlayer(msg);
    else if (msg.cmd === 'destroy') {
      if (connection && connection.state.status !== 'destroyed') connection.destroy();
      process.disconnect();
    }
  } catch (err) {
    send({ event: 'error', message: err.message });
  }
});
