import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  ENHANCE_YOUR_CALM,
  COMPRESSION_ERROR,
  DATA,
  DEFAULT_WINDOW,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLOW_CONTROL_ERROR,
  frame,
  FRAME_SIZE_ERROR,
  goawayFrame,
  INTERNAL_ERROR,
  NO_ERROR,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  RST_STREAM,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  settingsFrame,
  STREAM_CLOSED,
  u32Frame,
  WINDOW_UPDATE,
} from './frames.ts';
import { CONN_RECV_WINDOW, H2Endpoint } from './endpoint.ts';
import { fieldRecord, HpackDecoder, HpackEncoder, HpackError, markSensitive, validName, valueChecker } from './hpack.ts';

/**
 * ward's own HTTP/2 server connection (RFC 9113), for the sidecar's listeners (h2c after the
 * preface sniff, and h2 over TLS). node:http2's server costs ~30 µs of CPU per unary call on
 * this machine before the application does anything; this one decodes a request into its flat
 * field list, hands DATA payloads on as slices of the read buffer, and writes a response's
 * HEADERS, DATA and trailers into the socket's corked batch.
 *
 * The stream object (`H2ServerStream`) offers the subset of node:http2's `ServerHttp2Stream`
 * that ward uses (respond / write / end / sendTrailers / close, `wantTrailers`, `trailers`,
 * `data`, `end`, `close`, `drain`, pause / resume), so the stages stay protocol-agnostic.
 *
 * What a client can do wrong, and what it gets (RFC 9113, and the guards node:http2 had):
 * - malformed requests (§8.1.1, §8.2, §8.3.1: pseudo-headers missing, repeated, unknown or
 *   after regular fields; upper-case names; connection-specific fields; `te` other than
 *   `trailers`; content-length not matching the DATA) -> RST_STREAM(PROTOCOL_ERROR), never
 *   seen by the stack;
 * - a header list over `maxHeaderListSize` or with more than `maxHeaderPairs` fields ->
 *   RST_STREAM(REFUSED_STREAM), after the block is decoded to its end so the HPACK state stays
 *   in step;
 * - more than `maxConcurrentStreams` open -> RST_STREAM(REFUSED_STREAM); too many refusals,
 *   invalid frames, resets (rapid reset, CVE-2023-44487), CONTINUATION frames, empty DATA
 *   frames, or a peer that stops reading while it makes us answer PING/SETTINGS -> GOAWAY
 *   ENHANCE_YOUR_CALM and the connection ends;
 * - connection-level protocol errors -> GOAWAY with the code §5.4.1 names.
 */

export { ENHANCE_YOUR_CALM } from './frames.ts';

export interface H2ServerOptions {
  readonly maxConcurrentStreams: number;
  readonly maxHeaderListSize: number;
  /**
   * The response fields (`:status` first) for a request whose header list is over the limits;
   * sent with END_STREAM and no body. Default: `431` and `content-length: 0`.
   */
  readonly tooLargeFields?: readonly string[];
  /**
   * The same answer for a gRPC request (a `content-type` of `application/grpc...` among the fields
   * kept): gRPC clients read a bare 431 as UNKNOWN, so it is a trailers-only response with its
   * `grpc-status`. Default: `tooLargeFields`.
   */
  readonly tooLargeGrpcFields?: readonly string[];
  /**
   * Called for each such refusal with `grpc` (which of the two answers goes): returns the fields
   * to add after it (the sidecar's decision id, once it has recorded the refusal). Not the hot path.
   */
  readonly onHeaderListTooLarge?: (grpc: boolean) => readonly string[];
  /** Fields per request header list (node:http2's maxHeaderListPairs). */
  readonly maxHeaderPairs: number;
  readonly encrypted: boolean;
  /** A new request: `fields` flat `[name, value, ...]`, pseudo-headers first. */
  readonly onStream: (s: H2ServerStream, fields: string[], endStream: boolean) => void;
  /** The connection is closed and every stream is over. */
  readonly onClose?: (c: H2ServerConnection) => void;
  readonly onError?: (err: Error) => void;
}

/** Request body window per stream: acknowledged as the consumer takes the data. */
const STREAM_WINDOW = DEFAULT_WINDOW;
/** Guards, per connection (node:http2's defaults where it has one). */
const MAX_INVALID = 100;
const MAX_REFUSED = 100;
const RESET_BURST = 1000;
const RESET_RATE = 33; // per second
const MAX_CONTINUATIONS = 128;
const MAX_EMPTY_DATA = 1000;
/**
 * Request body bytes held for streams whose consumer has not taken them yet (a call still being
 * authenticated), summed over the connection: each stream is bounded by its 64 KiB window, this
 * bounds 1000 of them (node:http2's `maxSessionMemory: 10`, which ward set before).
 */
const MAX_BUFFERED = 10 * 1024 * 1024;
/**
 * Output waiting on the socket above which the connection stops reading the client until the
 * socket drains (CVE-2019-9517, "internal data buffering"): a client that sends request after
 * request and never reads the answers (HEADERS, RST_STREAM: not flow-controlled) would otherwise
 * queue them without bound. node:http2 stops reading the same way while its output is pending.
 * One read (64 KiB) can add its own answers on top, so the queue stays within a few MiB.
 */
const MAX_OUTPUT = 1024 * 1024;
/** Reset stream ids remembered to tell "sent before our RST" from a protocol error. */
const RESET_MEMORY = 1024;
/** After GOAWAY, a peer that neither reads nor closes loses the socket after this long. */
const LINGER_MS = 2000;
/**
 * A client that half-closed the socket with streams still open gets a probe at once, then after
 * these many ms, each after the last (`#onSocketEnd`): four more, 21 s in all.
 */
const PROBE_DELAYS_MS: readonly number[] = [250, 1000, 4000, 16_000];
/**
 * The probe: a frame of a type reserved for experimental use (0xf0, RFC 9113 §11.2), which a
 * peer must ignore (§4.1, §5.5). Not a PING: a client that half-closed could not send the ACK a
 * PING requires, and its HTTP/2 library might fail the connection trying.
 */
export const PROBE_FRAME_TYPE = 0xf0;
const PROBE = frame(PROBE_FRAME_TYPE, 0, 0, Buffer.from('ward-eof'));

/** Fields HTTP/2 forbids (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

type Headers = Readonly<Record<string, string | number | readonly string[] | undefined>>;

export interface RespondOptions {
  readonly endStream?: boolean;
  readonly waitForTrailers?: boolean;
}

/** One request/response exchange on an `H2ServerConnection`. */
export class H2ServerStream extends EventEmitter {
  readonly id: number;
  readonly session: H2ServerConnection;
  /** RST_STREAM code sent or received (NO_ERROR after a clean close); undefined while open. */
  rstCode: number | undefined = undefined;
  /** Closed: nothing more can be written or read. */
  destroyed = false;
  headersSent = false;
  /** Response headers / trailers as passed to `respond` / `sendTrailers` (object form only; for telemetry). */
  sentHeaders: Headers | undefined = undefined;
  sentTrailers: Headers | undefined = undefined;
  /** `end()` was called. */
  writableEnded = false;
  /** END_STREAM went out. */
  writableFinished = false;
  /** `end` was emitted: the request body is complete. */
  readableEnded = false;

  // request side
  /** @internal */ remoteEnded = false;
  /** @internal */ recvWindow = STREAM_WINDOW;
  /** @internal */ recvUnacked = 0;
  /** @internal */ contentLength = -1;
  /** @internal */ received = 0;
  /** @internal */ flowing = false;
  /** @internal */ inbox: Buffer[] | null = null;
  /** @internal */ inboxBytes = 0;
  /** @internal */ trailersIn: Record<string, string | string[]> | null = null;
  // response side
  /** @internal */ sendWindow: number;
  /** @internal */ pending: Buffer[] | null = null;
  /** @internal */ waitForTrailers = false;
  /** @internal */ endPending = false;
  /** @internal */ wantDrain = false;

  constructor(session: H2ServerConnection, id: number, sendWindow: number) {
    super();
    this.session = session;
    this.id = id;
    this.sendWindow = sendWindow;
  }

  respond(headers: Headers | readonly string[], opts?: RespondOptions): void {
    if (this.destroyed) throw codeError('ERR_HTTP2_INVALID_STREAM', 'The stream has been destroyed');
    if (this.headersSent) throw codeError('ERR_HTTP2_HEADERS_SENT', 'Response has already been initiated.');
    const fields = Array.isArray(headers) ? (headers as readonly string[]) : objectFields(headers as Headers, true);
    if (!Array.isArray(headers)) this.sentHeaders = headers as Headers;
    this.session.respondStream(this, fields, opts?.endStream === true);
    this.headersSent = true;
    this.waitForTrailers = opts?.waitForTrailers === true;
    if (opts?.endStream === true) {
      this.writableEnded = true;
      this.writableFinished = true;
      this.session.localEnded(this);
    }
  }

  /** Sends body bytes; false when the caller should wait for `drain`. */
  write(chunk: Buffer | string): boolean {
    if (this.destroyed || this.writableEnded) return false;
    if (!this.headersSent) this.respond({ ':status': 200 });
    return this.session.writeData(this, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }

  end(chunk?: Buffer | string): void {
    if (this.destroyed || this.writableEnded) return;
    if (!this.headersSent) this.respond({ ':status': 200 });
    if (chunk !== undefined && chunk.length > 0) this.session.writeData(this, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    this.writableEnded = true;
    this.session.endStream(this);
  }

  /** After `wantTrailers`: the trailers end the response (an empty set ends it with an empty DATA frame). */
  sendTrailers(trailers: Headers): void {
    if (this.destroyed || this.writableFinished) return;
    this.sentTrailers = trailers;
    this.session.sendTrailers(this, objectFields(trailers, false));
  }

  /** RST_STREAM `code` (NO_ERROR: a clean early close). */
  close(code: number = NO_ERROR): void {
    this.session.resetStream(this, code);
  }

  destroy(): void {
    this.session.resetStream(this, INTERNAL_ERROR);
  }

  pause(): this {
    this.flowing = false;
    return this;
  }

  /** Starts (or resumes) delivering the request body as `data` events, then `end`. */
  resume(): this {
    if (this.flowing) return this;
    this.flowing = true;
    this.session.flushInbox(this);
    return this;
  }

  isPaused(): boolean {
    return !this.flowing;
  }

  unpipe(): this {
    return this;
  }
}

/**
 * A body chunk to hold: itself when it is most of the memory it keeps alive, else a copy of its
 * own size. A slice kept as is pins the whole read it came in (up to 64 KiB) while only its own
 * length counts towards MAX_BUFFERED: a client padding each DATA frame's read with ignored
 * frames pinned 16x the bound (found in review). Not `Buffer.from`, whose copies share Node's
 * 64 KiB pool with whatever else is allocated between them.
 */
function heldCopy(chunk: Buffer): Buffer {
  if (chunk.length * 2 >= chunk.buffer.byteLength) return chunk;
  const copy = Buffer.allocUnsafeSlow(chunk.length);
  chunk.copy(copy);
  return copy;
}

function codeError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** A header object as raw fields, `:status` first (responses); names are lower-cased. */
function objectFields(h: Headers, response: boolean): string[] {
  const out: string[] = [];
  if (response) {
    const st = h[':status'];
    out.push(':status', st === undefined ? '200' : String(st));
  }
  for (const key in h) {
    if (response && key === ':status') continue;
    const v = h[key];
    if (v === undefined) continue;
    const name = key.toLowerCase();
    if (typeof v === 'string') out.push(name, v);
    else if (Array.isArray(v)) for (const x of v as readonly string[]) out.push(name, String(x));
    else out.push(name, String(v));
  }
  return out;
}

/** Response fields node:http2 would refuse to send: a header object may not carry them either. */
function checkResponseFields(fields: readonly string[]): void {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    if (i > 0 && name.charCodeAt(0) === 0x3a) throw codeError('ERR_HTTP2_INVALID_PSEUDOHEADER', `"${name}" is an invalid pseudoheader or is used incorrectly`);
    if (CONNECTION_SPECIFIC.has(name)) throw codeError('ERR_HTTP2_INVALID_CONNECTION_HEADERS', `HTTP/1 Connection specific headers are forbidden: "${name}"`);
  }
}

export class H2ServerConnection extends H2Endpoint<H2ServerStream> {
  readonly encrypted: boolean;
  readonly #o: H2ServerOptions;
  readonly #streams = new Map<number, H2ServerStream>();
  readonly #decoder: HpackDecoder;
  readonly #sensitive: string[] = [];
  #closing: H2ServerStream[] = [];
  #lastStreamId = 0;
  /** Streams we reset or refused, most recent last (bounded): frames the client sent before it saw the RST are ignored (§5.1). */
  readonly #resetIds = new Set<number>();
  #prefaceSeen = 0;
  #goaway = false;
  #destroyed = false;
  // Abuse accounting.
  #invalid = 0;
  /** Bytes in the streams' inboxes (MAX_BUFFERED). */
  #buffered = 0;
  #socketClosed = false;
  #closeReported = false;
  #refused = 0;
  /** Reading stopped until the socket drains (MAX_OUTPUT). */
  #readPaused = false;
  /** The client sent GOAWAY (`#goaway` is ours too). */
  #peerGoaway = false;
  #emptyData = 0;
  #resetTokens = RESET_BURST;
  #resetAt = 0;
  #probe: NodeJS.Timeout | null = null;
  #probes = 0;

  constructor(socket: Duplex, o: H2ServerOptions) {
    super(socket, new HpackEncoder({ neverIndex: ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'] }));
    this.encrypted = o.encrypted;
    this.#o = o;
    this.#decoder = new HpackDecoder({ maxTableSize: 4096, maxHeaderListSize: o.maxHeaderListSize });
    this.write(
      settingsFrame([
        [SETTINGS_MAX_CONCURRENT_STREAMS, o.maxConcurrentStreams],
        [SETTINGS_MAX_HEADER_LIST_SIZE, o.maxHeaderListSize],
        [SETTINGS_ENABLE_PUSH, 0],
      ]),
    );
    this.write(u32Frame(WINDOW_UPDATE, 0, CONN_RECV_WINDOW - DEFAULT_WINDOW));
    // A client may half-close after its last request: what is open is still answered (the
    // socket ends once those streams are done), which needs the write side kept open.
    (socket as Duplex & { allowHalfOpen: boolean }).allowHalfOpen = true;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => {
      if (this.#readPaused) {
        this.#readPaused = false;
        socket.resume();
      }
      this.notifyDrain(this.#streams.values());
    });
    socket.on('error', (err) => {
      this.#o.onError?.(err);
      this.destroy();
    });
    socket.on('close', () => this.#onSocketClose());
    socket.on('end', () => this.#onSocketEnd());
  }

  // ---- H2Endpoint hooks

  protected get halted(): boolean {
    return this.#destroyed;
  }

  /** CONTINUATION floods (CVE-2024-27316 class): the block is bounded in octets and in frames. */
  protected headerBlockLimit(bytes: number, frames: number): readonly [number, string] | null {
    if (bytes > this.#o.maxHeaderListSize * 2 + 16_384) return [ENHANCE_YOUR_CALM, 'header block too large'];
    if (frames > MAX_CONTINUATIONS) return [ENHANCE_YOUR_CALM, 'too many CONTINUATION frames'];
    return null;
  }

  protected isClosed(s: H2ServerStream): boolean {
    return s.destroyed;
  }

  protected afterFlush(s: H2ServerStream): void {
    if (s.endPending) this.#finishResponse(s);
  }

  protected drained(s: H2ServerStream): void {
    s.emit('drain');
  }

  get closed(): boolean {
    return this.#destroyed;
  }

  /** Graceful (RFC 9113 §6.8): GOAWAY with the last stream we will serve; the socket ends once those are done. */
  close(): void {
    if (this.#goaway || this.#destroyed) return;
    this.#goaway = true;
    this.write(goawayFrame(this.#lastStreamId, NO_ERROR));
    this.#maybeEnd();
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#goaway = true;
    for (const s of this.#streams.values()) {
      s.rstCode ??= 0x8; // CANCEL
      this.#closeStream(s);
    }
    this.socket.destroy();
  }

  // ---- writing

  /** @internal Throws (nothing sent) for fields HTTP/2 cannot carry. */
  respondStream(s: H2ServerStream, fields: readonly string[], end: boolean): void {
    checkResponseFields(fields);
    this.writeHeaders(s.id, this.encode(fields), end);
  }

  /** @internal */
  writeData(s: H2ServerStream, chunk: Buffer): boolean {
    if (chunk.length === 0) return true;
    return this.queueData(s, chunk);
  }

  /** @internal `end()`: once the data is out, trailers (`wantTrailers`) or END_STREAM. */
  endStream(s: H2ServerStream): void {
    if (s.pending !== null) {
      s.endPending = true;
      return;
    }
    this.#finishResponse(s);
  }

  #finishResponse(s: H2ServerStream): void {
    s.endPending = false;
    if (s.waitForTrailers) {
      s.waitForTrailers = false;
      s.emit('wantTrailers');
      if (!s.writableFinished && !s.destroyed) this.sendTrailers(s, []); // nobody sent trailers: end plainly
      return;
    }
    this.sendTrailers(s, []);
  }

  /** @internal */
  sendTrailers(s: H2ServerStream, fields: readonly string[]): void {
    if (s.destroyed || s.writableFinished) return;
    if (fields.length > 0) {
      try {
        this.writeHeaders(s.id, this.encode(fields), true);
      } catch {
        this.write(frame(DATA, FLAG_END_STREAM, s.id, null)); // unsendable trailers: end without them
      }
    } else this.write(frame(DATA, FLAG_END_STREAM, s.id, null));
    s.writableEnded = true;
    s.writableFinished = true;
    this.localEnded(s);
  }

  /** @internal The response is complete. */
  localEnded(s: H2ServerStream): void {
    if (s.remoteEnded) {
      this.#closeStream(s);
      return;
    }
    // The client is still sending: a body nobody reads is cut short with RST_STREAM(NO_ERROR)
    // (RFC 9113 §8.1), one being relayed is let finish.
    if (!s.flowing) this.resetStream(s, NO_ERROR);
  }

  /** @internal */
  resetStream(s: H2ServerStream, code: number): void {
    if (s.destroyed) return;
    if (!this.#destroyed) this.#sendReset(s.id, code);
    s.rstCode ??= code;
    this.#closeStream(s);
  }

  /**
   * A request whose header list is over the limits: answered 431 (RFC 6585 §5; RFC 9113 §10.5.1)
   * without the request being seen, so the client knows not to send it again as it is (a
   * REFUSED_STREAM would invite the retry). A request still open is then reset with NO_ERROR, the
   * way to stop a body after a complete response (§8.1). Either way the id is remembered as
   * reset: what the client sends on it before it learns is ignored.
   */
  #headerListTooLarge(id: number, endStream: boolean, fields: readonly string[]): void {
    const grpcFields = this.#o.tooLargeGrpcFields;
    const grpc = grpcFields !== undefined && isGrpcRequest(fields);
    let answer = grpc ? grpcFields : (this.#o.tooLargeFields ?? TOO_LARGE_FIELDS);
    const more = this.#o.onHeaderListTooLarge?.(grpc);
    if (more !== undefined && more.length > 0) answer = [...answer, ...more];
    this.writeHeaders(id, this.encode(answer), true);
    if (!endStream) this.#sendReset(id, NO_ERROR);
    else {
      const ids = this.#resetIds;
      ids.add(id);
      if (ids.size > RESET_MEMORY) ids.delete(ids.values().next().value as number);
    }
  }

  #sendReset(id: number, code: number): void {
    this.write(u32Frame(RST_STREAM, id, code));
    const ids = this.#resetIds;
    ids.add(id);
    if (ids.size > RESET_MEMORY) ids.delete(ids.values().next().value as number);
  }

  // ---- request body delivery

  /** @internal Delivers buffered body chunks while the stream flows. */
  flushInbox(s: H2ServerStream): void {
    const inbox = s.inbox;
    if (inbox !== null) {
      while (inbox.length > 0 && s.flowing && !s.destroyed) {
        const chunk = inbox.shift() as Buffer;
        s.inboxBytes -= chunk.length;
        this.#buffered -= chunk.length;
        this.#deliver(s, chunk);
      }
      if (inbox.length > 0) return;
      s.inbox = null;
    }
    if (s.remoteEnded && !s.readableEnded && s.flowing) this.#emitEnd(s);
  }

  #deliver(s: H2ServerStream, chunk: Buffer): void {
    s.emit('data', chunk);
    // The client may send as much again as the consumer took.
    s.recvUnacked += chunk.length;
    this.#creditStream(s);
  }

  /** Gives the client back the stream window it used, in steps of half the window. */
  #creditStream(s: H2ServerStream): void {
    if (s.recvUnacked >= STREAM_WINDOW / 2 && !s.remoteEnded && !s.destroyed) {
      s.recvWindow += s.recvUnacked;
      this.write(u32Frame(WINDOW_UPDATE, s.id, s.recvUnacked));
      s.recvUnacked = 0;
    }
  }

  #emitEnd(s: H2ServerStream): void {
    s.readableEnded = true;
    if (s.trailersIn !== null) s.emit('trailers', s.trailersIn);
    s.emit('end');
    if (s.writableFinished) this.#closeStream(s);
  }

  // ---- stream lifecycle

  #closeStream(s: H2ServerStream): void {
    if (s.destroyed) return;
    s.destroyed = true;
    s.rstCode ??= NO_ERROR;
    s.pending = null;
    s.inbox = null;
    this.#buffered -= s.inboxBytes;
    s.inboxBytes = 0;
    this.blocked.delete(s);
    this.#streams.delete(s.id);
    // `close` is emitted on the next tick (as node:http2 does), once for all streams closed in this one.
    if (this.#closing.length === 0) process.nextTick(emitCloses, this);
    this.#closing.push(s);
    this.#maybeEnd();
  }

  /** @internal */
  emitCloses(): void {
    const list = this.#closing;
    this.#closing = [];
    for (const s of list) {
      s.emit('close');
      // The close listeners were the last to read what was sent; a stream V8 has already promoted
      // would otherwise keep those objects alive until the next full collection (as conn.ts's
      // client streams drop their owner).
      s.sentHeaders = undefined;
      s.sentTrailers = undefined;
    }
    if (this.#socketClosed && this.#closing.length === 0) this.#reportClose();
  }

  #reportClose(): void {
    if (this.#closeReported) return;
    this.#closeReported = true;
    this.#o.onClose?.(this);
  }

  #maybeEnd(): void {
    if (this.#goaway && !this.#destroyed && this.#streams.size === 0) {
      this.#destroyed = true;
      this.#endSocket();
    }
  }

  protected connectionError(code: number, message: string): void {
    if (this.#destroyed) return;
    this.#o.onError?.(Object.assign(new Error(`HTTP/2 client connection error: ${message}`), { code: 'ERR_HTTP2_SESSION_ERROR', h2code: code }));
    this.write(goawayFrame(this.#lastStreamId, code));
    this.#destroyed = true;
    this.#goaway = true;
    for (const s of this.#streams.values()) {
      s.rstCode ??= code;
      this.#closeStream(s);
    }
    this.#endSocket();
  }

  /** FIN once the writes are out; a peer that never reads or closes loses the socket after LINGER_MS. */
  #endSocket(): void {
    const socket = this.socket;
    socket.end();
    const t = setTimeout(() => socket.destroy(), LINGER_MS);
    t.unref();
    socket.once('close', () => clearTimeout(t));
  }

  /**
   * A stream the client made malformed (a window past 2^31-1, DATA past the window or its
   * content-length): reset, and charged to the same bucket as the client's own resets. Otherwise
   * a client could have ward reset each stream for it right after opening it, which starts the
   * stages every time and never meets the stream limit ("MadeYouReset", CVE-2025-8671; found in
   * review).
   */
  #streamError(s: H2ServerStream, code: number): void {
    this.resetStream(s, code);
    this.#spendResetToken();
  }

  /** Rapid reset (CVE-2023-44487): a token bucket of resets, as node's streamResetBurst/Rate. */
  #spendResetToken(): boolean {
    const now = Date.now();
    this.#resetTokens = Math.min(RESET_BURST, this.#resetTokens + ((now - this.#resetAt) * RESET_RATE) / 1000);
    this.#resetAt = now;
    if (--this.#resetTokens >= 0) return false;
    this.connectionError(ENHANCE_YOUR_CALM, 'too many stream resets');
    return true;
  }

  /** An invalid frame or request: the connection is cut after too many (node's maxSessionInvalidFrames). */
  #invalidFrame(): boolean {
    if (++this.#invalid <= MAX_INVALID) return false;
    this.connectionError(ENHANCE_YOUR_CALM, 'too many invalid frames');
    return true;
  }

  #onSocketEnd(): void {
    // The client half-closed: what is open can still be answered; no request can complete.
    for (const s of [...this.#streams.values()]) if (!s.remoteEnded) this.resetStream(s, 0x8);
    this.#goaway = true;
    this.#maybeEnd();
    // TCP does not tell a client that closed its sending side from one that closed the whole
    // connection and is gone. The gone one never reads the answers it was waiting for, and the app
    // would keep working on them until it answers, which a long gRPC stream never does. Whatever
    // is written to a connection its client closed draws a reset from the client's host, and the
    // next write fails: the connection is then destroyed, and each stream still open closes and
    // cancels its call at the app. So while streams wait, a probe goes out now and a few more
    // times, further apart (PROBE_DELAYS_MS): a write made once the reset has arrived fails, for
    // any round trip under ~20 s. A client that only half-closed reads them and ignores them (an
    // extension frame: PROBE); any response frame written meanwhile probes the same way.
    if (!this.#destroyed) this.probe();
  }

  /** @internal One probe of a half-closed connection (`#onSocketEnd`); the next is scheduled until they run out or the connection is done. */
  probe(): void {
    this.#probe = null;
    if (this.#destroyed) return;
    this.write(PROBE);
    const delay = PROBE_DELAYS_MS[this.#probes++];
    if (delay === undefined) return;
    this.#probe = setTimeout(probeEof, delay, this);
    this.#probe.unref();
  }

  #stopProbe(): void {
    if (this.#probe !== null) {
      clearTimeout(this.#probe);
      this.#probe = null;
    }
  }

  #onSocketClose(): void {
    this.#stopProbe();
    this.#destroyed = true;
    this.#goaway = true;
    this.#socketClosed = true;
    for (const s of this.#streams.values()) {
      s.rstCode ??= 0x8; // CANCEL
      this.#closeStream(s);
    }
    if (this.#closing.length === 0) this.#reportClose();
  }

  // ---- reading

  #onData(chunk: Buffer): void {
    if (this.#destroyed) return;
    let data = chunk;
    if (this.#prefaceSeen < PREFACE.length) {
      const n = Math.min(PREFACE.length - this.#prefaceSeen, data.length);
      if (data.compare(PREFACE, this.#prefaceSeen, this.#prefaceSeen + n, 0, n) !== 0) {
        this.connectionError(PROTOCOL_ERROR, 'bad connection preface');
        return;
      }
      this.#prefaceSeen += n;
      if (n === data.length) return;
      data = data.subarray(n);
    }
    this.readFrames(data);
    if (this.socket.writableLength > MAX_OUTPUT && !this.#readPaused && !this.#destroyed) {
      this.#readPaused = true;
      this.socket.pause();
    }
  }

  protected onGoaway(): void {
    // The client opens no more streams; what is open finishes.
    this.#goaway = true;
    this.#peerGoaway = true;
    this.#maybeEnd();
  }

  protected onBadPriority(id: number): void {
    const s = this.#streams.get(id);
    if (s !== undefined) this.#streamError(s, FRAME_SIZE_ERROR);
    this.#invalidFrame();
  }

  protected peerSetting(key: number, value: number): string | null {
    return key === SETTINGS_ENABLE_PUSH && value > 1 ? 'SETTINGS_ENABLE_PUSH not 0 or 1' : null;
  }

  protected openStreams(): IterableIterator<H2ServerStream> {
    return this.#streams.values();
  }

  protected streamOf(id: number): H2ServerStream | undefined {
    return this.#streams.get(id);
  }

  /** §5.1 idle: not opened yet, or an even id, which only a server would open and ward never does. */
  protected isIdle(id: number): boolean {
    return id > this.#lastStreamId || (id & 1) === 0;
  }

  protected windowUpdateError(s: H2ServerStream, code: number): void {
    this.#streamError(s, code);
    if (code === PROTOCOL_ERROR) this.#invalidFrame(); // an increment of 0 is a malformed frame
  }

  protected onReset(id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) return this.connectionError(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    if (end - start !== 4) return this.connectionError(FRAME_SIZE_ERROR, 'RST_STREAM length');
    if (this.isIdle(id)) return this.connectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
    if (this.#spendResetToken()) return;
    const s = this.#streams.get(id);
    if (s === undefined) return;
    s.rstCode = buf.readUInt32BE(start);
    this.#closeStream(s);
  }

  protected onData(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    const stop = this.dataPayloadEnd(flags, id, buf, start, end);
    if (stop < 0) return;
    const p = (flags & FLAG_PADDED) !== 0 ? start + 1 : start;
    const len = end - start;
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    const s = this.#streams.get(id);
    if (s === undefined) {
      // The connection window was charged and credited above whatever follows (§6.9; §5.1:
      // DATA on a closed stream still counts toward it), so nothing here can leak it.
      if (this.isIdle(id)) return this.connectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
      // We reset it: the client may have sent this before it saw our RST_STREAM, and it MUST be
      // ignored (§5.1 "closed").
      if (this.#resetIds.has(id)) return;
      // Closed by the client's own END_STREAM or RST_STREAM (or reset by us longer ago than
      // RESET_MEMORY remembers): §6.1 requires a stream error STREAM_CLOSED; §5.1 lets it be a
      // connection error instead. A stream error, because it is right in every one of those
      // cases and ward cannot tell them apart once the stream record is gone (keeping why each
      // stream closed would cost every request), while a connection error would end the
      // client's other streams for a reset of ours it could not yet have seen. nghttp2 (Node,
      // and Envoy's codec) likewise errs only on streams it still holds (half-closed (remote),
      // below, is a connection error here too) and ignores the rest. The id then counts as
      // reset, so a stream draws one RST_STREAM (§5.4.2), and each is an invalid frame: a
      // client cannot make ward answer without bound (reset flood, CVE-2019-9514).
      if (this.#invalidFrame()) return;
      this.#sendReset(id, STREAM_CLOSED);
      return;
    }
    if (s.remoteEnded) return this.connectionError(STREAM_CLOSED, 'DATA after END_STREAM');
    s.recvWindow -= len;
    if (s.recvWindow < 0) return this.#streamError(s, FLOW_CONTROL_ERROR);
    if (stop === p && !endStream && ++this.#emptyData > MAX_EMPTY_DATA) return this.connectionError(ENHANCE_YOUR_CALM, 'empty DATA frames');
    s.received += stop - p;
    if (s.contentLength >= 0 && (s.received > s.contentLength || (endStream && s.received !== s.contentLength))) {
      // §8.1.1: content-length must match the DATA: a malformed request.
      this.#streamError(s, PROTOCOL_ERROR);
      return;
    }
    // Padding is flow-controlled too, and nobody consumes it.
    const padding = len - (stop - p);
    if (padding > 0) {
      s.recvUnacked += padding;
      // Credited at once, as nothing will consume it: a stream whose window went on padding-only
      // frames was never given more (found in review).
      if (stop === p) this.#creditStream(s);
    }
    if (endStream) s.remoteEnded = true;
    if (stop > p) {
      const chunk = buf.subarray(p, stop);
      if (s.flowing && s.inbox === null) this.#deliver(s, chunk);
      else {
        (s.inbox ??= []).push(heldCopy(chunk));
        s.inboxBytes += chunk.length;
        this.#buffered += chunk.length;
        if (this.#buffered > MAX_BUFFERED) return this.connectionError(ENHANCE_YOUR_CALM, 'request bodies buffered past the connection bound');
      }
    }
    if (endStream && s.flowing && s.inbox === null && !s.readableEnded && !s.destroyed) this.#emitEnd(s);
  }

  protected headerBlock(id: number, endStream: boolean, buf: Buffer, start: number, end: number): void {
    const fields: string[] = [];
    const sensitive = this.#sensitive;
    let tooLarge = false;
    try {
      this.#decoder.decode(buf, start, end, fields, sensitive);
    } catch (err) {
      if (!(err instanceof HpackError) || err.code !== 'ERR_HPACK_HEADER_LIST_TOO_LARGE') {
        sensitive.length = 0;
        // The decoder's table may now differ from the client's: the connection cannot go on (§4.3).
        this.connectionError(COMPRESSION_ERROR, (err as Error).message);
        return;
      }
      tooLarge = true;
    }
    // Never-indexed names stay so when the request is forwarded (RFC 7541 §6.2.3).
    if (sensitive.length > 0 && !tooLarge) markSensitive(fields, sensitive.slice());
    sensitive.length = 0;
    if ((id & 1) === 0) return this.connectionError(PROTOCOL_ERROR, 'HEADERS on an even stream id');
    const open = this.#streams.get(id);
    if (open !== undefined) {
      // Trailers (§8.1): they end the request and carry no pseudo-header.
      if (open.remoteEnded) return this.connectionError(STREAM_CLOSED, 'HEADERS after END_STREAM');
      if (!endStream || tooLarge || !validTrailers(fields)) {
        this.#streamError(open, PROTOCOL_ERROR);
        this.#invalidFrame();
        return;
      }
      open.trailersIn = fieldRecord(fields, 0);
      if (open.contentLength >= 0 && open.received !== open.contentLength) return this.#streamError(open, PROTOCOL_ERROR);
      open.remoteEnded = true;
      if (open.flowing && open.inbox === null && !open.readableEnded) this.#emitEnd(open);
      return;
    }
    if (id <= this.#lastStreamId) {
      // Trailers for a stream we reset, sent before the client saw the RST: ignored (§5.1).
      if (this.#resetIds.has(id)) return;
      // §5.1 "closed": a frame after END_STREAM is a connection error STREAM_CLOSED (as nghttp2
      // answers; PROTOCOL_ERROR before, which h2spec 5.1/9 and 5.1/12 flag).
      return this.connectionError(STREAM_CLOSED, 'HEADERS on a closed stream');
    }
    this.#lastStreamId = id;
    if (this.#goaway) {
      // After a GOAWAY, ours or the client's: not processed (the client retries elsewhere). After
      // the client's own, counted like the other refusals: a client that said it was done and
      // keeps opening streams gets a RST_STREAM for each (found in review). After ours they are
      // not counted: a busy client may race many streams past our GOAWAY while its open calls
      // drain, and ending the connection would cut those calls.
      this.#sendReset(id, REFUSED_STREAM);
      if (this.#peerGoaway && ++this.#refused > MAX_REFUSED) this.connectionError(ENHANCE_YOUR_CALM, 'too many refused streams');
      return;
    }
    if (tooLarge || fields.length / 2 > this.#o.maxHeaderPairs) {
      this.#headerListTooLarge(id, endStream, fields);
      if (++this.#refused > MAX_REFUSED) this.connectionError(ENHANCE_YOUR_CALM, 'too many refused streams');
      return;
    }
    if (this.#streams.size >= this.#o.maxConcurrentStreams) {
      this.#sendReset(id, REFUSED_STREAM);
      if (++this.#refused > MAX_REFUSED) this.connectionError(ENHANCE_YOUR_CALM, 'too many refused streams');
      return;
    }
    const contentLength = checkRequest(fields);
    if (contentLength === -2) {
      this.#sendReset(id, PROTOCOL_ERROR);
      this.#invalidFrame();
      return;
    }
    const s = new H2ServerStream(this, id, this.peerInitialWindow);
    s.contentLength = contentLength;
    if (endStream) {
      if (contentLength > 0) {
        this.#sendReset(id, PROTOCOL_ERROR);
        this.#invalidFrame();
        return;
      }
      s.remoteEnded = true;
    }
    this.#streams.set(id, s);
    this.#o.onStream(s, fields, endStream);
  }
}

/** Whether the fields kept of a refused request say gRPC (its `content-type`). */
function isGrpcRequest(fields: readonly string[]): boolean {
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] === 'content-type') return (fields[i + 1] as string).startsWith('application/grpc');
  }
  return false;
}

/** The answer to a request whose header list is over the limits (see `#headerListTooLarge`). */
const TOO_LARGE_FIELDS: readonly string[] = Object.freeze([':status', '431', 'content-length', '0']);

/** Request trailers: the field rules of §8.2.1/§8.2.2, and no pseudo-header (§8.1). */
function validTrailers(fields: readonly string[]): boolean {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    if (!validName(name, 0) || !validValue(fields[i + 1] as string) || CONNECTION_SPECIFIC.has(name) || name === 'te') return false;
  }
  return true;
}

const REQUEST_PSEUDO = new Set([':method', ':scheme', ':authority', ':path']);


/** §8.2.1 on request values (its own memo: a client repeats its token on every request). */
const validValue = valueChecker();

/**
 * A request header list per RFC 9113 §8.3.1 / §8.2: the content-length it declares (-1 none),
 * or -2 when malformed.
 */
function checkRequest(fields: readonly string[]): number {
  let method: string | undefined;
  let scheme = false;
  let path: string | undefined;
  let authority = false;
  let regular = false;
  let contentLength = -1;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular || !REQUEST_PSEUDO.has(name)) return -2;
      if (name === ':method') {
        if (method !== undefined || !validName(value.toLowerCase(), 0)) return -2;
        method = value;
      } else if (name === ':path') {
        if (path !== undefined) return -2;
        path = value;
      } else if (name === ':scheme') {
        if (scheme) return -2;
        scheme = true;
      } else {
        if (authority) return -2;
        authority = true;
      }
      if (!validValue(value)) return -2;
      continue;
    }
    regular = true;
    if (!validName(name, 0) || !validValue(value)) return -2;
    if (CONNECTION_SPECIFIC.has(name)) return -2;
    if (name === 'te' && value !== 'trailers') return -2;
    if (name === 'content-length') {
      if (!/^\d{1,15}$/.test(value)) return -2;
      const n = Number(value);
      if (contentLength >= 0 && contentLength !== n) return -2;
      contentLength = n;
    }
  }
  if (method === undefined) return -2;
  if (method === 'CONNECT') {
    if (scheme || path !== undefined || !authority) return -2;
  } else if (!scheme || path === undefined || path === '') return -2;
  return contentLength;
}

function emitCloses(c: H2ServerConnection): void {
  c.emitCloses();
}

function probeEof(c: H2ServerConnection): void {
  c.probe();
}
