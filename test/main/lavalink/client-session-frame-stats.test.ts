/** Lavalink's frameStats as a client session computes them between two stats messages. */
import { afterEach, describe, expect, it } from 'vitest';
import { ClientSession } from '../../../src/main/lavalink/client-session.js';
import type { LavalinkPlayer } from '../../../src/main/lavalink/player.js';
import type { Gateway } from '../../../src/main/gateway/gateway.js';

type FakePlayer = LavalinkPlayer & { counts: { sent: number; nulled: number } };

/** A player as frameStats reads it: its session's counters and since when it has played on. */
function player(id: string, counts: { sent: number; nulled: number }, playingSince: number | undefined) {
  return { chorusId: id, playingSince, frameCounts: () => ({ ...counts }), counts } as unknown as FakePlayer;
}

const sessions: ClientSession[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) await s.close();
});

const MINUTE = 60_000;

describe('frameStats', () => {
  it('averages sent, nulled and the deficit from 3000 a minute over the players that played through the minute', () => {
    const session = new ClientSession('s', '1', 'test', {} as Gateway, [], 5, () => ({}), () => undefined);
    sessions.push(session);
    const t0 = 1_000_000;
    const a = player('a', { sent: 100, nulled: 0 }, t0 - 5000);
    const b = player('b', { sent: 500, nulled: 10 }, t0 - 5000);
    session.players.set('1', a);
    session.players.set('2', b);
    // The first stats only take the counts: no minute has been seen yet.
    expect(session.frameStats(t0)).toBeUndefined();
    a.counts.sent += 3000;
    b.counts.sent += 2900;
    b.counts.nulled += 60;
    const c = player('c', { sent: 0, nulled: 0 }, t0 + 10_000);
    session.players.set('3', c);
    // c began within the minute: not counted. a: 3000 sent, deficit 0; b: 2900 sent, 60 nulled, deficit 40.
    expect(session.frameStats(t0 + MINUTE)).toEqual({ sent: 2950, nulled: 30, deficit: 20 });
    // A player paused (or resumed) within the minute does not count either; c has now played through one.
    a.counts.sent += 3000;
    b.playingSince = undefined;
    c.counts.sent += 1500;
    c.counts.nulled += 1500;
    expect(session.frameStats(t0 + 2 * MINUTE)).toEqual({ sent: 2250, nulled: 750, deficit: 0 });
    a.playingSince = t0 + 2 * MINUTE + 1;
    c.playingSince = undefined;
    expect(session.frameStats(t0 + 3 * MINUTE)).toBeUndefined();
  });
});
