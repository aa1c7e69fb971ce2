/**
 * What stops a `chorus` process, as a reason for the log: SIGINT or SIGTERM, or the process that
 * started it going away.
 *
 * Ask for it before the process says it is ready: until a listener is installed, SIGTERM kills a
 * Node process outright, skipping its clean-up (the engine would leave its socket file behind).
 */

/** How often a process run by npm checks that its parent is still there. */
const PARENT_CHECK_MS = 1000;

export function nextStopSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    // Started with an IPC channel (the engine under `chorus start`): the channel closes when the
    // parent is gone, however it went (SIGKILL included), so the engine never outlives it.
    if (process.channel) {
      process.channel.unref();
      process.once('disconnect', () => resolve('the process that started it exited'));
    }
    // Run by npm (`npm start`): a SIGTERM to npm kills npm and its shell but never reaches this
    // process, which the system then adopts. A new parent pid means npm is gone: stop too.
    if (process.env.npm_lifecycle_event) {
      const parent = process.ppid;
      const timer = setInterval(() => {
        if (process.ppid === parent) return;
        clearInterval(timer);
        resolve('npm, which ran it, exited');
      }, PARENT_CHECK_MS);
      timer.unref();
    }
  });
}
