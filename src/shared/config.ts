/**
 * The configuration schema: every knob is an environment variable CHORUS_*, declared here once
 * with its default, what it allows and what it means. loadConfig() validates them all at start;
 * a bad value stops the process with one line naming the variable, the value and what is allowed.
 * The README's table is generated from this list (`chorus env --markdown`) and a test keeps the
 * two equal.
 */
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

interface VarSpec<T> {
  /** Shown in the table; '' means unset. */
  defaultText: string;
  allowed: string;
  meaning: string;
  /** Non-empty raw text to a value, or undefined if it is not allowed. Empty means the default. */
  parse(raw: string): T | undefined;
  /** Default computed at load time (paths that depend on the machine). */
  defaultValue?: () => T;
  /** A secret: a bad value is not echoed in the error. */
  secret?: boolean;
}

function int(min: number, max: number, defaultValue: number, meaning: string): VarSpec<number> {
  return {
    defaultText: String(defaultValue),
    allowed: `an integer from ${min} to ${max}`,
    meaning,
    parse(raw) {
      if (!/^-?\d+$/.test(raw.trim())) return undefined;
      const n = Number(raw.trim());
      return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
    },
  };
}

function optionalInt(min: number, max: number, meaning: string): VarSpec<number | undefined> {
  const base = int(min, max, 0, meaning);
  return {
    defaultText: '',
    allowed: `empty, or ${base.allowed}`,
    meaning,
    parse: base.parse,
    defaultValue: () => undefined,
  };
}

function oneOf<const T extends string>(values: readonly T[], defaultValue: T, meaning: string): VarSpec<T> {
  return {
    defaultText: defaultValue,
    allowed: `one of ${values.join(', ')}`,
    meaning,
    parse: (raw) => (values as readonly string[]).includes(raw.trim()) ? (raw.trim() as T) : undefined,
  };
}

function flag(meaning: string, on = false): VarSpec<boolean> {
  return {
    defaultText: on ? '1' : '0',
    allowed: '0 or 1',
    meaning,
    parse: (raw) => (raw.trim() === '1' ? true : raw.trim() === '0' ? false : undefined),
  };
}

function text(defaultValue: string, meaning: string, allowed = 'any text'): VarSpec<string> {
  return { defaultText: defaultValue, allowed, meaning, parse: (raw) => raw };
}

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
export const HOST_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

function host(defaultValue: string, meaning: string): VarSpec<string> {
  return {
    defaultText: defaultValue,
    allowed: 'an IP address or host name',
    meaning,
    parse(raw) {
      const v = raw.trim();
      return net.isIP(v) !== 0 || HOST_NAME.test(v) ? v : undefined;
    },
  };
}

function computed(defaultText: string, compute: () => string, meaning: string, allowed: string): VarSpec<string> {
  return {
    defaultText,
    allowed,
    meaning,
    parse: (raw) => raw.trim(),
    defaultValue: compute,
  };
}

function list(meaning: string, allowed: string): VarSpec<string[]> {
  return {
    defaultText: '',
    allowed,
    meaning,
    parse: (raw) =>
      raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
  };
}

/** Comma-separated IP addresses; any entry that is not one makes the whole value bad. */
function addressList(meaning: string): VarSpec<string[]> {
  const base = list(meaning, 'comma-separated IPv4 or IPv6 addresses');
  return {
    ...base,
    parse(raw) {
      const entries = base.parse(raw);
      return entries && entries.every((e) => net.isIP(e) !== 0) ? entries : undefined;
    },
  };
}

/**
 * Comma-separated host patterns: a host name, an IP address, or `*.` and a domain (any name under
 * it, not the domain itself). Lower-cased; any entry that is none of these makes the value bad.
 */
function hostPatterns(defaultValue: string, meaning: string): VarSpec<string[]> {
  return {
    defaultText: defaultValue,
    allowed: 'comma-separated host names, IP addresses or *.domain patterns',
    meaning,
    parse(raw) {
      const entries = raw
        .split(',')
        .map((e) => e.trim().toLowerCase())
        .filter((e) => e.length > 0);
      const valid = (e: string) => net.isIP(e) !== 0 || HOST_NAME.test(e.startsWith('*.') ? e.slice(2) : e);
      return entries.length > 0 && entries.every(valid) ? entries : undefined;
    },
  };
}

function httpUrl(defaultValue: string, meaning: string): VarSpec<string> {
  return {
    defaultText: defaultValue,
    allowed: 'an http:// URL',
    meaning,
    parse(raw) {
      try {
        const u = new URL(raw.trim());
        return u.protocol === 'http:' ? u.toString().replace(/\/$/, '') : undefined;
      } catch {
        return undefined;
      }
    },
  };
}

/** A shared secret: printable ASCII without spaces (it goes in a header and a URL), long enough not to be guessed. */
function token(meaning: string): VarSpec<string | undefined> {
  return {
    defaultText: '',
    allowed: 'empty, or 16 to 512 printable ASCII characters without spaces',
    meaning,
    secret: true,
    parse: (raw) => (/^[\x21-\x7e]{16,512}$/.test(raw.trim()) ? raw.trim() : undefined),
    defaultValue: () => undefined,
  };
}

const PORT = (defaultValue: number, meaning: string) => int(0, 65535, defaultValue, meaning);

/** Every variable chorus reads, in the order of the README's table. */
export const SCHEMA = {
  CHORUS_LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error'] as const, 'info', 'Least severe log line printed.'),
  CHORUS_TOKEN: token(
    'Access token. Set: every control request to the gateway and the engine needs it (`Authorization: Bearer` or `?token=`), and a play answers with a listen token for its session. Empty: no access control.',
  ),

  // engine
  CHORUS_ENGINE_HOST: host('127.0.0.1', "Address the engine's HTTP API binds to."),
  CHORUS_ENGINE_PORT: PORT(8180, "Port of the engine's HTTP API (0 picks a free one)."),
  CHORUS_SOCKET: computed(
    '<tmpdir>/chorus.sock',
    () => path.join(os.tmpdir(), 'chorus.sock'),
    'Unix socket the engine serves frames on (mode 0600) and the gateway connects to.',
    'a file path',
  ),
  CHORUS_MAX_SESSIONS: int(1, 100_000, 256, 'Most concurrent sessions; a play past it gets 429.'),
  CHORUS_IDLE_TIMEOUT_S: int(1, 31_536_000, 1800, 'A session paused or idle this long is stopped (the gateway instead releases a paused one after CHORUS_PAUSE_RELEASE_S and keeps it); an ended session is kept for status this long.'),
  CHORUS_PAUSE_RELEASE_S: int(1, 31_536_000, 60, 'A session paused this long gives back its ffmpeg, worker and buffers, keeping its exact frame position; resume starts its source again at that frame. A released session waits for its resume however long.'),
  CHORUS_GATEWAY_GRACE_S: int(1, 31_536_000, 60, 'With no gateway connected this long (since it left, or since the play), a live session is stopped: a gateway that reconnects sooner finds its sessions playing.'),
  CHORUS_MAX_ENDED_SESSIONS: int(0, 1_000_000, 1000, 'Ended sessions the engine keeps for status; past it the oldest are forgotten.'),
  CHORUS_OPUS_BITRATE: optionalInt(6000, 510_000, 'Opus bitrate in b/s for every format; empty: 128000 for opus, 256000 for web. Not for plays whose Opus passes through (CHORUS_OPUS_PASSTHROUGH): they keep the source\'s.'),
  CHORUS_FFMPEG: text('', 'ffmpeg binary; empty: ffmpeg-static, then @ffmpeg-installer/ffmpeg, then ffmpeg on PATH.', 'empty or a file path'),
  CHORUS_MEDIA_ROOT: computed(
    '<cwd>/media',
    () => path.join(process.cwd(), 'media'),
    'Only local files under this directory may be played; checked at start (the default is created if missing).',
    'a readable directory',
  ),
  CHORUS_ENGINE_BUFFER_MS: int(100, 600_000, 5000, 'Audio a session buffers in the engine with no gateway (or no credit) before its ffmpeg waits.'),
  CHORUS_ENCODER_THREADS: {
    ...int(1, 256, 1, 'Opus encoder threads in the engine; each session stays on one.'),
    defaultText: '<CPU cores>',
    defaultValue: () => os.availableParallelism(),
  },
  CHORUS_OPUS_COMPLEXITY: int(0, 10, 6, 'Opus encoder complexity: 10 is slowest and best; 7 and up add an analysis pass that costs about 40 % more CPU for little gain at 128 kb/s and up.'),
  CHORUS_OPUS_PASSTHROUGH: flag(
    'Plays of format opus with no gain or filters whose source is Opus in 20 ms packets (YouTube\'s WebM, Ogg Opus) send the source\'s own packets, not decoded and encoded again: the source\'s bitrate and channels go out, CHORUS_OPUS_BITRATE does not apply. 0: encode every play.',
    true,
  ),
  CHORUS_ENGINE_DIALECT: oneOf(
    ['chorus', 'natashi'] as const,
    'chorus',
    "What the engine's socket speaks. chorus: `hello` first, credit flow control, one Opus packet per frame. natashi: for natashi's Node layer unchanged, no `hello`, and `opus`/`web` payloads are an Ogg Opus stream (OpusHead and OpusTags pages, then a page per 20 ms packet); `pcm` is the same in both.",
  ),
  CHORUS_SOURCE_RETRIES: int(0, 100, 3, 'A remote source that ends early (connection reset, truncated body, stalled) is opened again at the frame it reached this many times before the play ends in `error`.'),
  CHORUS_SOURCE_RETRY_MS: int(10, 60_000, 500, 'Wait before the first reopening of a remote source that ended early; each further try waits twice as long.'),
  CHORUS_REMOTE_ALLOW: list(
    'Remote source hosts allowed even though they resolve to loopback, private, link-local or unique-local addresses.',
    'comma-separated host names, IP addresses or CIDR ranges',
  ),

  // gateway
  CHORUS_HOST: host('127.0.0.1', "Address the gateway's HTTP/WebSocket server binds to."),
  CHORUS_PORT: PORT(8080, "Port of the gateway's HTTP/WebSocket server (0 picks a free one)."),
  CHORUS_ENGINE_URL: httpUrl('http://127.0.0.1:8180', "The engine's HTTP API, as the gateway calls it."),
  CHORUS_RECONNECT_MAX_MS: int(50, 600_000, 5000, 'Longest wait between the gateway\'s attempts to reconnect to the engine socket.'),
  CHORUS_DATA_DIR: computed(
    '<cwd>/data',
    () => path.join(process.cwd(), 'data'),
    "Directory of the gateway's session store (chorus.db, SQLite): after a restart, sessions come back paused at their positions. A store that cannot be read stops the start.",
    'a directory path',
  ),
  CHORUS_RING_MS: int(100, 60_000, 3000, "Audio each session's ring holds."),
  CHORUS_READY_TIMEOUT_MS: int(100, 600_000, 20_000, "A play whose `ready` does not come from the engine this long (its socket down, its event lost) ends in `error`."),
  CHORUS_ENGINE_STALL_MS: int(100, 600_000, 5000, 'Sessions playing and no frame and no event from the engine this long: /health says `engine_starved` and 503 (another client took the engine\'s socket, as natashi allows).'),
  CHORUS_SESSIONS_PER_THREAD: int(1, 1024, 1, 'Sessions one worker thread paces: 1 is a thread per session.'),
  CHORUS_PREWARM_THREADS: int(0, 1024, 2, 'Worker threads booted ahead so a new session need not wait for one.'),
  CHORUS_PREWARM_MAX_THREADS: int(0, 1024, 32, 'Most worker threads booted ahead while plays come fast: as many as plays came in the busiest second of the last five, from CHORUS_PREWARM_THREADS up to this.'),
  CHORUS_BRIDGE_THREAD: flag(
    'In thread-per-session mode, a play with no booted thread ready starts on a shared bridge thread and moves to its own thread, mid-track and with no gap, once that has booted; 0: it waits for its thread.',
    true,
  ),
  CHORUS_PREBUFFER_MS: int(0, 10_000, 60, 'Audio a session waits for before its first frame.'),
  CHORUS_SLOW_LISTENER: oneOf(['wait', 'drop'] as const, 'wait', 'A listener that falls behind: wait for it (lose nothing) or drop frames for it (live).'),
  CHORUS_NO_LISTENER: oneOf(['pause', 'play'] as const, 'pause', 'A session nobody listens to: hold its place (pause) or play on unheard, like a radio (play).'),
  CHORUS_RTP_ALLOW: addressList('IP addresses RTP may be sent to besides loopback.'),
  CHORUS_VOICE_ALLOW: hostPatterns(
    '*.discord.media',
    'Discord voice endpoints chorus may open WSS and UDP to (PUT /sessions/:id/voice); any other gets 403 and no connection.',
  ),
  CHORUS_VOICE_UDP_SILENCE_MS: int(
    6000,
    600_000,
    15_000,
    "A Discord voice server that echoed the UDP keep-alives (one every 5 s, so this must be longer) and then sends nothing on UDP this long gets a fresh connection. A server that never echoed one is never judged.",
  ),
  CHORUS_MAX_LISTENERS: int(1, 100_000, 64, 'WebSocket listeners one session may have; one more gets 429 on the upgrade.'),
  CHORUS_MAX_RTP_SINKS: int(1, 1024, 8, 'RTP targets one session may send to; one more gets 429.'),
  CHORUS_PLAY_RATE: int(1, 1000, 5, 'Plays (play or seek) one session may start per second, in bursts of as many; past it 429 with Retry-After.'),
  CHORUS_MAX_BODY_BYTES: int(1024, 16 * 1024 * 1024, 64 * 1024, "Largest HTTP request body the gateway reads; a larger one gets 413."),
  CHORUS_MAX_WS_MESSAGE_BYTES: int(256, 16 * 1024 * 1024, 16 * 1024, 'Largest WebSocket message the gateway takes from a listener; a larger one closes it with 1009.'),
  CHORUS_WS_MESSAGE_RATE: int(1, 10_000, 20, 'Messages a WebSocket listener may send per second, in bursts of twice as many; past it the gateway closes it with 1008.'),
  CHORUS_MAX_CONNECTIONS: int(16, 1_000_000, 4096, "Open TCP connections the gateway keeps (HTTP and WebSocket together); one more is closed at once. Keep it below the open-file limit the gateway logs at start."),
  CHORUS_HEADERS_TIMEOUT_MS: int(1000, 600_000, 10_000, 'Time a client gets to send a request\'s headers, and an idle keep-alive connection is kept; past it the connection is closed.'),
  CHORUS_YTDLP: text('', 'yt-dlp binary for Lavalink site URLs and ytsearch:/ytmsearch:/scsearch: searches; empty: yt-dlp on PATH if there is one; `off`: none.', 'empty, off or a file path'),
  CHORUS_YTDLP_TIMEOUT_MS: int(1000, 600_000, 30_000, 'Longest one yt-dlp run (a search, reading a page, finding its media URL) may take before it is killed.'),
  CHORUS_LAVALINK_UPDATE_S: int(1, 3600, 5, 'Seconds between the Lavalink `playerUpdate` messages a client session gets for each player.'),
  CHORUS_DEBUG_ENDPOINTS: flag('Serves /debug/* (block the main thread, crash a worker) for fault tests. Never in production.'),
} as const;

export type VarName = keyof typeof SCHEMA;
type ValueOf<S> = S extends VarSpec<infer T> ? T : never;
export type Config = { -readonly [K in VarName]: ValueOf<(typeof SCHEMA)[K]> };

/** Validates every CHORUS_* variable; throws ConfigError (one line) at the first bad one. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(SCHEMA) as [VarName, VarSpec<unknown>][]) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') {
      out[name] = spec.defaultValue ? spec.defaultValue() : spec.parse(spec.defaultText);
      continue;
    }
    const value = spec.parse(raw);
    if (value === undefined) {
      throw new ConfigError(`${name}=${spec.secret ? '<hidden>' : JSON.stringify(raw)} is not allowed: expected ${spec.allowed}`);
    }
    out[name] = value;
  }
  const unknown = Object.keys(env).filter((k) => k.startsWith('CHORUS_') && !(k in SCHEMA));
  if (unknown.length > 0) {
    throw new ConfigError(`${unknown[0]} is not a chorus variable; known: see \`chorus env\``);
  }
  return out as Config;
}

/** The README's table, as markdown. */
export function configTable(): string {
  const rows = Object.entries(SCHEMA).map(
    ([name, spec]) => `| \`${name}\` | ${spec.defaultText === '' ? '(empty)' : `\`${spec.defaultText}\``} | ${spec.meaning} |`,
  );
  return ['| Variable | Default | Meaning |', '| --- | --- | --- |', ...rows].join('\n');
}
