/**
 * The words for a session's state, on every side: the engine's play (its HTTP status answer),
 * the gateway's session (GET /sessions, the listeners' `state` events), and the worker's player
 * (the status it posts to the main thread). Each side's list is derived here from the same
 * words, so a state one side names means the same on the others. Browser-safe.
 *
 *   idle → starting → (running) ⇄ paused → finished | stopped | error
 *
 * What "running" is differs by side: the engine is `streaming` frames; a listener's session is
 * `buffering` (waiting for the prebuffer), `playing`, or `autopaused` (nobody listens).
 */

/** How a play ends, on every side. */
export const ENDED_STATES = ['finished', 'stopped', 'error'] as const;
export type EndedState = (typeof ENDED_STATES)[number];

/**
 * A session as its listeners see it (the gateway's `state`). `autopaused`: nobody listens (no
 * WebSocket, no RTP sink) and CHORUS_NO_LISTENER=pause, so it holds its place until someone does.
 */
export const SESSION_STATES = ['idle', 'starting', 'buffering', 'playing', 'paused', 'autopaused', ...ENDED_STATES] as const;
export type SessionStateName = (typeof SESSION_STATES)[number];

/** A track is under way: the engine plays it and a worker paces it. */
export const UNDER_WAY_STATES = ['starting', 'buffering', 'playing', 'paused', 'autopaused'] as const satisfies readonly SessionStateName[];
export type UnderWayState = (typeof UNDER_WAY_STATES)[number];

/** What a session's worker player reports: the session states the worker decides (no `starting`, no `stopped`: main's). */
export const PLAYER_STATUSES = ['idle', 'buffering', 'playing', 'paused', 'autopaused', 'finished', 'error'] as const satisfies readonly SessionStateName[];
export type PlayerStatus = (typeof PLAYER_STATUSES)[number];

/** The engine's play, as its status answer names it (`streaming` where the gateway says buffering or playing). */
export const ENGINE_STATES = ['idle', 'starting', 'streaming', 'paused', ...ENDED_STATES] as const;
export type EngineState = (typeof ENGINE_STATES)[number];

/** Engine states in which the play may still send frames. */
export const ENGINE_LIVE_STATES = ['idle', 'starting', 'streaming', 'paused'] as const satisfies readonly EngineState[];

const underWay: ReadonlySet<string> = new Set(UNDER_WAY_STATES);
const ended: ReadonlySet<string> = new Set(ENDED_STATES);
const engineStates: ReadonlySet<string> = new Set(ENGINE_STATES);

export function isUnderWay(state: SessionStateName): state is UnderWayState {
  return underWay.has(state);
}

export function isEnded(state: string): state is EndedState {
  return ended.has(state);
}

/** An engine's status word (natashi's engine has others of its own): one of ours, or `unknown`. */
export function engineStateOf(word: unknown): EngineState | 'unknown' {
  return typeof word === 'string' && engineStates.has(word) ? (word as EngineState) : 'unknown';
}
