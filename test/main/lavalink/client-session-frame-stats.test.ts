/** Lavalink's frameStats as a client session computes them between two stats messages. */
import { afterEach, describe, expect, it } from 'vitest';
import { ClientSession } from '../../../src/main/lavalink/client-session.js';
import type { LavalinkPlayer } from '../../../src/main/lavalink/player.js';
import type { Gateway } from '../../../src/main/gateway/gateway.js';

/** A player as frameStats reads it: its session's counters and whether it plays. */
function player(id: string, counts: { sent: number; nulled: number }, playing = true) {
  return { chorusId: id, playing, frameCounts: () => ({ ...counts }), counts } as unknown as LavalinkPlayer & { counts: { sent: number; nulled: number }; playing: boolean };
}

const sessions: ClientSession[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) await s.close();
});

describe('frameStats', () => {
  it('averages sent, nulled and the deficit from 3000 a minute over the players that played through the minute', () => {
    const session = new ClientSession('s', '1', 'test', {} as Gateway, [], 5, () => ({}), () => undefined);
    sessions.push(session);
    const a = player('a', { sent: 100, nulled: 0 });
    const b = player('b', { sent: 500, nulled: 10 });
    session.players.set('1', a);
    session.players.set('2', b);
    // The first stats only take the counts: no minute has been seen yet.
    expect(session.frameStats()).toBeUndefined();
    a.counts.sent += 3000;
    b.counts.sent += 2900;
    b.counts.nulled += 60;
    const c = player('c', { sent: 0, nulled: 0 });
    session.players.set('3', c);
    // c joined within the minute: not counted. a: 3000 sent, deficit 0; b: 2900 sent, 60 nulled, deficit 40.
    expect(session.frameStats()).toEqual({ sent: 2950, nulled: 30, deficit: 20 });
    // A paused player does not count either.
    a.counts.sent += 3000;
    (b as { playing: boolean }).playing = false;
    c.counts.sent += 1500;
    c.counts.nulled += 1500;
    expect(session.frameStats()).toEqual({ sent: 2250, nulled: 750, deficit: 0 });
  });
});
