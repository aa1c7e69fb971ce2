/**
 * Fault scenarios: what each one does (and how a run arms it), and the criterion it must meet,
 * judged against a control run — the same sessions, mode and duration without the fault.
 *
 * Common to all (CHORUS_SLOW_LISTENER=wait):
 *   - nothing lost: no sequence gap and no frame missing from any session's content, at any
 *     listener, touched or not;
 *   - nothing misrouted: every frame is from the session's own loop (byte check), and every
 *     decoded sample carries its own tone;
 *   - the compared sessions' p99 lateness within 1 ms of the control run: taken together, and
 *     rank by rank (the k-th best session against the control's k-th best; see judgeFault) —
 *     by default the sessions the fault did not touch, over the whole window;
 *   - the gateway still serving afterwards: /health answers with the engine connected, and a
 *     new session played after the window gets its frames.
 */
import type { FromListener, WindowSpec } from './listener-proc.js';
import { fromListeners, gatewayHealth, getJson, post, SETTLE_MS, sleep, startEngine, toListeners, waitFor, type Ctx } from './run-context.js';
import type { FaultName, FaultOutcome, RunResult } from './run.js';

export const FAULT_TEXT: Record<FaultName, { does: string; passes: string }> = {
  'engine-restart': {
    does: 'kill -9 the engine a third into the window, start it again 0.5 s later; once every interrupted session has paused at its frame, play every session again',
    passes:
      'every session pauses (or ends) with an event that says why; every session plays again; nothing lost or misrouted; each session\'s p99 after the restart within 1 ms of its p99 in the control run; gateway serving',
  },
  garbage: {
    does: 'the synthetic engine writes an invalid JSON event (¼ in), an oversized length (½ in), a truncated id (¾ in)',
    passes:
      'the bad event is ignored and counted; each fatal one makes the gateway drop the connection and reconnect (2 protocol errors); sessions play on from their rings: nothing lost or misrouted, every session\'s p99 within 1 ms of the control run; gateway serving',
  },
  'worker-crash': {
    does: "one session's worker throws, a third into the window (POST /debug/crash?kind=session)",
    passes:
      'that session ends in error and its listener is told; every other session: nothing lost or misrouted, p99 within 1 ms of the control run; gateway serving',
  },
  'main-block': {
    does: "the gateway's main thread busy-waits 300 ms, a third into the window (POST /debug/block?ms=300)",
    passes:
      'nothing lost or misrouted; outside the block (from 50 ms before it to 1 s after it) every session\'s p99 within 1 ms of the control run (WebSocket delivery is the main thread\'s, so frames during the block are late by it: reported, not judged); gateway serving',
  },
  'stall-10': {
    does: '10 % of the listeners stop reading for 5 s, a third into the window, then read again',
    passes:
      'the stalled listeners get every frame in order once they read again (no gap, no duplicate); every other session: p99 within 1 ms of the control run; nothing misrouted; gateway serving',
  },
  'pause-10': {
    does: '10 % of the sessions are paused for 3 s, a third into the window, then resumed',
    passes:
      'after resume the first frame comes within 40 ms, with no gap or duplicate; every other session: p99 within 1 ms of the control run; nothing lost or misrouted; gateway serving',
  },
};

export interface Criterion {
  name: string;
  pass: boolean;
  detail: string;
}

export interface FaultVerdict {
  /** 'none': a calibration — a second control run judged against the first (the noise floor). */
  fault: FaultName | 'none';
  pass: boolean;
  criteria: Criterion[];
}

/** Per-session p99 tolerance against the control run. */
export const P99_TOLERANCE_MS = 1;
export const RESUME_GAP_LIMIT_MS = 40;

export function judgeFault(run: RunResult, control: RunResult): FaultVerdict {
  const fault = run.fault ?? { name: 'none' as const, details: {} as Record<string, unknown> };
  const criteria: Criterion[] = [];
  const c = (name: string, pass: boolean, detail: string) => criteria.push({ name, pass, detail });

  c(
    'nothing lost',
    run.lost.total === 0 && run.seqDupes === 0,
    `${run.lost.total} frames missing within a play (seq gaps ${run.lost.seqGaps}, content ${run.lost.contentMissing}), ${run.seqDupes} duplicates` +
      (run.boundaryJumps > 0 ? `; seq jumped by ${run.boundaryJumps} in all where an interrupted track ended and the next play began (frames of the ended track numbered, then not delivered)` : ''),
  );
  c(
    'nothing misrouted',
    run.misrouted === 0 && run.decoded.failures === 0,
    `${run.misrouted} frames from another session's loop; ${run.decoded.failures}/${run.decoded.checks} decoded samples off their tone`,
  );

  // Per-session p99s of two runs without any fault differ by more than 1 ms here and there (a
  // p99 of ~1500 frames is its 15th-worst frame, and a hiccup lands on whichever sessions it
  // lands on: `--fault none` shows it), so sessions are compared like for like in rank order:
  // the k-th best session's p99 of the run against the k-th best of the control run, for every
  // k (a Q-Q comparison: any group of sessions the fault made worse shifts the top ranks). And
  // the compared sessions' p99 taken together within 1 ms of the control's. The pairing of
  // sessions by id is reported too.
  const ids = run.headlineIds;
  const mine = ids.map((id) => run.perSession[id]?.[run.headlineWindow]).filter((x): x is NonNullable<typeof x> => !!x && x.count > 0);
  const theirs = ids.map((id) => control.perSession[id]?.main).filter((x): x is NonNullable<typeof x> => !!x && x.count > 0);
  const a = mine.map((x) => x.p99).sort((x, y) => x - y);
  const b = theirs.map((x) => x.p99).sort((x, y) => x - y);
  let over = 0;
  let worst = -Infinity;
  let worstRank = 0;
  for (let k = 0; k < Math.min(a.length, b.length); k++) {
    const d = a[k]! - b[k]!;
    if (d > P99_TOLERANCE_MS) over++;
    if (d > worst) {
      worst = d;
      worstRank = k;
    }
  }
  let pairOver = 0;
  for (const id of ids) {
    const f = run.perSession[id]?.[run.headlineWindow];
    const k = control.perSession[id]?.main;
    if (f && k && f.count > 0 && f.p99 - k.p99 > P99_TOLERANCE_MS) pairOver++;
  }
  // The control run's headline covers the same sessions (loadtest passes it the fault run's list).
  const runP99 = run.lateness.p99;
  const controlP99 = control.lateness.p99;
  c(
    `p99 within ${P99_TOLERANCE_MS} ms of the control run`,
    a.length > 0 && runP99 <= controlP99 + P99_TOLERANCE_MS && over === 0,
    a.length === 0
      ? 'no session to compare'
      : `${a.length} sessions (window ${run.headlineWindow}): p99 ${runP99.toFixed(2)} ms vs control ${controlP99.toFixed(2)} ms; ` +
          `rank by rank ${over} sessions more than ${P99_TOLERANCE_MS} ms worse (largest difference ${worst >= 0 ? '+' : ''}${worst.toFixed(2)} ms, ` +
          `${ordinal(a.length - worstRank)} worst: ${a[worstRank]!.toFixed(2)} vs ${b[worstRank]!.toFixed(2)} ms); ` +
          `paired by id, ${pairOver} differ by more than ${P99_TOLERANCE_MS} ms`,
  );
  c('gateway serving afterwards', run.servingAfter, run.servingAfter ? '/health ok, engine connected, a new session got frames' : `not serving: ${run.errors.join('; ')}`);

  const sessions = (fault.details.sessions as { id: string; errors: string[]; lastState: string }[] | undefined) ?? [];
  switch (fault.name) {
    case 'engine-restart': {
      const seen = Number(fault.details.toldSeen ?? 0);
      const told = (sessions[0] as { pauseReasons?: string[] } | undefined)?.pauseReasons?.[0] ?? sessions[0]?.errors[0] ?? '-';
      c('every session told why it paused or ended', seen === run.sessions, `${seen}/${run.sessions} sessions got a paused state with a reason or an error event; e.g. "${told}"`);
      c('every session played again', Number(fault.details.replayFailures ?? 1) === 0, `${String(fault.details.replayFailures)} replays failed`);
      break;
    }
    case 'garbage': {
      const perr = run.gatewayCounters.protocol_errors_total ?? 0;
      const bad = run.gatewayCounters.bad_events_total ?? 0;
      const conns = run.engineCounters.connections ?? 0;
      const notDropped = run.engineCounters.garbageNotDropped ?? 0;
      c('bad event ignored and counted', bad >= 1, `gateway bad_events_total ${bad}`);
      c('fatal garbage: connection dropped and re-made', perr >= 2 && conns >= 3 && notDropped === 0, `gateway protocol_errors_total ${perr}, engine saw ${conns} connections, ${notDropped} fatal units left unanswered`);
      break;
    }
    case 'worker-crash': {
      const v = sessions[0];
      c('the crashed session ends in error, its listener told', !!v && v.lastState === 'error' && v.errors.length > 0, v ? `${v.id}: state ${v.lastState}, "${v.errors[0] ?? 'no error event'}"` : 'victim not found');
      break;
    }
    case 'main-block': {
      const during = run.windows['during-block'];
      criteria.push({
        name: 'lateness during the block (reported, not judged)',
        pass: true,
        detail: during ? `p99 ${during.p99.toFixed(1)} ms, max ${during.max.toFixed(1)} ms; blocked for ${Number(fault.details.blockMs ?? 0).toFixed(0)} ms` : '-',
      });
      break;
    }
    case 'stall-10': {
      const t = run.latenessTouched;
      criteria.push({ name: 'stalled listeners\' lateness (reported, not judged)', pass: true, detail: t ? `p99 ${t.p99.toFixed(0)} ms, max ${t.max.toFixed(0)} ms` : '-' });
      break;
    }
    case 'pause-10': {
      const g = run.resumeGapMs;
      c(`first frame within ${RESUME_GAP_LIMIT_MS} ms of resume`, !!g && g.count > 0 && g.max <= RESUME_GAP_LIMIT_MS, g ? `${g.count} resumes: p50 ${g.p50.toFixed(1)} ms, max ${g.max.toFixed(1)} ms` : 'no resume measured');
      break;
    }
  }
  return { fault: fault.name, pass: criteria.every((x) => x.pass), criteria };
}

function ordinal(n: number): string {
  if (n === 1) return 'the';
  const suffix = n % 10 === 1 && n % 100 !== 11 ? 'st' : n % 10 === 2 && n % 100 !== 12 ? 'nd' : n % 10 === 3 && n % 100 !== 13 ? 'rd' : 'th';
  return `the ${n}${suffix}`;
}

interface FaultTools {
  at(t: number, fn: () => Promise<void>): void;
  note(what: string): void;
  third: number;
  windowStart: number;
  durationMs: number;
  sessionIds: string[];
  touched: Set<string>;
  windows: WindowSpec[];
}

/** Arms one fault scenario in the window (see faults.ts for what each one must show). */
export async function scheduleFault(ctx: Ctx, fault: FaultOutcome, name: FaultName, tools: FaultTools): Promise<void> {
  const { at, note, third, windowStart, durationMs, sessionIds } = tools;
  const gw = ctx.gatewayUrl;
  switch (name) {
    case 'garbage': {
      const kinds = ['invalid-json', 'oversized-length', 'truncated-id'] as const;
      kinds.forEach((kind, i) => {
        at(windowStart + ((i + 1) * durationMs) / 4, async () => {
          const before = (await getJson(`${ctx.engineUrl}/stats`)).connections as number;
          const res = await post(`${ctx.engineUrl}/fault/garbage?kind=${kind}`);
          note(`engine wrote garbage: ${kind} (${res.text})`);
          if (kind !== 'invalid-json') {
            await waitFor('the gateway to reconnect after the garbage', async () => ((await getJson(`${ctx.engineUrl}/stats`)).connections as number) > before, 10_000, 20);
            note('gateway reconnected');
          }
        });
      });
      return;
    }
    case 'worker-crash': {
      const victim = sessionIds[0]!;
      fault.touched.push(victim);
      at(third, async () => {
        const res = await post(`${gw}/debug/crash?session=${encodeURIComponent(victim)}&kind=session`);
        note(`session ${victim}'s worker made to throw: ${res.status} ${res.text}`);
      });
      return;
    }
    case 'main-block': {
      fault.touched.push(...sessionIds.filter(() => ctx.opts.listeners === 'ws'));
      at(third, async () => {
        const sent = ctx.now();
        const res = await post(`${gw}/debug/block?ms=300`);
        const back = ctx.now();
        note(`gateway main thread blocked 300 ms: ${res.status} ${res.text}; answered after ${(back - sent).toFixed(0)} ms`);
        tools.windows.push({ name: 'outside-block', from: windowStart, to: windowStart + durationMs, exclude: [[sent - 50, back + 1000]] });
        tools.windows.push({ name: 'during-block', from: sent - 50, to: back + 1000 });
        fault.details.blockMs = back - sent;
      });
      // Whether a session was touched or not, the criterion compares the frames outside the block.
      fault.compareWindow = 'outside-block';
      fault.compareAll = true;
      return;
    }
    case 'engine-restart': {
      fault.touched.push(...sessionIds);
      fault.compareWindow = 'after-restart';
      fault.compareAll = true;
      at(third, async () => {
        note('kill -9 the engine');
        await ctx.engine!.kill9();
        await sleep(500);
        await startEngine(ctx);
        note('engine restarted');
        await waitFor('the gateway to reconnect to the new engine', async () => (await gatewayHealth(gw)).engine_connected === true, 30_000, 50);
        note('gateway reconnected');
        // The new engine knows none of the tracks: the gateway pauses each at the frame it reached.
        await waitFor(
          'every interrupted session to pause or end',
          async () => {
            const s = (await getJson(`${gw}/sessions`)).sessions as { state: string }[];
            return s.every((x) => x.state === 'paused' || x.state === 'error' || x.state === 'finished' || x.state === 'stopped');
          },
          30_000,
          100,
        );
        note('every interrupted session paused or ended');
        const replay = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'played' }> => m.ev === 'played', 120_000);
        toListeners(ctx, { cmd: 'play', ratePerSec: ctx.opts.playRate / ctx.listeners.length });
        const answers = await replay;
        const failed = answers.reduce((n, a) => n + a.failed, 0);
        note(`every session played again (${failed} failed)`);
        fault.details.replayFailures = failed;
        await sleep(SETTLE_MS);
        const from = ctx.now();
        tools.windows.push({ name: 'after-restart', from, to: 1e15 });
        note('measuring after the restart');
      });
      return;
    }
    case 'stall-10':
    case 'pause-10':
      // Armed by the stall/pause fractions in runOnce.
      return;
  }
}
