/** What the gateway's main thread counts over all sessions (its /metrics). */

/** What the demux counts as it takes engine frames into tracks. */
export interface DemuxCounters {
  framesRouted: number;
  framesStale: number;
  framesOverrun: number;
  /** Payloads larger than one Opus packet, refused before they reach a ring. */
  framesOversize: number;
}

export interface GatewayCounters extends DemuxCounters {
  framesUnknown: number;
  /** Frames sent on listeners' WebSockets (each frame once, however many listeners). */
  framesDelivered: number;
  /** Plays ended because their `ready` did not come within CHORUS_READY_TIMEOUT_MS. */
  readyTimeouts: number;
}

export function gatewayCounters(): GatewayCounters {
  return { framesRouted: 0, framesUnknown: 0, framesStale: 0, framesOverrun: 0, framesOversize: 0, framesDelivered: 0, readyTimeouts: 0 };
}
