/**
 * `window.chorus`: a small read-only window into the player, for the browser tests (and for
 * anyone curious, from the devtools console). It measures what the page is actually playing:
 * the analyser sits right after the jitter buffer, on the way to the speakers.
 */
import type { SessionStateName } from '../shared/session-state.js';
import { analyse, powerAt, type Analysis } from './analysis.js';
import type { Player, PlayerStats } from './player.js';

export interface ChorusHook {
  /** Dominant frequency and level of what is playing now; undefined before audio is on. */
  analyse(): Analysis | undefined;
  /** Level in dBFS near `hz` (±15 Hz). */
  powerAt(hz: number): number | undefined;
  stats(): PlayerStats;
  /** The session's state as the page knows it. */
  state(): SessionStateName;
  /** Whether the page reaches the gateway (`token`: it answered 401 and the page asks for one). */
  reach(): GatewayReach;
  session(): string | undefined;
  /** Closes the WebSocket as a network failure would; the player reconnects with back-off. */
  dropConnection(): void;
}

export type GatewayReach = 'unknown' | 'ok' | 'down' | 'token';

declare global {
  interface Window {
    chorus?: ChorusHook;
  }
}

export function installHook(player: Player, state: () => SessionStateName, reach: () => GatewayReach): void {
  window.chorus = {
    analyse: () => (player.analyser ? analyse(player.analyser) : undefined),
    powerAt: (hz) => (player.analyser ? powerAt(player.analyser, hz) : undefined),
    stats: () => ({ ...player.stats }),
    state,
    reach,
    session: () => player.session,
    dropConnection: () => player.dropConnection(),
  };
}
