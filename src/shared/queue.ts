/**
 * A session's queue as the gateway keeps it, its HTTP API and its listeners see it (browser-safe:
 * the gateway, the web player and the tests all use this module).
 *
 *   QueueState   { items, index, repeat, nextId }: plain JSON, what a store saves and restores
 *   index        the item the listeners hear (or last heard); -1 when the queue is empty
 *   repeat       off: stop after the last item · track: the current item again and again ·
 *                queue: the first item after the last
 *
 * Commands come as `POST /sessions/:id/queue/<op>` with a JSON body, or as the WebSocket action
 * {"action":"queue","op":<op>,…} with the same fields: parseQueueCommand() reads both.
 */

export const REPEAT_MODES = ['off', 'track', 'queue'] as const;
export type RepeatMode = (typeof REPEAT_MODES)[number];

/** Most items a queue holds, and most tracks one add may give. */
export const MAX_QUEUE_ITEMS = 1000;
export const MAX_TRACKS_PER_ADD = 100;

export interface QueueItem {
  /** Unique in its queue (never reused), so an item is named the same after moves. */
  id: number;
  /** The identifier as it was added: a URL, a file, `tone:…`, or a resolver identifier. */
  url: string;
  format: 'opus' | 'web';
  title: string;
  author: string;
  /** Milliseconds; absent for a stream with no end. */
  durationMs?: number;
  artworkUrl?: string;
  /** Where it comes from: tone, http, local (the Lavalink resolver's source names). */
  source: string;
}

export interface QueueState {
  items: QueueItem[];
  index: number;
  repeat: RepeatMode;
  /** The id the next added item gets. */
  nextId: number;
}

/** What changed, with every queue event. */
export const QUEUE_CHANGES = ['add', 'remove', 'move', 'clear', 'shuffle', 'repeat', 'jump', 'next', 'previous', 'advance', 'failed', 'restore'] as const;
export type QueueChange = (typeof QUEUE_CHANGES)[number];

/** The listener event (also the HTTP answer's `queue`): the whole queue after the change. */
export interface QueueEvent {
  type: 'queue';
  session: string;
  change: QueueChange;
  queue: QueueState;
  /** A `failed` change: why the item could not be played. */
  reason?: string;
  /** A `failed` change: the id of the item that could not be played. */
  item?: number;
}

export type QueueCommand =
  | { op: 'add'; tracks: string[]; format?: 'opus' | 'web'; at?: number }
  | { op: 'next' }
  | { op: 'previous' }
  | { op: 'jump'; index: number }
  | { op: 'remove'; index: number }
  | { op: 'move'; from: number; to: number }
  | { op: 'clear' }
  | { op: 'shuffle' }
  | { op: 'repeat'; mode: RepeatMode };

export const QUEUE_OPS = ['add', 'next', 'previous', 'jump', 'remove', 'move', 'clear', 'shuffle', 'repeat'] as const;
export type QueueOp = QueueCommand['op'];

const MAX_IDENTIFIER_CHARS = 4096;

function isIndex(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}

/** Reads a command's fields; a string is the reason it was refused. */
export function parseQueueCommand(op: unknown, body: Record<string, unknown>): QueueCommand | string {
  switch (op) {
    case 'add': {
      const tracks = body.tracks ?? (body.track === undefined ? undefined : [body.track]);
      if (!Array.isArray(tracks) || tracks.length === 0) return 'add needs "tracks", a non-empty array of identifiers (or "track", one)';
      if (tracks.length > MAX_TRACKS_PER_ADD) return `add takes at most ${MAX_TRACKS_PER_ADD} tracks at once`;
      for (const t of tracks) {
        if (typeof t !== 'string' || t.trim() === '') return 'every track must be a non-empty string (a URL, a file, tone:<hz> or a search)';
        if (t.length > MAX_IDENTIFIER_CHARS) return `a track identifier is longer than ${MAX_IDENTIFIER_CHARS} characters`;
      }
      const command: QueueCommand = { op: 'add', tracks: tracks as string[] };
      if (body.format !== undefined) {
        if (body.format !== 'opus' && body.format !== 'web') return '"format" must be "opus" or "web"';
        command.format = body.format;
      }
      if (body.at !== undefined) {
        if (!isIndex(body.at)) return '"at" must be an index ≥ 0';
        command.at = body.at;
      }
      return command;
    }
    case 'next':
    case 'previous':
    case 'clear':
    case 'shuffle':
      return { op };
    case 'jump':
    case 'remove':
      if (!isIndex(body.index)) return `${op} needs "index", an integer ≥ 0`;
      return { op, index: body.index };
    case 'move':
      if (!isIndex(body.from) || !isIndex(body.to)) return 'move needs "from" and "to", integers ≥ 0';
      return { op, from: body.from, to: body.to };
    case 'repeat':
      if (!REPEAT_MODES.includes(body.mode as RepeatMode)) return 'repeat needs "mode": "off", "track" or "queue"';
      return { op, mode: body.mode as RepeatMode };
    default:
      return `unknown queue op; expected one of ${QUEUE_OPS.join(', ')}`;
  }
}
