/**
 * The web player page: wires the controls to the gateway's HTTP API, the Player (WebSocket →
 * decoder → jitter buffer → speakers) to the meters, and polls GET /sessions for the table.
 *
 * URL parameters: `session` (kept up to date as the id changes), `token` (taken, then removed
 * from the address bar: token.ts). Without a token where the gateway wants one, the page asks for
 * it. The jitter-buffer target and the volume are remembered in localStorage.
 *
 * The page opens no WebSocket to a session the gateway does not have (that would create it, an
 * idle session every page load): it listens once the user plays, or once the session exists.
 */
import type { SessionSummary, SessionsResponse } from '../shared/gateway-api.js';
import type { ListenerEvent } from '../shared/listener-protocol.js';
import type { SessionStateName } from '../shared/session-state.js';
import { ApiError, GatewayApi } from './api.js';
import { Player, type PlayerStats } from './player.js';
import { Scope } from './scope.js';
import { isUnderWay, SessionsTable } from './sessions-table.js';
import { installHook, type GatewayReach } from './test-hook.js';
import { saveToken, takeToken } from './token.js';
import {
  byId,
  EventLog,
  fmtClock,
  fmtCount,
  fmtMs,
  isValidSessionId,
  randomSessionId,
  setText,
  setTone,
  type Tone,
} from './ui.js';

const POLL_MS = 1000;
/** After an answer or an event about our session, a poll older than this does not overwrite it. */
const FRESH_MS = 1500;

const params = new URLSearchParams(location.search);
const api = new GatewayApi(new URL('./', location.href), takeToken());
const player = new Player(api);

const el = {
  sessionId: byId<HTMLInputElement>('session-id'),
  sessionNew: byId<HTMLButtonElement>('session-new'),
  sessionCopy: byId<HTMLButtonElement>('session-copy'),
  sessionError: byId('session-error'),
  source: byId<HTMLInputElement>('source'),
  format: byId<HTMLSelectElement>('format'),
  play: byId<HTMLButtonElement>('play'),
  pause: byId<HTMLButtonElement>('pause'),
  resume: byId<HTMLButtonElement>('resume'),
  stop: byId<HTMLButtonElement>('stop'),
  seek: byId<HTMLButtonElement>('seek'),
  seekSeconds: byId<HTMLInputElement>('seek-seconds'),
  state: byId('state'),
  stateReason: byId('state-reason'),
  nowSource: byId('now-source'),
  position: byId('position'),
  scope: byId<HTMLCanvasElement>('scope'),
  bufferBar: byId('buffer-bar'),
  bufferText: byId('buffer-text'),
  latency: byId('latency'),
  jitter: byId('jitter'),
  firstSound: byId('first-sound'),
  frames: byId('frames'),
  lost: byId('lost'),
  underruns: byId('underruns'),
  target: byId<HTMLInputElement>('target'),
  targetOut: byId<HTMLOutputElement>('target-out'),
  volume: byId<HTMLInputElement>('volume'),
  volumeOut: byId<HTMLOutputElement>('volume-out'),
  enginePill: byId('engine-pill'),
  socketPill: byId('socket-pill'),
  audioPill: byId('audio-pill'),
  notice: byId('notice'),
  sessionsMeta: byId('sessions-meta'),
  sessionsEnded: byId<HTMLButtonElement>('sessions-ended'),
  tokenForm: byId<HTMLFormElement>('token-form'),
  tokenInput: byId<HTMLInputElement>('token-input'),
  tokenRemember: byId<HTMLInputElement>('token-remember'),
  tokenError: byId('token-error'),
  streamMeta: byId('stream-meta'),
  events: byId<HTMLOListElement>('events'),
};

const log = new EventLog(el.events);
const scope = new Scope(el.scope, () => player.analyser);

// ── session state as the page knows it ───────────────────────────────────────────────────────

let state: SessionStateName = 'idle';
let stateReason: string | undefined;
let stateAt = 0;
let nowUrl: string | undefined;
let duration: number | undefined;
/** Position = base + audio played since the base was set. */
let positionBase = 0;
let playedAtBase = 0;
let positionValid = false;
/** Whether the page can reach the gateway: `token` when it answers 401 (CHORUS_TOKEN). */
let reach: GatewayReach = 'unknown';
const cutOff = () => reach === 'down' || reach === 'token';

function setState(next: SessionStateName, reason?: string, fresh = true): void {
  state = next;
  stateReason = reason;
  if (fresh) stateAt = performance.now();
  if (next === 'stopped' || next === 'idle') positionValid = false;
  renderState();
}

/** The badge says what the session does, or that the gateway is out of reach. */
function renderState(): void {
  el.state.dataset.state = cutOff() ? 'offline' : state;
  setText(el.state, reach === 'down' ? 'gateway unreachable' : reach === 'token' ? 'token needed' : state);
  const reason = cutOff() ? undefined : stateReason;
  el.stateReason.hidden = !reason;
  setText(el.stateReason, reason ?? '');
  updateButtons();
}

function applySummary(s: SessionSummary, fresh: boolean): void {
  if (s.url) nowUrl = s.url;
  if (s.duration !== undefined) duration = s.duration;
  setState(s.state, s.reason, fresh);
}

function updateButtons(): void {
  // Nothing works without the gateway: no button may pretend otherwise.
  const validId = isValidSessionId(el.sessionId.value) && !cutOff();
  const active = state === 'starting' || state === 'buffering' || state === 'playing';
  el.play.disabled = !validId || el.source.value.trim() === '';
  el.pause.disabled = !validId || !active;
  const paused = state === 'paused' || state === 'autopaused';
  el.resume.disabled = !validId || !paused;
  el.stop.disabled = !validId || !(active || paused);
  el.seek.disabled = !validId || !(active || paused);
  for (const chip of document.querySelectorAll<HTMLButtonElement>('.chip')) {
    chip.setAttribute('aria-pressed', String(chip.dataset.url === el.source.value.trim()));
    chip.disabled = cutOff();
  }
}

// ── the session id, kept in the URL ──────────────────────────────────────────────────────────

function useSession(id: string, how: 'load' | 'edit'): void {
  const valid = isValidSessionId(id);
  el.sessionError.hidden = valid;
  el.sessionError.textContent = valid ? '' : 'A session id is 1 to 24 printable ASCII characters, without spaces.';
  if (!valid) {
    updateButtons();
    return;
  }
  if (el.sessionId.value !== id) el.sessionId.value = id;
  const url = new URL(location.href);
  url.searchParams.set('session', id);
  history.replaceState(null, '', url);
  document.title = `${id} · chorus`;
  if (player.session === id) return;
  nowUrl = undefined;
  duration = undefined;
  positionValid = false;
  setState('idle', undefined, false);
  stateAt = 0;
  player.setSession(id);
  if (how === 'edit') log.add('listening to session', undefined, id);
  void poll();
}

el.sessionId.addEventListener('change', () => useSession(el.sessionId.value.trim(), 'edit'));
el.sessionId.addEventListener('input', () => updateButtons());
el.sessionNew.addEventListener('click', () => useSession(randomSessionId(), 'edit'));
el.sessionCopy.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(location.href);
    setText(el.sessionCopy, 'Copied');
  } catch {
    setText(el.sessionCopy, 'Copy failed');
  }
  setTimeout(() => setText(el.sessionCopy, 'Copy link'), 1500);
});

// ── audio on ─────────────────────────────────────────────────────────────────────────────────

async function ensureAudio(): Promise<boolean> {
  if (player.stats.audio === 'unsupported') return false;
  try {
    await player.enableAudio();
  } catch (err) {
    showNotice(`Audio could not start: ${(err as Error).message}`, 'bad');
    return false;
  }
  return player.stats.audio === 'running';
}

// Browsers start audio only after a gesture: the first click or key anywhere turns it on.
for (const type of ['pointerdown', 'keydown'] as const) {
  document.addEventListener(type, () => void ensureAudio(), { capture: true });
}

// ── controls ─────────────────────────────────────────────────────────────────────────────────

async function act(label: string, run: () => Promise<SessionSummary | undefined>, code?: string): Promise<boolean> {
  const t0 = performance.now();
  try {
    const summary = await run();
    if (summary && summary.id === player.session) applySummary(summary, true);
    log.add(`${label} → ${summary?.state ?? 'ok'} (${Math.round(performance.now() - t0)} ms)`, undefined, code);
    return true;
  } catch (err) {
    const message = err instanceof ApiError ? `${err.message}${err.status ? ` (${err.status})` : ''}` : String(err);
    log.add(`${label} failed: ${message}`, 'bad', code);
    showNotice(`${label} failed: ${message}`, 'bad', 6000);
    return false;
  }
}

const sessionId = () => el.sessionId.value.trim();

el.play.addEventListener('click', async () => {
  const id = sessionId();
  const url = el.source.value.trim();
  if (!isValidSessionId(id) || !url) return;
  const format = el.format.value || undefined;
  void ensureAudio();
  player.flush();
  player.hold(false);
  player.markPlayRequested();
  player.listen(true);
  player.reconnectNow();
  nowUrl = url;
  duration = undefined;
  positionBase = 0;
  playedAtBase = player.stats.playedSeconds;
  positionValid = true;
  await act('play', () => api.play(id, url, format), url);
});

el.pause.addEventListener('click', async () => {
  player.hold(true); // silent at once; the buffered audio waits for the resume
  if (!(await act('pause', () => api.pause(sessionId())))) player.hold(false);
});

el.resume.addEventListener('click', async () => {
  void ensureAudio();
  player.hold(false);
  await act('resume', () => api.resume(sessionId()));
});

el.stop.addEventListener('click', async () => {
  player.flush();
  await act('stop', () => api.stop(sessionId()));
});

el.seek.addEventListener('click', async () => {
  const seconds = Number(el.seekSeconds.value);
  if (!Number.isFinite(seconds) || seconds < 0) return;
  player.flush();
  positionBase = seconds;
  playedAtBase = player.stats.playedSeconds;
  positionValid = true;
  await act(`seek to ${fmtClock(seconds)}`, () => api.seek(sessionId(), seconds));
});

for (const chip of document.querySelectorAll<HTMLButtonElement>('.chip')) {
  chip.addEventListener('click', () => {
    el.source.value = chip.dataset.url ?? '';
    updateButtons();
    el.play.click();
  });
}
el.source.addEventListener('input', () => updateButtons());
el.source.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') el.play.click();
});

// ── tuning ───────────────────────────────────────────────────────────────────────────────────

function remembered(key: string, fallback: number, min: number, max: number): number {
  const v = Number(localStorage.getItem(key));
  return localStorage.getItem(key) !== null && Number.isFinite(v) && v >= min && v <= max ? v : fallback;
}

function setTarget(ms: number): void {
  el.target.value = String(ms);
  setText(el.targetOut, `${ms} ms`);
  player.setTarget(ms);
}
function setVolume(v: number): void {
  el.volume.value = String(v);
  setText(el.volumeOut, `${Math.round(v * 100)} %`);
  player.setVolume(v);
}
setTarget(remembered('chorus.targetMs', 100, 20, 500));
setVolume(remembered('chorus.volume', 0.8, 0, 1));
el.target.addEventListener('input', () => {
  setTarget(Number(el.target.value));
  localStorage.setItem('chorus.targetMs', el.target.value);
});
el.volume.addEventListener('input', () => {
  setVolume(Number(el.volume.value));
  localStorage.setItem('chorus.volume', el.volume.value);
});

// ── notices ──────────────────────────────────────────────────────────────────────────────────

let noticeTimer: ReturnType<typeof setTimeout> | undefined;

function showNotice(text: string, tone?: Tone, ms?: number, button?: { label: string; run: () => void }): void {
  clearTimeout(noticeTimer);
  el.notice.replaceChildren(text);
  if (button) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = button.label;
    b.addEventListener('click', button.run);
    el.notice.append(b);
  }
  setTone(el.notice, tone);
  el.notice.hidden = false;
  if (ms) noticeTimer = setTimeout(() => (el.notice.hidden = true), ms);
}

function audioNotice(): void {
  const audio = player.stats.audio;
  if (audio === 'unsupported') {
    showNotice(
      isSecureContext
        ? 'This browser has no WebCodecs AudioDecoder, which the player needs to decode Opus. Use a recent Chrome, Edge or Firefox.'
        : 'WebCodecs works only in a secure context: open the player at http://localhost or 127.0.0.1, or over https.',
      'bad',
    );
  } else if (audio === 'suspended' && state !== 'idle') {
    showNotice('The browser holds audio back until you interact with the page.', undefined, undefined, {
      label: 'Listen',
      run: () => void ensureAudio().then(() => (el.notice.hidden = true)),
    });
  } else if (audio === 'running' && el.notice.querySelector('button')) {
    el.notice.hidden = true;
  }
}

// ── what the player reports ──────────────────────────────────────────────────────────────────

const describe = (e: ListenerEvent): [string, Tone] => {
  switch (e.type) {
    case 'state':
      return [`state ${e.state}${e.reason ? ` (${e.reason})` : ''}`, e.state === 'error' ? 'bad' : e.state === 'playing' ? 'ok' : undefined];
    case 'ready':
      return [`ready${e.duration !== undefined ? `, ${fmtClock(e.duration)} long` : ''}`, undefined];
    case 'finished':
      return ['finished', undefined];
    case 'error':
      return [`error: ${e.message}`, 'bad'];
    default:
      return [JSON.stringify(e), undefined];
  }
};

player.addEventListener('event', (ev) => {
  const e = ev.detail;
  const [text, tone] = describe(e);
  log.add(text, tone);
  if (e.type === 'state') setState(e.state, e.reason);
  else if (e.type === 'ready') {
    duration = e.duration;
    // The play's first frame is at startAt (a seek's target): the position counts on from there.
    if (e.startAt !== undefined) {
      positionBase = e.startAt;
      playedAtBase = player.stats.playedSeconds;
      positionValid = true;
    }
  } else if (e.type === 'finished') setState('finished');
  else if (e.type === 'error') setState('error', e.message);
});

let lastConnection: PlayerStats['connection'] | undefined;
player.addEventListener('stats', (ev) => {
  const s = ev.detail;
  if (s.connection !== lastConnection) {
    if (s.connection === 'open') log.add('socket connected', 'ok');
    else if (s.connection === 'waiting' && lastConnection === 'open') {
      // Once per loss: the retries that fail show in the socket pill, not as a line each.
      log.add(`socket closed: ${s.closeReason ?? 'unknown'}; reconnecting`, 'bad');
      // Is the gateway gone? Ask now rather than at the next poll.
      void poll();
    }
    lastConnection = s.connection;
  }
  dirty = true;
});

// ── rendering (on animation frames, text at most ~12 times a second) ──────────────────────────

let dirty = true;
let lastText = 0;

function render(now: number): void {
  scope.draw();
  if (now - lastText > 80 || dirty) {
    lastText = now;
    dirty = false;
    renderStats(player.stats);
  }
  requestAnimationFrame(render);
}

function renderStats(s: PlayerStats): void {
  // socket pill
  const retry = s.reconnectAt !== undefined ? Math.max(0, (s.reconnectAt - performance.now()) / 1000) : 0;
  const socket: [string, Tone] =
    s.connection === 'open'
      ? ['socket open', 'ok']
      : s.connection === 'connecting'
        ? ['connecting…', 'warn']
        : s.connection === 'waiting'
          ? [`retry in ${retry.toFixed(1)} s`, 'bad']
          : ['not listening', undefined];
  setText(el.socketPill, socket[0]);
  setTone(el.socketPill, socket[1]);
  el.socketPill.title = s.closeReason
    ? `Last close: ${s.closeReason}; ${s.reconnects} reconnects`
    : s.connection === 'closed'
      ? 'No WebSocket yet: the page listens once you play, or once the session exists'
      : "This page's WebSocket to the gateway";

  const audio: [string, Tone] =
    s.audio === 'running' ? ['audio on', 'ok'] : s.audio === 'suspended' ? ['audio blocked', 'warn'] : s.audio === 'unsupported' ? ['no WebCodecs', 'bad'] : ['audio off', undefined];
  setText(el.audioPill, audio[0]);
  setTone(el.audioPill, audio[1]);

  // buffer health: the bar spans 0 … 2 × target, the mark sits at the target
  const ratio = s.targetMs > 0 ? s.bufferMs / s.targetMs : 0;
  (el.bufferBar.firstElementChild as HTMLElement).style.width = `${Math.min(100, ratio * 50).toFixed(1)}%`;
  el.bufferBar.setAttribute('aria-valuenow', String(Math.round(ratio * 100)));
  const live = s.audio === 'running' && (s.buffer !== 'buffering' || s.bufferMs > 0);
  // It swings between target − 1 frame and the target as frames arrive: half the target is still fine.
  setTone(el.bufferBar, !live || s.buffer === 'holding' ? undefined : ratio < 0.2 ? 'bad' : ratio < 0.5 ? 'warn' : 'ok');
  const mode = s.buffer === 'holding' ? 'held' : s.buffer;
  setText(el.bufferText, `${mode} · ${s.bufferMs.toFixed(0)} / ${s.targetMs.toFixed(0)} ms`);

  setText(el.latency, s.audio === 'running' && s.framesDecoded > 0 ? fmtMs(s.latencyMs) : '–');
  el.latency.title = `jitter buffer ${s.bufferMs.toFixed(0)} ms + audio output ${s.outputLatencyMs.toFixed(0)} ms`;
  setText(el.jitter, s.framesReceived > 2 ? fmtMs(s.jitterMs, 1) : '–');
  el.jitter.title = 'RFC 3550 interarrival jitter of the frames';
  setText(el.firstSound, fmtMs(s.firstSoundMs));
  el.firstSound.title =
    s.firstFrameMs !== undefined ? `first frame ${s.firstFrameMs.toFixed(0)} ms after play; first sound after buffering and output` : '';
  setText(el.frames, fmtCount(s.framesReceived));
  el.frames.title = `${fmtCount(s.framesDecoded)} decoded, ${s.decodeErrors} decode errors, ${s.decoderDrops} dropped by a slow decoder, ${s.stale} stale`;
  setText(el.lost, s.lost > 0 ? `${fmtCount(s.lost)} in ${fmtCount(s.gaps)}` : '0');
  el.lost.title = 'Frames missing from the sequence, and the number of gaps they were in';
  setTone(el.lost, s.lost > 0 ? 'bad' : undefined);
  setText(el.underruns, fmtCount(s.underruns));
  el.underruns.title = `Times the jitter buffer ran dry; ${s.trimmedMs.toFixed(0)} ms trimmed to keep latency down`;
  setTone(el.underruns, s.underruns > 0 ? 'bad' : undefined);

  setText(el.nowSource, state === 'idle' ? '' : (nowUrl ?? ''));
  el.nowSource.title = nowUrl ?? '';
  const position = positionValid ? positionBase + (s.playedSeconds - playedAtBase) : undefined;
  setText(el.position, position === undefined ? '' : duration ? `${fmtClock(position)} / ${fmtClock(duration)}` : fmtClock(position));
  setText(el.streamMeta, s.lastSeq !== undefined ? `seq ${s.lastSeq}` : '');
  audioNotice();
}

// ── the sessions table ───────────────────────────────────────────────────────────────────────

const table = new SessionsTable(byId<HTMLTableElement>('sessions').tBodies[0]!, byId('sessions-empty'), {
  select: (id) => useSession(id, 'edit'),
  stop: (id) => {
    if (id === player.session) player.flush();
    void act(`stop ${id}`, () => api.stop(id)).then(() => poll());
  },
});
let pollTimer: ReturnType<typeof setTimeout> | undefined;
let polling = false;
let showEnded = false;
let lastSessions: SessionsResponse | undefined;

el.sessionsEnded.addEventListener('click', () => {
  showEnded = !showEnded;
  if (lastSessions) renderTable(lastSessions);
});

function renderTable(r: SessionsResponse): void {
  const hidden = table.update(r.sessions, player.session, showEnded);
  const ended = r.sessions.filter((s) => s.id !== player.session && !isUnderWay(s.state)).length;
  el.sessionsEnded.hidden = ended === 0;
  el.sessionsEnded.setAttribute('aria-expanded', String(showEnded));
  setText(el.sessionsEnded, showEnded ? `Hide ${ended} ended` : `Show ${hidden} ended`);
}

function setReach(next: GatewayReach, why?: string): void {
  if (next === reach) return;
  const was = reach;
  reach = next;
  if (next === 'down') log.add(`gateway unreachable: ${why ?? 'no answer'}`, 'bad');
  else if (next === 'token') log.add('the gateway wants its token (CHORUS_TOKEN)', 'bad');
  else if (was === 'down' || was === 'token') log.add('gateway reachable again', 'ok');
  if (next === 'token') showTokenForm();
  else el.tokenForm.hidden = true;
  if (next === 'down' || next === 'token') {
    setText(el.enginePill, next === 'down' ? 'gateway unreachable' : 'token needed');
    setTone(el.enginePill, 'bad');
    setText(el.sessionsMeta, next === 'down' ? 'gateway unreachable' : 'token needed');
    // What the table showed is no longer known: no stale rows with live stop buttons.
    lastSessions = undefined;
    table.update([], player.session, showEnded);
    byId('sessions-empty').hidden = true;
    el.sessionsEnded.hidden = true;
    // The socket would only be refused too; it comes back with the gateway.
    if (next === 'token') player.listen(false);
  } else {
    player.reconnectNow();
  }
  renderState();
}

async function poll(): Promise<void> {
  if (polling) return;
  polling = true;
  clearTimeout(pollTimer);
  try {
    const r: SessionsResponse = await api.sessions();
    setReach('ok');
    lastSessions = r;
    renderTable(r);
    setText(
      el.sessionsMeta,
      `${r.sessions.length} session${r.sessions.length === 1 ? '' : 's'} · ${r.threads} thread${r.threads === 1 ? '' : 's'} · ${r.sessionsPerThread} per thread`,
    );
    setText(el.enginePill, r.engineConnected ? 'engine connected' : 'engine down');
    setTone(el.enginePill, r.engineConnected ? 'ok' : 'bad');
    const mine = r.sessions.find((s) => s.id === player.session);
    // The session exists (someone played it): listening to it creates nothing.
    if (mine) player.listen(true);
    if (performance.now() - stateAt > FRESH_MS) {
      if (mine) applySummary(mine, false);
      else if (state !== 'idle') setState('idle', undefined, false);
    } else if (mine?.url) {
      nowUrl = mine.url;
    }
  } catch (err) {
    setReach(GatewayApi.isAuthError(err) ? 'token' : 'down', (err as Error).message);
  } finally {
    polling = false;
    if (!document.hidden) pollTimer = setTimeout(() => void poll(), POLL_MS);
  }
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) void poll();
});

// ── the token form ───────────────────────────────────────────────────────────────────────────

function showTokenForm(): void {
  if (!el.tokenForm.hidden) return;
  el.tokenForm.hidden = false;
  el.tokenInput.value = '';
  el.tokenInput.focus();
}

el.tokenForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const candidate = el.tokenInput.value.trim();
  if (!candidate) return;
  api.setToken(candidate);
  try {
    await api.sessions();
  } catch (err) {
    el.tokenError.hidden = false;
    setText(el.tokenError, GatewayApi.isAuthError(err) ? 'The gateway refused that token.' : `The gateway did not answer: ${(err as Error).message}`);
    el.tokenInput.select();
    return;
  }
  el.tokenError.hidden = true;
  el.tokenInput.value = '';
  saveToken(candidate, el.tokenRemember.checked);
  await poll();
});

// ── start ────────────────────────────────────────────────────────────────────────────────────

installHook(player, () => state, () => reach);
const initial = params.get('session')?.trim();
useSession(initial && isValidSessionId(initial) ? initial : randomSessionId(), 'load');
if (initial && !isValidSessionId(initial)) {
  showNotice(`"${initial}" is not a valid session id; a new one was chosen.`, 'bad', 6000);
}
setState(state, undefined, false);
void ensureAudio(); // runs when the browser allows audio without a gesture; otherwise the first click does it
requestAnimationFrame(render);
