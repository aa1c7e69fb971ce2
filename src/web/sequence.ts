/**
 * Sequence numbers of a listener stream (u32, +1 per frame, wrapping at 2^32): tells the next
 * frame from a gap (frames lost or skipped), a stale frame (a duplicate or one from the past) and
 * a restart (a jump too large to be a loss: a new stream, counted as neither).
 */

/** A jump of more than this many frames (a minute) either way is a new stream, not a loss. */
export const MAX_GAP_FRAMES = 3000;

export type SeqVerdict =
  | { kind: 'first' }
  | { kind: 'next' }
  | { kind: 'gap'; lost: number }
  | { kind: 'stale' }
  | { kind: 'restart' };

export class SequenceTracker {
  /** Frames accepted (first, next, gap or restart). */
  received = 0;
  /** Frames missing between accepted ones. */
  lost = 0;
  /** Places where frames were missing. */
  gaps = 0;
  /** Frames refused as duplicates or from the past. */
  stale = 0;
  restarts = 0;
  private expected: number | undefined;

  /** Forget the position (a reconnect, a new track): the next frame starts afresh, uncounted. */
  resync(): void {
    this.expected = undefined;
  }

  accept(seq: number): SeqVerdict {
    seq >>>= 0;
    const expected = this.expected;
    let verdict: SeqVerdict;
    if (expected === undefined) {
      verdict = { kind: 'first' };
    } else {
      const ahead = (seq - expected) >>> 0; // 0 … 2^32-1, modulo 2^32
      if (ahead === 0) {
        verdict = { kind: 'next' };
      } else if (ahead <= MAX_GAP_FRAMES) {
        verdict = { kind: 'gap', lost: ahead };
      } else if (2 ** 32 - ahead <= MAX_GAP_FRAMES) {
        this.stale++;
        return { kind: 'stale' };
      } else {
        verdict = { kind: 'restart' };
      }
    }
    if (verdict.kind === 'gap') {
      this.lost += verdict.lost;
      this.gaps++;
    } else if (verdict.kind === 'restart') {
      this.restarts++;
    }
    this.received++;
    this.expected = (seq + 1) >>> 0;
    return verdict;
  }
}
