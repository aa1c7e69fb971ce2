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
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChorusHook } from '../../src/web/test-hook.js';
import { REPO_ROOT, startChorus, tempDir, type ChorusProcess } from '../helpers/chorus-process.js';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO_ROOT, 'artifacts', 'web-player.png');
/** A tone counts as heard within this many Hz (the analyser refines a 5.9 Hz bin to about ±1 Hz). */
const TOLERANCE_HZ = 5;
/** RMS below this is silence (about −66 dBFS); the tones play at about −24 dBFS. */
const SILENCE_RMS = 0.0005;

type Hook = ChorusHook;
declare const window: { chorus?: Hook };

let dir: string;
let engine: ChorusProcess | undefined;
let gateway: ChorusProcess | undefined;
let browser: BrowserContext | undefined;
let base: string;
const pageErrors: string[] = [];
const run = Math.random().toString(36).slice(2, 8);

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); .ci/run does`);
  }
  dir = tempDir('chorus-web-');
  const socket = path.join(dir, 'engine.sock');
  engine = await startChorus('engine', { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: dir });
  gateway = await startChorus('gateway', {
    CHORUS_PORT: '0',
    CHORUS_HOST: '127.0.0.1',
    CHORUS_SOCKET: socket,
    CHORUS_ENGINE_URL: engine.httpUrl,
  });
  base = gateway.httpUrl;
  browser = await chromium.launchPersistentContext(path.join(dir, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}, 60_000);

afterAll(async () => {
  // Stop everything even if one step fails, then report the first failure.
  const results = await Promise.allSettled([
    browser?.close(),
    (async () => {
      await gateway?.stop();
      await engine?.stop();
    })(),
  ]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}, 30_000);

async function openPlayer(session: string): Promise<Page> {
  const page = await browser!.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${session}: ${err.message}`));
  await page.goto(`${base}/?session=${encodeURIComponent(session)}`);
  await page.waitForFunction(() => window.chorus !== undefined);
  await expect.poll(() => page.evaluate(() => window.chorus!.stats().connection), { timeout: 10_000 }).toBe('open');
  return page;
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
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    await page.waitForTimeout(100);
    const a = (await page.evaluate(() => window.chorus!.analyse()))!;
    expect(a.rms, 'the tone went quiet').toBeGreaterThan(0.005);
    seen.push(a.frequency);
  }
  for (const f of seen) expect(Math.abs(f - hz), `heard ${seen.map((x) => x.toFixed(1)).join(', ')} Hz, not ${hz}`).toBeLessThan(TOLERANCE_HZ);
  return seen;
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
    expect(await stateOf(page)).toBe('playing');

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

  it('raised no errors in any page', () => {
    expect(pageErrors).toEqual([]);
  });
});
