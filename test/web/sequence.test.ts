/** The web player's sequence tracker (src/web/sequence.ts): gaps, stale frames, restarts, wrap. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_GAP_FRAMES, SequenceTracker } from '../../src/web/sequence.js';

describe('SequenceTracker', () => {
  it('accepts a contiguous run, across the 2^32 wrap', () => {
    const t = new SequenceTracker();
    const start = 2 ** 32 - 3;
    expect(t.accept(start)).toEqual({ kind: 'first' });
    for (let i = 1; i < 8; i++) expect(t.accept((start + i) >>> 0)).toEqual({ kind: 'next' });
    expect({ received: t.received, lost: t.lost, gaps: t.gaps, stale: t.stale }).toEqual({ received: 8, lost: 0, gaps: 0, stale: 0 });
  });

  it('counts the frames missing in a gap, also across the wrap', () => {
    const t = new SequenceTracker();
    t.accept(10);
    expect(t.accept(14)).toEqual({ kind: 'gap', lost: 3 });
    const w = new SequenceTracker();
    w.accept(2 ** 32 - 2);
    expect(w.accept(1)).toEqual({ kind: 'gap', lost: 2 }); // 2^32-1 and 0 went missing
    expect({ lost: t.lost + w.lost, gaps: t.gaps + w.gaps }).toEqual({ lost: 5, gaps: 2 });
  });

  it('refuses duplicates and frames from the past without moving on', () => {
    const t = new SequenceTracker();
    t.accept(100);
    t.accept(101);
    expect(t.accept(101)).toEqual({ kind: 'stale' });
    expect(t.accept(50)).toEqual({ kind: 'stale' });
    expect(t.accept(102)).toEqual({ kind: 'next' });
    expect(t.stale).toBe(2);
  });

  it('treats a jump beyond a minute either way as a new stream, and resync() as a fresh start', () => {
    const t = new SequenceTracker();
    t.accept(5);
    expect(t.accept(5 + MAX_GAP_FRAMES + 2)).toEqual({ kind: 'restart' });
    expect(t.accept(1)).toEqual({ kind: 'restart' });
    t.resync();
    expect(t.accept(777)).toEqual({ kind: 'first' });
    expect(t.lost).toBe(0);
  });

  it('lost = frames sent − frames received, for any pattern of small losses', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 32 - 1 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 400 }), (start, delivered) => {
        const t = new SequenceTracker();
        // The first frame always arrives; after it, each frame is delivered or dropped.
        t.accept(start);
        let dropped = 0;
        delivered.forEach((ok, i) => {
          if (ok) t.accept((start + 1 + i) >>> 0);
          else dropped++;
        });
        // Losses at the very end are not visible until a later frame arrives.
        const trailing = delivered.length - 1 - delivered.lastIndexOf(true);
        const visible = delivered.lastIndexOf(true) === -1 ? 0 : dropped - trailing;
        expect(t.lost).toBe(visible);
        expect(t.stale).toBe(0);
      }),
    );
  });
});
