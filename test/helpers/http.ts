/**
 * One HTTP request from a test, its answer read whole: the status, the headers, the text, and the
 * JSON (`{ text }` when the answer is not JSON, so a test can still read what came).
 *
 *   const r = await request(`${url}/sessions`, 'GET', undefined, { authorization: … });
 *   const api = client(url); await api('POST', '/sessions/a/play', { url: 'tone:440' });
 */
export interface Answer {
  status: number;
  headers: Headers;
  contentType: string;
  text: string;
  /** The JSON answer, loosely typed: the tests read a few fields of each. */
  json: any;
}

export async function request(url: string, method: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = { text };
  }
  return { status: res.status, headers: res.headers, contentType: res.headers.get('content-type') ?? '', text, json };
}

/** `request` against one server: `api(method, path, body?)`. */
export function client(base: string): (method: string, path: string, body?: unknown) => Promise<Answer> {
  return (method, path, body) => request(base + path, method, body);
}

/**
 * Polls `base`/health until `holds(health)` (a 503 answers JSON too), for a test that waits on a
 * process's state rather than on its log; rejects after `timeoutMs`, quoting the last answer.
 */
export async function waitForHealth(base: string, what: string, holds: (health: any) => boolean, timeoutMs = 10_000): Promise<any> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      last = (await request(`${base}/health`, 'GET')).json;
      if (holds(last)) return last;
    } catch (err) {
      last = (err as Error).message;
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last /health: ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
