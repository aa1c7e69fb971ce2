/**
 * What a session does with a listener that reads slower than the session plays
 * (CHORUS_SLOW_LISTENER), as a typed policy like @discordjs/voice's NoSubscriberBehavior:
 *
 *   wait  the session holds (its worker stops taking frames, its ring fills, credits stop, the
 *         engine's ffmpeg blocks) until the listener drains: nothing is lost, memory stays
 *         bounded by the ring plus HIGH_WATER_BYTES per listener.
 *   drop  the listener is skipped while it is behind and gets the live frames when it drains
 *         (a gap in seq shows it); the skips are counted. The session plays on for the others.
 */
export type SlowListenerPolicy = 'wait' | 'drop';

/** A listener with more than this queued in user space is behind. */
export const HIGH_WATER_BYTES = 256 * 1024;
/** …and has caught up again below this. */
export const LOW_WATER_BYTES = 64 * 1024;
