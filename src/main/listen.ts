/**
 * Binds a chorus HTTP server and, when it cannot, says which variable to change: the one line
 * a user sees for a port in use or an address that is not this machine's.
 */
import type { Server } from 'node:http';

export async function listen(server: Server, host: string, port: number, portVariable: string, hostVariable: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: NodeJS.ErrnoException) => {
    const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    if (err.code === 'EADDRINUSE') throw new Error(`${where} is already in use: set ${portVariable} to a free port (0 picks one)`);
    if (err.code === 'EADDRNOTAVAIL') throw new Error(`${where} is not an address of this machine: check ${hostVariable}`);
    if (err.code === 'EACCES') throw new Error(`${where} needs privileges to bind: set ${portVariable} to 1024 or above`);
    throw err;
  });
}
