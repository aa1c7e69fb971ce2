/**
 * GatewaySession's view of a track's position and length, from the engine's `ready`: chorus's
 * engine says where the play starts and how long the whole source is; a seed engine sends only
 * `duration`, the seconds the play gives from where it starts.
 */
import { describe, expect, it } from 'vitest';
import { GatewaySession } from '../../../src/main/gateway/session.js';
import { Redactor } from '../../../src/shared/redact.js';

function seekedTo(startAt: number): GatewaySession {
  const session = new GatewaySession('len', 1, 1000, 'wait', { framesRouted: 0, framesStale: 0, framesOverrun: 0, framesOversize: 0 }, new Redactor(), 20);
  session.beginTrack({ url: 'tone:440?seconds=30', format: 'opus', startAt });
  session.playAccepted(undefined);
  return session;
}

describe('a track seeked to 15 s of 30 s', () => {
  it('takes start and whole length from a ready that carries them', () => {
    const session = seekedTo(15);
    session.onReady({ type: 'ready', session_id: 'len', duration: 15, start_at: 15, track_duration: 30 });
    expect(session.summary()).toMatchObject({ startAt: 15, duration: 30 });
  });

  it('works the whole length out from a seed ready (duration only): start + what the play gives', () => {
    const session = seekedTo(15);
    session.onReady({ type: 'ready', session_id: 'len', duration: 15 });
    expect(session.summary()).toMatchObject({ startAt: 15, duration: 30 });
  });

  it('leaves the length unknown when the engine does not say', () => {
    const session = seekedTo(15);
    session.onReady({ type: 'ready', session_id: 'len' });
    const summary = session.summary();
    expect(summary.startAt).toBe(15);
    expect(summary.duration).toBeUndefined();
  });
});
