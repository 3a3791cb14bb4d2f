import type { ErrorCode } from '../errors/codes.ts';
import { perSecond } from '../lib/log.ts';
import type { TokenOutcome } from '../exchange/broker.ts';
import type { Exchange } from '../inbound/exchange.ts';
import { parseGrpcTimeout } from '../inbound/grpc-timeout.ts';
import { type HeaderPolicy, scanRequestHeaders } from '../inbound/headers.ts';
import { grpcMethodOf, HTTP_METHODS, queryHasAccessToken } from '../lib/normalize.ts';
import type { ErrorResponder } from '../inbound/respond.ts';
import { type Authority, type Route, type Routes, splitAuthority } from './routes.ts';
import type { OutboundCounters, OutboundDecisionRecord, OutboundDeps } from './types.ts';
import { isPromise } from '../lib/promise.ts';

/**
 * The order of the outbound (egress) stages: the only place that decides it. Each call the app
 * makes through the egress listener runs, in order:
 *
 *   1. shape        method, request-target (origin-form; absolute-form `http://name/...` on
 *                   HTTP/1.1, as an `http_proxy` client sends it)
 *   2. headers      the inbound header hygiene (hop-by-hop, identity prefix, framing)
 *   3. destination  by `:authority`/`Host` without port; undeclared -> ERR_DESTINATION_UNKNOWN,
 *                   unless pass-through
 *   4. extract      the bearer token the app forwards (RFC 6750)
 *   5. token        RFC 8693 exchange for the destination (client credentials without a token,
 *                   when allowed); sync on a cache hit
 *   6. forward      only with an issued token (or as pass-through, without any credential)
 *
 * The path and query go on byte for byte: the destination's own sidecar normalizes and checks
 * them. `traceparent` and every other end-to-end field pass untouched.
 */

/** Methods forwarded. CONNECT is not: the app calls `http://<destination>/...`, the sidecar does TLS-free hops. */
const METHODS: ReadonlySet<string> = new Set(HTTP_METHODS);
const GRPC_PREFIX = 'application/grpc';
const GRPC_WEB_PREFIX = 'application/grpc-web';

export interface OutboundStack {
  handle(ex: Exchange): void;
  /** The app went away: cancel the call's upstream side, if it has one. */
  /** Records a request the listener refused before it was one (see `Stack.refuseUnparsed`). */
  refuseUnparsed(ex: Exchange, code: ErrorCode, detail: string): void;
  cancel(ex: Exchange): void;
}

/** The stack's state of a call, kept on the call itself once it has a route (symbol-keyed, as `kExchange`). */
const kCall: unique symbol = Symbol('ward.outbound.call');
type Routed = Exchange & { [kCall]?: Call };

export interface OutboundStackOptions {
  readonly deps: OutboundDeps;
  readonly responder: ErrorResponder;
  readonly routes: Routes;
  readonly counters: OutboundCounters;
}

/** An origin-form target we can forward verbatim: `/`, then visible ASCII except `#`. */
function originFormOk(t: string): boolean {
  if (t.charCodeAt(0) !== 0x2f) return false;
  for (let i = 1; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x23) return false;
  }
  return true;
}

/** Per-call state the stack keeps beside the `Exchange` (which the inbound owns). */
interface Call {
  readonly ex: Exchange;
  route: Route | null;
  cached: boolean;
  /** Clock ms when a token request to the IdP started for this call; 0 when none. */
  tokenStart: number;
}

/** `http://authority/path` (RFC 9112 §3.2.2) split, or undefined when it is not that. */
function splitAbsoluteForm(target: string): { authority: string; path: string } | undefined {
  if (target.length < 8 || target.slice(0, 7).toLowerCase() !== 'http://') return undefined;
  const slash = target.indexOf('/', 7);
  const q = target.indexOf('?', 7);
  const end = slash < 0 ? (q < 0 ? target.length : q) : q < 0 ? slash : Math.min(slash, q);
  const authority = target.slice(7, end);
  let path = target.slice(end);
  if (path === '' || path.charCodeAt(0) === 0x3f) path = `/${path}`;
  return { authority, path };
}

export function createOutboundStack(o: OutboundStackOptions): OutboundStack {
  const { deps, responder, routes, counters } = o;
  const log = deps.log;
  const refusalLines = perSecond(10);
  const service = deps.service;
  const headerPolicy: HeaderPolicy = Object.freeze({ prefix: deps.identityPrefix, stripAuthorization: false });
  const maxTokenBytes = deps.maxTokenBytes;
  const passthroughAllowed = deps.config.passthrough;
  const onDecision = deps.onDecision;
  const tracer = deps.tracer;

  function record(c: Call, code: ErrorCode | null, oauthError: string | null, token: OutboundDecisionRecord['token']): void {
    const ex = c.ex;
    ex.decided = true;
    if (onDecision === undefined && tracer === undefined) return;
    const r: OutboundDecisionRecord = {
      decisionId: ex.decisionId,
      time: deps.clock(),
      service,
      direction: 'outbound',
      destination: c.route?.name ?? null,
      protocol: ex.grpc ? 'grpc' : 'http',
      method: ex.method,
      route: ex.path === '' ? null : (ex.grpcMethod ?? ex.path.split('?', 1)[0] ?? ex.path),
      decision: code === null ? 'allow' : 'deny',
      code,
      oauthError,
      token,
      cached: c.cached,
      tokenMs: c.tokenStart === 0 ? null : deps.clock() - c.tokenStart,
    };
    try {
      // On an allow the span's context goes to the destination in `traceparent` (fwdHeaders
      // is complete by then); a refused call is recorded but sends nothing.
      if (tracer !== undefined) ex.span = tracer.decision(r, ex.traceStart, ex.rawHeaders, code === null ? ex.fwdHeaders : null);
      else onDecision?.(r);
    } catch (err) {
      log.warn('onDecision hook threw', { err });
    }
  }

  function refuse(c: Call, code: ErrorCode, detail: string, oauthError: string | null = null): void {
    noteRefusal(c, code, detail, oauthError);
    responder.write(c.ex, code);
  }

  /** What every refusal leaves behind, before it is written: the count, the log line, the record. */
  function noteRefusal(c: Call, code: ErrorCode, detail: string, oauthError: string | null): void {
    counters.refused++;
    if (log.enabled('debug')) log.debug('outbound call refused', { decisionId: c.ex.decisionId, destination: c.route?.name ?? null, code, detail, oauthError });
    else if (log.enabled('info')) {
      const skipped = refusalLines.take(); // as inbound denials: 10 lines a second at most
      if (skipped >= 0) log.info('outbound call refused', { decisionId: c.ex.decisionId, destination: c.route?.name ?? null, code, ...(skipped > 0 ? { notLogged: skipped } : {}) });
    }
    record(c, code, oauthError, null);
  }

  function handle(ex: Exchange): void {
    counters.requests++;
    if (tracer !== undefined) ex.traceStart = tracer.now();
    const c: Call = { ex, route: null, cached: false, tokenStart: 0 };

    // (1) Shape. The request-target goes on verbatim, so it only has to be one we can forward.
    if (!METHODS.has(ex.method)) return refuse(c, 'ERR_REQUEST_INVALID', 'method not accepted');
    const target = ex.target;
    if (target === undefined) return refuse(c, 'ERR_REQUEST_INVALID', 'no :path');
    let absoluteAuthority: string | undefined;
    let path = target;
    if (ex.h2 === null && target.charCodeAt(0) !== 0x2f) {
      // An http_proxy client: the URI's authority wins over Host (RFC 9112 §3.2.2).
      const abs = splitAbsoluteForm(target);
      if (abs === undefined) return refuse(c, 'ERR_REQUEST_INVALID', 'request target is neither origin-form nor http:// absolute-form');
      absoluteAuthority = abs.authority;
      path = abs.path;
    }
    if (!originFormOk(path)) return refuse(c, 'ERR_PATH_INVALID', 'request target not forwardable');
    ex.path = path;
    // The app's token never leaves the pod, in the URL either (RFC 6750 §2.3; found in review:
    // `?access_token=` went on to the destination, pass-through included).
    const q = path.indexOf('?');
    if (q !== -1 && queryHasAccessToken(path.slice(q))) return refuse(c, 'ERR_TOKEN_IN_QUERY', 'access_token in query');

    // (2) Headers: the same hygiene as inbound. The app's Authorization is read here and
    // replaced in (6); hop-by-hop fields and the identity prefix never leave the pod.
    const h2 = ex.h2 !== null;
    const s = scanRequestHeaders(ex.rawHeaders, h2, headerPolicy);
    if ('error' in s) return refuse(c, s.error, s.detail);
    ex.fwdHeaders = s.fwd;
    ex.authorization = s.authorization;
    ex.acceptsTrailers = s.acceptsTrailers;
    if (h2) {
      if (s.host !== undefined && ex.authority !== undefined && s.host !== ex.authority) {
        return refuse(c, 'ERR_REQUEST_INVALID', 'Host differs from :authority');
      }
      ex.authority ??= s.host;
    } else {
      ex.authority = absoluteAuthority ?? s.host;
      ex.bodyless = !s.framedBody;
      // as inbound (stack.ts): the parser stopped at the handshake's head
      if (ex.upgrade !== null && s.framedBody) return refuse(c, 'ERR_REQUEST_INVALID', 'WebSocket handshake with a body');
      const ct = s.contentType;
      if (ct !== undefined && ct.startsWith(GRPC_PREFIX) && !ct.startsWith(GRPC_WEB_PREFIX)) return refuse(c, 'ERR_REQUEST_INVALID', 'gRPC needs HTTP/2');
    }
    if (ex.grpc) {
      if (ex.method !== 'POST') return refuse(c, 'ERR_REQUEST_INVALID', 'gRPC call is not a POST');
      // The method from the path without its query, which telemetry must not carry (found in review).
      ex.grpcMethod = grpcMethodOf(q === -1 ? path : path.slice(0, q));
    }

    // (3) Destination: named by the authority, port ignored. Nothing is sent anywhere the
    // config does not name, unless pass-through was asked for explicitly.
    if (ex.authority === undefined) return refuse(c, 'ERR_REQUEST_INVALID', 'no :authority or Host');
    const a: Authority | undefined = splitAuthority(ex.authority);
    if (a === undefined) return refuse(c, 'ERR_REQUEST_INVALID', 'malformed :authority or Host');
    let route = routes.declared(a);
    if (route === undefined) {
      if (!passthroughAllowed) return refuse(c, 'ERR_DESTINATION_UNKNOWN', 'destination not declared');
      const p = routes.passthrough(a, h2);
      if (p === null) return refuse(c, 'ERR_REQUEST_INVALID', 'pass-through target not allowed');
      route = p;
    }
    c.route = route;
    (ex as Routed)[kCall] = c;
    if (ex.grpc && !route.h2) return refuse(c, 'ERR_REQUEST_INVALID', 'gRPC call but the destination is configured as HTTP/1.1');
    // A WebSocket is tunnelled over HTTP/1.1 only (RFC 8441 extended CONNECT is not implemented).
    if (ex.upgrade !== null && route.h2) return refuse(c, 'ERR_REQUEST_INVALID', 'WebSocket handshake but the destination is configured as HTTP/2');
    if (s.grpcTimeout !== undefined && ex.grpc) {
      const ms = parseGrpcTimeout(s.grpcTimeout);
      if (ms < 0) return refuse(c, 'ERR_REQUEST_INVALID', 'malformed grpc-timeout');
      ex.grpcTimeoutMs = ms;
      // from arrival: time spent getting a token counts against the caller's deadline
      route.relay.armDeadline(ex, ms, onDeadline);
    }

    if (route.target === null) {
      // Pass-through: the destination is nobody we hold credentials for, so the app's token
      // (issued for this service) must not travel there either.
      delete ex.fwdHeaders.authorization;
      counters.forwarded++;
      counters.passthrough++;
      record(c, null, null, 'none');
      route.relay.send(ex);
      return;
    }

    // (4) Extraction: the same RFC 6750 scan as inbound; a repeated or malformed credential is
    // refused rather than guessed at.
    const e = deps.extractBearer(ex.authorization, maxTokenBytes);
    if (e.kind === 'error') return refuse(c, e.code, e.detail);
    let subject: string | null = null;
    if (e.kind === 'token') subject = e.token;
    else if (route.noToken === 'refuse') return refuse(c, 'ERR_TOKEN_MISSING', 'no bearer token to exchange');

    // (5) A token for the destination: the first stage that may wait (the IdP). A cache hit
    // stays synchronous.
    let t: TokenOutcome | Promise<TokenOutcome>;
    try {
      t = deps.tokens.token(route.target, subject);
    } catch (err) {
      log.error('token source threw', { decisionId: ex.decisionId, err });
      return refuse(c, 'ERR_INTERNAL', 'token source threw');
    }
    if (isPromise(t)) {
      c.tokenStart = deps.clock();
      void t
        .then(
          (r) => afterToken(c, r),
          (err: unknown) => {
            log.error('token source rejected', { decisionId: ex.decisionId, err });
            if (!ex.closed && !ex.finished) refuse(c, 'ERR_INTERNAL', 'token source rejected');
          },
        )
        .catch((err: unknown) => {
          // A throw after the wait has nothing above it to catch it: the call fails, the process stays.
          log.error('egress stage threw after a wait', { decisionId: ex.decisionId, err });
          if (!ex.closed && !ex.finished) refuse(c, 'ERR_INTERNAL', 'stage threw');
        });
      return;
    }
    c.cached = true;
    afterToken(c, t);
  }

  /**
   * The call's `grpc-timeout` passed. Still waiting for a token: refused here, recorded like any
   * refusal under the id the app is given (found in review: the relay answered
   * ERR_UPSTREAM_TIMEOUT for a destination never called, and nothing carried the id). The token
   * request goes on (single-flight, others may share it): its latency is not this call's, so the
   * record carries none. Sent already: the destination's call ran out (the relay's).
   */
  function onDeadline(ex: Exchange): void {
    const c = (ex as Routed)[kCall] as Call;
    if (ex.decided) return (c.route as Route).relay.expire(ex);
    ex.timer = null;
    if (ex.closed || ex.finished) return;
    c.tokenStart = 0;
    refuse(c, 'ERR_DEADLINE_EXCEEDED', 'deadline passed while waiting for a token');
  }

  function afterToken(c: Call, t: TokenOutcome): void {
    const ex = c.ex;
    // The app may have gone, or its deadline passed, while we waited for the IdP.
    if (ex.closed || ex.finished) return;
    if (!t.ok) return refuse(c, t.code, t.detail, t.oauthError);
    // (6) The only place the outgoing Authorization is set: from a token the IdP issued for
    // this destination. The app's own token never leaves.
    ex.fwdHeaders.authorization = t.authorization;
    counters.forwarded++;
    record(c, null, null, t.via);
    (c.route as Route).relay.send(ex);
  }

  return {
    handle,
    // As inbound (`Stack.refuseUnparsed`): a request the listener refused before it was one
    // (the HTTP/1.1 parser's, CONNECT, an HTTP/2 header list over the limit) is counted, logged
    // and recorded; the listener writes the answer.
    refuseUnparsed(ex: Exchange, code: ErrorCode, detail: string): void {
      counters.requests++;
      if (tracer !== undefined) ex.traceStart = tracer.now();
      noteRefusal({ ex, route: null, cached: false, tokenStart: 0 }, code, detail, null);
    },
    cancel(ex: Exchange): void {
      (ex as Routed)[kCall]?.route?.relay.cancel(ex);
    },
  };
}

