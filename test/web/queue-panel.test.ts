/**
 * The queue panel and now playing in a real browser (chromium) against the real engine and
 * gateway: what a click does is checked at the gateway, and what the gateway says is checked on
 * the page. Leaves artifacts/web-queue.png (gitignored).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QueueState } from '../../src/shared/queue.js';
import { launchChromium, type TestBrowser } from '../helpers/browser.js';
import { REPO_ROOT } from '../helpers/chorus-process.js';
import { client } from '../helpers/http.js';
import { startStack, stopStack, type Stack } from '../helpers/stack.js';
import { playingText } from '../../src/web/sessions-table.js';

const SCREENSHOT = path.join(REPO_ROOT, 'artifacts', 'web-queue.png');

let stack: Stack | undefined;
let browser: TestBrowser | undefined;
let api: ReturnType<typeof client>;
const pageErrors: string[] = [];

beforeAll(async () => {
  stack = await startStack({ CHORUS_HOST: '127.0.0.1' }, {}, {});
  api = client(stack.url);
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  const results = await Promise.allSettled([browser?.close(), stopStack(stack)]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}, 30_000);

async function openPage(session: string): Promise<Page> {
  const page = await browser!.context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${stack!.url}/?session=${encodeURIComponent(session)}`);
  await page.waitForFunction(() => window.chorus !== undefined);
  return page;
}

async function queueOf(session: string): Promise<QueueState & { nowPlaying?: { index: number; position: number } }> {
  const answer = (await api('GET', `/sessions/${session}/queue`)).json;
  return { ...answer.queue, nowPlaying: answer.nowPlaying };
}

async function addFromPage(page: Page, source: string): Promise<void> {
  await page.fill('#source', source);
  await page.click('#queue-add');
}

const titles = (page: Page) => page.locator('#queue-list .q-title').allTextContents();

describe('queue panel (chromium, real engine and gateway)', () => {
  it('adds, jumps, reorders, removes, repeats and shuffles from the page, shows now playing, and seeks from the progress bar', async () => {
    const session = 'qpage';
    const page = await openPage(session);
    await addFromPage(page, 'tone:330?seconds=30');
    await expect.poll(() => page.locator('#np-title').textContent(), { timeout: 10_000 }).toBe('Tone 330 Hz');
    await addFromPage(page, 'tone:440?seconds=30');
    await addFromPage(page, 'tone:550?seconds=30');
    await expect.poll(() => titles(page), { timeout: 10_000 }).toEqual(['Tone 330 Hz', 'Tone 440 Hz', 'Tone 550 Hz']);
    await expect.poll(() => page.evaluate(() => window.chorus!.state()), { timeout: 10_000 }).toBe('playing');
    expect(await page.locator('#np-author').textContent()).toBe('chorus · tone');
    expect(await page.locator('#queue-meta').textContent()).toBe('3 items · 1:30');

    // Click to jump: the gateway plays the third item, and the page marks it.
    await page.locator('#queue-list li').nth(2).locator('.q-jump').click();
    await expect.poll(async () => (await queueOf(session)).index, { timeout: 10_000 }).toBe(2);
    await expect.poll(() => page.locator('#queue-list li[aria-current="true"] .q-title').textContent()).toBe('Tone 550 Hz');
    await expect.poll(() => page.locator('#np-title').textContent()).toBe('Tone 550 Hz');
    // The page hears the third item's tone.
    await expect.poll(() => page.evaluate(() => window.chorus!.analyse()?.frequency), { timeout: 10_000 }).toBeGreaterThan(545);

    // Reorder: the third item up one; the item playing stays the one playing.
    await page.locator('#queue-list li').nth(2).getByRole('button', { name: 'Move Tone 550 Hz up' }).click();
    await expect.poll(async () => (await queueOf(session)).items.map((i) => i.title)).toEqual(['Tone 330 Hz', 'Tone 550 Hz', 'Tone 440 Hz']);
    await expect.poll(() => titles(page)).toEqual(['Tone 330 Hz', 'Tone 550 Hz', 'Tone 440 Hz']);
    expect((await queueOf(session)).index).toBe(1);

    // Remove the first.
    await page.locator('#queue-list li').nth(0).getByRole('button', { name: 'Remove Tone 330 Hz' }).click();
    await expect.poll(() => titles(page)).toEqual(['Tone 550 Hz', 'Tone 440 Hz']);

    // Repeat and shuffle.
    await page.selectOption('#queue-repeat', 'queue');
    await expect.poll(async () => (await queueOf(session)).repeat).toBe('queue');
    await page.click('#queue-shuffle');
    await expect.poll(() => page.locator('#events').textContent()).toContain('queue shuffle: 2 items, at 1');

    // The sessions table shows what each session plays.
    await expect.poll(() => page.locator(`#sessions tr[data-session="${session}"] td.playing`).textContent(), { timeout: 5000 }).toBe('Tone 550 Hz — chorus');

    // The progress bar moves, and a click at its three-quarter mark seeks there (30 s item: 22.5 s).
    await expect.poll(() => page.evaluate(() => document.querySelector<HTMLElement>('#np-bar .fill')!.style.width), { timeout: 10_000 }).not.toBe('0.00%');
    const bar = (await page.locator('#np-bar').boundingBox())!;
    await page.mouse.click(bar.x + bar.width * 0.75, bar.y + bar.height / 2);
    await expect.poll(async () => (await api('GET', `/sessions/${session}`)).json.session.startAt, { timeout: 10_000 }).toBeCloseTo(22.5, 0);
    await expect.poll(async () => (await queueOf(session)).nowPlaying?.position ?? 0, { timeout: 10_000 }).toBeGreaterThan(22.5);
    expect(await page.locator('#np-elapsed').textContent()).toMatch(/^0:2[2-9]$/);

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    expect(pageErrors).toEqual([]);
    await api('POST', `/sessions/${session}/stop`);
    await page.close();
  }, 90_000);

  it('says what a session plays: its item, else its source', () => {
    expect(playingText({ state: 'playing', title: 'Song', author: 'Band', url: 'a.mp3' })).toBe('Song — Band');
    expect(playingText({ state: 'paused', url: 'tone:440' })).toBe('tone:440');
    expect(playingText({ state: 'stopped', title: 'Song', url: 'a.mp3' })).toBe('');
  });
});
