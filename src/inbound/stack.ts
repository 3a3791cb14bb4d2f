import type { ErrorCode } from '../errors/codes.ts';
import type { DenyDecision, Facts, Identity } from '../policy/model.ts';
import type { Exchange } from './exchange.ts';
import type { Forwarder } from './forward.ts';
import { parseGrpcTimeout } from './grpc-timeout.ts';
import { type HeaderPolicy, identityHeaderValues, scanRequestHeaders } from './headers.ts';
import { grpcMethodOf, normalizeTarget, type PathOptions, queryHasAccessToken } from './normalize.ts';
import type { ErrorResponder } from './respond.ts';
import type { AuthResult, DecisionRecord, InboundCounters, InboundDeps } from './types.ts';

/**
 * The order of the inbound stages: the only place that decides it (STYLE.md "shape of the
 * house"; linkerd `inbound/src/http/server.rs`). Each call runs, in order:
 *
 *   1. shape     method, pseudo-headers, path normalization
 *   2. headers   strip spoofable and connection-specific fields; framing; gRPC detection
 *   3. query     refuse `access_token` in the URL
 *   4. extract   the bearer token from Authorization
 *   5. authn     verify it (sync on a cache hit, async otherwise)
 *   6. policy    evaluate(policy, facts, now) on the current snapshot
 *   7. forward   with the Permit, or respond with the denial's code
 *
 * Every denial goes through `ErrorResponder.write` and never reaches the app.
 */

/** Methods ward forwards. Case-sensitive (RFC 9110 §9.1): `get` is not GET, and is refused. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

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
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown }).then === 'function';
}

export function createStack(o: StackOptions): Stack {
  const { deps, responder, forwarder, counters } = o;
  const cfg = deps.config;
  const log = deps.log;
  const service = cfg.service;
  const pathOptions: PathOptions = Object.freeze({ mergeSlashes: cfg.paths.mergeSlashes, rejectEscapedSlashes: cfg.paths.rejectEscapedSlashes });
  const headerPolicy: HeaderPolicy = Object.freeze({ prefix: cfg.identityHeaders.prefix, stripAuthorization: cfg.identityHeaders.stripAuthorization });
  const maxTokenBytes = cfg.authn.maxTokenBytes;
  const appSpeaksH2 = cfg.upstream.protocol === 'h2c';
  const onDecision = deps.onDecision;
  const tracer = deps.tracer;

  function record(ex: Exchange, code: ErrorCode | null, d: { rule: string | null; policyVersion: string } | null, dryRunCode: ErrorCode | null): void {
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
      dryRunCode,
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
    counters.denied++;
    if (log.enabled('debug')) log.debug('denied', { decisionId: ex.decisionId, code, detail, rule: d?.rule ?? null });
    record(ex, code, d, null);
    responder.write(ex, code);
  }

  /** Stages 1–4 and the start of 5: everything that needs no I/O. */
  function handle(ex: Exchange): void {
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
      const ct = s.contentType;
      if (ct !== undefined && ct.startsWith(GRPC_PREFIX) && !ct.startsWith(GRPC_WEB_PREFIX)) {
        return deny(ex, 'ERR_REQUEST_INVALID', 'gRPC needs HTTP/2');
      }
    }
    if (ex.grpc) {
      if (ex.method !== 'POST') return deny(ex, 'ERR_REQUEST_INVALID', 'gRPC call is not a POST');
      if (!appSpeaksH2) return deny(ex, 'ERR_REQUEST_INVALID', 'gRPC call but the app is configured as HTTP/1.1');
      ex.grpcMethod = grpcMethodOf(ex.path);
      if (s.grpcTimeout !== undefined) {
        const ms = parseGrpcTimeout(s.grpcTimeout);
        if (ms < 0) return deny(ex, 'ERR_REQUEST_INVALID', 'malformed grpc-timeout');
        ex.grpcTimeoutMs = ms;
        // The deadline runs from arrival, so time spent authenticating counts against it.
        forwarder.armDeadline(ex, ms);
      }
    }

    // (3) A token in the URL is refused before extraction: it has already leaked into logs,
    // and accepting it would teach clients to keep doing it (RFC 6750 §2.3, §5.3).
    if (ex.query !== '' && queryHasAccessToken(ex.query)) return deny(ex, 'ERR_TOKEN_IN_QUERY', 'access_token in query');

    // (3b) No policy, no trusted issuers: say so (503) before judging a token against an empty
    // trust list, which would misreport a valid caller as ERR_TOKEN_ISSUER_UNKNOWN.
    if (deps.policy() === null) return deny(ex, 'ERR_POLICY_UNAVAILABLE', 'no policy loaded');

    // (4) Extraction is a pure scan; it rejects repeated or malformed credentials before any
    // crypto runs.
    const e = deps.extractBearer(ex.authorization, maxTokenBytes);
    if (e.kind === 'error') return deny(ex, e.code, e.detail);
    if (e.kind === 'none') return decide(ex);

    // (5) Authentication: the first stage that may wait (JWKS, introspection). A cache hit
    // stays synchronous, so the common case allocates no promise.
    let r: AuthResult | Promise<AuthResult>;
    try {
      r = deps.authenticate(e.token);
    } catch (err) {
      log.error('authenticate threw', { decisionId: ex.decisionId, err });
      return deny(ex, 'ERR_INTERNAL', 'authenticate threw');
    }
    if (isPromise(r)) {
      void r.then(
        (res) => afterAuthentication(ex, res),
        (err: unknown) => {
          log.error('authenticate rejected', { decisionId: ex.decisionId, err });
          if (!ex.closed && !ex.finished) deny(ex, 'ERR_INTERNAL', 'authenticate rejected');
        },
      );
      return;
    }
    afterAuthentication(ex, r);
  }

  function afterAuthentication(ex: Exchange, r: AuthResult): void {
    // The client may have gone, or the deadline passed, while we waited.
    if (ex.closed || ex.finished) return;
    if (!r.ok) return deny(ex, r.error.code, r.error.detail ?? r.error.code);
    const id: Identity = r.identity;
    ex.identity = id;
    // The identity must reach the app verbatim in header fields; one that cannot is refused
    // here rather than forwarded escaped (see headers.ts identityHeaderValues).
    if (identityHeaderValues(id) === null) return deny(ex, 'ERR_TOKEN_CLAIMS', 'sub or iss not representable in a header field');
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
    record(ex, null, v.decision, v.decision.dryRunDenial?.code ?? null);
    forwarder.forward(ex, v.permit);
  }

  return { handle };
}
