import { createHttpFetch, httpRequest } from '../lib/http-fetch.ts';
import { parseStrictJsonObject } from './json.ts';
import type { JsonObject } from './json.ts';

/**
 * The one GET used for key material (STYLE habit 7): no redirects (a redirect would let whoever
 * controls one hop pick our keys), a timeout covering headers and body, a size cap, strict JSON.
 * Throws on any failure; callers count and log it.
 */

/** Largest JWKS document accepted: real ones are a few KiB. */
export const MAX_DOCUMENT_BYTES = 512 * 1024;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** What ward's requests to identity providers go through unless a fetch is injected (tests). */
const httpFetch = createHttpFetch(MAX_DOCUMENT_BYTES);

export async function getJsonObject(
  fetchImpl: typeof fetch | undefined,
  url: URL,
  timeoutMs: number,
  accept: string,
): Promise<JsonObject> {
  let text: string;
  if (fetchImpl === undefined) {
    // ward's own request: no fetch classes, so a sidecar that verifies JWTs never loads undici.
    const res = await httpRequest(url, { method: 'GET', headers: { accept }, signal: AbortSignal.timeout(timeoutMs), maxBytes: MAX_DOCUMENT_BYTES });
    if (res.status !== 200) throw new Error(`HTTP ${res.status} from ${url.href}`);
    text = utf8.decode(res.body);
  } else {
    const res = await fetchImpl(url, {
      method: 'GET',
      redirect: 'manual',
      headers: { accept },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`HTTP ${res.status} from ${url.href}`);
    }
    text = await readBounded(res, MAX_DOCUMENT_BYTES);
  }
  const doc = parseStrictJsonObject(text);
  if (doc === undefined) throw new Error(`response from ${url.href} is not a strict JSON object`);
  return doc;
}

async function readBounded(res: Response, maxBytes: number): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`response larger than ${maxBytes} bytes`);
  }
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`response larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return utf8.decode(Buffer.concat(chunks));
}

/**
 * `fetchImpl` whose responses carry at most `maxBytes` of body: a larger declared length fails
 * at once, a longer stream fails when it passes the cap. For the requests openid-client makes
 * (discovery, introspection, token endpoints), which otherwise read a whole body however long it
 * is: an IdP endpoint streaming without end must not grow the sidecar's memory until the timeout.
 * Without `fetchImpl`, ward's node:http fetch, which has the cap built in (src/lib/http-fetch.ts).
 */
export function boundedFetch(fetchImpl: typeof fetch | undefined, maxBytes: number): typeof fetch {
  if (fetchImpl === undefined) return maxBytes === MAX_DOCUMENT_BYTES ? httpFetch : createHttpFetch(maxBytes);
  return async (input, init) => {
    const res = await fetchImpl(input, init);
    const declared = Number(res.headers.get('content-length') ?? '0');
    if (declared > maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`response larger than ${maxBytes} bytes`);
    }
    if (res.body === null) return res;
    let total = 0;
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          total += chunk.byteLength;
          if (total > maxBytes) ctl.error(new Error(`response larger than ${maxBytes} bytes`));
          else ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/**
 * Plain `http:` is accepted only towards loopback (tests, the embedded dev IdP); anything that
 * crosses a network must be `https:` so keys cannot be swapped in transit.
 */
export function isLoopbackHttp(url: URL): boolean {
  return url.protocol === 'http:' && isLoopbackHost(url.hostname);
}

/** A gRPC `host:port` (`[v6]:port` too) on loopback, where cleartext crosses no network. */
export function isLoopbackAddress(address: string): boolean {
  return isLoopbackHost(address.startsWith('[') ? address.slice(0, address.indexOf(']') + 1) : address.slice(0, address.lastIndexOf(':')));
}

function isLoopbackHost(h: string): boolean {
  return h === 'localhost' || h === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export function checkFetchable(url: URL): void {
  if (url.protocol !== 'https:' && !isLoopbackHttp(url)) {
    throw new Error(`refusing ${url.protocol} URL ${url.href}: https required outside loopback`);
  }
}

/** A one-line, token-free description of a fetch failure for logs and status. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  const code = (err as { code?: unknown }).code;
  let s = `${err.name}: ${err.message}`;
  if (typeof code === 'string') s += ` [${code}]`;
  if (cause instanceof Error) {
    const cc = (cause as { code?: unknown }).code;
    s += ` (${typeof cc === 'string' ? cc : cause.message})`;
  }
  return s;
}
