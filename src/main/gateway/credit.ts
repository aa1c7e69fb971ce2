/**
 * Credit: every CREDIT_EVERY_MS (and at once when a play starts) each session's track is granted
 * what its ring has room for, in one write of credit lines to the engine. Only once the engine
 * said hello with credit; a seed engine paces itself.
 */
import type { EngineLink } from './engine-link.js';
import type { SessionRegistry } from './registry.js';
import type { GatewaySession } from './session.js';

/** Credit is granted on this cadence (and at once when a play starts). */
export const CREDIT_EVERY_MS = 20;

export class Credit {
  constructor(
    private readonly sessions: SessionRegistry,
    private readonly link: EngineLink,
  ) {}

  /** Grants every session what is due, in one write. */
  grantAll(): void {
    if (!this.link.creditEnabled) return;
    const grants: { sessionId: string; frames: number }[] = [];
    for (const session of this.sessions.values()) {
      const frames = session.grantCredit();
      if (frames > 0) grants.push({ sessionId: session.id, frames });
    }
    this.link.sendCredits(grants);
  }

  /** Grants one session what is due now (a play just started: no wait for the next tick). */
  grantNow(session: GatewaySession): void {
    if (!this.link.creditEnabled) return;
    const frames = session.grantCredit();
    if (frames <= 0) return;
    this.link.sendCredits([{ sessionId: session.id, frames }]);
  }

  /** A new connection said hello: the engine's windows start at zero, so grant from scratch. */
  regrantAll(): void {
    for (const session of this.sessions.values()) session.forgetCredit();
    this.grantAll();
  }
}
