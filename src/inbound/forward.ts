import type { Agent, ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { http, https } from '../lib/node-http.ts';
import type { EventEmitter } from 'node:events';
import { isIP, type Socket } from 'node:net';

import type { SidecarConfig } from '../config/sidecar.ts';
import type { ErrorCode } from '../errors/codes.ts';
import type { Logger } from '../lib/log.ts';
import type { Permit } from '../policy/model.ts';
import { fieldRecord, HpackError, markSensitive, sensitiveOf } from '../h2/hpack.ts';
import { type CaSource, CANCEL, H2ClientStream, type H2Connection, type H2StreamHandler, REFUSED_STREAM } from '../h2/conn.ts';
import { formatGrpcTimeout } from './grpc-timeout.ts';
import { type BodySource, type Exchange, exchangeOf, tag } from './exchange.ts';
import type { RequestSlots } from './slots.ts';
import {
  addIdentityHeaders,
  dropSidecarResponseFields,
  hasToken,
  identityClaimsHeader,
  type IdentityHeaderNames,
  isSidecarResponseField,
  relayableFields,
  requestTrailerFields,
  responseHeadersForH2,
} from './headers.ts';
import { H2ConnectionPool } from './pool.ts';
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
  /**
   * Starts the call's `grpc-timeout` deadline, from arrival; `onExpiry(ex)` runs when it passes
   * (the stack's: it refuses a call not yet decided itself, and hands an allowed one to `expire`).
   */
  armDeadline(ex: Exchange, ms: number, onExpiry: (ex: Exchange) => void): void;
  /** The deadline of an allowed call passed: the app's side is cancelled, the caller answered `ERR_UPSTREAM_TIMEOUT`. */
  expire(ex: Exchange): void;
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
  /** As `Forwarder.armDeadline`. */
  armDeadline(ex: Exchange, ms: number, onExpiry: (ex: Exchange) => void): void;
  /** As `Forwarder.expire`. */
  expire(ex: Exchange): void;
  cancel(ex: Exchange): void;
  close(): Promise<void>;
  destroy(): void;
  /**
   * Lets the calls in flight finish and closes each connection as it goes idle; nothing new
   * should be sent. For a pool of pools that evicts this one (`close` would cut those calls).
   */
  retire(): void;
}

/**
 * TLS to the upstream (an https:// outbound destination): `ca` the PEM CAs to trust (null: the
 * system roots; a function: read at each new connection), `servername` the name its certificate
 * is verified for and sent as SNI (default: the url's host).
 */
export interface UpstreamTls {
  readonly ca: CaSource;
  readonly servername?: string | undefined;
}

export interface RelayOptions {
  readonly upstream: Readonly<Pick<SidecarConfig['upstream'], 'url' | 'protocol' | 'connectTimeoutMs' | 'requestTimeoutMs' | 'maxSessions' | 'maxSockets'>> & {
    /** Originate TLS: HTTP/2 with ALPN h2 for `protocol: h2c`, HTTPS for `http1`. */
    readonly tls?: UpstreamTls | undefined;
  };
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
  /** Calls at the upstream at once (`upstream.maxRequests`); absent: no count, no limit. */
  readonly slots?: RequestSlots | undefined;
}

const RESPOND_END = Object.freeze({ endStream: true });
const RESPOND_WITH_TRAILERS = Object.freeze({ waitForTrailers: true });

/** Failures that mean "the app is not there" rather than "the app broke this call". */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EADDRNOTAVAIL', 'EAI_AGAIN']);

function errCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | undefined)?.code;
  return typeof c === 'string' ? c : undefined;
}

/**
 * The app-bound request as HTTP/2 raw fields `[name, value, ...]`, pseudo-headers first, as the
 * HPACK encoder takes them. `ex.fwdHeaders` is left as the stages built it.
 */
function h2RequestFields(ex: Exchange, authority: string, scheme: string): string[] {
  const out = [':method', ex.method, ':scheme', scheme, ':authority', authority, ':path', ex.query === '' ? ex.path : ex.path + ex.query];
  const h = ex.fwdHeaders;
  for (const name in h) {
    const v = h[name];
    // The app gets what is left of the caller's deadline, not the whole of it again.
    if (typeof v === 'string') out.push(name, ex.deadlineAt > 0 && name === 'grpc-timeout' ? formatGrpcTimeout(ex.deadlineAt - performance.now()) : v);
    else if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else if (v !== undefined) out.push(name, String(v));
  }
  if (ex.acceptsTrailers) out.push('te', 'trailers');
  // The caller's never-indexed fields go to the app never-indexed (RFC 7541 §6.2.3).
  markSensitive(out, sensitiveOf(ex.rawHeaders));
  return out;
}

/**
 * The app's HTTP/2 response headers (raw fields, `:status` first) for the caller, as raw fields
 * (no header-object copy): the call's decision id replaces any the
 * app sent, and with `guard` the app cannot send `x-ward-reason` either. Fields the app marked
 * never-indexed (RFC 7541 §6.2.3) stay so.
 */
function h2ResponseFields(fields: readonly string[], decisionId: string, guard: boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    if (name === HEADER_DECISION_ID || (guard && isSidecarResponseField(name))) continue;
    out.push(name, fields[i + 1] as string);
  }
  out.push(HEADER_DECISION_ID, decisionId);
  markSensitive(out, sensitiveOf(fields));
  return out;
}

/**
 * A TLS handshake that failed: the certificate did not verify (node's `CERT_*`, `UNABLE_TO_*`,
 * `*_SELF_SIGNED_*`, `ERR_TLS_CERT_ALTNAME_INVALID`), OpenSSL refused the peer (`ERR_SSL_*`), or
 * it did not select h2 (`ERR_HTTP2_ALPN`). Like a refused connection: the call never left.
 */
const TLS_FAILURE = /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|ERR_HTTP2_ALPN$)/;

/** Why a call failed before any response header arrived. */
function classifyFailure(err: Error | undefined, rstCode: number | undefined): ErrorCode {
  if (rstCode === REFUSED_STREAM) return 'ERR_UPSTREAM_UNAVAILABLE';
  const code = errCode(err);
  if (code !== undefined && (UNREACHABLE.has(code) || TLS_FAILURE.test(code))) return 'ERR_UPSTREAM_UNAVAILABLE';
  if (code === 'ERR_HTTP2_STREAM_CANCEL' || code === 'ERR_HTTP2_INVALID_SESSION') {
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
 * Request bytes kept per call until the app answers, so that a stream the app refused without
 * processing it (REFUSED_STREAM, or above the last stream id of its GOAWAY: RFC 9113 §6.8, §8.7)
 * can be sent again on a fresh connection. An app that closes its connection every N requests
 * (nginx's `keepalive_requests`) does this to every call in flight on it. A larger body is not
 * kept, and such a call fails as before (503 / UNAVAILABLE).
 */
const REPLAY_LIMIT = 64 * 1024;
/** Upstream attempts per call: the first and up to two retries, each on a fresh connection (Istio's default retry policy also retries `refused-stream` twice). */
const MAX_ATTEMPTS = 3;

function keepForReplay(ex: Exchange, chunk: Buffer): void {
  if (ex.replayBytes + chunk.length > REPLAY_LIMIT) {
    ex.replayOff = true;
    ex.replay = null;
    return;
  }
  ex.replayBytes += chunk.length;
  // Kept as the slice it is: copying small chunks (so a held call would not pin the socket read
  // it came in) cost a copy and more garbage per call and did not lower the peak (docs/performance.md, "Memory").
  (ex.replay ??= []).push(chunk);
}

/**
 * The client's request body, passed to the app's HTTP/2 stream without `pipe()`: two
 * module-level listeners on the source, one write per chunk, backpressure through the stream's
 * `drain` (its flow-control window or the socket).
 */
const kRelaying: unique symbol = Symbol('ward.relay.end');
/** A body being relayed names its relay's end handler (null once it stopped). */
type RelaySource = BodySource & { [kRelaying]?: ((this: BodySource) => void) | null };

function relayBody(ex: Exchange, src: BodySource, onEnd: (this: BodySource) => void): void {
  tag(src, ex); // an HTTP/1.1 request is not tagged by the listener (its response is)
  (src as RelaySource)[kRelaying] = onEnd;
  src.on('data', onBodyData);
  src.on('end', onEnd);
  src.resume(); // an H2ServerStream flows only when asked (a node Readable already does)
}

/** Stops relaying from `src` (a no-op for a source never relayed). */
function unrelay(src: BodySource): void {
  const r = src as RelaySource;
  const onEnd = r[kRelaying];
  if (onEnd === undefined || onEnd === null) return;
  r[kRelaying] = null;
  src.off('data', onBodyData);
  src.off('end', onEnd);
}

function onBodyData(this: BodySource, chunk: Buffer): void {
  const ex = exchangeOf(this);
  const up = ex.upstream;
  if (!(up instanceof H2ClientStream) || up.closed) return;
  if (!ex.replayOff) keepForReplay(ex, chunk);
  if (!up.write(chunk)) this.pause();
}

/**
 * A body that was cut, not finished, must never reach the app as complete. ward's HTTP/2 server
 * emits `end` only on END_STREAM, but a stream the client reset is checked anyway (node:http2,
 * which the listeners used before, ended the readable side on a reset too); trailers mean
 * END_STREAM did arrive, whatever RST followed. An HTTP/1.1 body is cut when not `complete`.
 */
function requestCut(ex: Exchange): boolean {
  if (ex.h2 !== null) return (ex.h2.rstCode ?? 0) !== 0 && ex.requestTrailers === null;
  return ex.req !== null && !ex.req.complete;
}

function endUpstreamBody(ex: Exchange, identityPrefix: string | undefined): void {
  const up = ex.upstream;
  if (!(up instanceof H2ClientStream) || up.closed || ex.upstreamDone) return;
  if (requestCut(ex)) {
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
    up.end(t === null ? null : fieldList(requestTrailerFields(t, identityPrefix)));
  } catch (err) {
    // A trailer field HTTP/2 cannot carry: the app must not see the body as complete.
    ex.upstreamError ??= err as Error;
    cancelUpstream(ex);
  }
}

/** An HTTP/2 header object as raw fields. */
function fieldList(h: OutgoingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name in h) {
    const v = h[name];
    if (typeof v === 'string') out.push(name, v);
    else if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else if (v !== undefined) out.push(name, String(v));
  }
  return out;
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
  if (up instanceof http.ClientRequest) up.destroy();
  else up.reset(CANCEL);
}

function onUpstreamError(this: ClientRequest | IncomingMessage, err: Error): void {
  const ex = exchangeOf(this);
  ex.upstreamError ??= err;
}

/** Where a body goes: node's `Writable`, or the caller's `H2ServerStream`. */
interface Sink extends EventEmitter {
  write(chunk: Buffer): boolean;
  end(): unknown;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
}

/**
 * A body from `src` to `dst` for the HTTP/1.1 legs, like `pipe()` (backpressure, `end()` when
 * the source ends unless `end` is false, nothing written to a closed destination) but for any
 * `BodySource` and `Sink`: the source names its destination through `kPumpTo`, a destination
 * waiting for `drain` names its source through `kPumpFrom`.
 */
const kPumpTo: unique symbol = Symbol('ward.pump.to');
const kPumpFrom: unique symbol = Symbol('ward.pump.from');
const kPumpEnd: unique symbol = Symbol('ward.pump.end');
type PumpSource = BodySource & { [kPumpTo]?: Sink | null; [kPumpEnd]?: boolean };
type PumpSink = Sink & { [kPumpFrom]?: BodySource | null };

function pump(src: BodySource, dst: Sink, end: boolean): void {
  const s = src as PumpSource;
  s[kPumpTo] = dst;
  s[kPumpEnd] = end;
  src.on('data', onPumpData);
  src.on('end', onPumpEnd);
  src.resume();
}

function onPumpData(this: PumpSource, chunk: Buffer): void {
  const dst = this[kPumpTo];
  if (dst === undefined || dst === null || dst.destroyed || dst.writableEnded) return;
  if (!dst.write(chunk)) {
    this.pause();
    (dst as PumpSink)[kPumpFrom] = this;
    dst.once('drain', onPumpDrain);
  }
}

function onPumpDrain(this: PumpSink): void {
  const src = this[kPumpFrom];
  this[kPumpFrom] = null;
  if (src !== undefined && src !== null && !src.destroyed && (src as PumpSource)[kPumpTo] === this) src.resume();
}

function onPumpEnd(this: PumpSource): void {
  const dst = this[kPumpTo];
  this[kPumpTo] = null;
  if (this[kPumpEnd] === true && dst !== undefined && dst !== null && !dst.destroyed && !dst.writableEnded) dst.end();
}

/** The caller's HTTP/2 stream drained: the app may send what was held back. */
function onDownstreamDrain(this: Sink): void {
  const ex = exchangeOf(this);
  const n = ex.downUnacked;
  ex.downUnacked = 0;
  const up = ex.upstream;
  if (up instanceof H2ClientStream) up.consumed(n);
}

export function createForwarder(o: ForwarderOptions): Forwarder {
  const prefix = o.identityNames.decisionId.slice(0, -'decision-id'.length);
  const relay = createRelay({ ...o, identityPrefix: o.identityPrefix ?? prefix, guardSidecarFields: true });
  const identityNames = o.identityNames;
  return {
    forward(ex: Exchange, permit: Permit): void {
      if (ex.closed || ex.finished) return;
      let claims = '';
      if (permit.identity !== null) {
        const c = identityClaimsHeader(permit.identity);
        if (c === null) {
          o.responder.write(ex, 'ERR_TOKEN_CLAIMS'); // checked before evaluate; never forward unnamed
          return;
        }
        claims = c;
      }
      addIdentityHeaders(ex.fwdHeaders, identityNames, permit.identity, claims, ex.decisionId);
      relay.send(ex);
    },
    armDeadline: (ex, ms, onExpiry) => relay.armDeadline(ex, ms, onExpiry),
    expire: (ex) => relay.expire(ex),
    cancel: (ex) => relay.cancel(ex),
    close: () => relay.close(),
    destroy: () => relay.destroy(),
  };
}

export function createRelay(o: RelayOptions): Relay {
  const { responder, counters, log } = o;
  const url = new URL(o.upstream.url);
  // `[::1]` in a URL is `::1` to connect to (and for isIP and TLS names below): with the
  // brackets it was looked up as a name, and never found (found in review).
  const upstreamHost = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const upTls = o.upstream.tls;
  const upstreamPort = url.port === '' ? (upTls === undefined ? 80 : 443) : Number(url.port);
  const defaultAuthority = url.host;
  /** `:scheme` says how this hop is carried (RFC 9113 §8.3.1): https over TLS (found in review: always http). */
  const scheme = upTls === undefined ? 'http' : 'https';
  const requestTimeoutMs = o.upstream.requestTimeoutMs;
  const identityPrefix = o.identityPrefix;
  const guardResponse = o.guardSidecarFields === true;
  const slots = o.slots ?? null;

  function onBodyEnd(this: BodySource): void {
    unrelay(this);
    endUpstreamBody(exchangeOf(this), identityPrefix);
  }

  function onH1UpstreamEnd(this: IncomingMessage): void {
    const t = relayableFields(this.trailers);
    if (guardResponse) dropSidecarResponseFields(t);
    exchangeOf(this).trailers = t;
  }

  /** The app's body ended towards an HTTP/1.1 client: chunked trailers if it asked for them. */
  function endToH1(ex: Exchange, res: ServerResponse): void {
    const t = ex.upstreamRes !== null ? ex.upstreamRes.trailers : ex.trailers;
    if (ex.acceptsTrailers && t !== null) {
      const fields = relayableFields(t as IncomingHttpHeaders);
      if (guardResponse) dropSidecarResponseFields(fields);
      for (const _ in fields) {
        try {
          res.addTrailers(fields);
        } catch (err) {
          // A field Node will not write (the h2 client refuses such values; this is the guard
          // behind it): the body is complete, its trailers cannot be, so the caller must not
          // take it for a whole response.
          ex.upstreamError ??= err as Error;
          res.destroy();
          return;
        }
        break;
      }
    }
    res.end();
  }

  function onUpstreamEndToH1(this: IncomingMessage): void {
    const ex = exchangeOf(this);
    const res = ex.res;
    if (res === null || ex.closed || ex.finished) return;
    endToH1(ex, res);
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

  // ---- HTTP/2 (h2c) app, through ward's own client (src/h2/conn.ts)

  /** The app's response ended (END_STREAM on DATA or trailers): end the caller's side. */
  function endDownstream(ex: Exchange): void {
    if (ex.closed || ex.finished) return;
    if (ex.h2 !== null) ex.h2.end(); // `wantTrailers` sends ex.trailers (server.ts)
    else if (ex.res !== null) endToH1(ex, ex.res);
  }

  const h2Events: H2StreamHandler = {
    response(s, fields, end) {
      const ex = s.owner as Exchange;
      if (ex.upstream !== s) return;
      // The app took the call: it is never sent again, and its body need not be kept.
      ex.replayOff = true;
      ex.replay = null;
      if (ex.closed || ex.finished) {
        cancelUpstream(ex);
        return;
      }
      ex.responseStarted = true;
      try {
        if (ex.h2 !== null) {
          // gRPC errors arrive trailers-only (one HEADERS frame with END_STREAM): relayed as such.
          // Otherwise the response stays open for the app's trailers (`wantTrailers`).
          // Every response carries its decision id, so a caller can quote it to the sidecar's log.
          ex.h2.respond(h2ResponseFields(fields, ex.decisionId, guardResponse), end ? RESPOND_END : RESPOND_WITH_TRAILERS);
          ex.relayedStatus = Number(fields[1]);
          for (let i = 2; i < fields.length; i += 2) {
            if (fields[i] === 'grpc-status') {
              ex.relayedGrpcStatus = fields[i + 1];
              break;
            }
          }
        } else if (ex.res !== null) {
          const obj = fieldRecord(fields, 2) as IncomingHttpHeaders;
          const out = relayableFields(obj);
          if (guardResponse) dropSidecarResponseFields(out);
          out[HEADER_DECISION_ID] = ex.decisionId;
          ex.res.writeHead(Number(fields[1]), out);
          if (end) ex.res.end();
        }
      } catch (err) {
        ex.upstreamError ??= err as Error;
        cancelUpstream(ex);
        fail(ex, 'ERR_UPSTREAM_RESET');
      }
    },

    data(s, chunk, end) {
      const ex = s.owner as Exchange;
      if (ex.upstream !== s || ex.closed || ex.finished) return;
      const n = chunk.length;
      if (n > 0) {
        const down = (ex.h2 ?? ex.res) as Sink;
        if (down.write(chunk)) s.consumed(n);
        else {
          // Held back until the caller reads: the app's stream window stays closed meanwhile.
          if (ex.downUnacked === 0) down.once('drain', onDownstreamDrain);
          ex.downUnacked += n;
        }
      }
      if (end) endDownstream(ex);
    },

    trailers(s, fields) {
      const ex = s.owner as Exchange;
      if (ex.upstream !== s) return;
      const t = fieldRecord(fields, 0) as IncomingHttpHeaders;
      if (guardResponse) dropSidecarResponseFields(t);
      ex.trailers = t;
      endDownstream(ex);
    },

    drain(s) {
      const ex = s.owner as Exchange;
      if (ex.upstream !== s) return;
      const body = ex.body();
      if (!body.destroyed && body.isPaused()) body.resume();
    },

    close(s) {
      const ex = s.owner as Exchange;
      if (ex.upstream !== s) return;
      onUpstreamClose(ex, s);
      // The caller's side closed first: Exchange.release kept the upstream until now.
      if (ex.closed && ex.upstream === s) ex.upstream = null;
    },
  };

  function onUpstreamClose(ex: Exchange, s: H2ClientStream): void {
    if (refusedUnprocessed(ex, s)) {
      retryH2(ex, s);
      return;
    }
    releaseBody(ex);
    if (ex.upstreamDone) return;
    ex.upstreamDone = true;
    // END_STREAM from the app reached us: the call completed, whatever RST follows.
    if (s.remoteEnded) return;
    ex.upstreamError ??= s.error;
    if (ex.closed || ex.finished) return;
    fail(ex, ex.responseStarted ? 'ERR_UPSTREAM_RESET' : classifyFailure(s.error, s.rstCode));
  }

  const pool = o.upstream.protocol === 'h2c' ? new H2ConnectionPool(upstreamHost, upstreamPort, o.upstream.maxSessions, o.upstream.connectTimeoutMs, h2Events, log, upTls) : null;
  const agent = pool !== null ? null : upTls === undefined ? new http.Agent({ keepAlive: true, maxSockets: o.upstream.maxSockets }) : httpsAgent(upTls, o.upstream.maxSockets, upstreamHost);
  /**
   * WebSocket handshakes over TLS: a connection each, never kept (an answer other than 101 closes
   * it; found in review: a keep-alive agent per handshake held one connection open at the
   * destination for each refused handshake, past `close()`). Cleartext ones use no agent.
   */
  const upgradeAgent = pool !== null || upTls === undefined ? null : httpsAgent(upTls, Infinity, upstreamHost, false);
  const request = pool !== null || upTls === undefined ? http.request : https().request;

  /** The app refused the stream before processing it, and the call can be sent again. */
  function refusedUnprocessed(ex: Exchange, up: H2ClientStream): boolean {
    return (
      up.refused &&
      pool !== null &&
      !ex.upstreamDone &&
      !ex.responseStarted &&
      !ex.closed &&
      !ex.finished &&
      ex.attempts < MAX_ATTEMPTS &&
      (ex.bodyless || !ex.replayOff)
    );
  }

  /** Sends a refused call again on a fresh connection: its headers, the body sent so far, then the rest. */
  function retryH2(ex: Exchange, old: H2ClientStream): void {
    if (log.enabled('debug')) log.debug('upstream refused the stream unprocessed; sending the call again', { decisionId: ex.decisionId, attempt: ex.attempts + 1 });
    const body = ex.body();
    if (!ex.bodyless) unrelay(body);
    ex.upstream = null;
    ex.upstreamError = undefined;
    // The body is not relayed again until what was kept has gone out: resuming ward's HTTP/2
    // server stream delivers what it held at once, and its end too, so the app got the rest
    // before the replay, twice, or a complete request with the replay dropped (found in review).
    toH2(ex, pool as H2ConnectionPool, old.conn, false);
    const up = ex.upstream as H2ClientStream | null;
    if (up === null || ex.bodyless) return;
    for (const chunk of ex.replay ?? []) up.write(chunk);
    if (body.readableEnded) endUpstreamBody(ex, identityPrefix);
    else relayBody(ex, body, onBodyEnd);
  }

  /**
   * `refusedBy`: the connection that refused this call unprocessed (a retry goes to its
   * replacement). `relay` false: the caller relays the body itself (a retry, after its replay).
   */
  function toH2(ex: Exchange, p: H2ConnectionPool, refusedBy?: H2Connection, relay = true): void {
    ex.attempts++;
    let up: H2ClientStream;
    try {
      const conn = refusedBy === undefined ? p.connection() : p.replacing(refusedBy);
      up = conn.request(h2RequestFields(ex, ex.authority ?? defaultAuthority, scheme), ex.bodyless, ex);
    } catch (err) {
      ex.upstreamError = err as Error;
      if (err instanceof HpackError) responder.write(ex, 'ERR_REQUEST_INVALID'); // a field HTTP/2 cannot carry
      else fail(ex, 'ERR_UPSTREAM_UNAVAILABLE');
      return;
    }
    ex.upstream = up;
    if (relay && !ex.bodyless) relayBody(ex, ex.body(), onBodyEnd);
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
    const status = upRes.statusCode ?? 502;
    if (status < 200) {
      // A 1xx as the final answer: Node reports a 101 without `Connection: Upgrade` this way.
      // Relayed, it would switch the caller's protocol to nothing judged (found in review).
      upRes.resume();
      ex.upstreamError ??= new Error(`app answered ${status} as its response`);
      cancelUpstream(ex);
      fail(ex, 'ERR_UPSTREAM_RESET');
      return;
    }
    ex.responseStarted = true;
    try {
      if (ex.h2 !== null) {
        const fields = responseHeadersForH2(status, upRes.headers);
        if (guardResponse) dropSidecarResponseFields(fields);
        fields[HEADER_DECISION_ID] = ex.decisionId;
        ex.h2.respond(fields, RESPOND_WITH_TRAILERS);
        upRes.on('end', onH1UpstreamEnd); // before pipe: trailers are in place when `wantTrailers` fires
        pump(upRes, ex.h2, true);
      } else if (ex.res !== null) {
        const fields = relayableFields(upRes.headers);
        if (guardResponse) dropSidecarResponseFields(fields);
        fields[HEADER_DECISION_ID] = ex.decisionId;
        ex.res.writeHead(status, fields);
        upRes.on('end', onUpstreamEndToH1);
        pump(upRes, ex.res, false);
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
   * The app answered 101 Switching Protocols. To an allowed WebSocket handshake that is the
   * tunnel (`tunnel`). To any other call the sidecar never asked for an upgrade (it strips
   * `Upgrade`), and a tunnel would carry bytes no policy judged; without this listener Node drops
   * the socket and the call hangs with neither a response nor an error.
   */
  function onH1Upgrade(this: ClientRequest, res: IncomingMessage, socket: Socket, head: Buffer): void {
    const ex = exchangeOf(this);
    if (ex.upgrade !== null && !ex.upstreamDone) {
      tunnel(ex, res, socket, head);
      return;
    }
    socket.destroy();
    res.destroy();
    if (ex.upstreamDone) return;
    ex.upstreamDone = true;
    releaseBody(ex);
    if (ex.closed || ex.finished) return;
    fail(ex, 'ERR_UPSTREAM_RESET');
  }

  /**
   * An allowed WebSocket handshake the app accepted: the app's 101 goes to the caller (its
   * fields relayed as for any response, the sidecar's own dropped, the decision id added), then
   * bytes flow both ways untouched until either side closes, which closes the other. The call was
   * judged once, on its handshake, as Envoy and Istio judge an upgrade: messages are not (the
   * tunnel outlives the token that opened it; docs/websockets.md).
   */
  function tunnel(ex: Exchange, res: IncomingMessage, up: Socket, upHead: Buffer): void {
    ex.upstreamDone = true;
    ex.upstreamRes = res;
    releaseBody(ex);
    const down = (ex.upgrade as NonNullable<Exchange['upgrade']>).socket;
    if (ex.closed || ex.finished || down.destroyed) {
      up.destroy();
      return;
    }
    // RFC 6455 §4.1: the app must switch to websocket, and to nothing else.
    if (!hasToken(String(res.headers.upgrade ?? ''), 'websocket')) {
      up.destroy();
      ex.upstreamError ??= new Error('app switched to another protocol than websocket');
      fail(ex, 'ERR_UPSTREAM_RESET');
      return;
    }
    if (ex.timer !== null) {
      clearTimeout(ex.timer); // `requestTimeoutMs` bounds a response, not a tunnel's life
      ex.timer = null;
    }
    const fields = relayableFields(res.headers);
    if (guardResponse) dropSidecarResponseFields(fields);
    fields[HEADER_DECISION_ID] = ex.decisionId;
    let head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n';
    for (const name in fields) {
      const v = fields[name];
      if (Array.isArray(v)) for (const x of v) head += `${name}: ${x}\r\n`;
      else if (v !== undefined) head += `${name}: ${String(v)}\r\n`;
    }
    ex.responseStarted = true;
    if (ex.res !== null) ex.res.statusCode = 101; // for the span and the decision's status
    const close = (): void => {
      up.destroy();
      down.destroy();
    };
    up.on('error', close);
    up.on('close', close);
    down.on('error', close);
    down.on('close', close);
    up.setNoDelay(true);
    down.write(`${head}\r\n`, 'latin1');
    if (upHead.length > 0) down.write(upHead);
    const downHead = (ex.upgrade as NonNullable<Exchange['upgrade']>).head;
    if (downHead.length > 0) up.write(downHead);
    up.pipe(down);
    down.pipe(up);
  }

  const connectTimeoutMs = o.upstream.connectTimeoutMs;

  /**
   * `connectTimeoutMs` for HTTP/1.1 apps and destinations, as the HTTP/2 pool has it: a new
   * socket that has not connected (and, over TLS, finished its handshake) in time is destroyed
   * with ETIMEDOUT, so the call fails with ERR_UPSTREAM_UNAVAILABLE instead of waiting for ever on
   * a black-holed address or a peer that never answers the ClientHello (found in review). A
   * kept-alive socket is already connected: nothing to arm.
   */
  function onH1Socket(socket: Socket): void {
    if (!socket.connecting || connectTimeoutMs <= 0) return;
    const ready = (socket as Socket & { encrypted?: boolean }).encrypted === true ? 'secureConnect' : 'connect';
    const t = setTimeout(() => socket.destroy(Object.assign(new Error('upstream connect timeout'), { code: 'ETIMEDOUT' })), connectTimeoutMs);
    t.unref();
    const clear = (): void => clearTimeout(t);
    socket.once(ready, clear);
    socket.once('close', clear);
  }

  function toH1(ex: Exchange, a: Agent): void {
    const h = ex.fwdHeaders;
    h.host = ex.authority ?? defaultAuthority;
    if (ex.upgrade !== null) {
      // The handshake, asked of the app as the caller asked it (its Sec-WebSocket-* fields went
      // through); on a connection of its own, which the tunnel then keeps.
      h.connection = 'Upgrade';
      h.upgrade = 'websocket';
    }
    // Every body goes out framed. Without Content-Length (an HTTP/2 caller's, or a chunked one),
    // node's http.request chunks only POST, PUT, PATCH and the like: a GET, HEAD, DELETE or
    // OPTIONS body would follow the headers raw, and the app would parse it as the next request
    // on the connection, one no policy judged (a smuggled request).
    if (!ex.bodyless && h['content-length'] === undefined) h['transfer-encoding'] = 'chunked';
    let req: ClientRequest;
    try {
      req = request({
        // a handshake gets a connection of its own, which its tunnel keeps (over TLS, with the
        // destination's TLS settings)
        agent: ex.upgrade === null ? a : (upgradeAgent ?? false),
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
    req.on('socket', onH1Socket);
    if (ex.bodyless) req.end();
    else {
      const body = ex.body();
      tag(body, ex); // an HTTP/1.1 request is not tagged by the listener (its response is)
      // Before pump: an HTTP/2 caller's body held while the call was judged (a token checked
      // asynchronously) flows, and ends, inside pump's resume().
      body.once('end', onBodyEndToH1);
      pump(body, req, false);
    }
  }

  /**
   * The caller's body ended: its trailers go on to the HTTP/1.1 app in the last chunk, as to an
   * HTTP/2 app (`endUpstreamBody`), without credentials or identity fields. A body sent with a
   * `Content-Length` has no last chunk to carry them; they are dropped (RFC 9110 §6.5.1 lets a
   * recipient discard trailers).
   */
  function onBodyEndToH1(this: BodySource): void {
    const ex = exchangeOf(this);
    const up = ex.upstream;
    if (!(up instanceof http.ClientRequest) || up.destroyed || up.writableEnded) return;
    const t = ex.requestTrailers ?? (ex.req !== null && ex.req.complete ? ex.req.trailers : null);
    // chunked: `toH1` asked for it (no Content-Length); Node decides it only once the head goes out
    if (t !== null && (up.getHeader('transfer-encoding') === 'chunked' || (up as ClientRequest & { chunkedEncoding?: boolean }).chunkedEncoding === true)) {
      const fields = requestTrailerFields(t, identityPrefix);
      let any = false;
      for (const _ in fields) {
        any = true;
        break;
      }
      try {
        if (any) up.addTrailers(fields);
      } catch (err) {
        // a field HTTP/1.1 cannot carry: the app must not see the body as complete
        ex.upstreamError ??= err as Error;
        cancelUpstream(ex);
        return;
      }
    }
    up.end();
  }

  return {
    send(ex: Exchange): void {
      if (ex.closed || ex.finished) return;
      // A closed exchange was released already, so a place is taken only by one still open:
      // its release comes later and gives the place back (once: one place per exchange).
      if (slots !== null && ex.slots === null) {
        if (slots.max !== 0 && slots.active >= slots.max) {
          slots.overflowed++;
          responder.write(ex, 'ERR_UPSTREAM_OVERLOADED');
          return;
        }
        slots.active++;
        ex.slots = slots;
      }
      if (!ex.grpc && requestTimeoutMs > 0 && ex.timer === null) ex.timer = setTimeout(onDeadline, requestTimeoutMs, ex);
      // The client waited for `100 Continue`; it goes out only now that the call is allowed.
      if (ex.expectContinue && !ex.bodyless) ex.res?.writeContinue();
      if (pool !== null) toH2(ex, pool);
      else toH1(ex, agent as Agent);
    },
    armDeadline(ex: Exchange, ms: number, onExpiry: (ex: Exchange) => void): void {
      ex.deadlineAt = performance.now() + ms;
      ex.timer = setTimeout(onExpiry, ms, ex);
    },
    expire: onDeadline,
    cancel(ex: Exchange): void {
      cancelUpstream(ex);
    },
    async close(): Promise<void> {
      agent?.destroy();
      upgradeAgent?.destroy();
      await pool?.close();
    },
    destroy(): void {
      agent?.destroy();
      upgradeAgent?.destroy();
      pool?.destroy();
    },
    retire(): void {
      if (agent !== null) {
        // A socket whose response ends is destroyed instead of kept (Node's agent reads
        // `keepAlive` then); the idle ones go now.
        (agent as Agent & { keepAlive: boolean }).keepAlive = false;
        for (const list of Object.values(agent.freeSockets)) for (const socket of list ?? []) socket.destroy();
      }
      void pool?.close(); // GOAWAY: the streams open finish, then the connection ends
    },
  };
}

/** HTTPS keep-alive agent for an https:// HTTP/1.1 upstream: certificate verified, ALPN http/1.1. */
function httpsAgent(t: UpstreamTls, maxSockets: number, host: string, keepAlive = true): Agent {
  const options = {
    keepAlive,
    maxSockets,
    ALPNProtocols: ['http/1.1'],
    // Always set: without it node takes the name from the Host header, which is the app's, not
    // the destination's. '' (an IP url) sends no SNI and verifies the certificate for the IP.
    servername: t.servername ?? (isIP(host) === 0 ? host : ''),
  };
  const ca = t.ca;
  if (typeof ca !== 'function') return new (https().Agent)({ ...options, ...(ca === null ? {} : { ca }) });
  // The CAs read again for each new connection (the agent's own options are fixed).
  class Rereading extends https().Agent {
    override createConnection(o: Parameters<Agent['createConnection']>[0], cb?: Parameters<Agent['createConnection']>[1]): ReturnType<Agent['createConnection']> {
      const pem = (ca as () => Buffer | null)();
      return super.createConnection(pem === null ? o : { ...o, ca: pem }, cb);
    }
  }
  return new Rereading(options);
}
