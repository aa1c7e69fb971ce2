/**
 * A hostile client, run as its own process so that its loops do not delay the test's own
 * listeners (their arrival times are what the test measures). Prints one JSON line when done.
 *
 *   node test/helpers/flood.mjs ws-noread <ws-url> <seconds>   text messages as fast as the socket
 *   node test/helpers/flood.mjs ws-read   <ws-url> <seconds>   takes them, reading nothing / all
 *        → {"sent", "closeCode", "closedAfterMs"}
 *        (both say `ready` once the socket is open)
 *   node test/helpers/flood.mjs idle-tcp  <port> <count> <hold-seconds>
 *        connections that send nothing, held until the gateway has closed them all or for
 *        <hold-seconds>; says `ready` once all are made → {"opened", "closedByPeer", "allClosedAfterMs"}
 */
import net from 'node:net';
import WebSocket from 'ws';

const [mode, ...args] = process.argv.slice(2);
const print = (result) => {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
};

if (mode === 'idle-tcp') {
  const [port, count, hold] = args.map(Number);
  let opened = 0;
  let closedByPeer = 0;
  const sockets = [];
  for (let i = 0; i < count; i++) {
    const s = net.createConnection({ host: '127.0.0.1', port });
    s.on('connect', () => opened++);
    s.on('error', () => undefined);
    s.on('close', () => closedByPeer++);
    sockets.push(s);
    // A batch at a time, so the listen backlog takes them.
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
  }
  // Every connection has been made (or refused): the test may look now.
  await new Promise((r) => setTimeout(r, 200));
  process.stdout.write('ready\n');
  const readyAt = performance.now();
  // Until the gateway has closed every one of them, or for `hold` seconds at most.
  const timer = setInterval(() => {
    const all = closedByPeer === sockets.length;
    if (!all && performance.now() - readyAt < hold * 1000) return;
    clearInterval(timer);
    const result = { opened, closedByPeer, allClosedAfterMs: all ? Math.round(performance.now() - readyAt) : null };
    for (const s of sockets) s.destroy();
    print(result);
  }, 50);
} else {
  const [url, secondsArg] = args;
  const seconds = Number(secondsArg);
  const message = JSON.stringify({ action: 'nope' });
  const ws = new WebSocket(url);
  let sent = 0;
  let closeCode = null;
  let closedAt = null;
  let start = 0;
  const done = () => print({ sent, closeCode, closedAfterMs: closedAt === null ? null : Math.round(closedAt - start) });
  ws.on('error', () => undefined);
  ws.on('close', (code) => {
    closeCode ??= code;
    closedAt ??= performance.now();
  });
  ws.on('open', () => {
    // Reading nothing: not even the close frame, so the end shows as the socket closing.
    if (mode === 'ws-noread') ws._socket.pause();
    ws._socket.on('close', () => (closedAt ??= performance.now()));
    process.stdout.write('ready\n');
    start = performance.now();
    const pump = () => {
      if (ws.readyState === WebSocket.CLOSING) {
        // The gateway's close frame came: wait a moment for the close to complete, to report its code.
        ws.once('close', done);
        setTimeout(done, 5000);
        return;
      }
      if (performance.now() - start > seconds * 1000 || closedAt !== null || ws.readyState !== WebSocket.OPEN) return done();
      // While the socket takes no more, wait instead of spinning: the test shares two cores.
      if (ws.bufferedAmount >= 256 * 1024) return setTimeout(pump, 10);
      for (let i = 0; i < 1000; i++) {
        ws.send(message);
        sent++;
      }
      setImmediate(pump);
    };
    pump();
  });
}
