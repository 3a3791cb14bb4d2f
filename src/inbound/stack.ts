import type { ErrorCode } from '../errors/codes.ts';
import { perSecond } from '../lib/log.ts';
import type { DenyDecision, DryRunDenial, Facts, Identity } from '../policy/model.ts';
import type { Exchange } from './exchange.ts';
import type { Forwarder } from './forward.ts';
import { parseGrpcTimeout } from './grpc-timeout.ts';
import { type HeaderPolicy, identityClaimsHeader, scanRequestHeaders } from './headers.ts';
import { grpcMethodOf, HTTP_METHODS, normalizeTarget, type PathOptions, queryHasAccessToken, validAuthority } from '../lib/normalize.ts';
import type { ErrorResponder } from './respond.ts';
import type { SessionResume } from '../session/stage.ts';
import type { AuthResult, DecisionRecord, InboundCounters, InboundDeps } from './types.ts';
import { isPromise } from '../lib/promise.ts';

/**
 * The order of the inbound stages: the only place that decides it (STYLE.md "shape of the
 * house"; linkerd `inbound/src/http/server.rs`). Each call runs, in order:
 *
 *   1. shape     method, pseudo-headers, path normalization
 *   2. headers   strip spoofable and connection-specific fields; framing; gRPC detection
 *   3. query     refuse `access_token` in the URL
 *      session   the sidecar's own `/.ward/` endpoints; its cookies taken out of the app's view
 *   4. extract   the bearer token from Authorization; without one, on a `signIn: browser`
 *                route, the browser session's access token instead
 *   5. authn     verify it (sync on a cache hit, async otherwise)
 *   6. policy    evaluate(policy, facts, now) on the current snapshot
 *   7. forward   with the Permit, or respond with the denial's code
 *
 * Every denial goes through `ErrorResponder.write` and never reaches the app (a browser on a
 * sign-in route gets the session stage's redirect to sign in, or an HTML page, instead).
 */

/** Methods ward forwards. Case-sensitive (RFC 9110 §9.1): `get` is not GET, and is refused. */
const METHODS: ReadonlySet<string> = new Set(HTTP_METHODS);

const GRPC_PREFIX = 'application/grpc';
const GRPC_WEB_PREFIX = 'application/grpc-web';

export interface StackOptions {
  readonly deps: InboundDeps;
  readonly responder: ErrorResponder;
  readonly forwarder: Forwarder;
  readonly counters: InboundCounters;
}

export interface Stack {
  handle(ex: Exchange): void;
  /**
   * A request the HTTP/1.1 parser refused (`clientError`): no method, path or header of it is
   * known. Counted, logged and recorded like any denial (a decision record with no route, its
   * span in `ex.span`); the listener writes the answer and ends the span.
   */
  refuseUnparsed(ex: Exchange, code: ErrorCode, detail: string): void;
}

export function createStack(o: StackOptions): Stack {
  const { deps, responder, forwarder, counters } = o;
  const cfg = deps.config;
  const log = deps.log;
  /** Denials logged at info, 10 a second at most (see `deny`). */
  const denialLines = perSecond(10);
  const service = cfg.service;
  const pathOptions: PathOptions = Object.freeze({ mergeSlashes: cfg.paths.mergeSlashes, rejectEscapedSlashes: cfg.paths.rejectEscapedSlashes });
  const headerPolicy: HeaderPolicy = Object.freeze({ prefix: cfg.identityHeaders.prefix, stripAuthorization: cfg.identityHeaders.stripAuthorization });
  const maxTokenBytes = cfg.authn.maxTokenBytes;
  const appSpeaksH2 = cfg.upstream.protocol === 'h2c';
  const onDecision = deps.onDecision;
  const tracer = deps.tracer;
  const session = deps.session;
  const authenticateThen = deps.authenticateThen;

  function record(ex: Exchange, code: ErrorCode | null, d: { rule: string | null; policyVersion: string } | null, dryRun: DryRunDenial | null): void {
    ex.decided = true;
    if (onDecision === undefined && tracer === undefined) return;
    const id = ex.identity;
    const r: DecisionRecord = {
      decisionId: ex.decisionId,
      time: deps.clock(),
      service,
      protocol: ex.grpc ? 'grpc' : 'http',
      method: ex.method,
      route: ex.path === '' ? null : (ex.grpcMethod ?? ex.path),
      decision: code === null ? 'allow' : 'deny',
      code,
      rule: d?.rule ?? null,
      policyVersion: d?.policyVersion ?? null,
      issuer: id?.issuer ?? null,
      subject: id?.subject ?? null,
      // The whole dry-run denial is for the record (docs/policy.md): its code and its rule.
      dryRunCode: dryRun === null ? null : dryRun.code,
      dryRunRule: dryRun === null ? null : dryRun.rule,
    };
    if (onDecision !== undefined) {
      try {
        onDecision(r);
      } catch (err) {
        log.warn('onDecision hook threw', { err });
      }
    }
    if (tracer !== undefined) {
      try {
        // On an allow the span's context goes to the app in `traceparent` (fwdHeaders is built
        // by then); a denial never reaches the app.
        ex.span = tracer.begin(r, ex.traceStart, ex.rawHeaders, code === null ? ex.fwdHeaders : null);
      } catch (err) {
        log.warn('tracer hook threw', { err });
      }
    }
  }

  function deny(ex: Exchange, code: ErrorCode, detail: string, d: DenyDecision | null = null): void {
    noteDenial(ex, code, detail, d);
    // A browser on a sign-in route: a redirect to sign in instead of a 401, an HTML page instead
    // of a text 403; and a refused session cookie is cleared. Everyone else: the table's response.
    if (session !== undefined && session.writeDenial(ex, code)) return;
    responder.write(ex, code);
  }

  /** What every denial leaves behind, before it is written: the count, the log line, the record. */
  function noteDenial(ex: Exchange, code: ErrorCode, detail: string, d: DenyDecision | null): void {
    counters.denied++;
    if (log.enabled('debug')) log.debug('denied', { decisionId: ex.decisionId, code, detail, rule: d?.rule ?? null });
    else if (log.enabled('info')) {
      // Every refusal's decision id can be found in the log (README), at most 10 lines a second:
      // a flood of bad calls must not become a flood of log lines.
      const skipped = denialLines.take();
      if (skipped >= 0) log.info('denied', { decisionId: ex.decisionId, code, rule: d?.rule ?? null, ...(skipped > 0 ? { notLogged: skipped } : {}) });
    }
    record(ex, code, d, null);
  }

  function refuseUnparsed(ex: Exchange, code: ErrorCode, detail: string): void {
    counters.requests++;
    if (tracer !== undefined) ex.traceStart = tracer.now();
    noteDenial(ex, code, detail, null);
  }

  /**
   * The request boundary of the synchronous stages: a throw fails the call closed through `deny`,
   * so it is answered 500 `ERR_INTERNAL` with a decision record like every other refusal (found
   * in review: it was answered by the listener, with an id no record, span or metric carried).
   * A try/catch costs nothing on the path that does not throw.
   */
  function handle(ex: Exchange): void {
    try {
      run(ex);
    } catch (err) {
      fail(ex, err, 'request stage threw');
    }
  }

  /**
   * A stage threw. Unless the call was answered already (a denial is recorded before it is
   * written, so `finished` also means recorded), it is refused with `ERR_INTERNAL` and recorded.
   */
  function fail(ex: Exchange, err: unknown, what: string): void {
    log.error(what, { decisionId: ex.decisionId, err });
    if (!ex.closed && !ex.finished) deny(ex, 'ERR_INTERNAL', what);
  }

  /** Stages 1-4 and the start of 5: everything that needs no I/O. */
  function run(ex: Exchange): void {
    counters.requests++;
    if (tracer !== undefined) ex.traceStart = tracer.now();

    // (1) Shape first: it costs nothing and needs no secret, and every later stage (policy
    // included) must see the one normalized path that will also be forwarded.
    if (!METHODS.has(ex.method)) return deny(ex, 'ERR_REQUEST_INVALID', 'method not accepted');
    if (ex.target === undefined) return deny(ex, 'ERR_REQUEST_INVALID', 'no :path');
    const n = normalizeTarget(ex.target, pathOptions);
    if (!n.ok) return deny(ex, n.code, n.detail);
    ex.path = n.path;
    ex.query = n.query;

    // (2) Headers before anything reads them: the identity prefix and connection-specific
    // fields are dropped here, so no later stage (nor the app) can see a spoofed value.
    const h2 = ex.h2 !== null;
    const s = scanRequestHeaders(ex.rawHeaders, h2, headerPolicy);
    if ('error' in s) return deny(ex, s.error, s.detail);
    ex.fwdHeaders = s.fwd;
    ex.authorization = s.authorization;
    ex.acceptsTrailers = s.acceptsTrailers;
    if (h2) {
      // RFC 9113 §8.3.1: a Host that disagrees with :authority is malformed.
      if (s.host !== undefined && ex.authority !== undefined && s.host !== ex.authority) {
        return deny(ex, 'ERR_REQUEST_INVALID', 'Host differs from :authority');
      }
      ex.authority ??= s.host;
    } else {
      // RFC 9112 §3.2: an HTTP/1.1 request without Host is malformed.
      if (s.host === undefined && ex.req !== null && ex.req.httpVersionMajor === 1 && ex.req.httpVersionMinor >= 1) {
        return deny(ex, 'ERR_REQUEST_INVALID', 'HTTP/1.1 request without Host');
      }
      ex.authority = s.host;
      ex.bodyless = !s.framedBody;
      // The parser stops at a handshake's head: a body would be read by nobody but the tunnel,
      // where the app would take it for WebSocket frames (RFC 6455 §4.1: a GET without one).
      if (ex.upgrade !== null && s.framedBody) return deny(ex, 'ERR_REQUEST_INVALID', 'WebSocket handshake with a body');
      const ct = s.contentType;
      if (ct !== undefined && ct.startsWith(GRPC_PREFIX) && !ct.startsWith(GRPC_WEB_PREFIX)) {
        return deny(ex, 'ERR_REQUEST_INVALID', 'gRPC needs HTTP/2');
      }
    }
    // The authority is forwarded as the app's Host: nothing in it may move the path it routes on.
    if (ex.authority !== undefined && !validAuthority(ex.authority)) return deny(ex, 'ERR_REQUEST_INVALID', 'Host or :authority is not host[:port]');
    if (ex.grpc) {
      if (ex.method !== 'POST') return deny(ex, 'ERR_REQUEST_INVALID', 'gRPC call is not a POST');
      if (!appSpeaksH2) return deny(ex, 'ERR_REQUEST_INVALID', 'gRPC call but the app is configured as HTTP/1.1');
      ex.grpcMethod = grpcMethodOf(ex.path);
      if (s.grpcTimeout !== undefined) {
        const ms = parseGrpcTimeout(s.grpcTimeout);
        if (ms < 0) return deny(ex, 'ERR_REQUEST_INVALID', 'malformed grpc-timeout');
        ex.grpcTimeoutMs = ms;
        // The deadline runs from arrival, so time spent authenticating counts against it.
        forwarder.armDeadline(ex, ms, onDeadline);
      }
    }

    // (3) A token in the URL is refused before extraction: it has already leaked into logs,
    // and accepting it would teach clients to keep doing it (RFC 6750 §2.3, §5.3).
    if (ex.query !== '' && queryHasAccessToken(ex.query)) return deny(ex, 'ERR_TOKEN_IN_QUERY', 'access_token in query');

    // (3a) The sidecar's own endpoints (sign-in callback, logout) are answered here, on the
    // normalized path and before any credential is read, and never reach the app; before the
    // policy check so a browser can always sign out. The sidecar's cookies leave the app's view.
    if (session !== undefined && session.handle(ex)) return;

    // (3b) No policy, no trusted issuers: say so (503) before judging a token against an empty
    // trust list, which would misreport a valid caller as ERR_TOKEN_ISSUER_UNKNOWN.
    const policy = deps.policy();
    if (policy === null) return deny(ex, 'ERR_POLICY_UNAVAILABLE', 'no policy loaded');

    // (4) Extraction is a pure scan; it rejects repeated or malformed credentials before any
    // crypto runs.
    const e = deps.extractBearer(ex.authorization, maxTokenBytes);
    if (e.kind === 'error') return deny(ex, e.code, e.detail);
    if (e.kind === 'none') {
      if (session === undefined || ex.grpc) return decide(ex);
      // (4b) No bearer token: on a `signIn: browser` route the browser session's access token
      // stands in for it and takes the same path from here (authn, policy). Only here: a bearer
      // token always wins, so API callers never depend on cookies.
      let s: SessionResume | Promise<SessionResume>;
      try {
        s = session.resume(ex, policy);
      } catch (err) {
        log.error('session resume threw', { decisionId: ex.decisionId, err });
        return deny(ex, 'ERR_INTERNAL', 'session resume threw');
      }
      if (isPromise(s)) return afterWait(ex, s, afterSession, 'session resume');
      return afterSession(ex, s);
    }
    authenticate(ex, e.token);
  }

  /**
   * The call's `grpc-timeout` passed. Still undecided (waiting for authentication, a JWKS or
   * introspection fetch, the session store): the stack refuses it itself, through `deny`, so it
   * has a decision record, span and count under the id the caller is given, and a code that says
   * what happened (found in review: the forwarder answered ERR_UPSTREAM_TIMEOUT, counted an
   * upstream error for an app never called, and nothing carried the id). The wait that is still
   * running finds the call finished and stops. Allowed already: the app's call ran out.
   */
  function onDeadline(ex: Exchange): void {
    if (ex.decided) return forwarder.expire(ex);
    ex.timer = null;
    if (ex.closed || ex.finished) return;
    deny(ex, 'ERR_DEADLINE_EXCEEDED', 'deadline passed before the call was decided');
  }

  /**
   * A throw in a stage that ran after a wait: nothing up the stack catches it there (the
   * listener's own guard only covers what runs inside its call), and an unhandled rejection
   * would end the process with every call in it. The call fails closed on its own, recorded.
   */
  function lateFailure(ex: Exchange, err: unknown): void {
    fail(ex, err, 'request stage threw after a wait');
  }

  /**
   * A stage that waits: `next` gets its answer; a rejection (`what` rejected) refuses the call
   * with ERR_INTERNAL unless it is over, and a throw in `next` fails it closed (`lateFailure`).
   */
  function afterWait<T>(ex: Exchange, p: Promise<T>, next: (ex: Exchange, v: T) => void, what: string): void {
    void p.then(
      (v) => next(ex, v),
      (err: unknown) => {
        log.error(`${what} rejected`, { decisionId: ex.decisionId, err });
        if (!ex.closed && !ex.finished) deny(ex, 'ERR_INTERNAL', `${what} rejected`);
      },
    ).catch((err: unknown) => lateFailure(ex, err));
  }

  function afterSession(ex: Exchange, s: SessionResume): void {
    if (ex.closed || ex.finished) return;
    switch (s.kind) {
      case 'none':
        return decide(ex);
      case 'token':
        return authenticate(ex, s.token);
      case 'deny':
        return deny(ex, s.code, s.detail);
      case 'answered':
        return;
    }
  }

  function authenticate(ex: Exchange, token: string): void {
    // (5) Authentication: the first stage that may wait (JWKS, introspection). A cache hit
    // stays synchronous, so the common case allocates no promise; a wait for the signature
    // batch is answered through `authenticated`, which allocates none either.
    let now: AuthResult | undefined;
    try {
      now = startAuthentication(ex, token);
    } catch (err) {
      log.error('authenticate threw', { decisionId: ex.decisionId, err });
      return deny(ex, 'ERR_INTERNAL', 'authenticate threw');
    }
    if (now !== undefined) afterAuthentication(ex, now);
  }

  /** The result now, or undefined and later through `authenticated` (`authenticateThen`, else `authenticate`'s promise). */
  function startAuthentication(ex: Exchange, token: string): AuthResult | undefined {
    if (authenticateThen !== undefined) return authenticateThen(token, ex, authenticated);
    const r = deps.authenticate(token);
    if (!isPromise(r)) return r;
    afterWait(ex, r, authenticated, 'authenticate');
    return undefined;
  }

  /** The answer after a wait: a throw fails this call closed (`lateFailure`). */
  function authenticated(ex: Exchange, r: AuthResult): void {
    try {
      afterAuthentication(ex, r);
    } catch (err) {
      lateFailure(ex, err);
    }
  }

  function afterAuthentication(ex: Exchange, r: AuthResult): void {
    // The client may have gone, or the deadline passed, while we waited.
    if (ex.closed || ex.finished) return;
    if (!r.ok) return deny(ex, r.error.code, r.error.detail ?? r.error.code);
    const id: Identity = r.identity;
    ex.identity = id;
    // The identity must reach the app verbatim in header fields; one that cannot is refused
    // here rather than forwarded escaped (see headers.ts identityClaimsHeader).
    if (identityClaimsHeader(id) === null) return deny(ex, 'ERR_TOKEN_CLAIMS', 'sub or iss not representable in a header field');
    decide(ex);
  }

  function decide(ex: Exchange): void {
    // (6) Policy is read per call, so a new snapshot applies to open connections; no
    // snapshot means we cannot say yes, so we fail closed.
    const policy = deps.policy();
    if (policy === null) return deny(ex, 'ERR_POLICY_UNAVAILABLE', 'no policy loaded');
    const facts: Facts = {
      identity: ex.identity,
      request: {
        protocol: ex.grpcMethod !== undefined ? 'grpc' : 'http',
        method: ex.method,
        path: ex.path,
        grpcMethod: ex.grpcMethod,
      },
    };
    let v;
    try {
      v = deps.evaluate(policy, facts, deps.clock());
    } catch (err) {
      log.error('evaluate threw', { decisionId: ex.decisionId, err });
      return deny(ex, 'ERR_INTERNAL', 'evaluate threw');
    }
    if (v.permit === null) return deny(ex, v.decision.code, v.decision.reason, v.decision);

    // (7) Only a Permit opens the way to the app.
    counters.allowed++;
    record(ex, null, v.decision, v.decision.dryRunDenial ?? null);
    try {
      forwarder.forward(ex, v.permit);
    } catch (err) {
      // Allowed and recorded already: a second (deny) record for the same id would contradict
      // it. The forwarder failed; the caller gets a 500, the span its end when the call closes.
      log.error('forward threw', { decisionId: ex.decisionId, err });
      responder.write(ex, 'ERR_INTERNAL');
    }
  }

  return { handle, refuseUnparsed };
}
