import net, { isIP, type Socket } from 'node:net';
import tls from 'node:tls';
import {
  COMPRESSION_ERROR,
  DATA,
  DEFAULT_WINDOW,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLOW_CONTROL_ERROR,
  frame,
  FRAME_SIZE_ERROR,
  goawayFrame,
  NO_ERROR,
  PING,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  RST_STREAM,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  settingsFrame,
  STREAM_CLOSED,
  u32Frame,
  WINDOW_UPDATE,
} from './frames.ts';
import { CONN_RECV_WINDOW, H2Endpoint } from './endpoint.ts';
import { HpackDecoder, HpackEncoder, HpackError, markSensitive, validName, valueChecker } from './hpack.ts';

/**
 * ward's own HTTP/2 client connection (h2c, prior knowledge: RFC 9113 §3.3; or TLS with ALPN
 * `h2`), for the one connection kind a sidecar opens on every call: to the local app. It also
 * carries ward's own gRPC calls for telemetry export (grpc-unary.ts). node:http2's client costs
 * ~29 µs of CPU per unary call on this machine (a `ClientHttp2Stream` Duplex, an
 * `AsyncResource`, header objects and several `nextTick` hops per request); this one writes a
 * request's HEADERS and DATA frames into the socket's corked batch, hands DATA payloads on as
 * slices of the read buffer, and reports a stream's events through one handler object per
 * connection pool, so a call allocates its stream record and its header strings.
 *
 * What it implements (client side only): the connection preface and SETTINGS exchange, HPACK
 * (static-table encoder, full decoder), HEADERS/CONTINUATION, DATA with padding, flow control
 * in both directions at stream and connection level, MAX_CONCURRENT_STREAMS (calls over the
 * peer's limit wait for a slot), RST_STREAM, GOAWAY (streams above the last id are reported
 * refused: never processed, safe to send again), PING, informational (1xx) responses
 * skipped, trailers. Push is disabled in our SETTINGS and a PUSH_PROMISE is a connection
 * error. Every protocol violation by the peer ends the stream or the connection with the error
 * code RFC 9113 names; nothing the peer sends can throw out of the socket's data handler.
 */

/** The stream events, one object per pool: handlers find their call through `stream.owner`. */
export interface H2StreamHandler {
  /** The final response headers (`:status` first), flat `[name, value, ...]`. */
  response(s: H2ClientStream, fields: string[], end: boolean): void;
  /** A DATA payload (a slice of the read buffer). Call `s.consumed(n)` once it is passed on. */
  data(s: H2ClientStream, chunk: Buffer, end: boolean): void;
  /** Trailers: the end of the response. */
  trailers(s: H2ClientStream, fields: string[]): void;
  /** The stream can take writes again after `write` returned false. */
  drain(s: H2ClientStream): void;
  /** The stream is over: ended both ways, reset (`rstCode`), refused (`refused`) or failed (`error`). */
  close(s: H2ClientStream): void;
}

/** The CAs a TLS connection trusts: PEM, null for the system roots, or a function read at connect time. */
export type CaSource = Buffer | null | (() => Buffer | null);

function caOption(ca: CaSource): { ca?: Buffer } {
  const pem = typeof ca === 'function' ? ca() : ca;
  return pem === null ? {} : { ca: pem };
}

export interface H2ConnectionOptions {
  readonly host: string;
  readonly port: number;
  readonly handler: H2StreamHandler;
  /** 0: no timeout. */
  readonly connectTimeoutMs?: number;
  /**
   * TLS with ALPN `h2` (RFC 9113 §3.2) instead of h2c; `ca`: PEM of the CAs to trust, null for
   * the system roots, or a function giving them when the connection is made (a CA file read
   * again: lib/ca-file.ts). The certificate is checked for `servername` when given, else for
   * `host`, which also goes as SNI unless it is an IP address.
   */
  readonly tls?: { readonly ca: CaSource; readonly servername?: string | undefined };
  /** The connection takes no new streams (GOAWAY received or sent, error, closed). */
  readonly onUnusable?: (c: H2Connection) => void;
  /** The socket is closed and every stream is over. */
  readonly onClose?: (c: H2Connection) => void;
}

/** The stream flow-control window we grant the app; acknowledged as the caller passes data on. */
const STREAM_WINDOW = 256 * 1024;
/** Header blocks above this (HEADERS + CONTINUATION) end the connection: memory is bounded. */
const MAX_HEADER_BLOCK = 256 * 1024;
const MAX_HEADER_LIST = 64 * 1024;
/** Assumed until the app's SETTINGS arrive (what nghttp2 assumes as well). */
const INITIAL_MAX_STREAMS = 100;
const MAX_STREAM_ID = 0x7fff_ffff;

const CLIENT_SETTINGS = settingsFrame([
  [SETTINGS_ENABLE_PUSH, 0],
  [SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
  [SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST],
]);
const CONNECT_BYTES = Buffer.concat([PREFACE, CLIENT_SETTINGS, u32Frame(WINDOW_UPDATE, 0, CONN_RECV_WINDOW - DEFAULT_WINDOW)]);
const EMPTY = Buffer.alloc(0);

export class H2ProtocolError extends Error {
  readonly code: string;
  readonly h2code: number;
  constructor(message: string, h2code: number, code = 'ERR_HTTP2_PROTOCOL') {
    super(message);
    this.name = 'H2ProtocolError';
    this.code = code;
    this.h2code = h2code;
  }
}

export class H2ClientStream {
  readonly conn: H2Connection;
  /**
   * The caller's record for this stream (the exchange); null once the `close` handler, the last
   * to see the stream, has run. A closed stream may already be in V8's old generation, where it
   * would keep the call's younger objects alive until the next full collection (the scavenger
   * counts every pointer from old objects, dead or not, as a root).
   */
  owner: unknown;
  /** 0 until its HEADERS are written (a stream may wait for a slot under MAX_CONCURRENT_STREAMS). */
  id = 0;
  /** The encoded request header block (after FRAME_HEADER spare octets), kept only until it is written. */
  block: Buffer | null;
  /** The request ends with its HEADERS (no body). */
  endWithHeaders: boolean;
  sendWindow = 0;
  recvWindow = STREAM_WINDOW;
  recvUnacked = 0;
  /** Body bytes waiting for flow-control window (or for a slot). */
  pending: Buffer[] | null = null;
  /** `end()` was called while bytes were pending: the encoded trailers to send (or EMPTY). */
  endAfter: Buffer | null = null;
  wantDrain = false;
  localEnded = false;
  remoteEnded = false;
  gotResponse = false;
  /** The request is a HEAD: the response's content-length describes content it does not carry. */
  head = false;
  /** The response's content-length, which its DATA must add up to (RFC 9113 §8.1.1); -1 when none applies. */
  contentLength = -1;
  /** Response DATA octets so far (counted only against a content-length). */
  received = 0;
  closed = false;
  /** RST_STREAM code received or sent; undefined when none. */
  rstCode: number | undefined = undefined;
  /** The app never processed the call (REFUSED_STREAM before a response, above GOAWAY's last id, never sent): it may be sent again. */
  refused = false;
  error: Error | undefined = undefined;

  constructor(conn: H2Connection, owner: unknown, block: Buffer, endWithHeaders: boolean) {
    this.conn = conn;
    this.owner = owner;
    this.block = block;
    this.endWithHeaders = endWithHeaders;
    this.localEnded = endWithHeaders;
  }

  /** Sends body bytes; false when the caller should wait for `drain` (window or socket full). */
  write(chunk: Buffer): boolean {
    return this.conn.writeData(this, chunk);
  }

  /** Ends the request body, with trailers when `trailers` is non-empty. Throws an HpackError for a field HTTP/2 cannot carry (nothing is sent then). */
  end(trailers: readonly string[] | null): void {
    this.conn.endStream(this, trailers);
  }

  /** Resets the stream (RST_STREAM `code`); `close` follows on the next tick. */
  reset(code: number): void {
    this.conn.resetStream(this, code);
  }

  /** `n` bytes of response body were passed on: the app may send that much more. */
  consumed(n: number): void {
    this.conn.ackData(this, n);
  }
}

export class H2Connection extends H2Endpoint<H2ClientStream> {
  readonly #handler: H2StreamHandler;
  readonly #onUnusable: ((c: H2Connection) => void) | undefined;
  readonly #onClose: ((c: H2Connection) => void) | undefined;
  readonly #streams = new Map<number, H2ClientStream>();
  /**
   * Streams waiting for a slot, oldest first. A Set: a call that goes away while it waits (its
   * caller cancelled, its deadline passed) leaves in O(1). With an array, cancelling 20 000
   * waiting calls oldest first (the order deadlines expire in) held the event loop for 384 ms,
   * now 45 ms (scripts/bench/micro-queue.ts).
   */
  #queued = new Set<H2ClientStream>();
  readonly #decoder = new HpackDecoder({ maxTableSize: 4096, maxHeaderListSize: MAX_HEADER_LIST });
  /** Scratch list for the never-indexed names of one header block. */
  readonly #sensitive: string[] = [];
  #nextId = 1;
  #active = 0;
  #peerMaxStreams = INITIAL_MAX_STREAMS;
  #goaway = false;
  /**
   * `close()` was called: no new streams, but those already queued still go out as slots free,
   * and the GOAWAY only when none waits any more (the app must not see a stream of ours after it).
   */
  #closing = false;
  #destroyed = false;
  #connected = false;
  #connectTimer: NodeJS.Timeout | null = null;
  /** The unanswered PING's callback (`ping`), and the sequence number its payload carries. */
  #pingAck: (() => void) | null = null;
  #pingSeq = 0;

  constructor(o: H2ConnectionOptions) {
    const socket: Socket =
      o.tls === undefined
        ? net.connect({ host: o.host, port: o.port, noDelay: true })
        : tls.connect({
            host: o.host,
            port: o.port,
            ALPNProtocols: ['h2'],
            ...(o.tls.servername !== undefined ? { servername: o.tls.servername } : isIP(o.host) === 0 ? { servername: o.host } : {}),
            ...caOption(o.tls.ca),
          });
    super(socket, new HpackEncoder());
    this.#handler = o.handler;
    this.#onUnusable = o.onUnusable;
    this.#onClose = o.onClose;
    if (o.tls !== undefined) socket.setNoDelay(true);
    socket.write(CONNECT_BYTES);
    const connected = (): void => {
      this.#connected = true;
      if (this.#connectTimer !== null) clearTimeout(this.#connectTimer);
    };
    if (socket instanceof tls.TLSSocket) {
      socket.on('secureConnect', () => {
        // A server that does not speak h2 over TLS would read our preface as garbage.
        if (socket.alpnProtocol !== 'h2') socket.destroy(Object.assign(new Error(`TLS peer did not select h2 (ALPN: ${String(socket.alpnProtocol)})`), { code: 'ERR_HTTP2_ALPN' }));
        else connected();
      });
    } else socket.on('connect', connected);
    socket.on('data', (chunk: Buffer) => this.readFrames(chunk));
    socket.on('drain', () => this.notifyDrain(this.#streams.values()));
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#onSocketClose());
    const ms = o.connectTimeoutMs ?? 0;
    if (ms > 0) {
      const t = setTimeout(() => {
        if (!this.#connected) socket.destroy(Object.assign(new Error('upstream connect timeout'), { code: 'ETIMEDOUT' }));
      }, ms);
      t.unref();
      this.#connectTimer = t;
    }
  }

  /** Takes new streams: connected or connecting, no GOAWAY, no error. */
  get usable(): boolean {
    return !this.#goaway && !this.#closing && !this.#destroyed;
  }

  get activeStreams(): number {
    return this.#active;
  }

  /**
   * Opens a stream for a request (`fields`: `[name, value, ...]`, pseudo-headers first). Throws
   * when the connection is not usable, or an HpackError for a field HTTP/2 cannot carry.
   */
  request(fields: readonly string[], endStream: boolean, owner: unknown): H2ClientStream {
    if (!this.usable) throw new H2ProtocolError('upstream connection is not usable', REFUSED_STREAM, 'ERR_HTTP2_INVALID_SESSION');
    const s = new H2ClientStream(this, owner, this.encode(fields), endStream);
    // Pseudo-header fields come first: :method is found within the first few.
    for (let i = 0; i < fields.length && (fields[i] as string).charCodeAt(0) === 0x3a; i += 2) {
      if (fields[i] === ':method') {
        s.head = fields[i + 1] === 'HEAD';
        break;
      }
    }
    if (this.#active < this.#peerMaxStreams && this.#queued.size === 0) this.#open(s);
    else this.#queued.add(s);
    return s;
  }

  /**
   * Sends a PING (RFC 9113 §6.7); `onAck` runs when the peer acknowledges it. One at a time: while
   * one is unanswered, another is not sent and false is returned. For keepalive (grpc-stream.ts):
   * a peer or path that stopped answering is found without waiting for TCP to give up.
   */
  ping(onAck: () => void): boolean {
    if (this.#destroyed || this.#pingAck !== null) return false;
    this.#pingAck = onAck;
    this.#pingSeq++;
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(this.#pingSeq, 4);
    this.write(frame(PING, 0, 0, payload));
    return true;
  }

  protected override onPingAck(payload: Buffer): void {
    const ack = this.#pingAck;
    // An ACK must echo our payload; anything else is not an answer to our PING.
    if (ack === null || payload.readUInt32BE(0) !== 0 || payload.readUInt32BE(4) !== this.#pingSeq) return;
    this.#pingAck = null;
    ack();
  }

  /**
   * Graceful: no new streams; the socket closes once the ones taken are over, those still waiting
   * for a slot (over the app's MAX_CONCURRENT_STREAMS) included. They were refused here, and a
   * refused call goes to the pool's next connection, which a closing pool no longer has: a pass-
   * through pool retired from the LRU, or a drain, failed them with 503 (found in review).
   */
  close(): void {
    if (this.#destroyed || this.#closing) return;
    this.#closing = true;
    if (!this.#goaway) this.#onUnusable?.(this);
    this.#goawayWhenIdle();
  }

  /** After `close()`: the GOAWAY once no stream waits for a slot, then the end once none is open. */
  #goawayWhenIdle(): void {
    if (!this.#goaway && this.#queued.size === 0) {
      this.#goaway = true;
      this.write(goawayFrame(0, NO_ERROR));
    }
    this.#maybeEnd();
  }

  // ---- H2Endpoint hooks

  protected get halted(): boolean {
    return this.#destroyed;
  }

  protected headerBlockLimit(bytes: number): readonly [number, string] | null {
    return bytes > MAX_HEADER_BLOCK ? [PROTOCOL_ERROR, 'header block too large'] : null;
  }

  protected isClosed(s: H2ClientStream): boolean {
    return s.closed;
  }

  protected afterFlush(s: H2ClientStream): void {
    if (s.endAfter !== null) this.#sendEnd(s, s.endAfter);
  }

  protected drained(s: H2ClientStream): void {
    this.#handler.drain(s);
  }

  destroy(err?: Error): void {
    if (this.#destroyed) return;
    this.#fail(err ?? Object.assign(new Error('upstream connection destroyed'), { code: 'ERR_HTTP2_STREAM_CANCEL' }));
  }

  // ---- writing

  #open(s: H2ClientStream): void {
    if (this.#nextId > MAX_STREAM_ID) {
      // Stream ids exhausted: this connection is done; the call was never sent.
      this.#goAwayLocally();
      this.#refuse(s);
      return;
    }
    s.id = this.#nextId;
    this.#nextId += 2;
    s.sendWindow = this.peerInitialWindow;
    this.#active++;
    this.#streams.set(s.id, s);
    const block = s.block as Buffer;
    s.block = null;
    this.writeHeaders(s.id, block, s.endWithHeaders);
    if (s.pending !== null) this.flushStream(s);
    else if (s.endAfter !== null) this.#sendEnd(s, s.endAfter);
  }

  /** @internal */
  writeData(s: H2ClientStream, chunk: Buffer): boolean {
    if (s.closed || s.localEnded || s.endAfter !== null) return true;
    if (chunk.length === 0) return true;
    if (s.id === 0) {
      // Waiting for a slot: held until its HEADERS go out.
      (s.pending ??= []).push(chunk);
      s.wantDrain = true;
      return false;
    }
    return this.queueData(s, chunk);
  }

  /** @internal */
  endStream(s: H2ClientStream, trailers: readonly string[] | null): void {
    if (s.closed || s.localEnded || s.endAfter !== null) return;
    const t = trailers === null || trailers.length === 0 ? EMPTY : this.encode(trailers);
    if (s.id === 0 || s.pending !== null) {
      s.endAfter = t;
      return;
    }
    this.#sendEnd(s, t);
  }

  #sendEnd(s: H2ClientStream, trailers: Buffer): void {
    s.endAfter = null;
    s.localEnded = true;
    if (trailers.length > 0) this.writeHeaders(s.id, trailers, true);
    else this.write(frame(DATA, FLAG_END_STREAM, s.id, null));
    if (s.remoteEnded) this.#closeStream(s);
  }

  /** @internal */
  resetStream(s: H2ClientStream, code: number): void {
    if (s.closed) return;
    if (s.id !== 0 && !this.#destroyed) this.write(u32Frame(RST_STREAM, s.id, code));
    s.rstCode ??= code;
    if (s.id === 0) this.#queued.delete(s);
    this.#closeStream(s, true);
  }

  /** @internal */
  ackData(s: H2ClientStream, n: number): void {
    if (s.closed || s.remoteEnded || n <= 0) return;
    s.recvUnacked += n;
    if (s.recvUnacked >= STREAM_WINDOW / 2) {
      s.recvWindow += s.recvUnacked;
      this.write(u32Frame(WINDOW_UPDATE, s.id, s.recvUnacked));
      s.recvUnacked = 0;
    }
  }

  // ---- stream lifecycle

  #closeStream(s: H2ClientStream, deferred = false): void {
    if (s.closed) return;
    s.closed = true;
    s.pending = null;
    this.blocked.delete(s);
    if (s.id !== 0 && this.#streams.delete(s.id)) this.#active--;
    if (deferred) process.nextTick(emitClose, this.#handler, s);
    else emitClose(this.#handler, s);
    this.#openQueued();
    this.#maybeEnd();
  }

  #refuse(s: H2ClientStream): void {
    s.refused = true;
    s.rstCode ??= REFUSED_STREAM;
    this.#closeStream(s);
  }

  /** The waiting streams, taken out at once: refusing or failing them cannot touch the set being walked. */
  #takeQueued(): Set<H2ClientStream> {
    const queued = this.#queued;
    this.#queued = new Set();
    return queued;
  }

  #openQueued(): void {
    // Called at every stream's close: nothing to iterate (and no iterator made) in the usual case.
    if (this.#queued.size !== 0) {
      for (const s of this.#queued) {
        // Not `usable`: a connection that is closing still sends what it queued before.
        if (this.#active >= this.#peerMaxStreams || this.#goaway || this.#destroyed) return;
        this.#queued.delete(s);
        this.#open(s);
      }
    }
    // The last waiting stream opened or went away (cancelled): the GOAWAY close() held back.
    if (this.#closing && !this.#goaway && this.#queued.size === 0) this.#goawayWhenIdle();
  }

  #maybeEnd(): void {
    if (this.#goaway && !this.#destroyed && this.#streams.size === 0 && this.#queued.size === 0) {
      this.#destroyed = true;
      // Not just end(): a peer that sent GOAWAY may keep its side open (node:http2's
      // session.goaway() does), and waiting for its FIN would hold the socket, and `onClose`,
      // forever. No stream is left, so nothing it could still send matters.
      (this.socket as Socket).destroySoon();
    }
  }

  #goAwayLocally(): void {
    if (this.#goaway) return;
    this.#goaway = true;
    this.#onUnusable?.(this);
  }

  /** A connection error (RFC 9113 §5.4.1): GOAWAY with `code`, then every stream fails. */
  protected connectionError(code: number, message: string): void {
    if (this.#destroyed) return;
    this.write(goawayFrame(0, code));
    this.#fail(new H2ProtocolError(`upstream HTTP/2 connection error: ${message}`, code));
  }

  #streamError(s: H2ClientStream, code: number, message: string): void {
    s.error ??= new H2ProtocolError(`upstream HTTP/2 stream error: ${message}`, code);
    this.resetStream(s, code);
  }

  #fail(err: Error): void {
    const wasDestroyed = this.#destroyed;
    this.#destroyed = true;
    this.#goAwayLocally();
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer);
    const queued = this.#takeQueued();
    for (const s of this.#streams.values()) {
      s.error ??= err;
      this.#closeStream(s);
    }
    // Never sent: nothing reached the app. A connect failure is reported as such (not a retry).
    for (const s of queued) {
      if (this.#connected) s.refused = true;
      s.error ??= err;
      this.#closeStream(s);
    }
    if (!wasDestroyed) this.socket.end();
    (this.socket as Socket).destroySoon();
  }

  #onSocketClose(): void {
    if (!this.#destroyed || this.#streams.size > 0 || this.#queued.size > 0) {
      this.#fail(Object.assign(new Error('upstream connection closed'), { code: 'ECONNRESET' }));
    }
    this.#onClose?.(this);
  }

  // ---- reading

  protected onBadPriority(id: number): void {
    const s = this.#streams.get(id);
    if (s !== undefined) this.#streamError(s, FRAME_SIZE_ERROR, 'PRIORITY length');
  }

  protected peerSetting(key: number, value: number): string | null {
    if (key === SETTINGS_ENABLE_PUSH && value !== 0) return 'SETTINGS_ENABLE_PUSH from a server';
    if (key === SETTINGS_MAX_CONCURRENT_STREAMS) this.#peerMaxStreams = value;
    return null;
  }

  protected openStreams(): IterableIterator<H2ClientStream> {
    return this.#streams.values();
  }

  /** A larger MAX_CONCURRENT_STREAMS may let queued requests go. */
  protected override settingsApplied(): void {
    this.#openQueued();
  }

  protected streamOf(id: number): H2ClientStream | undefined {
    return this.#streams.get(id);
  }

  protected isIdle(id: number): boolean {
    return id >= this.#nextId;
  }

  protected windowUpdateError(s: H2ClientStream, code: number, detail: string): void {
    this.#streamError(s, code, detail);
  }

  protected onReset(id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) return this.connectionError(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    if (end - start !== 4) return this.connectionError(FRAME_SIZE_ERROR, 'RST_STREAM length');
    const s = this.#streams.get(id);
    if (s === undefined) {
      if (id >= this.#nextId) this.connectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
      return;
    }
    const code = buf.readUInt32BE(start);
    s.rstCode = code;
    // §8.7: REFUSED_STREAM means the app did nothing with the request.
    if (code === REFUSED_STREAM && !s.gotResponse) s.refused = true;
    this.#closeStream(s);
  }

  protected onGoaway(buf: Buffer, start: number): void {
    const last = buf.readUInt32BE(start) & 0x7fff_ffff;
    this.#goAwayLocally();
    // §6.8: streams above the last id were not processed; they can go to another connection.
    const queued = this.#takeQueued();
    for (const s of [...this.#streams.values()]) if (s.id > last) this.#refuse(s);
    for (const s of queued) this.#refuse(s);
    this.#maybeEnd();
  }

  protected onData(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    const stop = this.dataPayloadEnd(flags, id, buf, start, end);
    if (stop < 0) return;
    const p = (flags & FLAG_PADDED) !== 0 ? start + 1 : start;
    const len = end - start;
    const s = this.#streams.get(id);
    if (s === undefined) {
      if (id >= this.#nextId) this.connectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
      return; // a stream we reset or closed: dropped
    }
    if (!s.gotResponse) return this.#streamError(s, PROTOCOL_ERROR, 'DATA before response headers');
    if (s.remoteEnded) return this.#streamError(s, STREAM_CLOSED, 'DATA after END_STREAM');
    s.recvWindow -= len;
    if (s.recvWindow < 0) return this.#streamError(s, FLOW_CONTROL_ERROR, 'DATA beyond the stream window');
    // Padding is flow-controlled too, and nobody consumes it.
    if (stop - p !== len) this.ackData(s, len - (stop - p));
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (s.contentLength >= 0) {
      // §8.1.1: DATA that does not add up to the content-length is a malformed response. Caught
      // before any of it is passed on: relayed, the extra octets would follow an HTTP/1.1
      // caller's declared body and be read as the start of the next response.
      s.received += stop - p;
      if (s.received > s.contentLength || (endStream && s.received !== s.contentLength)) {
        return this.#streamError(s, PROTOCOL_ERROR, 'response DATA does not match its content-length');
      }
    }
    if (endStream) s.remoteEnded = true;
    if (stop > p || endStream) this.#handler.data(s, stop > p ? buf.subarray(p, stop) : EMPTY, endStream);
    if (endStream && s.localEnded && !s.closed) this.#closeStream(s);
  }

  protected headerBlock(id: number, endStream: boolean, buf: Buffer, start: number, end: number): void {
    const fields: string[] = [];
    const sensitive = this.#sensitive;
    try {
      this.#decoder.decode(buf, start, end, fields, sensitive);
      if (sensitive.length > 0) {
        markSensitive(fields, sensitive.slice());
        sensitive.length = 0;
      }
    } catch (err) {
      sensitive.length = 0;
      const s = this.#streams.get(id);
      if (err instanceof HpackError && err.code === 'ERR_HPACK_HEADER_LIST_TOO_LARGE' && (s !== undefined || (id < this.#nextId && id % 2 === 1))) {
        // Decoded to the end (the table is in step): only this stream is refused, or, for a
        // stream we already reset, the headers are dropped like any others on it.
        if (s !== undefined) this.#streamError(s, PROTOCOL_ERROR, 'response header list over SETTINGS_MAX_HEADER_LIST_SIZE');
        return;
      }
      // The decoder's table may now differ from the app's: the connection cannot go on (§4.3).
      this.connectionError(COMPRESSION_ERROR, (err as Error).message);
      return;
    }
    const s = this.#streams.get(id);
    if (s === undefined) {
      if (id >= this.#nextId || id % 2 === 0) this.connectionError(PROTOCOL_ERROR, 'HEADERS on an idle or server stream');
      return; // a stream we reset: its headers were decoded for the table's sake and are dropped
    }
    if (s.remoteEnded) return this.#streamError(s, STREAM_CLOSED, 'HEADERS after END_STREAM');
    if (!s.gotResponse) {
      const length = checkResponseFields(fields);
      if (typeof length === 'string') return this.#streamError(s, PROTOCOL_ERROR, length);
      const status = fields[1] as string;
      if (status.charCodeAt(0) === 0x31 /* 1xx */) {
        // Informational (100, 103): skipped; 101 is not allowed in HTTP/2 (§8.6).
        if (endStream || status === '101') return this.#streamError(s, PROTOCOL_ERROR, 'informational response ends the stream');
        return;
      }
      // A response to HEAD, a 204 and a 304 have no content whatever content-length says (§8.1.1).
      if (length >= 0 && !s.head && status !== '204' && status !== '304') {
        if (endStream && length > 0) return this.#streamError(s, PROTOCOL_ERROR, 'content-length without the content');
        s.contentLength = length;
      }
      s.gotResponse = true;
      if (endStream) s.remoteEnded = true;
      this.#handler.response(s, fields, endStream);
    } else {
      if (!endStream) return this.#streamError(s, PROTOCOL_ERROR, 'trailers without END_STREAM');
      for (let i = 0; i < fields.length; i += 2) {
        const name = fields[i] as string;
        if (name.charCodeAt(0) === 0x3a) return this.#streamError(s, PROTOCOL_ERROR, 'pseudo-header in trailers');
        if (!validName(name, 0) || !validValue(fields[i + 1] as string)) return this.#streamError(s, PROTOCOL_ERROR, 'invalid field in trailers');
      }
      if (s.contentLength >= 0 && s.received !== s.contentLength) return this.#streamError(s, PROTOCOL_ERROR, 'response DATA does not match its content-length');
      s.remoteEnded = true;
      this.#handler.trailers(s, fields);
    }
    if (s.remoteEnded && s.localEnded && !s.closed) this.#closeStream(s);
  }
}

/** §8.2.1 on response values: a CR or LF in a trailer value reached node:http's `addTrailers` and threw out of the socket's data handler (found in review). */
const validValue = valueChecker();

/**
 * A response header list must start with one valid `:status` and carry no other pseudo-header
 * (RFC 9113 §8.3.2), its names lower-case tokens (§8.2.1: an upper-case `X-Ward-Reason` would
 * pass every lower-case compare downstream) and its values free of NUL, CR, LF and edge
 * whitespace, and any content-length must be one number. Returns the content-length declared
 * (-1 for none), or why the list is malformed.
 */
function checkResponseFields(fields: readonly string[]): number | string {
  if (fields[0] !== ':status') return 'response without :status first';
  const status = fields[1] as string;
  if (status.length !== 3 || !isDigit(status, 0, 0x31, 0x35) || !isDigit(status, 1, 0x30, 0x39) || !isDigit(status, 2, 0x30, 0x39)) return 'invalid :status';
  let length = -1;
  for (let i = 2; i < fields.length; i += 2) {
    const name = fields[i] as string;
    if (name.length === 0 || name.charCodeAt(0) === 0x3a) return 'pseudo-header after :status';
    if (!validName(name, 0)) return 'invalid field name';
    if (!validValue(fields[i + 1] as string)) return 'invalid field value';
    if (name.length !== 14 || name !== 'content-length') continue;
    const value = fields[i + 1] as string;
    if (!/^\d{1,15}$/.test(value)) return 'invalid content-length';
    const n = Number(value);
    if (length >= 0 && n !== length) return 'invalid content-length';
    length = n;
  }
  return length;
}

function isDigit(s: string, i: number, lo: number, hi: number): boolean {
  const c = s.charCodeAt(i);
  return c >= lo && c <= hi;
}

function emitClose(h: H2StreamHandler, s: H2ClientStream): void {
  h.close(s);
  s.owner = null;
}

export { CANCEL, INTERNAL_ERROR, NO_ERROR, REFUSED_STREAM } from './frames.ts';
