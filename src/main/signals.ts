/**
 * The signal that stops a `chorus` process. Ask for it before the process says it is ready: until
 * a listener is installed, SIGTERM kills a Node process outright, skipping its clean-up (the
 * engine would leave its socket file behind).
 */
export function nextStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
}
