import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { http } from '../lib/node-http.ts';
import type { IncomingHttpHeaders } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { H2ServerConnection, type H2ServerStream } from '../h2/server.ts';
import { resolveFrom } from '../config/sidecar.ts';
import type { ErrorCode } from '../errors/codes.ts';
import { ERROR_TABLE } from '../errors/table.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { type CertPair, CertPairError, loadCertPair, watchCertPair } from '../lib/cert-pair.ts';
import { issueAt } from '../lib/yaml-locate.ts';
import { isLoopbackIp } from '../lib/loopback.ts';
import { createDecisionIds } from './decision-id.ts';
import { Exchange, exchangeOf, tag, type WebSocketUpgrade } from './exchange.ts';
import { RequestSlots } from './slots.ts';
import { createForwarder } from './forward.ts';
import { hasToken, identityHeaderNames } from './headers.ts';
import { ErrorResponder, HEADER_DECISION_ID, HEADER_REASON } from './respond.ts';
import { createStack } from './stack.ts';
import type { InboundCounters, InboundDeps } from './types.ts';
import type { Logger } from '../lib/log.ts';

/**
 * The inbound listeners:
 * - one cleartext port for HTTP/1.1 and HTTP/2 prior knowledge (h2c): the first bytes are
 *   compared with the HTTP/2 connection preface (RFC 9113 §3.4) and the socket is handed to
 *   an `http2` or an `http` server that never listens itself;
 * - an optional TLS port negotiating `h2` or `http/1.1` by ALPN, dispatched the same way.
 *   (Not `http2.createSecureServer({ allowHTTP1 })`: its HTTP/1.1 side reports through the
 *   `request` event, and listening to that switches on the compatibility layer for HTTP/2
 *   streams too, so every stream would be handled twice.)
 *
 * Both feed one stack (stack.ts) through `Exchange`. `drain()` stops accepting, sends GOAWAY
 * on every HTTP/2 session, answers HTTP/1.1 with `Connection: close`, and destroys whatever is
 * still open at the deadline.
 */

export type { DecisionRecord, InboundCounters, InboundDeps } from './types.ts';

/**
 * The listener machinery without a stage behind it, so the outbound (egress) listener reuses it
 * as is: sniffing, HTTP/2 and HTTP/1.1 servers, `Exchange` construction, drain. The stage
 * supplies `handle` (its stack) and what to do with upstream connections.
 */
export interface ListenerOptions {
  readonly listen: { readonly host: string; readonly port: number };
  readonly tls?:
    | {
        readonly host: string;
        /** A TLS-only listener's port; without it TLS is taken only on the cleartext port, sniffed. */
        readonly port?: number | undefined;
        readonly cert: Buffer;
        readonly key: Buffer;
        /** Re-read the pair from these files when they change (a renewed certificate), checked every `pollMs`. */
        readonly reload?: { readonly certFile: string; readonly keyFile: string; readonly pollMs: number } | undefined;
        /** Refuse cleartext connections on the cleartext listener, except from loopback. */
        readonly strict?: boolean | undefined;
      }
    | undefined;
  readonly maxHeaderListBytes: number;
  readonly maxConcurrentStreams: number;
  /**
   * HTTP/1.1 WebSocket handshakes (`Upgrade: websocket`) become calls with `Exchange.upgrade`
   * (judged like any call, then tunnelled by the forwarder). Off: the upgrade is ignored, the
   * request goes on as a plain GET without `Upgrade`.
   */
  readonly webSockets?: boolean;
  readonly counters: ListenerCounters;
  readonly responder: ErrorResponder;
  readonly log: Logger;
  /** Takes a new call (the stage's stack). */
  handle(ex: Exchange): void;
  /**
   * Records a request refused before it was one (the HTTP/1.1 parser's refusals, CONNECT, an
   * HTTP/2 header list over the limit: `Stack.refuseUnparsed`); the listener writes the answer,
   * with `ex.decisionId`, and ends `ex.span`. Without it the answer still carries a decision id,
   * but nothing records it.
   */
  refuseUnparsed?(ex: Exchange, code: ErrorCode, detail: string): void;
  /** The client went away: cancel the call's upstream side, if any. */
  cancel(ex: Exchange): void;
  /** Once no call is left: release upstream connections gracefully. */
  release(): Promise<void>;
  /** Immediate: destroy upstream connections. */
  destroy(): void;
}

export type ListenerCounters = Pick<InboundCounters, 'activeStreams' | 'h2Sessions' | 'h1Connections'>;

export interface Listeners {
  readonly ports: { readonly cleartext: number; readonly tls: number | undefined };
  drain(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface Inbound {
  readonly ports: { readonly cleartext: number; readonly tls: number | undefined };
  /** Live counters. */
  readonly counters: Readonly<InboundCounters>;
  /**
   * Graceful shutdown: stop accepting, GOAWAY / `Connection: close`, let in-flight calls finish
   * for up to `deadlineMs`, then destroy what is left and release the app connections. The
   * inbound is closed when the promise resolves.
   */
  drain(deadlineMs: number): Promise<void>;
  /** Immediate shutdown: every connection is destroyed. */
  close(): Promise<void>;
}

/** "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/**
 * The first byte of a TLS record carrying a handshake (RFC 8446 §5.1: content type 22): a
 * ClientHello. No HTTP/1.1 method and not the HTTP/2 preface starts with it.
 */
const TLS_HANDSHAKE = 0x16;
/**
 * What an h2c connection gets when TLS is required: the server preface (an empty SETTINGS,
 * RFC 9113 §3.4), then GOAWAY with last stream 0, INADEQUATE_SECURITY (0xc, §7) and the reason
 * code as debug data.
 */
const GOAWAY_TLS_REQUIRED = ((): Buffer => {
  const debug = Buffer.from('ERR_TLS_REQUIRED', 'latin1');
  const b = Buffer.alloc(9 + 9 + 8 + debug.length);
  b[3] = 0x4; // SETTINGS, length 0, stream 0
  b.writeUIntBE(8 + debug.length, 9, 3);
  b[12] = 0x7; // GOAWAY on stream 0
  b.writeUInt32BE(0, 18); // last stream id
  b.writeUInt32BE(0xc, 22); // INADEQUATE_SECURITY
  debug.copy(b, 26);
  return b;
})();

/** A connection must say which protocol it speaks within this time (slowloris on the sniff). */
const SNIFF_TIMEOUT_MS = 10_000;
/** HTTP/1.1 header block deadline (Node's `headersTimeout`, default 60 s). */
const H1_HEADERS_TIMEOUT_MS = 30_000;
const H1_KEEP_ALIVE_TIMEOUT_MS = 5_000;
const EMPTY_TRAILERS = Object.freeze({});
const NO_FIELDS: readonly string[] = Object.freeze([]);

const kActive: unique symbol = Symbol('ward.h1.active');
type H1Socket = Socket & { [kActive]?: number };

/** How long a refused WebSocket handshake's answer may take to reach a caller that does not read it. */
const UPGRADE_CLOSE_MS = 2000;

/**
 * RFC 6455 §4.1: a GET whose `Upgrade` names `websocket` and whose `Connection` names `upgrade`
 * (both token lists, case-insensitive). Anything else that asks for an upgrade is a plain request.
 */
function isWebSocketHandshake(req: IncomingMessage): boolean {
  if (req.method !== 'GET') return false;
  const upgrade = req.headers.upgrade;
  const connection = req.headers.connection;
  return typeof upgrade === 'string' && typeof connection === 'string' && hasToken(upgrade, 'websocket') && hasToken(connection, 'upgrade');
}

/** Ends the call's span with what the caller was sent (tracing only). */
function endSpan(ex: Exchange): void {
  const span = ex.span;
  if (span === null) return;
  ex.span = null;
  let status = 0;
  let grpcStatus = -1;
  let failed = ex.upstreamError !== undefined;
  if (ex.h2 !== null) {
    let headGrpcStatus: unknown;
    if (ex.relayedStatus !== 0) {
      status = ex.relayedStatus;
      headGrpcStatus = ex.relayedGrpcStatus;
    } else {
      const sent = (ex.h2.sentHeaders as OutgoingHttpHeaders | undefined) ?? {};
      status = Number(sent[':status'] ?? 0);
      headGrpcStatus = sent['grpc-status'];
    }
    const gs = ex.h2.sentTrailers?.['grpc-status'] ?? headGrpcStatus;
    if (gs !== undefined) grpcStatus = Number(gs);
    if (ex.h2.rstCode !== undefined && ex.h2.rstCode !== 0) failed = true;
  } else if (ex.res !== null) {
    // A WebSocket tunnel's 101 went out raw (forward.ts `tunnel`), and its response never ends.
    if (ex.upgrade !== null && ex.res.statusCode === 101) status = 101;
    else {
      status = ex.res.headersSent ? ex.res.statusCode : 0;
      if (!ex.res.writableFinished) failed = true;
    }
  }
  try {
    span.end(status, grpcStatus, failed);
  } catch {
    // telemetry never fails a call
  }
}

function onRequestTrailers(this: H2ServerStream, trailers: IncomingHttpHeaders): void {
  exchangeOf(this).requestTrailers = trailers;
}

function onWantTrailers(this: H2ServerStream): void {
  // Empty trailers end the stream with an empty DATA frame, so this always closes it.
  this.sendTrailers((exchangeOf(this).trailers as Record<string, string> | null) ?? EMPTY_TRAILERS);
}

/** RFC 9113 §9.2: HTTP/2 over TLS needs TLS 1.2 or later. */
const TLS_MIN_VERSION = 'TLSv1.2';
/** How often the TLS listener's certificate files are checked for a renewal. */
const CERT_POLL_MS = 10_000;

/** The TLS listener's first pair, read now: a file that cannot be read (or a pair that does not load) stops the start with the field path. */
function tlsListener(
  cfg: InboundDeps['config'],
  configFile: string | undefined,
  t: NonNullable<InboundDeps['config']['inbound']['tls']>,
  pollMs: number,
): NonNullable<ListenerOptions['tls']> {
  const certFile = resolveFrom(cfg, t.certFile);
  const keyFile = resolveFrom(cfg, t.keyFile);
  let pair: CertPair;
  try {
    pair = loadCertPair(certFile, keyFile);
  } catch (err) {
    if (!(err instanceof CertPairError)) throw err;
    // A file: at the field naming it; a pair that does not load: at `tls:` itself.
    const path = err.part === 'pair' ? ['inbound', 'tls'] : ['inbound', 'tls', err.part];
    throw new ConfigError([issueAt(cfg.locator, configFile ?? err.file, path, err.message, err.part === 'pair' ? 'key' : 'value')]);
  }
  return { host: t.host, port: t.port, ...pair, reload: { certFile, keyFile, pollMs }, strict: t.mode === 'strict' };
}

function listen(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) resolve();
    else server.close(() => resolve());
  });
}

export async function createInbound(deps: InboundDeps): Promise<Inbound> {
  const cfg = deps.config;
  const log = deps.log;
  const counters: InboundCounters = {
    activeStreams: 0,
    requests: 0,
    allowed: 0,
    denied: 0,
    upstreamErrors: 0,
    upstreamRequests: new RequestSlots(cfg.upstream.maxRequests),
    h2Sessions: 0,
    h1Connections: 0,
  };
  const responder = new ErrorResponder(cfg.service);
  const forwarder = createForwarder({
    upstream: cfg.upstream,
    identityNames: identityHeaderNames(cfg.identityHeaders.prefix),
    responder,
    counters,
    slots: counters.upstreamRequests,
    log,
  });
  const stack = createStack({ deps, responder, forwarder, counters });
  const tlsCfg = cfg.inbound.tls;
  const listeners = await createListeners({
    listen: cfg.inbound.listen,
    tls:
      tlsCfg === undefined
        ? undefined
        : tlsListener(cfg, deps.configFile, tlsCfg, deps.certPollMs ?? CERT_POLL_MS),
    maxHeaderListBytes: cfg.inbound.maxHeaderListBytes,
    maxConcurrentStreams: cfg.inbound.maxConcurrentStreams,
    // tunnelled to an HTTP/1.1 app only: an h2c one would need RFC 8441 extended CONNECT
    webSockets: cfg.upstream.protocol === 'http1',
    counters,
    responder,
    log,
    handle: (ex) => stack.handle(ex),
    refuseUnparsed: (ex, code, detail) => stack.refuseUnparsed(ex, code, detail),
    cancel: (ex) => forwarder.cancel(ex),
    release: () => forwarder.close(),
    destroy: () => forwarder.destroy(),
  });
  return { ports: listeners.ports, counters, drain: (ms) => listeners.drain(ms), close: () => listeners.close() };
}

export async function createListeners(o: ListenerOptions): Promise<Listeners> {
  const { log, counters, responder } = o;
  const nextDecisionId = createDecisionIds();

  const sniffing = new Set<Socket>();
  const sessions = new Set<H2ServerConnection>();
  const h1Sockets = new Set<H1Socket>();
  /** HTTP/1.1 responses in flight: on drain, those not yet started get `Connection: close`. */
  const h1Responses = new Set<ServerResponse>();
  let draining = false;
  let onIdle: (() => void) | null = null;

  /**
   * The last resort of the request boundary: the stack refuses a call whose stage threw through
   * its own deny path, with a decision record (stack.ts `handle`); what still escapes (that path
   * itself threw) becomes a 500 for this call, never a crash. The responder writes once at most.
   */
  function dispatch(ex: Exchange): void {
    try {
      o.handle(ex);
    } catch (err) {
      log.error('request handling threw', { decisionId: ex.decisionId, err });
      responder.write(ex, 'ERR_INTERNAL');
    }
  }

  function checkIdle(): void {
    if (onIdle !== null && sessions.size === 0 && h1Sockets.size === 0 && sniffing.size === 0) onIdle();
  }

  // ---- HTTP/2 (ward's own server connection, src/h2/server.ts)

  const h2Options = {
    maxConcurrentStreams: o.maxConcurrentStreams,
    maxHeaderListSize: o.maxHeaderListBytes,
    // node:http2's maxHeaderListPairs default, which ward kept explicit before.
    maxHeaderPairs: 128,
    // A 431 the sidecar writes itself, so it carries its reason like every other (no body).
    tooLargeFields: [':status', '431', 'content-length', '0', HEADER_REASON, 'ERR_REQUEST_HEADERS_TOO_LARGE'],
    // gRPC callers get what every other refusal gives them: trailers-only, `grpc-status` 8.
    tooLargeGrpcFields: Object.entries(responder.response('ERR_REQUEST_HEADERS_TOO_LARGE').grpc).flatMap(([k, v]) => [k, String(v)]),
    // ... with a decision id, recorded like the HTTP/1.1 parser's refusals (no method, no route).
    onHeaderListTooLarge: (grpc: boolean): readonly string[] => [
      HEADER_DECISION_ID,
      recordUnparsed('ERR_REQUEST_HEADERS_TOO_LARGE', 'header list over maxHeaderListBytes', grpc),
    ],
    onStream,
    onClose: (c: H2ServerConnection) => {
      if (!sessions.delete(c)) return;
      counters.h2Sessions--;
      checkIdle();
    },
    onError: (err: Error) => log.debug('client session error', { err }),
  };

  function adoptH2(socket: Socket, encrypted: boolean): void {
    const c = new H2ServerConnection(socket, { ...h2Options, encrypted });
    sessions.add(c);
    counters.h2Sessions++;
    if (draining) c.close();
    socket.resume();
  }

  function onH2StreamClose(this: H2ServerStream): void {
    const ex = exchangeOf(this);
    ex.closed = true;
    counters.activeStreams--;
    if (ex.timer !== null) {
      clearTimeout(ex.timer);
      ex.timer = null;
    }
    if (ex.span !== null) endSpan(ex);
    // RST_STREAM from the client (or the session going away) before the app finished:
    // cancel the app's stream so it sees the cancellation too.
    o.cancel(ex);
    ex.release();
  }

  function onStream(stream: H2ServerStream, fields: string[], endStream: boolean): void {
    counters.activeStreams++;
    let method = '';
    let path: string | undefined;
    let authority: string | undefined;
    let ct: string | undefined;
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i] as string;
      if (name.charCodeAt(0) === 0x3a) {
        if (name === ':method') method = fields[i + 1] as string;
        else if (name === ':path') path = fields[i + 1];
        else if (name === ':authority') authority = fields[i + 1];
      } else if (name === 'content-type' && ct === undefined) {
        ct = fields[i + 1];
      }
    }
    const ex = new Exchange({
      h2: stream,
      req: null,
      res: null,
      grpc: ct !== undefined && ct.startsWith('application/grpc'),
      decisionId: nextDecisionId(),
      method,
      target: path,
      authority,
      rawHeaders: fields,
      bodyless: endStream,
      expectContinue: false,
    });
    tag(stream, ex);
    stream.on('close', onH2StreamClose);
    stream.on('wantTrailers', onWantTrailers);
    if (!ex.bodyless) stream.on('trailers', onRequestTrailers);
    dispatch(ex);
  }

  // ---- HTTP/1.1

  const h1Server = http.createServer({
    maxHeaderSize: o.maxHeaderListBytes,
    // Request smuggling: llhttp strict mode (CL+TE, bad chunking, obs-fold ... -> 400).
    insecureHTTPParser: false,
    // RFC 9112 §3.2 (HTTP/1.1 without Host -> 400) is enforced by the stack, so the refusal
    // carries a reason code like every other one.
    requireHostHeader: false,
    headersTimeout: H1_HEADERS_TIMEOUT_MS,
    keepAliveTimeout: H1_KEEP_ALIVE_TIMEOUT_MS,
    // Streaming uploads may legitimately take long; the app's own limits apply.
    requestTimeout: 0,
    // Only a WebSocket handshake is taken as an upgrade ('upgrade' below); any other `Upgrade`
    // (h2c, TLS/1.0) stays a plain request, its `Upgrade` dropped as connection-specific.
    shouldUpgradeCallback: o.webSockets === true ? isWebSocketHandshake : () => false,
  });
  // Node arms `headersTimeout` (slowloris) only for servers that emitted 'listening'; this one
  // receives its sockets from the sniffer and never listens itself.
  h1Server.emit('listening');

  function onH1ResponseClose(this: ServerResponse): void {
    const ex = exchangeOf(this);
    ex.closed = true;
    counters.activeStreams--;
    h1Responses.delete(this);
    if (ex.timer !== null) {
      clearTimeout(ex.timer);
      ex.timer = null;
    }
    if (ex.span !== null) endSpan(ex);
    // The client went away before the response finished: abort the app's request.
    if (!this.writableFinished) o.cancel(ex);
    // `res.socket` is already detached once the response finished; the request keeps it.
    const socket: H1Socket | undefined = ex.req?.socket;
    if (socket !== undefined) {
      const n = (socket[kActive] ?? 1) - 1;
      socket[kActive] = n;
      if (draining && n === 0) socket.end();
    }
    ex.release();
  }

  /**
   * A WebSocket handshake: Node hands over the socket, detached from its parser, with no response
   * object. One is made on the socket, so the stack refuses a handshake like any call (and the
   * connection closes after that answer); the forwarder tunnels an allowed one (forward.ts).
   */
  function onH1Upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node took its own error listener off the socket it hands over: a reset before the tunnel
    // is up would be an uncaught error, the end of the process (found in review).
    socket.on('error', onUpgradedSocketError);
    // Pipelined behind a request still being answered on this connection: Node hands the
    // handshake over at once, and the socket is that response's (assigning it again throws,
    // found in review). No browser pipelines; the connection closes.
    if (((socket as H1Socket)[kActive] ?? 0) > 0) {
      log.debug('WebSocket handshake pipelined behind an open request; connection closed');
      socket.destroy();
      return;
    }
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', onUpgradeAnswered);
    onH1Request(req, res, false, { socket, head });
  }

  function onUpgradedSocketError(this: Duplex): void {
    this.destroy();
  }

  /**
   * A handshake answered with a response (a refusal, or the app's answer other than 101): the last
   * thing on its connection. Its place among the app's calls is given back now, what the caller
   * still sends is discarded, and a caller that keeps its side open is cut off (found in review:
   * it held the connection, the place and the drain for ever).
   */
  function onUpgradeAnswered(this: ServerResponse): void {
    const ex = exchangeOf(this);
    ex.releaseSlot();
    const socket = this.socket ?? (ex.upgrade?.socket as Socket | undefined);
    if (socket === undefined || socket === null) return;
    // As Node closes a `Connection: close` response's socket: once the answer is flushed; a
    // caller that does not take it in time is cut off.
    socket.resume();
    socket.destroySoon();
    socket.setTimeout(UPGRADE_CLOSE_MS, () => socket.destroy());
  }

  function onH1Request(req: IncomingMessage, res: ServerResponse, expectContinue: boolean, upgrade: WebSocketUpgrade | null = null): void {
    counters.activeStreams++;
    const socket = req.socket as H1Socket;
    socket[kActive] = (socket[kActive] ?? 0) + 1;
    if (draining) res.shouldKeepAlive = false;
    else h1Responses.add(res);
    const ex = new Exchange({
      h2: null,
      req,
      res,
      grpc: false,
      decisionId: nextDecisionId(),
      method: req.method ?? '',
      target: req.url,
      authority: undefined,
      rawHeaders: req.rawHeaders,
      bodyless: false,
      expectContinue,
    });
    ex.upgrade = upgrade;
    tag(res, ex);
    res.on('close', onH1ResponseClose);
    dispatch(ex);
  }

  h1Server.on('request', (req: IncomingMessage, res: ServerResponse) => onH1Request(req, res, false));
  h1Server.on('upgrade', onH1Upgrade);
  // `Expect: 100-continue`: the 100 is sent by the forwarder once the call is allowed, so a
  // denied client never uploads its body.
  h1Server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => onH1Request(req, res, true));
  // CONNECT (a forward-proxy tunnel, RFC 9110 §9.3.6) is no method ward serves. Without a
  // listener Node drops the connection unanswered, so an app with `https_proxy` pointed at the
  // egress port could not tell the refusal from a crash (found in review): it is answered 400
  // ERR_REQUEST_INVALID and recorded, as the refusal tables say. A CONNECT pipelined behind a
  // request still being answered only closes the connection, as a parse error there does.
  h1Server.on('connect', (_req: IncomingMessage, socket: H1Socket) => {
    if ((socket[kActive] ?? 0) > 0) {
      socket.destroy();
      return;
    }
    refuseUnparsed(socket, 'ERR_REQUEST_INVALID', 'method CONNECT not accepted', 'CONNECT');
  });
  h1Server.on('clientError', (err: NodeJS.ErrnoException, socket: H1Socket) => {
    log.debug('HTTP/1.1 parse error', { code: err.code });
    // Bytes after a pipelined request whose response is still being written: a raw 400 would
    // be spliced into that response, so the connection just closes (nothing is answered).
    if ((socket[kActive] ?? 0) > 0) {
      socket.destroy();
      return;
    }
    refuseUnparsed(socket, err.code === 'HPE_HEADER_OVERFLOW' ? 'ERR_REQUEST_HEADERS_TOO_LARGE' : 'ERR_REQUEST_INVALID', err.code ?? 'parse error');
  });

  /**
   * A request refused by the parser is answered by the sidecar like any other refusal: with a
   * decision id (docs/reason-codes.md), and, through the stage, a decision record, span and
   * `ward_decisions_total` sample (found in review: it had neither, so a flood of them was
   * invisible on /metrics). Nothing of the request is known (no route; no method but CONNECT's).
   */
  function refuseUnparsed(socket: Socket, code: ErrorCode, detail: string, method = ''): void {
    const ex = unparsedExchange(code, detail, method, false);
    responder.writeClientError(socket, code, ex.decisionId);
    endUnparsedSpan(ex, ERROR_TABLE[code].http, -1);
  }

  /** The same for an HTTP/2 request refused by its connection: the decision id to send. */
  function recordUnparsed(code: ErrorCode, detail: string, grpc: boolean): string {
    const ex = unparsedExchange(code, detail, '', grpc);
    endUnparsedSpan(ex, grpc ? 200 : ERROR_TABLE[code].http, grpc ? ERROR_TABLE[code].grpc : -1);
    return ex.decisionId;
  }

  function unparsedExchange(code: ErrorCode, detail: string, method: string, grpc: boolean): Exchange {
    const ex = new Exchange({
      h2: null,
      req: null,
      res: null,
      grpc,
      decisionId: nextDecisionId(),
      method,
      target: undefined,
      authority: undefined,
      rawHeaders: NO_FIELDS,
      bodyless: true,
      expectContinue: false,
    });
    try {
      o.refuseUnparsed?.(ex, code, detail);
    } catch (err) {
      log.error('recording a parser refusal threw', { decisionId: ex.decisionId, err });
    }
    return ex;
  }

  function endUnparsedSpan(ex: Exchange, status: number, grpcStatus: number): void {
    const span = ex.span;
    if (span === null) return;
    ex.span = null;
    try {
      span.end(status, grpcStatus, false);
    } catch {
      // telemetry never fails a call
    }
  }

  function adoptH1(socket: H1Socket): void {
    h1Sockets.add(socket);
    counters.h1Connections++;
    socket.once('close', () => {
      h1Sockets.delete(socket);
      counters.h1Connections--;
      checkIdle();
    });
    h1Server.emit('connection', socket);
  }

  // ---- TLS: ALPN decides. Connections come from the TLS-only listener (`tls.port`) and from the
  // cleartext listener, which hands over those that open with a TLS handshake record.

  let tlsServer: tls.Server | undefined;
  let tlsPort: number | undefined;
  const tlsCfg = o.tls;
  let stopReload = (): void => {};
  if (tlsCfg !== undefined) {
    tlsServer = tls.createServer(
      {
        key: tlsCfg.key,
        cert: tlsCfg.cert,
        ALPNProtocols: ['h2', 'http/1.1'],
        minVersion: TLS_MIN_VERSION,
        // As for the sniff: a connection that does not finish its handshake is cut off.
        handshakeTimeout: SNIFF_TIMEOUT_MS,
      },
      (socket: tls.TLSSocket) => {
        if (draining) {
          socket.destroy();
          return;
        }
        if (socket.alpnProtocol === 'h2') adoptH2(socket, true);
        else adoptH1(socket);
      },
    );
    tlsServer.on('tlsClientError', (err) => log.debug('TLS handshake failed', { err }));
  }

  // ---- cleartext listener: sniff the preface

  function onCleartextConnection(socket: Socket): void {
    if (draining) {
      socket.destroy();
      return;
    }
    sniffing.add(socket);
    let buf: Buffer | null = null;
    const onError = (): void => {
      socket.destroy();
    };
    const onTimeout = (): void => {
      socket.destroy();
    };
    const onClose = (): void => {
      sniffing.delete(socket);
      checkIdle();
    };
    const onData = (chunk: Buffer): void => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const tlsHello = tlsServer !== undefined && buf[0] === TLS_HANDSHAKE;
      const n = Math.min(buf.length, PREFACE.length);
      const isPrefix = !tlsHello && buf.compare(PREFACE, 0, n, 0, n) === 0;
      if (isPrefix && buf.length < PREFACE.length) return; // need more bytes to decide
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('timeout', onTimeout);
      socket.off('close', onClose);
      socket.setTimeout(0);
      if (!tlsHello && tlsCfg?.strict === true && !isLoopbackIp(socket.remoteAddress)) {
        sniffing.delete(socket);
        refuseCleartext(socket, isPrefix);
        return;
      }
      socket.pause();
      socket.unshift(buf);
      sniffing.delete(socket);
      if (tlsHello) {
        // The TLS socket takes over the handle and first reads what is buffered on this one.
        (tlsServer as tls.Server).emit('connection', socket);
      } else if (isPrefix) {
        // The HTTP/2 connection reads the bytes already buffered on the socket itself.
        adoptH2(socket, false);
      } else {
        adoptH1(socket);
        socket.resume();
      }
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.setTimeout(SNIFF_TIMEOUT_MS);
    socket.on('timeout', onTimeout);
  }

  /**
   * `inbound.tls.mode: strict` and a cleartext connection from the network: answered in the
   * protocol it opened with, then closed, before a byte of a request is read.
   */
  let refusedLoggedAt = 0;
  function refuseCleartext(socket: Socket, h2: boolean): void {
    const now = Date.now();
    if (now - refusedLoggedAt > 60_000) {
      refusedLoggedAt = now;
      log.warn('cleartext connection refused: inbound.tls.mode is strict (logged at most once a minute)', { remote: socket.remoteAddress, h2 });
    }
    socket.on('error', () => {});
    // A peer that keeps its side open after our answer is cut off as on the sniff.
    socket.setTimeout(SNIFF_TIMEOUT_MS, () => socket.destroy());
    if (h2) socket.end(GOAWAY_TLS_REQUIRED);
    // A decision id as on every answer the sidecar writes, though no request is read and nothing
    // is recorded (docs/reason-codes.md): the log line above stands for the refusals.
    else responder.writeClientError(socket, 'ERR_TLS_REQUIRED', nextDecisionId());
  }

  const cleartext = net.createServer({ noDelay: true }, onCleartextConnection);
  const cleartextPort = await listen(cleartext, o.listen.port, o.listen.host);

  if (tlsServer !== undefined && tlsCfg !== undefined) {
    if (tlsCfg.port !== undefined) {
      try {
        tlsPort = await listen(tlsServer, tlsCfg.port, tlsCfg.host);
      } catch (err) {
        await closeServer(cleartext);
        throw err;
      }
    }
    if (tlsCfg.reload !== undefined) {
      const server = tlsServer;
      // new connections get the renewed pair, open ones keep theirs (ALPN is the server's, not the pair's)
      stopReload = watchCertPair(tlsCfg.reload.certFile, tlsCfg.reload.keyFile, tlsCfg.reload.pollMs, 'TLS certificate', log, (pair) => {
        server.setSecureContext({ ...pair, minVersion: TLS_MIN_VERSION });
        return true;
      });
    }
  }

  // ---- lifecycle

  let drained: Promise<void> | undefined;
  let closed = false;

  function stopAccepting(): Promise<void[]> {
    draining = true;
    stopReload();
    const closing = [closeServer(cleartext)];
    if (tlsServer !== undefined) closing.push(closeServer(tlsServer));
    for (const s of sniffing) s.destroy();
    return Promise.all(closing);
  }

  function destroyAll(): void {
    for (const s of sniffing) s.destroy();
    for (const s of sessions) s.destroy();
    for (const s of h1Sockets) s.destroy();
  }

  async function finish(): Promise<void> {
    closed = true;
    h1Server.close(); // clears Node's connection-check interval; it never listened
    await o.release();
  }

  return {
    ports: { cleartext: cleartextPort, tls: tlsPort },
    drain(deadlineMs: number): Promise<void> {
      drained ??= (async () => {
        const listenersClosed = stopAccepting();
        // GOAWAY: the client learns which streams will still be served and opens no more.
        for (const s of sessions) s.close();
        // Idle keep-alive connections close now; busy ones after their response, which says
        // `Connection: close` unless its headers already went out.
        for (const s of h1Sockets) if ((s[kActive] ?? 0) === 0) s.end();
        for (const res of h1Responses) if (!res.headersSent) res.shouldKeepAlive = false;
        h1Responses.clear();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            onIdle = null;
            destroyAll();
            resolve();
          }, deadlineMs);
          onIdle = () => {
            onIdle = null;
            clearTimeout(timer);
            resolve();
          };
          checkIdle();
        });
        await listenersClosed;
        await finish();
      })();
      return drained;
    },
    async close(): Promise<void> {
      if (closed) return;
      const listenersClosed = stopAccepting();
      destroyAll();
      o.destroy();
      await listenersClosed;
      await finish();
    },
  };
}
