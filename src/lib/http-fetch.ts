import { http } from './node-http.ts';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Transform } from 'node:stream';

/**
 * `fetch` for ward's own requests to identity providers (discovery, JWKS, introspection, token
 * endpoints), carried by node:http and node:https instead of undici.
 *
 * Why not the global `fetch`: undici parses HTTP/1.1 with llhttp compiled to WebAssembly, and the
 * first connection compiles it. V8 then tiers the parser's large functions up in the background,
 * which mallocs ~20 MB at once; glibc keeps most of it, so a sidecar's peak RSS rose by up to
 * 20 MB at its first key fetch, at a moment that varied from run to run (docs/performance.md,
 * "Memory").
 * node:http parses with the llhttp built into the node binary. The `Response` returned is the
 * global one, which openid-client requires.
 *
 * What differs from `fetch`, on purpose:
 * - redirects are never followed: a 3xx is returned as it is (`redirect: 'manual'` gives the
 *   same answer to ward's callers, which accept only 200; `'error'` rejects);
 * - the body is read whole before the promise resolves, and at most `maxBytes` of it (after
 *   decompression): a larger one rejects (a `TypeError` whose cause says so: the provider
 *   failing, like a cut connection), so an endpoint streaming without end cannot grow the
 *   process's memory until the timeout;
 * - the request body may be a string, `URLSearchParams`, an `ArrayBuffer` or a typed array;
 *   streams, blobs and form data are refused.
 * Like `fetch`, a network failure rejects with `TypeError('fetch failed')` whose `cause` is the
 * socket's error, an aborted signal with the signal's reason, and gzip, deflate and br bodies are
 * decoded.
 */
export function createHttpFetch(maxBytes: number): typeof fetch {
  return async (input, init = {}) => {
    if (typeof input !== 'string' && !(input instanceof URL)) {
      throw new TypeError('ward http fetch: a Request object is not supported; pass a URL and options');
    }
    let url: URL;
    try {
      url = new URL(input);
    } catch {
      throw new TypeError(`ward http fetch: invalid URL`);
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of new Headers(init.headers)) headers[name] = value;
    const body = encodeBody(init.body, headers);
    const method = (init.method ?? 'GET').toUpperCase();
    const res = await httpRequest(url, { method, headers, body, signal: init.signal ?? undefined, maxBytes });
    if (res.status >= 300 && res.status < 400 && init.redirect === 'error') {
      throw new TypeError('fetch failed', { cause: new Error(`redirect (HTTP ${res.status}) refused`) });
    }
    try {
      const out = new Headers();
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
        const name = res.rawHeaders[i] as string;
        // The body handed over is decoded and complete: its coding and length no longer apply.
        if (res.decoded && /^content-(encoding|length)$/i.test(name)) continue;
        out.append(name, res.rawHeaders[i + 1] as string);
      }
      const empty = NULL_BODY_STATUS.has(res.status) || method === 'HEAD';
      return new Response(empty ? null : res.body, { status: res.status, statusText: res.statusText, headers: out });
    } catch (err) {
      throw new TypeError('fetch failed', { cause: err });
    }
  };
}

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

export interface HttpRequest {
  readonly method: string;
  /** Lower-case names. */
  readonly headers: Record<string, string>;
  readonly body?: Buffer | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Largest body accepted, after decoding. */
  readonly maxBytes: number;
}

export interface HttpResponse {
  readonly status: number;
  readonly statusText: string;
  /** As received: name, value, name, value... */
  readonly rawHeaders: readonly string[];
  /** Whole and decoded. */
  readonly body: Buffer;
  /** The body was gzip, deflate or br on the wire. */
  readonly decoded: boolean;
}

/**
 * One request over node:http or node:https, with the rules above, answered without the fetch
 * classes (`Headers`, `Response`): what ward's own JWKS and discovery GETs use. The request has
 * no deadline of its own: pass `signal` (every caller in ward does).
 */
export function httpRequest(url: URL, r: HttpRequest): Promise<HttpResponse> {
  const mod = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (mod === undefined) return Promise.reject(new TypeError(`ward http fetch: unsupported protocol ${url.protocol}`));
  const signal = r.signal;
  if (signal?.aborted === true) return Promise.reject(asError(signal.reason));
  const headers = r.body === undefined ? r.headers : { ...r.headers, 'content-length': String(r.body.length) };

  return new Promise<HttpResponse>((resolve, reject) => {
    let settled = false;
    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      req.destroy();
      reject(asError(err));
    };
    const onAbort = (): void => fail(signal?.reason);
    const req = mod.request(url, { method: r.method, headers }, (res) => {
      const decoder = decoderFor(res);
      readBody(res, decoder, r.maxBytes).then(
        (body) => {
          if (settled) return;
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 599) return fail(new TypeError('fetch failed', { cause: new Error(`HTTP status ${status} from ${url.origin}`) }));
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          resolve({ status, statusText: res.statusMessage ?? '', rawHeaders: res.rawHeaders, body, decoded: decoder !== undefined });
        },
        (err: unknown) => fail(new TypeError('fetch failed', { cause: err })),
      );
    });
    req.on('error', (err) => fail(new TypeError('fetch failed', { cause: err })));
    signal?.addEventListener('abort', onAbort, { once: true });
    req.end(r.body);
  });
}

/** An abort reason is whatever the signal was given; `AbortSignal.timeout()`'s is a DOMException. */
function asError(x: unknown): Error {
  return x instanceof Error ? x : new Error(String(x));
}

function encodeBody(b: RequestInit['body'], headers: Record<string, string>): Buffer | undefined {
  if (b === undefined || b === null) return undefined;
  if (typeof b === 'string') {
    headers['content-type'] ??= 'text/plain;charset=UTF-8';
    return Buffer.from(b, 'utf8');
  }
  if (b instanceof URLSearchParams) {
    headers['content-type'] ??= 'application/x-www-form-urlencoded;charset=UTF-8';
    return Buffer.from(b.toString(), 'utf8');
  }
  if (b instanceof ArrayBuffer) return Buffer.from(b);
  if (ArrayBuffer.isView(b)) return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  throw new TypeError('ward http fetch: request body must be a string, URLSearchParams or bytes');
}

/** The decoder for the response's content coding; undefined for none (or one we pass through). */
function decoderFor(res: IncomingMessage): (() => Transform) | undefined {
  const coding = (res.headers['content-encoding'] ?? '').trim().toLowerCase();
  if (coding === 'gzip' || coding === 'x-gzip') return createGunzip;
  if (coding === 'deflate') return createInflate;
  if (coding === 'br') return createBrotliDecompress;
  return undefined;
}

/** The response body, decoded by `decoder` (its content coding's), rejecting once it passes `maxBytes`. */
function readBody(res: IncomingMessage, decoder: (() => Transform) | undefined, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(res.headers['content-length'] ?? '0');
    if (decoder === undefined && declared > maxBytes) {
      res.destroy();
      reject(new Error(`response larger than ${maxBytes} bytes`));
      return;
    }
    const dec = decoder?.();
    const src = dec === undefined ? res : res.pipe(dec);
    const chunks: Buffer[] = [];
    let total = 0;
    src.on('data', (c: Buffer) => {
      total += c.length;
      if (total > maxBytes) {
        res.destroy();
        dec?.destroy();
        reject(new Error(`response larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    });
    src.on('end', () => resolve(Buffer.concat(chunks, total)));
    src.on('error', reject);
    if (dec !== undefined) res.on('error', reject);
    res.on('close', () => {
      if (!res.complete) reject(new Error('connection closed before the response ended'));
    });
  });
}
