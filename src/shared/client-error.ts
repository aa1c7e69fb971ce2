/**
 * What both HTTP servers answer to a request Node's parser refuses (bad request line, headers over
 * the size limit, a headers timeout): the status it means, with a JSON reason like every other
 * error, then the connection is closed. Node's default answer has no body at all.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';

export function answerClientErrorsInJson(server: http.Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const body = JSON.stringify({ error: `bad request: ${err.code ?? err.message}` });
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
}
