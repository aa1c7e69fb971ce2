/**
 * GatewaySession's view of a track's position and length, from the engine's `ready`: chorus's
 * engine says where the play starts and how long the whole source is; a seed engine sends only
 * `duration`, the seconds the play gives from where it starts.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GatewaySession, type DemuxCounters } from '../../../src/main/gateway/session.js';
import type { ListenerEvent } from '../../../src/shared/listener-protocol.js';
import { Redactor } from '../../../src/shared/redact.js';
import { Control } from '../../../src/shared/worker-messages.js';

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

/**
 * The session's state machine, without processes: the engine's `ready` and the worker's reports
 * move it, every change reaches the listeners once, and timers run on a fake clock.
 */
describe('GatewaySession transitions', () => {
  const T0 = Date.UTC(2026, 0, 1);

  function session(): { s: GatewaySession; events: ListenerEvent[]; counters: DemuxCounters } {
    const counters: DemuxCounters = { framesRouted: 0, framesStale: 0, framesOverrun: 0, framesOversize: 0 };
    const s = new GatewaySession('fsm', 1, 1000, 'wait', counters, new Redactor(), 20);
    const events: ListenerEvent[] = [];
    s.observer = (e) => events.push(e);
    return { s, events, counters };
  }
  const states = (events: ListenerEvent[]) => events.flatMap((e) => (e.type === 'state' ? [e.state] : []));
  const track = { url: 'tone:440', format: 'opus' as const, startAt: 0 };

  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('idle → starting → buffering → playing → paused → playing → finished, each told once', () => {
    const { s, events } = session();
    expect(s.state.status).toBe('idle');
    s.beginTrack(track);
    s.playAccepted(1);
    // The worker is ready before the engine: the session still waits for the engine's ready.
    s.onPlayerStatus('buffering');
    expect(s.state.status).toBe('starting');
    s.onReady({ type: 'ready', session_id: 'fsm', play: 1 });
    expect(s.state.status).toBe('buffering');
    s.onPlayerStatus('playing');
    s.onPlayerStatus('playing');
    vi.setSystemTime(T0 + 1000);
    s.onPlayerStatus('paused');
    expect(s.pausedSince).toBe(T0 + 1000);
    vi.setSystemTime(T0 + 3000);
    s.onPlayerStatus('autopaused');
    // Paused, then autopaused: the idle clock keeps counting from the first pause.
    expect(s.pausedSince).toBe(T0 + 1000);
    s.onPlayerStatus('playing');
    expect(s.pausedSince).toBe(0);
    s.onPlayerStatus('finished');
    expect(states(events)).toEqual(['starting', 'buffering', 'playing', 'paused', 'autopaused', 'playing', 'finished']);
    expect(events.filter((e) => e.type === 'finished')).toHaveLength(1);
    expect(s.active).toBe(false);
    expect(s.summary()).toMatchObject({ state: 'finished', url: 'tone:440' });
  });

  it('says why it is autopaused, and why a paused-by-voice track waits', () => {
    const { s, events } = session();
    s.beginTrack(track);
    s.onReady({ type: 'ready', session_id: 'fsm' });
    s.onPlayerStatus('autopaused');
    expect(s.summary().reason).toMatch(/nobody is listening/);
    s.onPlayerStatus('paused', 'voice connection lost');
    expect(events.at(-1)).toEqual({ type: 'state', session: 'fsm', state: 'paused', reason: 'voice connection lost' });
  });

  it('ends the track in error when its ready does not come in time, and not once it came', () => {
    const late = session();
    let expired = 0;
    late.s.beginTrack(track);
    late.s.playAccepted(1);
    late.s.awaitReady(5000, () => expired++);
    vi.advanceTimersByTime(4999);
    expect(expired).toBe(0);
    vi.advanceTimersByTime(1);
    expect(expired).toBe(1);

    const onTime = session();
    onTime.s.beginTrack(track);
    onTime.s.playAccepted(1);
    onTime.s.awaitReady(5000, () => expired++);
    onTime.s.onReady({ type: 'ready', session_id: 'fsm', play: 1 });
    vi.advanceTimersByTime(10_000);
    expect(expired).toBe(1);
  });

  it("a replaced track's ready timer never fires for the new one", () => {
    const { s } = session();
    let expired = 0;
    s.beginTrack(track);
    s.awaitReady(5000, () => expired++);
    vi.advanceTimersByTime(3000);
    s.beginTrack({ ...track, startAt: 10 });
    vi.advanceTimersByTime(3000);
    expect(expired).toBe(0);
    expect(s.state.status).toBe('starting');
  });

  it('fail: error with the reason redacted, the error event, frames refused, the timer gone', () => {
    const { s, events, counters } = session();
    let expired = 0;
    s.beginTrack(track);
    s.playAccepted(1);
    s.awaitReady(5000, () => expired++);
    s.fail('ffmpeg: http://user:secret@example.com/a.mp3 refused');
    expect(s.state.status).toBe('error');
    const error = events.find((e) => e.type === 'error');
    expect(JSON.stringify(error)).not.toMatch(/secret/);
    s.acceptFrame(Buffer.from([1, 2, 3]), 0, 3, true);
    expect(counters.framesStale).toBe(1);
    expect(s.grantCredit()).toBe(0);
    vi.advanceTimersByTime(10_000);
    expect(expired).toBe(0);
  });

  it('stop: stopped with its reason, the ring emptied, no credit', () => {
    const { s, events } = session();
    s.beginTrack(track);
    s.playAccepted(1);
    s.onReady({ type: 'ready', session_id: 'fsm', play: 1 });
    s.acceptFrame(Buffer.from([1, 2, 3]), 0, 3, true);
    expect(s.ring!.records()).toBe(1);
    s.stopTrack('idle for more than 300 s');
    expect(s.ring!.records()).toBe(0);
    expect(events.at(-1)).toEqual({ type: 'state', session: 'fsm', state: 'stopped', reason: 'idle for more than 300 s' });
    expect(s.grantCredit()).toBe(0);
    expect(s.isStale(1)).toBe(true);
  });

  it('marks an engine loss only on a track under way, and a new track starts unmarked', () => {
    const { s } = session();
    expect(s.markEngineLost()).toBe(false);
    s.beginTrack(track);
    expect(s.markEngineLost()).toBe(true);
    expect(s.engineLost).toBe(true);
    s.engineBack();
    expect(s.engineLost).toBe(false);
    s.markEngineLost();
    s.beginTrack({ ...track, startAt: 5 });
    expect(s.engineLost).toBe(false);
  });

  it('the end of input: finished at once with no worker to play out, else when the worker says', () => {
    const noWorker = session();
    noWorker.s.beginTrack(track);
    noWorker.s.endInput(false);
    expect(noWorker.s.state.status).toBe('finished');

    const { s } = session();
    s.beginTrack(track);
    s.playAccepted(1);
    s.onReady({ type: 'ready', session_id: 'fsm', play: 1 });
    s.onPlayerStatus('playing');
    s.grantCredit();
    expect(s.awaitsEngine(true)).toBe(true);
    s.endInput(true);
    expect(s.state.status).toBe('playing');
    expect(s.awaitsEngine(true)).toBe(false);
  });

  it("counts the position in frames delivered since the play began, at a timescale filter's pace", () => {
    const { s } = session();
    expect(s.positionFrames).toBeUndefined();
    Atomics.store(s.control, Control.Sent, 40);
    s.beginTrack({ ...track, startAt: 10 });
    Atomics.store(s.control, Control.Sent, 140);
    expect(s.positionFrames).toBe(600);
    expect(s.summary().position).toBe(12);
    s.beginTrack({ ...track, startAt: 10, sound: { filters: { timescale: { speed: 1.5 } } } });
    Atomics.store(s.control, Control.Sent, 240);
    expect(s.positionFrames).toBe(650);
  });

  it('a splice: the track plays on untold, the old play is refused, its ready marks where the new frames begin, the position runs on through the cut', () => {
    const counters: DemuxCounters = { framesRouted: 0, framesStale: 0, framesOverrun: 0, framesOversize: 0 };
    // A ring of 400 ms: 20 frames.
    const s = new GatewaySession('fsm', 1, 400, 'wait', counters, new Redactor(), 20);
    const events: ListenerEvent[] = [];
    s.observer = (e) => events.push(e);
    s.beginTrack({ ...track, startAt: 10 });
    s.playAccepted(1);
    s.onReady({ type: 'ready', session_id: 'fsm', play: 1, start_at: 10, track_duration: 30 });
    s.onPlayerStatus('playing');
    for (let i = 0; i < 20; i++) s.acceptFrame(Buffer.alloc(100, 1), 0, 100, true);
    Atomics.store(s.control, Control.Sent, 5);
    expect(s.canSplice).toBe(true);
    const told = events.length;
    // The worker cuts at ring record 13, when Sent is 13: track frame 500 + 13.
    const spliced = s.beginSplice({ filters: { timescale: { speed: 2 } } }, { cut: 13, sent: 13 }, 16)!;
    expect(spliced).toMatchObject({ startAt: 10.26, duration: 30, sound: { filters: { timescale: { speed: 2 } } } });
    expect(s.state.status).toBe('playing');
    expect(s.spliceUnderWay).toBe(true);
    // The old play's frames and events still coming are stale.
    s.acceptFrame(Buffer.alloc(100, 1), 0, 100, true);
    expect(counters.framesStale).toBe(1);
    expect(s.isStale(1)).toBe(true);
    s.playAccepted(2);
    s.onPlayerStatus('playing');
    expect(s.state.status).toBe('playing');
    // Credit: the ring is full, but its 7 old records after the cut will be skipped: room for 7.
    expect(s.grantCredit()).toBe(7);
    s.onReady({ type: 'ready', session_id: 'fsm', play: 2, start_at: 10.26, track_duration: 30 });
    expect(events.slice(told)).toEqual([]);
    s.acceptFrame(Buffer.alloc(100, 2), 0, 100, true);
    expect(s.ring!.stats().written).toBe(21);
    // Up to the cut the old play's pace, then the new play's (twice as fast) from frame 513.
    Atomics.store(s.control, Control.Sent, 10);
    expect(s.positionFrames).toBe(510);
    Atomics.store(s.control, Control.Sent, 13);
    expect(s.positionFrames).toBe(513);
    expect(s.spliceUnderWay).toBe(true);
    Atomics.store(s.control, Control.Sent, 23);
    expect(s.positionFrames).toBe(533);
    expect(s.spliceUnderWay).toBe(false);
    // Too near the end of the track: no splice, nothing changed.
    expect(s.beginSplice(undefined, { cut: 40, sent: 740 }, 16)).toBeUndefined();
    expect(s.track).toBe(spliced);
    // A seek leaves the splice behind.
    s.beginTrack({ ...track, startAt: 3 });
    expect(s.positionFrames).toBe(150);
    expect(s.spliceUnderWay).toBe(false);
  });

  it("a seek before a splice's ready: that ready, coming before the seek's answer, is not taken for the seek's", () => {
    const { s, counters } = session();
    s.beginTrack({ ...track, startAt: 10 });
    s.playAccepted(1);
    s.onReady({ type: 'ready', session_id: 'fsm', play: 1, start_at: 10, track_duration: 30 });
    s.onPlayerStatus('playing');
    for (let i = 0; i < 20; i++) s.acceptFrame(Buffer.alloc(100, 1), 0, 100, true);
    s.beginSplice({ gain: 0.5 }, { cut: 8, sent: 8 }, 16);
    s.playAccepted(2);
    s.beginTrack({ ...track, startAt: 3 });
    s.onReady({ type: 'ready', session_id: 'fsm', play: 2, start_at: 10.16, track_duration: 30 });
    expect(s.ready).toBe(false);
    s.acceptFrame(Buffer.alloc(100, 2), 0, 100, true);
    expect(counters.framesStale).toBe(1);
    s.playAccepted(3);
    s.onReady({ type: 'ready', session_id: 'fsm', play: 3, start_at: 3, track_duration: 30 });
    expect(s.ready).toBe(true);
  });

  it("shows the worker's counters as they stand in the control words", () => {
    const { s } = session();
    for (const [word, value] of [[Control.Sent, 140], [Control.Late, 3], [Control.Underruns, 2], [Control.Resyncs, 1]] as const) Atomics.store(s.control, word, value);
    expect(s.summary()).toMatchObject({ sent: 140, late: 3, underruns: 2, resyncs: 1 });
  });

  it('release: paused at its frame with no run; the old worker, engine frames and ready timer have no say; a new track leaves it', () => {
    const { s, events, counters } = session();
    let expired = 0;
    s.beginTrack(track);
    s.playAccepted(1);
    s.awaitReady(5000, () => expired++);
    s.release(1234.4, false, 'the engine restarted');
    expect(s.state).toMatchObject({ status: 'paused', released: true, frame: 1234, reason: 'the engine restarted' });
    expect(s.released).toBe(true);
    expect(s.active).toBe(true);
    expect(s.run).toBeUndefined();
    expect(s.ring).toBeUndefined();
    expect(s.positionFrames).toBe(1234);
    expect(s.summary()).toMatchObject({ state: 'paused', startAt: 24.68, position: 24.68 });
    s.onPlayerStatus('error', 'the old slot closed');
    s.onPlayerStatus('playing');
    expect(s.state.status).toBe('paused');
    s.acceptFrame(Buffer.from([1, 2, 3]), 0, 3, true);
    expect(counters.framesStale).toBe(1);
    expect(s.grantCredit()).toBe(0);
    expect(s.markEngineLost()).toBe(false);
    vi.advanceTimersByTime(10_000);
    expect(expired).toBe(0);
    s.beginTrack({ ...track, startAt: 24.68 });
    expect(s.released).toBe(false);
    expect(s.ring).toBeDefined();
    expect(states(events)).toEqual(['starting', 'paused', 'starting']);
  });

  it('a worker error fails the session even with no track (a voice-only slot)', () => {
    const { s } = session();
    s.onPlayerStatus('error', 'voice worker crashed');
    expect(s.state).toEqual({ status: 'error', reason: 'voice worker crashed' });
  });
});
