import { GrpcStatus } from '../errors/table.ts';
import { CANCEL, type CaSource, H2Connection, type H2ClientStream, type H2StreamHandler } from './conn.ts';

/**
 * gRPC unary calls (PROTOCOL-HTTP2.md) over ward's own HTTP/2 client, for the one kind of call
 * the sidecar makes on its own behalf in bulk: exporting telemetry batches. It replaces a
 * grpc-js channel there, which kept ~9 MB of code and state in every sidecar that exports
 * telemetry (docs/performance.md "Memory").
 *
 * One connection, opened on first use and replaced when it goes away (GOAWAY, error, close).
 * After a connection fails, calls fail at once (UNAVAILABLE) until a backoff of 1 s, doubling to
 * 30 s, has passed: a collector that is down costs a caller nothing but the count of what it
 * dropped. A call is sent again only when the server refused it unprocessed (REFUSED_STREAM, or
 * above a GOAWAY's last stream id), once, on a new connection; nothing else is retried. Each call has a deadline (`grpc-timeout`, and a timer that
 * cancels the stream). Messages are never compressed. The response message is not read:
 * success is `:status 200` with `grpc-status: 0`, in trailers or a trailers-only response.
 */

/** A failed call: the gRPC status `code` and its `details` (grpc-message, or what went wrong). */
export class GrpcCallError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, details: string) {
    super(`gRPC status ${code}: ${details}`);
    this.name = 'GrpcCallError';
    this.code = code;
    this.details = details;
  }
}

export interface GrpcUnaryOptions {
  /** `host:port`, `[v6]:port` too. */
  readonly address: string;
  /** TLS (ALPN h2) with these CAs (null: the system roots); undefined: cleartext h2c. */
  readonly tls?: { readonly ca: CaSource };
  /** Per call, also the connect timeout. */
  readonly timeoutMs: number;
}

interface Call {
  readonly path: string;
  readonly headers: readonly string[];
  readonly body: Buffer;
  /** Sent again once already (after the server refused it unprocessed). */
  retried: boolean;
  readonly done: (err: GrpcCallError | null) => void;
  timer: NodeJS.Timeout | null;
  status: string | undefined;
  grpcStatus: string | undefined;
  grpcMessage: string | undefined;
  finished: boolean;
}

const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;

export class GrpcUnaryClient {
  readonly #o: GrpcUnaryOptions;
  readonly #host: string;
  readonly #port: number;
  readonly #scheme: string;
  readonly #timeout: string;
  #conn: H2Connection | null = null;
  #retryAt = 0;
  #backoffMs = 0;
  #closed = false;
  readonly #handler: H2StreamHandler = {
    response: (s, fields) => {
      const c = s.owner as Call;
      c.status = valueOf(fields, ':status');
      // Trailers-only responses carry the status in the headers.
      c.grpcStatus = valueOf(fields, 'grpc-status') ?? c.grpcStatus;
      c.grpcMessage = valueOf(fields, 'grpc-message') ?? c.grpcMessage;
    },
    data: (s, chunk) => s.consumed(chunk.length),
    trailers: (s, fields) => {
      const c = s.owner as Call;
      c.grpcStatus = valueOf(fields, 'grpc-status') ?? c.grpcStatus;
      c.grpcMessage = valueOf(fields, 'grpc-message') ?? c.grpcMessage;
    },
    drain: () => {},
    close: (s) => {
      const c = s.owner as Call;
      // Refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last stream id: RFC 9113 §8.7),
      // as a collector rotating its connections does: safe to send once more, on a new connection
      // after a GOAWAY, on the same one (still usable) after a REFUSED_STREAM.
      if (s.refused && s.error === undefined && !c.retried && !c.finished && !this.#closed) {
        c.retried = true;
        this.#start(c);
        return;
      }
      this.#finish(c, this.#outcome(c, s));
    },
  };

  constructor(o: GrpcUnaryOptions) {
    this.#o = o;
    const { host, port } = splitAddress(o.address);
    this.#host = host;
    this.#port = port;
    this.#scheme = o.tls === undefined ? 'http' : 'https';
    this.#timeout = `${Math.max(1, Math.ceil(o.timeoutMs))}m`;
  }

  /**
   * Calls `path` with one message (`body`, already serialized) and `headers` (flat
   * `[name, value, ...]`, lower-case names). `done` is called exactly once; nothing throws.
   */
  call(path: string, headers: readonly string[], body: Buffer, done: (err: GrpcCallError | null) => void): void {
    const c: Call = { path, headers, body, retried: false, done, timer: null, status: undefined, grpcStatus: undefined, grpcMessage: undefined, finished: false };
    c.timer = setTimeout(() => {
      const s = this.#streams.get(c);
      this.#finish(c, new GrpcCallError(GrpcStatus.DEADLINE_EXCEEDED, `no answer within ${this.#o.timeoutMs} ms`));
      s?.reset(CANCEL);
    }, this.#o.timeoutMs);
    this.#start(c);
  }

  /** The stream each call in flight is on (to cancel it at the deadline). */
  readonly #streams = new Map<Call, H2ClientStream>();

  #start(c: Call): void {
    this.#streams.delete(c);
    const conn = this.#connection();
    if (conn === null) {
      this.#finish(c, new GrpcCallError(GrpcStatus.UNAVAILABLE, this.#closed ? 'client closed' : 'not connected (waiting to reconnect)'));
      return;
    }
    const fields = [
      ':method', 'POST', ':scheme', this.#scheme, ':authority', this.#o.address, ':path', c.path,
      'content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', this.#timeout, ...c.headers,
    ];
    let s: H2ClientStream;
    try {
      s = conn.request(fields, false, c);
    } catch (err) {
      this.#finish(c, new GrpcCallError(GrpcStatus.INTERNAL, (err as Error).message));
      return;
    }
    this.#streams.set(c, s);
    // The length-prefixed message (not compressed), then the end of the request.
    const prefix = Buffer.allocUnsafe(5);
    prefix[0] = 0;
    prefix.writeUInt32BE(c.body.length, 1);
    s.write(prefix);
    s.write(c.body);
    s.end(null);
  }

  /** No new calls; the connection closes once the calls in flight are over. */
  close(): void {
    this.#closed = true;
    this.#conn?.close();
    this.#conn = null;
  }

  #connection(): H2Connection | null {
    if (this.#closed) return null;
    if (this.#conn !== null && this.#conn.usable) return this.#conn;
    if (Date.now() < this.#retryAt) return null;
    const drop = (c: H2Connection): void => {
      if (this.#conn === c) this.#conn = null;
    };
    this.#conn = new H2Connection({
      host: this.#host,
      port: this.#port,
      handler: this.#handler,
      connectTimeoutMs: this.#o.timeoutMs,
      ...(this.#o.tls === undefined ? {} : { tls: this.#o.tls }),
      onUnusable: drop,
      onClose: drop,
    });
    return this.#conn;
  }

  #outcome(c: Call, s: H2ClientStream): GrpcCallError | null {
    if (s.error !== undefined) {
      // The connection failed (refused, reset, TLS, protocol error): back off before the next.
      this.#backoffMs = Math.min(MAX_BACKOFF_MS, this.#backoffMs === 0 ? FIRST_BACKOFF_MS : this.#backoffMs * 2);
      this.#retryAt = Date.now() + this.#backoffMs;
      const code = (s.error as { code?: unknown }).code;
      return new GrpcCallError(GrpcStatus.UNAVAILABLE, typeof code === 'string' ? `${code}: ${s.error.message}` : s.error.message);
    }
    if (c.status === undefined) return new GrpcCallError(GrpcStatus.UNAVAILABLE, s.refused ? 'refused by the server' : `stream reset (${s.rstCode ?? 'no response'})`);
    this.#backoffMs = 0;
    const [code, details] = answeredStatus(c.status, c.grpcStatus, c.grpcMessage);
    return code === GrpcStatus.OK ? null : new GrpcCallError(code, details);
  }

  #finish(c: Call, err: GrpcCallError | null): void {
    if (c.finished) return;
    c.finished = true;
    this.#streams.delete(c);
    if (c.timer !== null) clearTimeout(c.timer);
    c.done(err);
  }
}

/**
 * The gRPC status of a call the server answered (PROTOCOL-HTTP2.md): a non-200 HTTP status
 * mapped, a missing `grpc-status` UNKNOWN, else `grpc-status` with its percent-decoded
 * `grpc-message`.
 */
export function answeredStatus(status: string | undefined, grpcStatus: string | undefined, grpcMessage: string | undefined): [code: number, details: string] {
  if (status !== '200') return [httpToGrpc(status ?? ''), `HTTP status ${status ?? 'missing'}`];
  if (grpcStatus === undefined) return [GrpcStatus.UNKNOWN, 'no grpc-status'];
  const code = Number(grpcStatus);
  return [Number.isInteger(code) ? code : GrpcStatus.UNKNOWN, percentDecode(grpcMessage ?? '')];
}

/** `host:port` or `[v6]:port` -> host (without brackets) and port. */
export function splitAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port <= 0 || port > 65_535) throw new Error(`not host:port: '${address}'`);
  return { host: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host, port };
}

export function valueOf(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

/** The gRPC status for an HTTP status that is not 200 (PROTOCOL-HTTP2.md, http-grpc-status-mapping.md). */
export function httpToGrpc(status: string): number {
  switch (status) {
    case '400':
      return GrpcStatus.INTERNAL;
    case '401':
      return GrpcStatus.UNAUTHENTICATED;
    case '403':
      return GrpcStatus.PERMISSION_DENIED;
    case '404':
      return GrpcStatus.UNIMPLEMENTED;
    case '429':
    case '502':
    case '503':
    case '504':
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** `grpc-message` is percent-encoded UTF-8; a malformed one is shown as it came. */
function percentDecode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
