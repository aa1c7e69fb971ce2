/**
 * The web player in a real browser (Debian's chromium, driven by playwright-core) against the real
 * engine and gateway, each a child process started from the built CLI. Everything is measured
 * INSIDE the page: window.chorus reads an AnalyserNode placed right after the jitter buffer, i.e.
 * what the page sends to the speakers after WebCodecs decoded the Opus frames.
 *
 * Leaves artifacts/web-player.png (gitignored): the page with two sessions playing.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChorusHook } from '../../src/web/test-hook.js';
import { REPO_ROOT, startChorus, tempDir, type ChorusProcess } from '../helpers/chorus-process.js';
import { launchChromium, type TestBrowser } from '../helpers/browser.js';

const SCREENSHOT = path.join(REPO_ROOT, 'artifacts', 'web-player.png');
/** A tone counts as heard within this many Hz (the analyser refines a 5.9 Hz bin to about ±1 Hz). */
const TOLERANCE_HZ = 5;
/** RMS below this is silence (about −66 dBFS); the tones play at about −24 dBFS. */
const SILENCE_RMS = 0.0005;

type Hook = ChorusHook;
declare const window: { chorus?: Hook };

/** An engine and a gateway in their own temp dir. */
interface Stack {
  engine: ChorusProcess;
  gateway: ChorusProcess;
  base: string;
  stop(): Promise<void>;
}

async function startStack(env: Record<string, string> = {}): Promise<Stack> {
  const dir = tempDir('chorus-web-');
  const socket = path.join(dir, 'engine.sock');
  const engine = await startChorus('engine', { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: dir, ...env });
  const gateway = await startChorus('gateway', {
    CHORUS_PORT: '0',
    CHORUS_HOST: '127.0.0.1',
    CHORUS_SOCKET: socket,
    CHORUS_ENGINE_URL: engine.httpUrl,
    ...env,
  });
  return {
    engine,
    gateway,
    base: gateway.httpUrl,
    async stop() {
      await gateway.stop();
      await engine.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

let stack: Stack | undefined;
let engine: ChorusProcess | undefined;
let gateway: ChorusProcess | undefined;
let browser: BrowserContext | undefined;
let base: string;
let testBrowser: TestBrowser | undefined;
const pageErrors: string[] = [];
const run = Math.random().toString(36).slice(2, 8);

beforeAll(async () => {
  stack = await startStack();
  ({ engine, gateway, base } = stack);
  testBrowser = await launchChromium();
  browser = testBrowser.context;
}, 60_000);

afterAll(async () => {
  // Stop everything even if one step fails, then report the first failure.
  const results = await Promise.allSettled([testBrowser?.close(), stack?.stop()]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}, 30_000);

/** A page on `session`, loaded and talking to the gateway (it opens its WebSocket once it plays). */
async function openPlayer(session: string, at = base, query = ''): Promise<Page> {
  const page = await browser!.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${session}: ${err.message}`));
  await page.goto(`${at}/?session=${encodeURIComponent(session)}${query}`);
  await page.waitForFunction(() => window.chorus !== undefined);
  await expect.poll(() => page.evaluate(() => window.chorus!.reach()), { timeout: 10_000 }).not.toBe('unknown');
  return page;
}

async function sessionIds(at = base, token?: string): Promise<string[]> {
  const res = await fetch(`${at}/sessions`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  return ((await res.json()) as { sessions: { id: string }[] }).sessions.map((s) => s.id);
}

/** What the page and the gateway say about the page's session, for a failure message. */
async function diagnose(page: Page): Promise<string> {
  const [id, state, stats] = await page.evaluate(() => [window.chorus!.session(), window.chorus!.state(), window.chorus!.stats()] as const);
  const sessions = (await (await fetch(`${base}/sessions`)).json()) as { sessions: { id: string }[] };
  const errors = [...(gateway?.logs ?? []), ...(engine?.logs ?? [])].filter((l) => /\b(WARN|ERROR)\b/.test(l));
  return [
    `page: session ${id}, state ${state}, stats ${JSON.stringify(stats)}`,
    `gateway: ${JSON.stringify(sessions.sessions.find((s) => s.id === id))}`,
    ...errors.slice(-10),
  ].join('\n');
}

/** Runs `check`; if it fails, adds what the page and the gateway say to the error. */
async function explained<T>(page: Page, check: () => Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (err) {
    const e = err as Error;
    e.message += `\n${await diagnose(page).catch((d: Error) => `(no diagnosis: ${d.message})`)}`;
    throw e;
  }
}

/** Waits until the page plays `hz`, then checks that it keeps playing it over several looks. */
function expectTone(page: Page, hz: number): Promise<number[]> {
  return explained(page, () => heardTone(page, hz));
}

async function heardTone(page: Page, hz: number): Promise<number[]> {
  // Listen as a person would, to the tab in front: a background tab's timers are throttled.
  await page.bringToFront();
  await page.waitForFunction(
    ([hz, tol]) => {
      if (window.chorus!.state() === 'error') return true; // no point waiting: fails just below
      const a = window.chorus!.analyse();
      return a !== undefined && a.rms > 0.005 && Math.abs(a.frequency - hz) < tol;
    },
    [hz, TOLERANCE_HZ] as const,
    { timeout: 15_000, polling: 50 },
  );
  expect(await page.evaluate(() => window.chorus!.state()), 'the session failed').not.toBe('error');
  // Each look reads the analyser's last 8192 samples (171 ms). A look whose window held a
  // discontinuity of the page's own making (an underrun's fade, a trim of a burst, a frame the
  // busy decoder dropped) smears the sine's peak by a bin or two: under load one read 652 Hz for
  // 660. Such a look says nothing about routing, so it is set aside and another taken; every
  // clean look must still be the tone, and a tone that leaked in or a wrong session would be
  // clean and wrong in every look.
  const looks: Look[] = [];
  const clean: number[] = [];
  while (clean.length < CLEAN_LOOKS) {
    expect(looks.length, `no ${CLEAN_LOOKS} clean looks in ${MAX_LOOKS}: ${describeLooks(looks)}`).toBeLessThan(MAX_LOOKS);
    await page.waitForTimeout(LOOK_EVERY_MS);
    looks.push(await page.evaluate(() => {
      const a = window.chorus!.analyse()!;
      const s = window.chorus!.stats();
      return { frequency: a.frequency, rms: a.rms, glitches: s.underruns + s.trimmedMs + s.decoderDrops + s.lost + s.decodeErrors };
    }));
    // Look i is judged once look i+1 is in: the counters come ~40 ms behind the audio.
    const i = looks.length - 2;
    if (i < 1) continue;
    if (looks[i - 1]!.glitches !== looks[i + 1]!.glitches) continue;
    const look = looks[i]!;
    expect(look.rms, `the tone went quiet: ${describeLooks(looks)}`).toBeGreaterThan(0.005);
    clean.push(look.frequency);
  }
  console.log(`looks for ${hz} Hz: ${describeLooks(looks)}`);
  for (const f of clean) expect(Math.abs(f - hz), `heard ${describeLooks(looks)}, not ${hz} Hz`).toBeLessThan(TOLERANCE_HZ);
  return clean;
}

interface Look {
  frequency: number;
  rms: number;
  /** Sum of the page's discontinuity counters when the look was taken. */
  glitches: number;
}

/** Clean looks needed, the most looks taken, and how far apart (more than the 171 ms window). */
const CLEAN_LOOKS = 5;
const MAX_LOOKS = 40;
const LOOK_EVERY_MS = 250;

function describeLooks(looks: Look[]): string {
  return looks.map((l, i) => `${l.frequency.toFixed(1)} Hz${i > 0 && l.glitches !== looks[i - 1]!.glitches ? ' (glitch)' : ''}`).join(', ');
}

function expectSilence(page: Page): Promise<void> {
  return explained(page, () => heardSilence(page));
}

async function heardSilence(page: Page): Promise<void> {
  await page.waitForFunction((limit) => (window.chorus!.analyse()?.rms ?? 0) < limit, SILENCE_RMS, { timeout: 2_000, polling: 20 });
  for (let i = 0; i < 5; i++) {
    await page.waitForTimeout(100);
    const rms = await page.evaluate(() => window.chorus!.analyse()?.rms ?? 0);
    expect(rms, 'sound while paused').toBeLessThan(SILENCE_RMS);
  }
}

const stateOf = (page: Page) => page.evaluate(() => window.chorus!.state());

describe('web player (chromium, real engine and gateway)', () => {
  it('plays tone:440 and hears 440 Hz; pause → silence; resume → 440 Hz again', async () => {
    const page = await openPlayer(`web-a-${run}`);
    // A click, as a person would: it is also the gesture that lets the page start audio.
    await page.click('button.chip[data-url="tone:440"]');
    await expectTone(page, 440);
    // The state event follows the worker's report, which may come after the first frames.
    await expect.poll(() => stateOf(page)).toBe('playing');

    await page.click('#pause');
    await expect.poll(() => stateOf(page)).toBe('paused');
    await expectSilence(page);

    await page.click('#resume');
    await expect.poll(() => stateOf(page)).toBe('playing');
    await expectTone(page, 440);

    const stats = await page.evaluate(() => window.chorus!.stats());
    expect(stats.framesDecoded).toBeGreaterThan(50);
    expect(stats.decodeErrors).toBe(0);
    expect(stats.lost).toBe(0);
    await page.close();
  }, 60_000);

  it('reconnects its WebSocket by itself and plays on', async () => {
    const page = await openPlayer(`web-r-${run}`);
    await page.click('button.chip[data-url="tone:880"]');
    await expectTone(page, 880);
    await page.evaluate(() => window.chorus!.dropConnection());
    await expect.poll(() => page.evaluate(() => window.chorus!.stats().reconnects), { timeout: 5_000 }).toBeGreaterThan(0);
    await expect.poll(() => page.evaluate(() => window.chorus!.stats().connection), { timeout: 10_000 }).toBe('open');
    const before = await page.evaluate(() => window.chorus!.stats().framesReceived);
    await expectTone(page, 880);
    expect(await page.evaluate(() => window.chorus!.stats().framesReceived)).toBeGreaterThan(before);
    await page.close();
  }, 60_000);

  it('shows the gateway refusing a source', async () => {
    const page = await openPlayer(`web-e-${run}`);
    await page.fill('#source', 'no/such/file.mp3');
    await page.click('#play');
    await expect.poll(() => page.locator('#notice').isVisible()).toBe(true);
    expect(await page.locator('#notice').textContent()).toMatch(/^play failed: .+\(4\d\d\)/);
    await page.close();
  }, 30_000);

  it('two pages on two sessions, two tones: each hears only its own', async () => {
    const a = await openPlayer(`web-440-${run}`);
    const b = await openPlayer(`web-660-${run}`);
    await a.click('button.chip[data-url="tone:440"]');
    await b.click('button.chip[data-url="tone:660"]');
    await expectTone(a, 440);
    await expectTone(b, 660);
    // And the other tone is not in there at all (Opus's noise floor is far below −40 dB). Judged
    // over several looks: one look may catch a page mid-underrun (its own tone faint, so the
    // difference small), while a tone that leaked in would stay in every look.
    const levels = (page: Page) => page.evaluate((): [number, number] => [window.chorus!.powerAt(440)!, window.chorus!.powerAt(660)!]);
    const separation = async (page: Page, own: 0 | 1) => {
      const [l440, l660] = await levels(page);
      console.log(`levels: 440 Hz ${l440.toFixed(1)} dB, 660 Hz ${l660.toFixed(1)} dB`);
      return own === 0 ? l440 - l660 : l660 - l440;
    };
    await expect.poll(() => separation(a, 0), { timeout: 5_000 }).toBeGreaterThan(40);
    await expect.poll(() => separation(b, 1), { timeout: 5_000 }).toBeGreaterThan(40);

    // The table lists both, with the page's own session first and marked.
    await expect
      .poll(() => a.locator('#sessions tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.session)))
      .toEqual(expect.arrayContaining([`web-440-${run}`, `web-660-${run}`]));
    expect(await a.locator('#sessions tbody tr').first().getAttribute('aria-current')).toBe('true');

    await a.bringToFront();
    await a.waitForTimeout(500); // a few animation frames for the meters and the spectrum
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await a.screenshot({ path: SCREENSHOT });
    await a.close();
    await b.close();
  }, 60_000);

  it('a page that only looks creates no session; its play does', async () => {
    const id = `web-look-${run}`;
    const page = await openPlayer(id);
    await page.waitForTimeout(1500); // a poll or two
    expect(await page.evaluate(() => window.chorus!.stats().connection)).toBe('closed');
    expect(await sessionIds()).not.toContain(id);
    await page.click('button.chip[data-url="tone:220"]');
    await expect.poll(() => sessionIds()).toContain(id);
    await expect.poll(() => page.evaluate(() => window.chorus!.stats().connection), { timeout: 10_000 }).toBe('open');
    await page.click('#stop');
    await page.close();
  }, 30_000);

  it('after a seek shows position and the whole length', async () => {
    const page = await openPlayer(`web-seek-${run}`);
    await page.click('button.chip[data-url="tone:440"]'); // 30 s long
    await expect.poll(() => page.locator('#position').textContent(), { timeout: 10_000 }).toMatch(/ \/ 0:30$/);
    await page.fill('#seek-seconds', '15');
    await page.click('#seek');
    await expectTone(page, 440);
    expect(await page.locator('#position').textContent()).toMatch(/^0:1[5-9] \/ 0:30$/);
    await page.click('#stop');
    await page.close();
  }, 60_000);

  it('stops another session from its row; ended sessions are hidden until asked for', async () => {
    const player = await openPlayer(`web-row-${run}`);
    await player.click('button.chip[data-url="tone:660"]');
    await expect.poll(() => stateOf(player), { timeout: 10_000 }).toMatch(/^(buffering|playing)$/);
    const other = await openPlayer(`web-other-${run}`);
    const row = other.locator(`#sessions tbody tr[data-session="web-row-${run}"]`);
    await row.locator('button.row-stop').click();
    await expect.poll(() => stateOf(player), { timeout: 10_000 }).toBe('stopped');
    // The stopped session leaves the other page's table, and comes back on request.
    await expect.poll(() => row.count(), { timeout: 5_000 }).toBe(0);
    await other.click('#sessions-ended');
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.locator('button.row-stop').isVisible()).toBe(false);
    // The stopping page did not take the other session's state for its own.
    expect(await stateOf(other)).toBe('idle');
    await player.close();
    await other.close();
  }, 30_000);

  it('at 390 px nothing is cut: no label or cell wider than its box, no sideways scroll', async () => {
    const page = await openPlayer(`web-narrow-${run}`);
    await page.setViewportSize({ width: 390, height: 844 });
    await page.click('button.chip[data-url="tone:880"]');
    await expect.poll(() => page.locator('#sessions tbody tr').count(), { timeout: 10_000 }).toBeGreaterThan(0);
    await page.waitForTimeout(1200); // the table filled by a poll, figures rendered
    await page.screenshot({ path: path.join(REPO_ROOT, 'artifacts', 'web-player-390.png'), fullPage: true });
    const cut = await page.evaluate(() => {
      const out: string[] = [];
      const selectors = ['.table-wrap', '#sessions td', '#sessions th', '.field > label', '.figures dt', '.figures dd', '.tuning label', '.meter-head span', '.transport button', '.now', '.legend', '.pill'];
      for (const sel of selectors) {
        for (const el of document.querySelectorAll<HTMLElement>(sel)) {
          if (el.getClientRects().length === 0 || el.clientWidth === 0) continue; // not laid out
          // Narrow, the header row is kept for screen readers only; each cell shows its label.
          const head = el.closest('thead');
          if (head && head.getBoundingClientRect().height <= 1) continue;
          if (el.scrollWidth > el.clientWidth) out.push(`${sel} "${el.textContent?.trim().slice(0, 30)}" ${el.scrollWidth} > ${el.clientWidth}`);
        }
      }
      const doc = document.documentElement;
      if (doc.scrollWidth > doc.clientWidth) out.push(`page ${doc.scrollWidth} > ${doc.clientWidth}`);
      return out;
    });
    expect(cut).toEqual([]);
    await page.click('#stop');
    await page.close();
  }, 30_000);

  it('raised no errors in any page', () => {
    expect(pageErrors).toEqual([]);
  });
});

describe('web player against a gateway that wants a token, or has gone', () => {
  it('asks for the token, keeps it out of the URL and the log, and plays once given', async () => {
    const token = `tok-${run}-${Math.random().toString(36).slice(2)}`;
    const guarded = await startStack({ CHORUS_TOKEN: token });
    try {
      const page = await openPlayer(`web-tok-${run}`, guarded.base);
      expect(await page.evaluate(() => window.chorus!.reach())).toBe('token');
      await expect.poll(() => page.locator('#token-form').isVisible()).toBe(true);
      expect(await page.locator('#play').isDisabled()).toBe(true);
      // It does not knock on the WebSocket in a loop meanwhile.
      await page.waitForTimeout(1000);
      expect(await page.evaluate(() => window.chorus!.stats())).toMatchObject({ connection: 'closed', reconnects: 0 });

      await page.fill('#token-input', 'wrong');
      await page.click('#token-submit');
      await expect.poll(() => page.locator('#token-error').textContent()).toMatch(/refused/);
      await page.fill('#token-input', token);
      await page.click('#token-submit');
      await expect.poll(() => page.evaluate(() => window.chorus!.reach())).toBe('ok');
      expect(await page.locator('#token-form').isVisible()).toBe(false);
      await page.click('button.chip[data-url="tone:440"]');
      await expectTone(page, 440);

      // Kept for this tab only, never shown.
      expect(await page.evaluate(() => [sessionStorage.getItem('chorus.token'), localStorage.getItem('chorus.token')])).toEqual([token, null]);
      expect(page.url()).not.toContain(token);
      expect(await page.locator('body').innerText()).not.toContain(token);
      expect(guarded.gateway.logs.join('\n')).not.toContain(token);
      await page.click('#stop');
      await page.close();

      // A ?token= link works, and leaves the address bar at once.
      const linked = await openPlayer(`web-tok2-${run}`, guarded.base, `&token=${encodeURIComponent(token)}`);
      expect(await linked.evaluate(() => window.chorus!.reach())).toBe('ok');
      expect(linked.url()).not.toContain('token');
      await linked.close();
    } finally {
      await guarded.stop();
    }
  }, 60_000);

  it('when the gateway goes away, says so and disables every control', async () => {
    const doomed = await startStack();
    try {
      const page = await openPlayer(`web-gone-${run}`, doomed.base);
      await page.click('button.chip[data-url="tone:660"]');
      await expect.poll(() => stateOf(page), { timeout: 10_000 }).toBe('playing');
      await doomed.gateway.stop();
      await expect.poll(() => page.evaluate(() => window.chorus!.reach()), { timeout: 5_000 }).toBe('down');
      await expect.poll(() => page.locator('#state').textContent()).toBe('gateway unreachable');
      for (const button of ['#play', '#pause', '#resume', '#stop', '#seek', 'button.chip[data-url="tone:440"]']) {
        expect(await page.locator(button).isDisabled(), button).toBe(true);
      }
      // No stale rows, with stop buttons, of a table it can no longer know.
      expect(await page.locator('#sessions tbody tr').count()).toBe(0);
      await page.close();
    } finally {
      await doomed.stop(); // the gateway's stop is a no-op the second time
    }
  }, 60_000);
});
