/** An error with the HTTP status and the one-line reason a client gets as {"error": reason}. */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
    /** Extra response headers (Retry-After, WWW-Authenticate, Connection: close). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}
