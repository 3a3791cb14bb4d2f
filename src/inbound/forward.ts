import http, { ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import http2, { type ClientHttp2Session, constants as h2c, type ClientHttp2Stream, type IncomingHttpStatusHeader } from 'node:http2';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { SidecarConfig } from '../config/sidecar.ts';
import type { ErrorCode } from '../errors/codes.ts';
import type { Logger } from '../lib/log.ts';
import type { Permit } from '../policy/model.ts';
import { type Exchange, exchangeOf, kExchange, tag, type Tagged } from './exchange.ts';
import {
  addIdentityHeaders,
  dropSidecarResponseFields,
  identityHeaderValues,
  type IdentityHeaderNames,
  isSidecarResponseField,
  relayableFields,
  requestTrailerFields,
  responseHeadersForH2,
} from './headers.ts';
import { H2SessionPool } from './pool.ts';
import { type ErrorResponder, HEADER_DECISION_ID } from './respond.ts';
import type { InboundCounters } from './types.ts';

/**
 * The last stage: an allowed call goes to the local app and its response comes back.
 *
 * - One connection pool per sidecar: h2c sessions (`upstream.maxSessions`) or an HTTP/1.1
 *   keep-alive agent (`upstream.maxSockets`); never a connection per call.
 * - Bodies are piped both ways (backpressure, no buffering); trailers are relayed: HTTP/2
 *   `waitForTrailers`/`sendTrailers` towards an HTTP/2 client, chunked trailers towards an
 *   HTTP/1.1 client that sent `TE: trailers`; request trailers reach an HTTP/2 app (an
 *   HTTP/1.1 app gets the request body without them).
 * - A client that goes away cancels the app's stream (RST_STREAM CANCEL / socket abort), so the
 *   app sees the cancellation; a `grpc-timeout` that expires cancels it too and answers
 *   DEADLINE_EXCEEDED; an app that cannot be reached or resets mid-call yields
 *   ERR_UPSTREAM_UNAVAILABLE / ERR_UPSTREAM_RESET instead of a hung call.
 *
 * Stream handlers are module-level or built once per forwarder; they find their call through
 * `exchangeOf(this)`.
 */

export interface Forwarder {
  /** Sends an allowed call to the app. Only a `Permit` (from `evaluate`) opens the way. */
  forward(ex: Exchange, permit: Permit): void;
  /** Starts the call's deadline (`grpc-timeout`, or `upstream.requestTimeoutMs`). */
  armDeadline(ex: Exchange, ms: number): void;
  /** The client went away: cancel the app's side of the call, if any. */
  cancel(ex: Exchange): void;
  close(): Promise<void>;
  destroy(): void;
}

export interface ForwarderOptions extends RelayOptions {
  readonly identityNames: IdentityHeaderNames;
  readonly counters: InboundCounters;
}

/**
 * The transport half of the forwarder, without the inbound gate: the outbound (egress) stage
 * uses it, one per destination, behind its own gate (a declared destination and a token).
 */
export interface Relay {
  /** Sends the call upstream with `ex.fwdHeaders` as they are; the caller decided it may go. */
  send(ex: Exchange): void;
  armDeadline(ex: Exchange, ms: number): void;
  cancel(ex: Exchange): void;
  close(): Promise<void>;
  destroy(): void;
}

export interface RelayOptions {
  readonly upstream: Readonly<Pick<SidecarConfig['upstream'], 'url' | 'protocol' | 'connectTimeoutMs' | 'requestTimeoutMs' | 'maxSessions' | 'maxSockets'>>;
  readonly responder: ErrorResponder;
  readonly counters: { upstreamErrors: number };
  readonly log: Logger;
  /** The identity prefix: fields with it are dropped from request trailers too (anti-spoofing). */
  readonly identityPrefix?: string | undefined;
  /**
   * Drop `x-ward-reason` / `x-ward-decision-id` from what the upstream answers: the inbound
   * sidecar is their only author towards its callers. (Outbound keeps them: there they are the
   * destination sidecar's own, and useful to the app.)
   */
  readonly guardSidecarFields?: boolean;
}

const END_FLAG = h2c.NGHTTP2_FLAG_END_STREAM;
const REQUEST_NO_BODY = Object.freeze({ endStream: true });
/**
 * The body may end with trailers (HTTP/2 or chunked HTTP/1.1): sent on `wantTrailers`. This
 * also keeps a cancelled upload from looking complete: Node's `close(code)` ends the writable
 * side first, which without `waitForTrailers` puts END_STREAM on the wire before the RST.
 */
const REQUEST_WITH_BODY = Object.freeze({ endStream: false, waitForTrailers: true });
const EMPTY_TRAILERS = Object.freeze({});
const RESPOND_END = Object.freeze({ endStream: true });
const RESPOND_WITH_TRAILERS = Object.freeze({ waitForTrailers: true });
const PIPE_NO_END = Object.freeze({ end: false });

/** Failures that mean "the app is not there" rather than "the app broke this call". */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EADDRNOTAVAIL', 'EAI_AGAIN']);

function errCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | undefined)?.code;
  return typeof c === 'string' ? c : undefined;
}

/**
 * The app-bound request as HTTP/2 raw fields `[name, value, …]`, pseudo-headers first. Node takes
 * this form as is, where a header object is first copied into a new null-prototype object and
 * then walked again: the copy was ~7% of the bytes allocated per proxied call
 * (BENCHMARKS.md). `ex.fwdHeaders` is left as the stages built it.
 */
function h2RequestFields(ex: Exchange, authority: string): string[] {
  const out = [':method', ex.method, ':scheme', 'http', ':authority', authority, ':path', ex.query === '' ? ex.path : ex.path + ex.query];
  const h = ex.fwdHeaders;
  for (const name in h) {
    const v = h[name];
    if (typeof v === 'string') out.push(name, v);
    else if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else if (v !== undefined) out.push(name, String(v));
  }
  if (ex.acceptsTrailers) out.push('te', 'trailers');
  return out;
}

/**
 * The app's HTTP/2 response headers for the caller, as raw fields (no header-object copy in
 * node:http2, as for requests): the call's decision id replaces any the app sent, and with
 * `guard` the app cannot send `x-ward-reason` either. Fields the app marked never-indexed stay so.
 */
function h2ResponseFields(headers: IncomingHttpHeaders, decisionId: string, guard: boolean): string[] {
  const out: string[] = [];
  for (const name in headers) {
    if (name === HEADER_DECISION_ID || (guard && isSidecarResponseField(name))) continue;
    const v = headers[name];
    if (typeof v === 'string') out.push(name, v);
    else if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else if (v !== undefined) out.push(name, String(v));
  }
  out.push(HEADER_DECISION_ID, decisionId);
  const sensitive = (headers as Record<symbol, unknown>)[http2.sensitiveHeaders];
  if (sensitive !== undefined) (out as unknown as Record<symbol, unknown>)[http2.sensitiveHeaders] = sensitive;
  return out;
}

/** Why a call failed before any response header arrived. */
function classifyFailure(err: Error | undefined, rstCode: number | undefined): ErrorCode {
  if (rstCode === h2c.NGHTTP2_REFUSED_STREAM) return 'ERR_UPSTREAM_UNAVAILABLE';
  const code = errCode(err);
  if (code !== undefined && UNREACHABLE.has(code)) return 'ERR_UPSTREAM_UNAVAILABLE';
  // Node cancels streams queued on a session that failed to connect; the cause says why.
  const cause = errCode((err as { cause?: unknown } | undefined)?.cause);
  if (cause !== undefined && UNREACHABLE.has(cause)) return 'ERR_UPSTREAM_UNAVAILABLE';
  if (code === 'ERR_HTTP2_STREAM_CANCEL' || code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION') {
    return 'ERR_UPSTREAM_UNAVAILABLE';
  }
  return 'ERR_UPSTREAM_RESET';
}

/** A header the client sent that Node refuses to send on: the client's fault, not the app's. */
function isHeaderError(err: unknown): boolean {
  const c = errCode(err) ?? '';
  return c.startsWith('ERR_HTTP2_HEADER') || c === 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' || c === 'ERR_INVALID_HTTP_TOKEN' || c === 'ERR_INVALID_CHAR';
}

/**
 * A body passed from one stream to the other without `pipe()`, which registers seven listeners
 * and allocates its own state per call: here two module-level listeners on the source and one
 * write per chunk (BENCHMARKS.md, "what each optimisation bought"). The same rules as pipe:
 * backpressure (the source pauses until the destination drains), `end()` when the source ends,
 * nothing written to a destination that is closed (the source keeps being read, so flow control
 * keeps moving). The source names its destination through `kRelayTo`; a destination waiting
 * for `drain` names its source through `kRelayFrom`.
 */
const kRelayTo: unique symbol = Symbol('ward.relay.to');
const kRelayFrom: unique symbol = Symbol('ward.relay.from');
type RelaySource = Readable & { [kRelayTo]?: Writable | null };
type RelaySink = Writable & { [kRelayFrom]?: Readable | null };

function relayBody(src: Readable, dst: Writable): void {
  (src as RelaySource)[kRelayTo] = dst;
  src.on('data', onRelayData);
  src.on('end', onRelayEnd);
}

function onRelayData(this: RelaySource, chunk: Buffer): void {
  const dst = this[kRelayTo];
  if (dst === undefined || dst === null || dst.destroyed || dst.writableEnded) return;
  const ex = (dst as Tagged<Writable>)[kExchange];
  if (ex !== undefined && ex.upstream === dst && !ex.replayOff) keepForReplay(ex, chunk);
  if (!dst.write(chunk)) {
    this.pause();
    (dst as RelaySink)[kRelayFrom] = this;
    dst.once('drain', onRelayDrain);
  }
}

function onRelayDrain(this: RelaySink): void {
  const src = this[kRelayFrom];
  this[kRelayFrom] = null;
  if (src !== undefined && src !== null && !src.destroyed && (src as RelaySource)[kRelayTo] === this) src.resume();
}

function onRelayEnd(this: RelaySource): void {
  const dst = this[kRelayTo];
  this[kRelayTo] = null;
  if (wasCut(this)) return;
  if (dst !== undefined && dst !== null && !dst.destroyed && !dst.writableEnded) dst.end();
}

/**
 * Node ends an HTTP/2 stream's readable side not only on END_STREAM but also when the stream is
 * reset or its session dies (the app crashed: `rstCode` CANCEL, no error event). Such a body was
 * cut, not finished, and must never be passed on as complete — a truncated response would reach
 * the caller as a clean end (an empty-trailers gRPC call, a short HTTP body). Trailers mean
 * END_STREAM did arrive, whatever RST followed. The stream's `close` handler reports the failure.
 */
function wasCut(s: Readable): boolean {
  const code = (s as Readable & { rstCode?: number }).rstCode;
  if (code === undefined || code === h2c.NGHTTP2_NO_ERROR) return false;
  const ex = exchangeOf(s);
  return (s === ex.h2 ? ex.requestTrailers : ex.trailers) === null;
}

/**
 * Request bytes kept per call until the app answers, so that a stream the app refused without
 * processing it (REFUSED_STREAM, or above the last stream id of its GOAWAY: RFC 9113 §6.8, §8.7)
 * can be sent again on a fresh connection. An app that closes its connection every N requests
 * (nginx's `keepalive_requests`) does this to every call in flight on it. A larger body is not
 * kept, and such a call fails as before (503 / UNAVAILABLE).
 */
const REPLAY_LIMIT = 64 * 1024;
/** Upstream attempts per call: the first and up to two retries, each on a fresh connection (Istio's default retry policy also retries `refused-stream` twice). */
const MAX_ATTEMPTS = 3;

const kSessionOf: unique symbol = Symbol('ward.upstream.session');
type UpstreamStream = ClientHttp2Stream & { [kSessionOf]?: ClientHttp2Session };

function keepForReplay(ex: Exchange, chunk: Buffer): void {
  if (ex.replayBytes + chunk.length > REPLAY_LIMIT) {
    ex.replayOff = true;
    ex.replay = null;
    return;
  }
  ex.replayBytes += chunk.length;
  (ex.replay ??= []).push(chunk);
}

/** Stops relaying from `src` (a no-op for a source never relayed). */
function unrelay(src: Readable): void {
  const r = src as RelaySource;
  if (r[kRelayTo] === undefined) return;
  r[kRelayTo] = null;
  src.off('data', onRelayData);
  src.off('end', onRelayEnd);
}

/** Stops feeding the app and drops whatever the client still sends (flow control keeps moving). */
function releaseBody(ex: Exchange): void {
  const body = ex.body();
  if (!body.readableEnded && !body.destroyed) {
    unrelay(body);
    body.unpipe();
    body.resume();
  }
}

function cancelUpstream(ex: Exchange): void {
  const up = ex.upstream;
  if (up === null || ex.upstreamDone) return;
  ex.upstreamDone = true;
  if (up instanceof ClientRequest) up.destroy();
  else if (!up.destroyed) up.close(h2c.NGHTTP2_CANCEL);
}

function onUpstreamError(this: ClientHttp2Stream | ClientRequest | IncomingMessage, err: Error): void {
  const ex = exchangeOf(this);
  ex.upstreamError ??= err;
}

export function createForwarder(o: ForwarderOptions): Forwarder {
  const prefix = o.identityNames.decisionId.slice(0, -'decision-id'.length);
  const relay = createRelay({ ...o, identityPrefix: o.identityPrefix ?? prefix, guardSidecarFields: true });
  const identityNames = o.identityNames;
  return {
    forward(ex: Exchange, permit: Permit): void {
      if (ex.closed || ex.finished) return;
      let values = null;
      if (permit.identity !== null) {
        values = identityHeaderValues(permit.identity);
        if (values === null) {
          o.responder.write(ex, 'ERR_TOKEN_CLAIMS'); // checked before evaluate; never forward unnamed
          return;
        }
      }
      addIdentityHeaders(ex.fwdHeaders, identityNames, values, ex.decisionId);
      relay.send(ex);
    },
    armDeadline: (ex, ms) => relay.armDeadline(ex, ms),
    cancel: (ex) => relay.cancel(ex),
    close: () => relay.close(),
    destroy: () => relay.destroy(),
  };
}

export function createRelay(o: RelayOptions): Relay {
  const { responder, counters, log } = o;
  const url = new URL(o.upstream.url);
  const upstreamHost = url.hostname;
  const upstreamPort = url.port === '' ? 80 : Number(url.port);
  const defaultAuthority = url.host;
  const requestTimeoutMs = o.upstream.requestTimeoutMs;
  const pool = o.upstream.protocol === 'h2c' ? new H2SessionPool(url.origin, o.upstream.maxSessions, o.upstream.connectTimeoutMs, log) : null;
  const agent = pool === null ? new http.Agent({ keepAlive: true, maxSockets: o.upstream.maxSockets }) : null;

  const identityPrefix = o.identityPrefix;
  const guardResponse = o.guardSidecarFields === true;

  // Handlers that apply this relay's field rules: built once per relay, not per call.
  /** The client's body has been passed on; its trailers (if any) follow it to the app. */
  function onUpstreamWantTrailers(this: ClientHttp2Stream): void {
    const ex = exchangeOf(this);
    // Cancelling calls close(), which ends the writable side and lands here: sending trailers
    // now would present a truncated upload to the app as complete. The RST follows instead.
    if (ex.upstreamDone || this.destroyed) return;
    // Node emits 'end' on a server stream the client reset with CANCEL, so a piped body can look
    // finished when it was cut: check before ending the app's side.
    if (ex.h2 !== null ? (ex.h2.rstCode ?? 0) !== 0 : ex.req !== null && !ex.req.complete) {
      cancelUpstream(ex);
      return;
    }
    let t: IncomingHttpHeaders | null = ex.requestTrailers;
    if (t === null && ex.req !== null && ex.req.complete) {
      const raw = ex.req.trailers;
      for (const _ in raw) {
        t = raw;
        break;
      }
    }
    try {
      // Request trailers are the caller's too: no identity field, no credential (RFC 9110 §6.5.1).
      this.sendTrailers(t === null ? EMPTY_TRAILERS : requestTrailerFields(t, identityPrefix));
    } catch {
      if (!this.destroyed) this.close(h2c.NGHTTP2_INTERNAL_ERROR);
    }
  }

  function onH2UpstreamTrailers(this: ClientHttp2Stream, trailers: IncomingHttpHeaders): void {
    if (guardResponse) dropSidecarResponseFields(trailers);
    exchangeOf(this).trailers = trailers;
  }

  function onH1UpstreamEnd(this: IncomingMessage): void {
    const t = relayableFields(this.trailers);
    if (guardResponse) dropSidecarResponseFields(t);
    exchangeOf(this).trailers = t;
  }

  /** The app's body ended towards an HTTP/1.1 client: chunked trailers if it asked for them. */
  function onUpstreamEndToH1(this: ClientHttp2Stream | IncomingMessage): void {
    const ex = exchangeOf(this);
    const res = ex.res;
    if (res === null || ex.closed || ex.finished) return;
    if (wasCut(this)) return; // the app's HTTP/2 stream died mid-body: onH2Close fails the call
    const t = ex.upstreamRes !== null ? ex.upstreamRes.trailers : ex.trailers;
    if (ex.acceptsTrailers && t !== null) {
      const fields = relayableFields(t as IncomingHttpHeaders);
      if (guardResponse) dropSidecarResponseFields(fields);
      for (const _ in fields) {
        res.addTrailers(fields);
        break;
      }
    }
    res.end();
  }

  function fail(ex: Exchange, code: ErrorCode): void {
    counters.upstreamErrors++;
    if (log.enabled('debug')) log.debug('upstream failure', { decisionId: ex.decisionId, code, err: ex.upstreamError });
    responder.write(ex, code);
  }

  function onDeadline(ex: Exchange): void {
    ex.timer = null;
    if (ex.closed || ex.finished) return;
    cancelUpstream(ex);
    releaseBody(ex);
    fail(ex, 'ERR_UPSTREAM_TIMEOUT');
  }

  // ---- HTTP/2 (h2c) app

  function onH2Response(this: ClientHttp2Stream, headers: IncomingHttpHeaders & IncomingHttpStatusHeader, flags: number): void {
    const ex = exchangeOf(this);
    const end = (flags & END_FLAG) !== 0;
    if (end) this.resume();
    // The app took the call: it is never sent again, and its body need not be kept.
    ex.replayOff = true;
    ex.replay = null;
    if (ex.closed || ex.finished) return;
    ex.responseStarted = true;
    try {
      if (ex.h2 !== null) {
        // gRPC errors arrive trailers-only (one HEADERS frame with END_STREAM): relay as such.
        // Otherwise the response stays open for the app's trailers (`wantTrailers`).
        // Every response carries its decision id, so a caller can quote it to the sidecar's log.
        ex.h2.respond(h2ResponseFields(headers, ex.decisionId, guardResponse), end ? RESPOND_END : RESPOND_WITH_TRAILERS);
        ex.relayedStatus = headers[':status'] ?? 200;
        const gs = headers['grpc-status'];
        if (typeof gs === 'string') ex.relayedGrpcStatus = gs;
        if (!end) relayBody(this, ex.h2);
      } else if (ex.res !== null) {
        const fields = relayableFields(headers);
        if (guardResponse) dropSidecarResponseFields(fields);
        fields[HEADER_DECISION_ID] = ex.decisionId;
        ex.res.writeHead(headers[':status'] ?? 502, fields);
        if (end) ex.res.end();
        else {
          this.on('end', onUpstreamEndToH1);
          this.pipe(ex.res, PIPE_NO_END);
        }
      }
    } catch (err) {
      ex.upstreamError ??= err as Error;
      cancelUpstream(ex);
      fail(ex, 'ERR_UPSTREAM_RESET');
    }
  }

  function onH2Close(this: ClientHttp2Stream): void {
    const ex = exchangeOf(this);
    if (pool !== null && ex.upstream === this && refusedUnprocessed(ex, this)) {
      retryH2(ex, this, pool);
      return;
    }
    releaseBody(ex);
    if (ex.upstreamDone) return;
    ex.upstreamDone = true;
    // END_STREAM from the app reached us: the call completed, whatever RST follows.
    if (this.readableEnded && !wasCut(this)) return;
    if (ex.closed || ex.finished) return;
    fail(ex, ex.responseStarted ? 'ERR_UPSTREAM_RESET' : classifyFailure(ex.upstreamError, this.rstCode));
  }

  /** The app refused the stream before processing it, and the call can be sent again. */
  function refusedUnprocessed(ex: Exchange, up: ClientHttp2Stream): boolean {
    return (
      up.rstCode === h2c.NGHTTP2_REFUSED_STREAM &&
      !ex.upstreamDone &&
      !ex.responseStarted &&
      !ex.closed &&
      !ex.finished &&
      ex.attempts < MAX_ATTEMPTS &&
      (ex.bodyless || !ex.replayOff)
    );
  }

  /** Sends a refused call again on a fresh connection: its headers, the body sent so far, then the rest. */
  function retryH2(ex: Exchange, old: ClientHttp2Stream, p: H2SessionPool): void {
    if (log.enabled('debug')) log.debug('upstream refused the stream unprocessed; sending the call again', { decisionId: ex.decisionId, attempt: ex.attempts + 1 });
    const body = ex.body();
    if (!ex.bodyless) {
      unrelay(body);
      (old as RelaySink)[kRelayFrom] = null;
    }
    ex.upstream = null;
    ex.upstreamError = undefined;
    toH2(ex, p, (old as UpstreamStream)[kSessionOf]);
    const up = ex.upstream as ClientHttp2Stream | null;
    if (up === null || ex.bodyless) return;
    for (const chunk of ex.replay ?? []) up.write(chunk);
    if (body.readableEnded) up.end();
    else if (body.isPaused()) body.resume();
  }

  /** `refusedBy`: the session that refused this call unprocessed (a retry goes to its replacement). */
  function toH2(ex: Exchange, p: H2SessionPool, refusedBy?: ClientHttp2Session): void {
    ex.attempts++;
    let up: ClientHttp2Stream;
    let session: ClientHttp2Session;
    try {
      session = refusedBy === undefined ? p.session() : p.replacing(refusedBy);
      up = session.request(h2RequestFields(ex, ex.authority ?? defaultAuthority), ex.bodyless ? REQUEST_NO_BODY : REQUEST_WITH_BODY);
    } catch (err) {
      ex.upstreamError = err as Error;
      if (isHeaderError(err)) responder.write(ex, 'ERR_REQUEST_INVALID');
      else fail(ex, 'ERR_UPSTREAM_UNAVAILABLE');
      return;
    }
    tag(up, ex);
    // Node forgets a stream's session once the stream is closed; a retry needs to know it.
    (up as UpstreamStream)[kSessionOf] = session;
    ex.upstream = up;
    up.on('response', onH2Response);
    up.on('trailers', onH2UpstreamTrailers);
    up.on('error', onUpstreamError);
    up.on('close', onH2Close);
    if (!ex.bodyless) {
      up.on('wantTrailers', onUpstreamWantTrailers);
      relayBody(ex.body(), up);
    }
  }

  // ---- HTTP/1.1 app

  function onH1Response(this: ClientRequest, upRes: IncomingMessage): void {
    const ex = exchangeOf(this);
    tag(upRes, ex);
    ex.upstreamRes = upRes;
    upRes.on('error', onUpstreamError);
    upRes.on('close', onH1ResponseClose);
    if (ex.closed || ex.finished) {
      upRes.resume();
      return;
    }
    ex.responseStarted = true;
    const status = upRes.statusCode ?? 502;
    try {
      if (ex.h2 !== null) {
        const fields = responseHeadersForH2(status, upRes.headers);
        if (guardResponse) dropSidecarResponseFields(fields);
        fields[HEADER_DECISION_ID] = ex.decisionId;
        ex.h2.respond(fields, RESPOND_WITH_TRAILERS);
        upRes.on('end', onH1UpstreamEnd); // before pipe: trailers are in place when `wantTrailers` fires
        upRes.pipe(ex.h2);
      } else if (ex.res !== null) {
        const fields = relayableFields(upRes.headers);
        if (guardResponse) dropSidecarResponseFields(fields);
        fields[HEADER_DECISION_ID] = ex.decisionId;
        ex.res.writeHead(status, fields);
        upRes.on('end', onUpstreamEndToH1);
        upRes.pipe(ex.res, PIPE_NO_END);
      }
    } catch (err) {
      ex.upstreamError ??= err as Error;
      cancelUpstream(ex);
      fail(ex, 'ERR_UPSTREAM_RESET');
    }
  }

  function onH1ResponseClose(this: IncomingMessage): void {
    const ex = exchangeOf(this);
    releaseBody(ex);
    if (ex.upstreamDone) return;
    ex.upstreamDone = true;
    if (this.complete || ex.closed || ex.finished) return;
    fail(ex, 'ERR_UPSTREAM_RESET');
  }

  function onH1RequestError(this: ClientRequest, err: Error): void {
    const ex = exchangeOf(this);
    ex.upstreamError ??= err;
    // Once a response exists its own close reports the outcome.
    if (ex.upstreamDone || ex.upstreamRes !== null) return;
    ex.upstreamDone = true;
    releaseBody(ex);
    if (ex.closed || ex.finished) return;
    fail(ex, classifyFailure(err, undefined));
  }

  /**
   * The app answered 101 Switching Protocols. The sidecar never asks for an upgrade (it strips
   * `Upgrade`), and a tunnel would carry bytes no policy judged; without this listener Node drops
   * the socket and the call hangs with neither a response nor an error.
   */
  function onH1Upgrade(this: ClientRequest, res: IncomingMessage, socket: Socket): void {
    socket.destroy();
    res.destroy();
    const ex = exchangeOf(this);
    if (ex.upstreamDone) return;
    ex.upstreamDone = true;
    releaseBody(ex);
    if (ex.closed || ex.finished) return;
    fail(ex, 'ERR_UPSTREAM_RESET');
  }

  function toH1(ex: Exchange, a: http.Agent): void {
    const h = ex.fwdHeaders;
    h.host = ex.authority ?? defaultAuthority;
    let req: ClientRequest;
    try {
      req = http.request({
        agent: a,
        host: upstreamHost,
        port: upstreamPort,
        method: ex.method,
        path: ex.query === '' ? ex.path : ex.path + ex.query,
        headers: h,
        setHost: false,
      });
    } catch (err) {
      ex.upstreamError = err as Error;
      if (isHeaderError(err)) responder.write(ex, 'ERR_REQUEST_INVALID');
      else fail(ex, 'ERR_UPSTREAM_UNAVAILABLE');
      return;
    }
    tag(req, ex);
    ex.upstream = req;
    req.on('response', onH1Response);
    req.on('error', onH1RequestError);
    req.on('upgrade', onH1Upgrade);
    if (ex.bodyless) req.end();
    else ex.body().pipe(req);
  }

  return {
    send(ex: Exchange): void {
      if (ex.closed || ex.finished) return;
      if (!ex.grpc && requestTimeoutMs > 0 && ex.timer === null) ex.timer = setTimeout(onDeadline, requestTimeoutMs, ex);
      // The client waited for `100 Continue`; it goes out only now that the call is allowed.
      if (ex.expectContinue && !ex.bodyless) ex.res?.writeContinue();
      if (pool !== null) toH2(ex, pool);
      else toH1(ex, agent as http.Agent);
    },
    armDeadline(ex: Exchange, ms: number): void {
      ex.timer = setTimeout(onDeadline, ms, ex);
    },
    cancel(ex: Exchange): void {
      cancelUpstream(ex);
    },
    async close(): Promise<void> {
      agent?.destroy();
      await pool?.close();
    },
    destroy(): void {
      agent?.destroy();
      pool?.destroy();
    },
  };
}
