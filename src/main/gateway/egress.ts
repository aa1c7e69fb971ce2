/**
 * Egress: what the session workers post back to the main thread. Paced frames come in batches
 * and are sent on each listener's WebSocket here, on the main thread (Node cannot hand an
 * accepted socket to a worker); RTP and Discord voice are sent by the workers themselves. State
 * and voice changes go to their session.
 */
import type { EgressMessage } from '../../shared/worker-messages.js';
import { forEachEgressEntry } from '../../workers/egress-batch.js';
import type { GatewayCounters } from './counters.js';
import type { SessionRegistry } from './registry.js';

export class Egress {
  /** Date.now() of the batch being sent: one clock read per batch, not per frame. */
  private batchAt = 0;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly counters: GatewayCounters,
  ) {}

  /** The slot pool's egress callback, for every worker thread's port. */
  readonly onMessage = (message: EgressMessage): void => {
    if (message.kind === 'frames') {
      this.batchAt = Date.now();
      forEachEgressEntry(message.batch, message.used, this.sendFrame);
      return;
    }
    const session = this.sessions.withEgressId(message.sid);
    if (!session) return;
    if (message.kind === 'voice') session.onVoice(message.voice);
    else session.onPlayerStatus(message.status, message.reason);
  };

  private readonly sendFrame = (egressId: number, frame: Buffer): void => {
    const session = this.sessions.withEgressId(egressId);
    if (!session) return;
    this.counters.framesDelivered++;
    session.sendToListeners(frame, this.batchAt);
  };
}
