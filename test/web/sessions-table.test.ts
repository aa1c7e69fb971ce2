/**
 * When the sessions table calls late frames a problem: a few are absorbed by a listener's
 * jitter buffer, so the count turns red only past LATE_ALERT_RATIO of the frames sent.
 */
import { describe, expect, it } from 'vitest';
import { LATE_ALERT_RATIO, isUnderWay, lateMatters } from '../../src/web/sessions-table.js';

describe('sessions table', () => {
  it('calls late frames a problem only above 1 % of the frames sent', () => {
    expect(LATE_ALERT_RATIO).toBe(0.01);
    expect(lateMatters({ late: 0, sent: 0 })).toBe(false);
    expect(lateMatters({ late: 2, sent: 273 })).toBe(false);
    expect(lateMatters({ late: 10, sent: 1000 })).toBe(false);
    expect(lateMatters({ late: 11, sent: 1000 })).toBe(true);
    expect(lateMatters({ late: 78, sent: 894 })).toBe(true);
    expect(lateMatters({ late: 1, sent: 0 })).toBe(true);
  });

  it('counts a session as under way from starting to autopaused, and ended otherwise', () => {
    for (const s of ['starting', 'buffering', 'playing', 'paused', 'autopaused'] as const) expect(isUnderWay(s), s).toBe(true);
    for (const s of ['idle', 'finished', 'stopped', 'error'] as const) expect(isUnderWay(s), s).toBe(false);
  });
});
