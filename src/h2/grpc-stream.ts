import { GrpcStatus } from '../errors/table.ts';
import { CANCEL, type CaSource, H2Connection, type H2ClientStream, type H2StreamHandler } from './conn.ts';
import { answeredStatus, httpToGrpc, splitAddress, valueOf } from './grpc-unary.ts';

/**
 * One long-lived bidirectional gRPC call (PROTOCOL-HTTP2.md) over ward's own HTTP/2 client, on a
 * connection of its own: the sidecar's policy stream to the control plane
 * (src/controlplane/client/watch.ts), which grpc-js carried before (with its proto loader and
 * protobufjs: 4 MB more heap, docs/performance.md "Memory").
 *
 * What the caller sees is what grpc-js gave it: `onHeaders` when the server's response headers
 * arrive (the control plane sends them once the call is authorized), `onMessage` per message,
 * and `onEnd` exactly once with the gRPC status: the server's (`grpc-status`, `grpc-message`),
 * or UNAVAILABLE when the connection failed, was reset or stopped answering keepalive PINGs,
 * INTERNAL for a malformed response, RESOURCE_EXHAUSTED for a message over `maxMessageBytes`,
 * CANCELLED after `cancel()`. Messages are never compressed (`grpc-accept-encoding: identity`);
 * a compressed one is INTERNAL. No deadline: the call lasts until either side ends it.
 */

export interface GrpcStreamOptions {
  /** `host:port`, `[v6]:port` too. */
  readonly address: string;
  /** TLS (ALPN h2) with these CAs (null: the system roots); undefined: cleartext h2c. */
  readonly tls?: { readonly ca: CaSource };
  /** `/package.Service/Method`. */
  readonly path: string;
  /** Request metadata, flat `[name, value, ...]`, lower-case names. */
  readonly headers: readonly string[];
  readonly connectTimeoutMs: number;
  /** A PING every `intervalMs`; no answer within `timeoutMs` ends the call (UNAVAILABLE). */
  readonly keepalive: { readonly intervalMs: number; readonly timeoutMs: number };
  /** Longest message accepted (grpc-js's default: 4 MiB). */
  readonly maxMessageBytes?: number;
}

export interface GrpcStreamEvents {
  onHeaders(): void;
  onMessage(message: Buffer): void;
  onEnd(code: number, details: string): void;
}

const DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024;

export class GrpcStream {
  readonly #events: GrpcStreamEvents;
  readonly #conn: H2Connection;
  readonly #stream: H2ClientStream;
  readonly #maxMessage: number;
  readonly #keepalive: NodeJS.Timeout;
  #pingTimer: NodeJS.Timeout | null = null;
  /** Bytes of a message not yet complete (prefix included), and how many the next step needs. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** 5 (a prefix) until the prefix of the next message is read, then its whole length: joined only once there. */
  #need = 5;
  #status: string | undefined;
  #grpcStatus: string | undefined;
  #grpcMessage: string | undefined;
  #ended = false;

  constructor(o: GrpcStreamOptions, events: GrpcStreamEvents) {
    this.#events = events;
    this.#maxMessage = o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE;
    const { host, port } = splitAddress(o.address);
    this.#conn = new H2Connection({
      host,
      port,
      handler: HANDLER,
      connectTimeoutMs: o.connectTimeoutMs,
      ...(o.tls === undefined ? {} : { tls: o.tls }),
    });
    const fields = [
      ':method', 'POST', ':scheme', o.tls === undefined ? 'http' : 'https', ':authority', o.address, ':path', o.path,
      'content-type', 'application/grpc', 'te', 'trailers', 'grpc-accept-encoding', 'identity', ...o.headers,
    ];
    try {
      this.#stream = this.#conn.request(fields, false, this);
    } catch (err) {
      // a field HTTP/2 cannot carry (a header value with a newline): no call, and no connection left open
      this.#conn.destroy();
      throw err;
    }
    this.#keepalive = setInterval(() => this.#ping(o.keepalive.timeoutMs), o.keepalive.intervalMs);
    this.#keepalive.unref();
  }

  /** Sends one message (serialized, not compressed). */
  write(message: Buffer): void {
    if (this.#ended) return;
    const prefix = Buffer.allocUnsafe(5);
    prefix[0] = 0;
    prefix.writeUInt32BE(message.length, 1);
    this.#stream.write(prefix);
    this.#stream.write(message);
  }

  /** Ends the call from this side: `onEnd(CANCELLED)`, the stream reset, the connection closed. */
  cancel(): void {
    this.#end(GrpcStatus.CANCELLED, 'cancelled by the client');
  }

  #ping(timeoutMs: number): void {
    if (this.#ended || this.#pingTimer !== null) return;
    const sent = this.#conn.ping(() => {
      if (this.#pingTimer !== null) clearTimeout(this.#pingTimer);
      this.#pingTimer = null;
    });
    if (!sent) return;
    this.#pingTimer = setTimeout(() => {
      this.#pingTimer = null;
      this.#end(GrpcStatus.UNAVAILABLE, `keepalive: no PING answer within ${timeoutMs} ms`, 'destroy');
    }, timeoutMs);
    this.#pingTimer.unref();
  }

  /** @internal (HANDLER) */
  onResponse(fields: readonly string[], end: boolean): void {
    this.#status = valueOf(fields, ':status');
    this.#grpcStatus = valueOf(fields, 'grpc-status');
    this.#grpcMessage = valueOf(fields, 'grpc-message');
    if (end) return this.#statusEnd(); // trailers-only: the status is in these headers
    if (this.#status !== '200' || !(valueOf(fields, 'content-type') ?? '').startsWith('application/grpc')) {
      this.#end(this.#status === '200' ? GrpcStatus.UNKNOWN : httpToGrpc(this.#status ?? ''), `HTTP status ${this.#status ?? '?'}, content-type ${valueOf(fields, 'content-type') ?? 'none'}`);
      return;
    }
    this.#events.onHeaders();
  }

  /** @internal (HANDLER) */
  onData(chunk: Buffer): void {
    this.#stream.consumed(chunk.length);
    if (this.#ended || chunk.length === 0) return;
    this.#partial.push(Buffer.from(chunk)); // the chunk is a view of the read buffer
    this.#partialBytes += chunk.length;
    // A large message arrives in many DATA frames: joined once, when it is whole.
    if (this.#partialBytes < this.#need) return;
    let buf = this.#partial.length === 1 ? (this.#partial[0] as Buffer) : Buffer.concat(this.#partial, this.#partialBytes);
    let at = 0;
    this.#need = 5;
    while (!this.#ended && buf.length - at >= 5) {
      const flag = buf[at] as number;
      const len = buf.readUInt32BE(at + 1);
      if (flag !== 0) return this.#end(GrpcStatus.INTERNAL, flag === 1 ? 'compressed message, none was negotiated' : `message flag ${flag}`);
      if (len > this.#maxMessage) return this.#end(GrpcStatus.RESOURCE_EXHAUSTED, `message of ${len} bytes, more than ${this.#maxMessage}`);
      if (buf.length - at - 5 < len) {
        this.#need = 5 + len;
        break;
      }
      const message = buf.subarray(at + 5, at + 5 + len);
      at += 5 + len;
      this.#events.onMessage(message);
    }
    buf = buf.subarray(at);
    this.#partial = buf.length === 0 ? [] : [buf];
    this.#partialBytes = buf.length;
  }

  /** @internal (HANDLER) */
  onTrailers(fields: readonly string[]): void {
    this.#grpcStatus = valueOf(fields, 'grpc-status') ?? this.#grpcStatus;
    this.#grpcMessage = valueOf(fields, 'grpc-message') ?? this.#grpcMessage;
    // The server's status ends the call, though our side of the stream is still open.
    this.#statusEnd();
  }

  /** @internal (HANDLER) */
  onClose(s: H2ClientStream): void {
    if (this.#ended) return;
    if (s.error !== undefined) {
      const code = (s.error as { code?: unknown }).code;
      return this.#end(GrpcStatus.UNAVAILABLE, typeof code === 'string' ? `${code}: ${s.error.message}` : s.error.message);
    }
    if (this.#status === undefined) return this.#end(GrpcStatus.UNAVAILABLE, s.refused ? 'refused by the server' : `stream reset (${s.rstCode ?? 'no response'})`);
    if (this.#grpcStatus === undefined && s.rstCode !== undefined) return this.#end(GrpcStatus.UNAVAILABLE, `stream reset (${s.rstCode})`);
    this.#statusEnd();
  }

  /** The call's end from the server's answer: its HTTP status, then `grpc-status` and `grpc-message`. */
  #statusEnd(): void {
    const [code, details] = answeredStatus(this.#status, this.#grpcStatus, this.#grpcMessage);
    if (code === GrpcStatus.OK && this.#partialBytes > 0) return this.#end(GrpcStatus.INTERNAL, 'the stream ended inside a message', 'finish');
    this.#end(code, details, 'finish');
  }

  /**
   * `how`: `reset` (we end it: RST_STREAM CANCEL), `finish` (the server ended it: our side is
   * ended too), `destroy` (the peer is not answering: nothing more is written). The connection
   * is closed after the stream.
   */
  #end(code: number, details: string, how: 'reset' | 'finish' | 'destroy' = 'reset'): void {
    if (this.#ended) return;
    this.#ended = true;
    clearInterval(this.#keepalive);
    if (this.#pingTimer !== null) clearTimeout(this.#pingTimer);
    this.#pingTimer = null;
    this.#partial = [];
    this.#partialBytes = 0;
    if (how === 'destroy') this.#conn.destroy();
    else {
      // no-ops once the stream is over
      if (how === 'finish') this.#stream.end(null);
      else this.#stream.reset(CANCEL);
      this.#conn.close();
    }
    this.#events.onEnd(code, details);
  }
}

/** One handler for every GrpcStream's connection: each stream's owner is its GrpcStream. */
const HANDLER: H2StreamHandler = {
  response: (s, fields, end) => (s.owner as GrpcStream).onResponse(fields, end),
  data: (s, chunk) => (s.owner as GrpcStream).onData(chunk),
  trailers: (s, fields) => (s.owner as GrpcStream).onTrailers(fields),
  drain: () => {},
  close: (s) => (s.owner as GrpcStream).onClose(s),
};
