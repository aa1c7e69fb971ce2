/**
 * The queue's HTTP routes (the same commands come over the WebSocket as {"action":"queue",…}):
 *
 *   GET    /sessions/:id/queue                the queue and what plays now
 *   POST   /sessions/:id/queue                {"tracks":[…]} or {"track":…}: add (as /queue/add)
 *   POST   /sessions/:id/queue/add            {"tracks":[…], "format"?, "at"?}
 *   POST   /sessions/:id/queue/next | previous | clear | shuffle
 *   POST   /sessions/:id/queue/jump           {"index"}
 *   POST   /sessions/:id/queue/remove         {"index"}
 *   POST   /sessions/:id/queue/move           {"from","to"}
 *   POST   /sessions/:id/queue/repeat         {"mode":"off"|"track"|"queue"}
 *   DELETE /sessions/:id/queue                clear
 *
 * Answers {"queue": QueueState} (GET adds `nowPlaying`); errors are {"error"} with a 4xx.
 */
import type { ServerResponse } from 'node:http';
import { parseQueueCommand, type QueueItem } from '../../shared/queue.js';
import { gone, HttpError, sendJson } from '../http-kit.js';
import type { QueuePlayers } from './queue-player.js';

export interface NowPlaying {
  index: number;
  item: QueueItem;
  /** Seconds into the item the listeners have reached. */
  position: number;
  state: string;
}

export async function queueRoute(
  players: QueuePlayers,
  id: string,
  op: string | undefined,
  method: string,
  body: () => Promise<Record<string, unknown>>,
  res: ServerResponse,
  sessionState: () => string | undefined,
): Promise<void> {
  if (op === undefined && method === 'GET') {
    const player = players.get(id, false);
    const item = player.nowPlaying();
    const position = player.position();
    const state = sessionState();
    const nowPlaying: NowPlaying | undefined =
      item && position !== undefined && state !== undefined ? { index: player.queue.indexOf(item.id), item, position: Math.round(position * 1000) / 1000, state } : undefined;
    return sendJson(res, 200, { queue: player.queue.snapshot(), ...(nowPlaying ? { nowPlaying } : {}) });
  }
  if (op === undefined && method === 'DELETE') {
    await body();
    return sendJson(res, 200, { queue: await players.run(id, { op: 'clear' }) });
  }
  if (method !== 'POST') throw new HttpError(405, `${method} is not allowed here; use ${op === undefined ? 'GET, POST, DELETE' : 'POST'}`);
  const command = parseQueueCommand(op ?? 'add', await body());
  if (typeof command === 'string') throw new HttpError(op !== undefined && command.startsWith('unknown queue op') ? 404 : 400, command);
  // A client that goes away takes its add's lookups (yt-dlp runs) with it.
  return sendJson(res, 200, { queue: await players.run(id, command, gone(res)) });
}
