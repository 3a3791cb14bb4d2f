import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import * as oidc from 'openid-client';
import type { ResolvedSessionSecrets, SessionConfig } from '../config/session.ts';
import type { ErrorCode } from '../errors/codes.ts';
import { ERROR_TABLE } from '../errors/table.ts';
import type { Clock } from '../lib/clock.ts';
import { tokenHash } from '../lib/hash.ts';
import { type Logger, perSecond } from '../lib/log.ts';
import { Lru } from '../lib/lru.ts';
import type { CompiledPolicy, Identity, RequestFacts } from '../policy/model.ts';
import {
  type CookieAttributes,
  type CookieNames,
  clearCookie,
  clearSessionCookies,
  cookieNames,
  joinChunks,
  sessionCookies,
  setCookie,
  splitChunks,
  type TakenCookies,
  takeCookies,
  txnCookieName,
} from './cookies.ts';
import { fromSameOrigin, isUnsafeMethod, originOf } from './csrf.ts';
import { isOutageError } from '../lib/oauth-errors.ts';
import { createSignInClient, type ProviderFailure, type SignInClient, type TokenSet } from './oidc.ts';
import { denialPage, escapeHtml, methodNotAllowed, notFound, page, redirect, type SessionCall, textDenial } from './respond.ts';
import { RESERVED_PREFIX, safeReturnPath } from './return-url.ts';
import { deriveKeys, Sealer } from './seal.ts';
import { isPromise } from '../lib/promise.ts';

/**
 * Browser sign-in at the sidecar: the OIDC authorization code flow with PKCE (S256), `state` and
 * `nonce`, a sealed cookie session, refresh before expiry, logout, and CSRF checks. The inbound
 * stack (inbound/stack.ts) calls in at three points:
 *
 * - `handle(call)`, before any credential is read: serves the reserved `/.ward/` endpoints and
 *   takes the sidecar's cookies out of what the app will see;
 * - `resume(call, policy)`, for a call without a bearer token: on a route whose rule says
 *   `signIn: browser`, the session's access token takes the bearer token's place, and from then
 *   on the call is authenticated and authorized exactly like a bearer call (the stack runs the
 *   same authenticate and evaluate on it);
 * - `writeDenial(call, code)`, when such a call is refused: a browser navigation without a
 *   usable session is redirected to the provider instead of getting 401; a browser gets a minimal
 *   HTML page for other refusals; API callers get the usual plain response (plus the clearing of
 *   a bad cookie). gRPC calls are never touched.
 *
 * The session lives in the cookie, sealed (seal.ts): the sidecar keeps no per-session state
 * beyond bounded sets of logged-out session ids and used `state` values, so any replica with the
 * same secret serves any session (a logout is then local to the replica that served it; the
 * refresh token is revoked at the provider and its session ended there, so elsewhere the session
 * lasts at most until its access token expires).
 *
 * Endpoints (under `/.ward/`, never forwarded):
 *   GET  /.ward/callback      the redirect URI: checks state, exchanges the code, sets the session
 *   GET  /.ward/sign-in?return=/path   starts a sign-in (for a "Sign in" link)
 *   POST /.ward/logout        ends the session here and at the provider (RP-initiated logout)
 *   GET  /.ward/logout        a page with a sign-out button (the POST), so a link can sign out
 *   GET  /.ward/signed-out    where the provider sends the browser after logout
 */

/** A call's result when it has no bearer token. */
export type SessionResume =
  /** No session applies: go on without an identity. */
  | { readonly kind: 'none' }
  /** Authenticate this access token exactly like a bearer token. */
  | { readonly kind: 'token'; readonly token: string }
  /** Refuse the call with this code (the stack's deny, then `writeDenial`). */
  | { readonly kind: 'deny'; readonly code: ErrorCode; readonly detail: string }
  /** The stage answered the call itself (the redirect carrying a refreshed session). */
  | { readonly kind: 'answered' };

export type SessionAuthResult =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly error: { readonly code: ErrorCode; readonly detail?: string | undefined } };

export interface SessionStageOptions {
  readonly service: string;
  readonly config: SessionConfig;
  readonly secrets: ResolvedSessionSecrets;
  /** The sidecar's own authenticator: the session's access tokens are checked like bearer tokens. */
  readonly authenticate: (token: string) => SessionAuthResult | Promise<SessionAuthResult>;
  /** policy/evaluate.ts isSignInRoute. */
  readonly signInRoute: (policy: CompiledPolicy, req: RequestFacts) => boolean;
  readonly log: Logger;
  readonly clock: Clock;
  readonly fetch?: typeof fetch | undefined;
  /** Tests: a provider client of their own. */
  readonly client?: SignInClient;
  /**
   * A session this stage ended (logout, a refresh whose grant the provider refused): with
   * `concurrency` above 1, told to the other workers (cluster/), whose `endedElsewhere` refuses
   * it too.
   */
  readonly onEnded?: ((id: string, untilMs: number) => void) | undefined;
  /**
   * With `concurrency` above 1: runs a session's refresh in one worker for all (cluster/once.ts),
   * the value kept `keepMs` for the others. Its value is checked here (`asRefreshOutcome`).
   */
  readonly shareRefresh?: ((key: string, run: () => Promise<{ readonly value: RefreshOutcome; readonly keepMs: number }>) => Promise<unknown>) | undefined;
}

/** The end of a session refresh: a new session, or why there is none (`ended`: the provider refused the grant, the session is over). */
export type RefreshOutcome =
  | { readonly ok: true; readonly session: SessionData }
  | { readonly ok: false; readonly code: ErrorCode; readonly detail: string; readonly ended: boolean };

/** A refresh whose outcome another worker was to share but did not: as if the provider were down. */
const SHARED_REFRESH_LOST: RefreshOutcome = { ok: false, code: 'ERR_SIGNIN_UNAVAILABLE', detail: 'the refresh run by another worker gave no outcome', ended: false };

/** A refresh outcome another worker sent (JSON over node:cluster IPC): checked before it is used. */
export function asRefreshOutcome(v: unknown): RefreshOutcome | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (o['ok'] === true) return isSessionData(o['session']) ? { ok: true, session: o['session'] } : null;
  if (o['ok'] !== false) return null;
  const code = o['code'];
  if (typeof code !== 'string' || !Object.hasOwn(ERROR_TABLE, code) || typeof o['detail'] !== 'string' || typeof o['ended'] !== 'boolean') return null;
  return { ok: false, code: code as ErrorCode, detail: o['detail'], ended: o['ended'] };
}

export interface SessionCounters {
  signInsStarted: number;
  signInsCompleted: number;
  signInsFailed: number;
  sessionsResumed: number;
  sessionsRefused: number;
  refreshes: number;
  refreshesRefused: number;
  csrfRefused: number;
  logouts: number;
}

export interface SessionStage {
  readonly counters: Readonly<SessionCounters>;
  /** True when the call was one of the sidecar's own endpoints (then answered here). */
  handle(call: SessionCall): boolean;
  resume(call: SessionCall, policy: CompiledPolicy): SessionResume | Promise<SessionResume>;
  /** True when it wrote the response for this denial; false: the caller writes it. */
  writeDenial(call: SessionCall, code: ErrorCode): boolean;
  /** A session another worker of this sidecar ended: refused here too until `untilMs`. */
  endedElsewhere(id: string, untilMs: number): void;
}

/** The sealed session (short keys: it travels in every request's Cookie field). */
export interface SessionData {
  /** Session id: random, the handle for logout. */
  readonly i: string;
  /** Subject, for logs and the consistency check on refresh. */
  readonly s: string;
  /** Access token. */
  readonly a: string;
  /** Access token expiry (seconds since the epoch). */
  readonly x: number;
  /** When to refresh it (seconds): see `refreshAt`. */
  readonly f: number;
  /** Refresh token, when the provider issued one. */
  readonly r?: string;
  /** Absolute end of the session (seconds). */
  readonly e: number;
}

/** A sign-in in flight, sealed in its transaction cookie. */
interface Txn {
  readonly s: string;
  readonly n: string;
  readonly v: string;
  /** Return path after sign-in. */
  readonly r: string;
  /** The redirect URI sent to the provider. */
  readonly u: string;
}

/** What the stage learned about a call it looked at (only calls on the sign-in path get one). */
interface CallState {
  browser: boolean;
  cookies: TakenCookies;
  /** The session that authenticated the call (null: none). */
  session: SessionData | null;
  /** A session cookie was presented and refused: clear it in the response. */
  clear: boolean;
}

const TXN_TTL_MS = 10 * 60_000;
/**
 * Sign-ins in flight per browser: each signed-out page view starts one, and every transaction
 * cookie (with a `__Host-` name, `Path=/`) travels with every request for ten minutes, so
 * without a bound a few dozen page views made the `Cookie` field exceed the header limit and put
 * the origin out of reach (found in review). Three leave room for parallel tabs.
 */
const MAX_TXNS = 3;
/** Older transaction cookies expired in one response, at most (a browser holds far fewer). */
const MAX_TXN_CLEARS = 20;
/**
 * The longest return path sealed into a transaction cookie; a longer one returns to `/`. A
 * transaction cookie is then at most about 1 KB (3 KB with a 2048-character path), so MAX_TXNS
 * of them stay a small part of any header budget (and an ordinary page URL is shorter).
 */
const MAX_SEALED_RETURN_CHARS = 512;
/** A transaction cookie name's suffix as `txnCookieName` makes it (12 base64url characters of a hash). */
const TXN_SUFFIX = /^[A-Za-z0-9_-]{12}$/;
const REFRESH_REUSE_MS = 30_000;
const MAX_TRACKED = 100_000;
const CALLBACK = `${RESERVED_PREFIX}callback`;
const SIGN_IN = `${RESERVED_PREFIX}sign-in`;
const LOGOUT = `${RESERVED_PREFIX}logout`;
const SIGNED_OUT = `${RESERVED_PREFIX}signed-out`;
const AUTHORITY = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;
const NONE: SessionResume = Object.freeze({ kind: 'none' });
const ANSWERED: SessionResume = Object.freeze({ kind: 'answered' });

function headerValue(v: number | string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v.join(', ');
  return String(v);
}

/** A browser asking for a page: `text/html` (or XHTML) among the accepted media types. */
export function acceptsHtml(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  for (const part of accept.split(',')) {
    const semi = part.indexOf(';');
    const type = (semi === -1 ? part : part.slice(0, semi)).trim().toLowerCase();
    if (type === 'text/html' || type === 'application/xhtml+xml') {
      // `q=0` means "not acceptable" (RFC 9110 §12.4.2)
      if (semi !== -1 && /;\s*q\s*=\s*0(?:\.0{0,3})?\s*(?:;|$)/i.test(part.slice(semi))) continue;
      return true;
    }
  }
  return false;
}

function isSessionData(v: unknown): v is SessionData {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o['i'] === 'string' &&
    typeof o['s'] === 'string' &&
    typeof o['a'] === 'string' &&
    typeof o['x'] === 'number' &&
    typeof o['f'] === 'number' &&
    typeof o['e'] === 'number' &&
    (o['r'] === undefined || typeof o['r'] === 'string')
  );
}

function isTxn(v: unknown): v is Txn {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  return ['s', 'n', 'v', 'r', 'u'].every((k) => typeof o[k] === 'string');
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * A refresh that got no usable answer (the provider or the authenticator unavailable): asked
 * again by the next request. An answer, even a refusal that keeps the session, is kept for
 * REFRESH_REUSE_MS, so a provider refusing the client is not asked again on every page view.
 */
function isOutage(out: RefreshOutcome): boolean {
  return !out.ok && out.code === 'ERR_SIGNIN_UNAVAILABLE';
}

function failureDetail(f: ProviderFailure): string {
  return f.kind === 'refused' ? `provider refused: ${f.error}` : `${f.kind}: ${f.detail}`;
}

export function createSessionStage(o: SessionStageOptions): SessionStage {
  const cfg = o.config;
  const log = o.log;
  const clock = o.clock;
  const names: CookieNames = cookieNames(cfg.cookieName);
  const sessions = new Sealer(deriveKeys(o.secrets.sealing, 'session'), 'session');
  const txns = new Sealer(deriveKeys(o.secrets.sealing, 'txn'), 'txn');
  const baseOrigin = cfg.baseUrl === undefined ? null : originOf(cfg.baseUrl);
  const baseSecure = cfg.baseUrl === undefined ? null : new URL(cfg.baseUrl).protocol === 'https:';
  const client =
    o.client ??
    createSignInClient({
      issuer: cfg.issuer,
      clientId: cfg.clientId,
      clientSecret: o.secrets.clientSecret,
      scopes: cfg.scopes,
      resource: cfg.resource,
      timeoutMs: cfg.timeoutMs,
      log,
      clock,
      fetch: o.fetch,
    });
  const counters: SessionCounters = {
    signInsStarted: 0,
    signInsCompleted: 0,
    signInsFailed: 0,
    sessionsResumed: 0,
    sessionsRefused: 0,
    refreshes: 0,
    refreshesRefused: 0,
    csrfRefused: 0,
    logouts: 0,
  };
  /** Refusals of the sidecar's endpoints logged at info, 10 a second at most (`noteRefusal`). */
  const refusalLines = perSecond(10, clock);
  const calls = new WeakMap<SessionCall, CallState>();
  /** Logged-out session ids -> end of the session (ms): refused until then. */
  const loggedOut = new Lru<string, number>(MAX_TRACKED);
  /** `state` values already used at the callback -> their expiry (ms): each sign-in completes once. */
  const usedStates = new Lru<string, number>(MAX_TRACKED);
  /** Refreshes in flight or just done, by session id and access token, shared by concurrent calls. */
  const refreshing = new Lru<string, { readonly until: number; readonly result: Promise<RefreshOutcome> }>(10_000);

  /**
   * The log line of a refused call to the sidecar's endpoints, which anyone can cause: as the
   * stack's "denied" lines (inbound/stack.ts noteDenial), every one at debug when that level is
   * on, else at most 10 a second at info, the next one saying how many were left out.
   */
  function noteRefusal(msg: string, fields: Record<string, unknown>): void {
    if (log.enabled('debug')) return log.debug(msg, fields);
    if (!log.enabled('info')) return;
    const skipped = refusalLines.take();
    if (skipped >= 0) log.info(msg, skipped > 0 ? { ...fields, notLogged: skipped } : fields);
  }

  /** A session ended here: refused from now on, by every worker (`onEnded`). */
  function ended(id: string, untilMs: number): void {
    loggedOut.set(id, untilMs);
    o.onEnded?.(id, untilMs);
  }

  /**
   * When a token valid until `exp` is refreshed: `refreshBeforeSeconds` ahead of its expiry, but
   * never before half its lifetime, so a provider whose tokens live shorter than that margin
   * does not get a refresh (and the browser a redirect) on every request.
   */
  function refreshAt(nowS: number, exp: number): number {
    const life = exp - nowS;
    return nowS + Math.max(life - cfg.refreshBeforeSeconds, Math.floor(life / 2));
  }

  // ---- per-call facts

  function isTls(call: SessionCall): boolean {
    if (call.h2 !== null) return call.h2.session?.encrypted === true;
    return (call.req?.socket as TLSSocket | undefined)?.encrypted === true;
  }

  /** The origin the browser sees: `baseUrl`, else the request's scheme and Host (null when unusable). */
  function originFor(call: SessionCall): string | null {
    if (baseOrigin !== null) return baseOrigin;
    const a = call.authority;
    if (a === undefined || !AUTHORITY.test(a)) return null;
    return originOf(`${isTls(call) ? 'https' : 'http'}://${a}`);
  }

  function secureFor(call: SessionCall): boolean {
    return baseSecure ?? isTls(call);
  }

  function attrs(call: SessionCall, maxAge: number): CookieAttributes {
    return { secure: secureFor(call), path: '/', maxAge };
  }

  function stateOf(call: SessionCall): CallState {
    let st = calls.get(call);
    if (st === undefined) {
      st = { browser: false, cookies: takeCookies(undefined, names), session: null, clear: false };
      calls.set(call, st);
    }
    return st;
  }

  /** Cookies to clear with a denial: a refused session, or one whose access token authn refused (401). */
  function clearing(call: SessionCall, st: CallState, code: ErrorCode): string[] {
    const refused = st.clear || (st.session !== null && ERROR_TABLE[code].http === 401);
    return refused ? clearSessionCookies(names, st.cookies.session, secureFor(call)) : [];
  }

  // ---- the session cookie

  function readSession(st: CallState): { ok: true; session: SessionData } | { ok: false; detail: string } {
    const c = st.cookies;
    if (c.session === null) return { ok: false, detail: 'no session cookie' };
    if (c.duplicate) return { ok: false, detail: 'session cookie sent twice' };
    const sealed = joinChunks(c.session);
    if (sealed === null) return { ok: false, detail: 'session cookie chunks do not fit together' };
    const u = sessions.unseal<unknown>(sealed, clock(), names.session);
    if (!u.ok) return { ok: false, detail: `session cookie ${u.reason}` };
    if (!isSessionData(u.value)) return { ok: false, detail: 'session cookie content malformed' };
    const until = loggedOut.peek(u.value.i);
    if (until !== undefined && clock() < until) return { ok: false, detail: 'session was logged out' };
    return { ok: true, session: u.value };
  }

  function sealSession(call: SessionCall, s: SessionData, present: TakenCookies['session']): string[] | null {
    const now = clock();
    const sealed = sessions.seal(s, s.e * 1000, names.session);
    const chunks = splitChunks(sealed);
    if (chunks === null) return null;
    return sessionCookies(names, chunks, present, attrs(call, s.e - Math.floor(now / 1000)));
  }

  // ---- resume: a call without a bearer token

  function resume(call: SessionCall, policy: CompiledPolicy): SessionResume | Promise<SessionResume> {
    if (call.grpc) return NONE;
    const req: RequestFacts = { protocol: 'http', method: call.method, path: call.path, grpcMethod: undefined };
    if (!o.signInRoute(policy, req)) return NONE;
    const st = stateOf(call);
    st.browser = acceptsHtml(headerValue(call.fwdHeaders['accept']));
    if (st.cookies.session === null) return NONE;
    const r = readSession(st);
    if (!r.ok) {
      counters.sessionsRefused++;
      st.clear = true;
      log.debug('session refused', { decisionId: call.decisionId, detail: r.detail });
      return { kind: 'deny', code: 'ERR_SESSION_INVALID', detail: r.detail };
    }
    const s = r.session;
    // CSRF before the session is used for anything that changes state (csrf.ts); a WebSocket
    // handshake is a GET, but the socket it opens takes messages that may: a browser sends its
    // Origin with it, and one from another origin (a sibling subdomain is same-site, so the
    // cookie comes along) would drive the user's session (cross-site WebSocket hijacking).
    const upgrade = call.upgrade !== undefined && call.upgrade !== null;
    if (upgrade || isUnsafeMethod(call.method)) {
      const expected = originFor(call);
      const evidence = {
        origin: headerValue(call.fwdHeaders['origin']),
        referer: headerValue(call.fwdHeaders['referer']),
        secFetchSite: headerValue(call.fwdHeaders['sec-fetch-site']),
      };
      if (expected === null || !fromSameOrigin(evidence, expected)) {
        counters.csrfRefused++;
        return { kind: 'deny', code: 'ERR_SESSION_CSRF', detail: `${upgrade ? 'WebSocket handshake' : call.method} without a same-origin Origin/Referer` };
      }
    }
    const nowS = Math.floor(clock() / 1000);
    const expired = nowS >= s.x;
    const due = nowS >= s.f;
    // Refresh only where the browser can be sent back to the same request: a navigation-safe
    // method, or one whose token is already expired (a 307 repeats it with its body). Never a
    // WebSocket handshake: a browser does not follow its redirects; it goes on with the token
    // while valid, and the page's next navigation refreshes.
    if (due && s.r !== undefined && !upgrade && (expired || !isUnsafeMethod(call.method))) return refreshAndBounce(call, st, s, expired);
    if (expired) {
      counters.sessionsRefused++;
      // the session itself is still good: the page's next navigation refreshes it
      if (upgrade && s.r !== undefined) return { kind: 'deny', code: 'ERR_SESSION_INVALID', detail: 'access token expired (a WebSocket handshake is not refreshed)' };
      st.clear = true;
      return { kind: 'deny', code: 'ERR_SESSION_INVALID', detail: 'access token expired and no refresh token' };
    }
    return use(call, st, s);
  }

  function use(call: SessionCall, st: CallState, s: SessionData): SessionResume {
    counters.sessionsResumed++;
    st.session = s;
    if (cfg.passAccessToken) call.fwdHeaders['authorization'] = `Bearer ${s.a}`;
    return { kind: 'token', token: s.a };
  }

  function refreshAndBounce(call: SessionCall, st: CallState, s: SessionData, expired: boolean): Promise<SessionResume> {
    const key = `${s.i}:${tokenHash(s.a)}`;
    const now = clock();
    let entry = refreshing.peek(key);
    if (entry === undefined || now >= entry.until) {
      const result = sharedRefresh(key, s).then((out) => {
        // a provider that was down is asked again by the next request, not after the reuse window
        if (isOutage(out)) refreshing.delete(key);
        return out;
      });
      entry = { until: now + REFRESH_REUSE_MS, result };
      refreshing.set(key, entry);
    }
    return entry.result.then((out): SessionResume => {
      if (call.closed || call.finished) return ANSWERED;
      if (!out.ok) {
        if (!out.ended && !expired) return use(call, st, s); // provider down, token still good: carry on
        if (out.ended) {
          st.clear = true;
          counters.sessionsRefused++;
        }
        return { kind: 'deny', code: out.code, detail: out.detail };
      }
      const cookies = sealSession(call, out.session, st.cookies.session);
      if (cookies === null) {
        st.clear = true;
        return { kind: 'deny', code: 'ERR_SESSION_INVALID', detail: 'refreshed session too large for its cookies' };
      }
      // The new cookie reaches the browser on a redirect to the very same request (307 keeps
      // the method and body); the browser repeats it with the refreshed session.
      // A path that starts `//` (kept with `paths.mergeSlashes: false`) would be another host to
      // the browser as a relative `Location`: it goes out absolute, or not at all.
      let target = `${call.path}${call.query}`;
      if (call.path.startsWith('//')) {
        const origin = originFor(call);
        if (origin === null) return { kind: 'deny', code: 'ERR_RETURN_URL_INVALID', detail: 'a path starting "//" cannot be repeated through a relative redirect' };
        target = `${origin}${target}`;
      }
      redirect(call, 307, target, cookies, null);
      return ANSWERED;
    });
  }

  /**
   * One refresh per session and access token for the whole sidecar: a provider that rotates
   * refresh tokens takes each once, and revokes the grant when one comes back (found in review:
   * with two workers the second refreshed with the retired token, and the user was signed out).
   */
  function sharedRefresh(key: string, s: SessionData): Promise<RefreshOutcome> {
    const share = o.shareRefresh;
    if (share === undefined) return refresh(s);
    return share(key, async () => {
      const out = await refresh(s);
      // a provider that was down is asked again by the next request, as in one worker
      return { value: out, keepMs: isOutage(out) ? 0 : REFRESH_REUSE_MS };
    }).then(
      (v) => {
        const out = asRefreshOutcome(v);
        // The key names this session and token; its outcome must be for this session, too.
        if (out === null || (out.ok && (out.session.i !== s.i || out.session.s !== s.s))) return SHARED_REFRESH_LOST;
        return out;
      },
      (err: unknown) => {
        log.warn('session refresh: no outcome from the worker running it', { session: tokenHash(s.i), err });
        return SHARED_REFRESH_LOST;
      },
    );
  }

  async function refresh(s: SessionData): Promise<RefreshOutcome> {
    counters.refreshes++;
    const rt = s.r as string;
    const r = await client.refresh(rt);
    if (!r.ok) {
      const f = r.failure;
      // No answer, 5xx, 429, `temporarily_unavailable`, `slow_down` (oidc.ts classify): an outage.
      if (f.kind === 'unavailable') {
        log.warn('session refresh: provider unavailable', { session: tokenHash(s.i), detail: failureDetail(f) });
        return { ok: false, code: 'ERR_SIGNIN_UNAVAILABLE', detail: failureDetail(f), ended: false };
      }
      // RFC 6749 §5.2: of the token endpoint's errors only `invalid_grant` says this refresh token
      // is dead (revoked, expired, the provider's session ended). The others name the client
      // (`invalid_client`, `unauthorized_client`, `unsupported_grant_type`), the request
      // (`invalid_request`, `invalid_scope`, RFC 8707 `invalid_target`) or nothing known: the
      // same for every session, a change at the provider rather than anything about this user,
      // so ending every session over it would sign everyone out for a registration mistake. As
      // oauth2-proxy does on a failed refresh, the session goes on with its still-valid token;
      // once that has expired the browser is sent to sign in again (as Envoy's oauth2 filter
      // does), where the provider can ask for what it wants or show its error.
      if (f.kind === 'refused' && f.error !== 'invalid_grant') {
        log.warn('session refresh refused for a reason other than the grant; session kept', { session: tokenHash(s.i), detail: failureDetail(f) });
        return { ok: false, code: 'ERR_SESSION_INVALID', detail: failureDetail(f), ended: false };
      }
      // invalid_grant, or a response that does not validate: the session ends
      counters.refreshesRefused++;
      ended(s.i, s.e * 1000);
      log.info('session refresh refused; session ended', { session: tokenHash(s.i), detail: failureDetail(f) });
      return { ok: false, code: 'ERR_SESSION_INVALID', detail: failureDetail(f), ended: true };
    }
    const checked = await authenticateTokens(r.value);
    // The new token could not be checked now (keys or introspection unavailable: a 503 code).
    // Not a refusal: the session goes on with the token it has while that one is valid, as when
    // the provider itself is down (found in review: an IdP key rotation ended every session
    // refreshing through it).
    if (!checked.ok && ERROR_TABLE[checked.error.code].http === 503) {
      log.warn('session refresh: the new access token cannot be checked now', { session: tokenHash(s.i), code: checked.error.code });
      return { ok: false, code: 'ERR_SIGNIN_UNAVAILABLE', detail: `refreshed access token not checked: ${checked.error.code}`, ended: false };
    }
    if (!checked.ok || checked.identity.subject !== s.s) {
      counters.refreshesRefused++;
      ended(s.i, s.e * 1000);
      const detail = checked.ok ? 'refreshed token is for another subject' : `refreshed access token refused: ${checked.error.code}`;
      log.warn('session refresh: new access token refused; session ended', { session: tokenHash(s.i), detail });
      return { ok: false, code: 'ERR_SESSION_INVALID', detail, ended: true };
    }
    const x = Math.min(checked.identity.expiresAt, r.value.expiresAt ?? Infinity);
    const next: SessionData = {
      i: s.i,
      s: s.s,
      a: r.value.accessToken,
      x,
      f: refreshAt(Math.floor(clock() / 1000), x),
      ...(r.value.refreshToken === undefined ? {} : { r: r.value.refreshToken }),
      e: s.e,
    };
    log.debug('session refreshed', { session: tokenHash(s.i), token: tokenHash(next.a) });
    return { ok: true, session: next };
  }

  async function authenticateTokens(t: TokenSet): Promise<SessionAuthResult> {
    try {
      const r = o.authenticate(t.accessToken);
      return isPromise(r) ? await r : r;
    } catch (err) {
      log.error('authenticate threw on a session token', { err });
      return { ok: false, error: { code: 'ERR_INTERNAL', detail: 'authenticate threw' } };
    }
  }

  // ---- denials on the sign-in path

  function writeDenial(call: SessionCall, code: ErrorCode): boolean {
    const st = calls.get(call);
    if (st === undefined) return false;
    const cookies = clearing(call, st, code);
    const row = ERROR_TABLE[code];
    if (row.http === 401 && st.browser && (call.method === 'GET' || call.method === 'HEAD')) {
      // A page the browser navigated to: sign in and come back here (instead of a 401).
      const back = safeReturnPath(`${call.path}${call.query}`) ?? '/';
      void startSignIn(call, back, cookies, code);
      return true;
    }
    if (st.browser) {
      denialPage(call, code, cookies, st.session !== null && row.http !== 401);
      return true;
    }
    if (cookies.length > 0) {
      textDenial(call, o.service, code, cookies);
      return true;
    }
    return false;
  }

  /**
   * `Set-Cookie` values expiring the transaction cookies the browser sent beyond the newest
   * MAX_TXNS - 1, not counting `current` (the one this response sets or clears): with it, at
   * most MAX_TXNS stay. Newest by sealed expiry (one that does not unseal is oldest), then by
   * place in the `Cookie` field (RFC 6265 §5.4: older cookies first).
   */
  function staleTxns(call: SessionCall, current: string | null): string[] {
    const sent = calls.get(call)?.cookies.txn;
    if (sent === undefined || sent.size < MAX_TXNS) return [];
    const now = clock();
    const others: { name: string; until: number; at: number }[] = [];
    for (const [name, value] of sent) {
      // only names this stage gives (others it never set, and echoing them back serves no one)
      if (name === current || !TXN_SUFFIX.test(name.slice(names.txnPrefix.length))) continue;
      const u = txns.unseal<unknown>(value, now, name);
      others.push({ name, until: u.ok ? u.expiresAt : -Infinity, at: others.length });
    }
    others.sort((a, b) => b.until - a.until || b.at - a.at);
    const secure = secureFor(call);
    return others.slice(MAX_TXNS - 1, MAX_TXNS - 1 + MAX_TXN_CLEARS).map((t) => clearCookie(t.name, secure, names.txnPath));
  }

  async function startSignIn(call: SessionCall, returnPath: string, extraCookies: readonly string[], reason: ErrorCode | null): Promise<void> {
    const origin = originFor(call);
    if (origin === null) {
      denialPage(call, 'ERR_REQUEST_INVALID', extraCookies, false);
      return;
    }
    counters.signInsStarted++;
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const codeVerifier = oidc.randomPKCECodeVerifier();
    const redirectUri = `${origin}${CALLBACK}`;
    const url = await client.authorizationUrl({ redirectUri, state, nonce, codeVerifier });
    if (!url.ok) {
      counters.signInsFailed++;
      log.warn('sign-in: provider unavailable', { decisionId: call.decisionId, detail: failureDetail(url.failure) });
      denialPage(call, 'ERR_SIGNIN_UNAVAILABLE', extraCookies, false, { 'retry-after': 5 });
      return;
    }
    const back = returnPath.length <= MAX_SEALED_RETURN_CHARS ? returnPath : '/';
    const txn: Txn = { s: state, n: nonce, v: codeVerifier, r: back, u: redirectUri };
    const name = txnCookieName(names, state);
    const sealed = txns.seal(txn, clock() + TXN_TTL_MS, name);
    const cookie = setCookie(name, sealed, { secure: secureFor(call), path: names.txnPath, maxAge: TXN_TTL_MS / 1000 });
    redirect(call, 302, url.value.href, [...extraCookies, ...staleTxns(call, name), cookie], reason);
  }

  // ---- the sidecar's own endpoints

  function handle(call: SessionCall): boolean {
    // Ward's cookies are ward's: the app never sees them, whatever the route.
    const raw = call.fwdHeaders['cookie'];
    if (raw !== undefined) {
      const taken = takeCookies(headerValue(raw), names);
      if (taken.session !== null || taken.txn.size > 0) {
        if (taken.rest === undefined) delete call.fwdHeaders['cookie'];
        else call.fwdHeaders['cookie'] = taken.rest;
        stateOf(call).cookies = taken;
      }
    }
    if (call.grpc || !call.path.startsWith(RESERVED_PREFIX)) return false;
    try {
      endpoint(call);
    } catch (err) {
      log.error('session endpoint threw', { decisionId: call.decisionId, err });
      textDenial(call, o.service, 'ERR_INTERNAL', []);
    }
    return true;
  }

  function endpoint(call: SessionCall): void {
    switch (call.path) {
      case CALLBACK:
        if (call.method !== 'GET') return methodNotAllowed(call, 'GET');
        void callback(call).catch((err: unknown) => {
          log.error('sign-in callback failed', { decisionId: call.decisionId, err });
          denialPage(call, 'ERR_INTERNAL', [], false);
        });
        return;
      case SIGN_IN: {
        if (call.method !== 'GET' && call.method !== 'HEAD') return methodNotAllowed(call, 'GET, HEAD');
        const want = new URLSearchParams(call.query.slice(1)).get('return') ?? '/';
        const back = safeReturnPath(want);
        if (back === null) {
          noteRefusal('sign-in: return URL refused', { decisionId: call.decisionId });
          return denialPage(call, 'ERR_RETURN_URL_INVALID', [], false);
        }
        void startSignIn(call, back, [], null);
        return;
      }
      case LOGOUT:
        if (call.method === 'GET' || call.method === 'HEAD') {
          return page(call, 200, 'Sign out', `<h1>Sign out</h1><form method="post" action="${LOGOUT}"><button type="submit">Sign out</button></form>`, [], null);
        }
        if (call.method !== 'POST') return methodNotAllowed(call, 'GET, HEAD, POST');
        void logout(call);
        return;
      case SIGNED_OUT:
        if (call.method !== 'GET' && call.method !== 'HEAD') return methodNotAllowed(call, 'GET, HEAD');
        return page(call, 200, 'Signed out', '<h1>Signed out</h1><p id="signed-out">You are signed out.</p><p><a href="/">Sign in again</a></p>', [], null);
      default:
        return notFound(call);
    }
  }

  function signInFailed(call: SessionCall, code: ErrorCode, detail: string, cookies: readonly string[]): void {
    counters.signInsFailed++;
    noteRefusal('sign-in refused', { decisionId: call.decisionId, code, detail });
    page(
      call,
      ERROR_TABLE[code].http,
      'Sign-in failed',
      `<h1>Sign-in failed</h1><p>${escapeHtml(ERROR_TABLE[code].message)}.</p><p>Reason <code id="reason">${escapeHtml(code)}</code>, decision <code id="decision">${escapeHtml(call.decisionId)}</code>.</p><p><a href="/">Start again</a></p>`,
      cookies,
      code,
    );
  }

  async function callback(call: SessionCall): Promise<void> {
    const params = new URLSearchParams(call.query.slice(1));
    const state = params.get('state');
    const st = stateOf(call);
    if (state === null || state === '' || state.length > 512) return signInFailed(call, 'ERR_SIGNIN_FAILED', 'callback without state', []);
    const name = txnCookieName(names, state);
    const sealed = st.cookies.txn.get(name);
    // RFC 6749 §10.12: the state must be the one this browser's sign-in was started with
    if (sealed === undefined) return signInFailed(call, 'ERR_SIGNIN_FAILED', 'no sign-in in progress for this state', []);
    // this sign-in's cookie, and those beyond the newest few (without a `__Host-` name they are
    // sent to /.ward/ only: seen here and at /.ward/sign-in, never by the page views that set them)
    const clearTxn = [clearCookie(name, secureFor(call), names.txnPath), ...staleTxns(call, name)];
    const u = txns.unseal<unknown>(sealed, clock(), name);
    if (!u.ok || !isTxn(u.value) || !sameString(u.value.s, state)) {
      return signInFailed(call, 'ERR_SIGNIN_FAILED', `transaction cookie ${u.ok ? 'does not match state' : u.reason}`, clearTxn);
    }
    const txn = u.value;
    const used = usedStates.peek(state);
    if (used !== undefined && clock() < used) return signInFailed(call, 'ERR_SIGNIN_FAILED', 'state already used (replayed callback)', clearTxn);
    usedStates.set(state, u.expiresAt);
    const error = params.get('error');
    if (error !== null) {
      // RFC 6749 §4.1.2.1 `temporarily_unavailable`, `server_error`: the provider's outage, a 503 here too
      const code: ErrorCode = isOutageError(error) ? 'ERR_SIGNIN_UNAVAILABLE' : 'ERR_SIGNIN_FAILED';
      return signInFailed(call, code, `provider returned error ${error.slice(0, 64)}`, clearTxn);
    }

    const callbackUrl = new URL(txn.u);
    callbackUrl.search = call.query;
    const r = await client.exchangeCode(callbackUrl, { state: txn.s, nonce: txn.n, codeVerifier: txn.v });
    if (!r.ok) {
      const code: ErrorCode = r.failure.kind === 'unavailable' ? 'ERR_SIGNIN_UNAVAILABLE' : 'ERR_SIGNIN_FAILED';
      return signInFailed(call, code, failureDetail(r.failure), clearTxn);
    }
    const tokens = r.value;
    // The access token must pass the same checks as any bearer token of this service.
    const checked = await authenticateTokens(tokens);
    if (!checked.ok) {
      // Keys or introspection unavailable (a 503 code): the sign-in may be tried again, not refused.
      const code: ErrorCode = ERROR_TABLE[checked.error.code].http === 503 ? 'ERR_SIGNIN_UNAVAILABLE' : 'ERR_SIGNIN_FAILED';
      return signInFailed(call, code, `access token ${code === 'ERR_SIGNIN_FAILED' ? 'refused' : 'not checked'}: ${checked.error.code} ${checked.error.detail ?? ''}`, clearTxn);
    }
    const sub = tokens.idClaims?.['sub'];
    if (typeof sub !== 'string' || sub !== checked.identity.subject) {
      return signInFailed(call, 'ERR_SIGNIN_FAILED', 'ID token and access token name different subjects', clearTxn);
    }
    const nowS = Math.floor(clock() / 1000);
    const x = Math.min(checked.identity.expiresAt, tokens.expiresAt ?? Infinity);
    const s: SessionData = {
      i: randomBytes(16).toString('base64url'),
      s: sub,
      a: tokens.accessToken,
      x,
      f: refreshAt(nowS, x),
      ...(tokens.refreshToken === undefined ? {} : { r: tokens.refreshToken }),
      e: nowS + cfg.maxAgeSeconds,
    };
    const cookies = sealSession(call, s, st.cookies.session);
    if (cookies === null) return signInFailed(call, 'ERR_SIGNIN_FAILED', 'session too large for its cookies', clearTxn);
    counters.signInsCompleted++;
    log.info('signed in', { decisionId: call.decisionId, issuer: checked.identity.issuer, subject: sub, session: tokenHash(s.i) });
    redirect(call, 302, safeReturnPath(txn.r) ?? '/', [...cookies, ...clearTxn], null);
  }

  async function logout(call: SessionCall): Promise<void> {
    const st = stateOf(call);
    const origin = originFor(call);
    const evidence = {
      origin: headerValue(call.fwdHeaders['origin']),
      referer: headerValue(call.fwdHeaders['referer']),
      secFetchSite: headerValue(call.fwdHeaders['sec-fetch-site']),
    };
    // a forged logout would only sign the user out, but it is still a cross-site state change
    if (origin === null || !fromSameOrigin(evidence, origin)) {
      counters.csrfRefused++;
      return denialPage(call, 'ERR_SESSION_CSRF', [], false);
    }
    counters.logouts++;
    const r = readSession(st);
    if (r.ok) {
      ended(r.session.i, r.session.e * 1000);
      log.info('logged out', { decisionId: call.decisionId, subject: r.session.s, session: tokenHash(r.session.i) });
      if (r.session.r !== undefined) void client.revoke(r.session.r);
    }
    const cookies = clearSessionCookies(names, st.cookies.session, secureFor(call));
    const end = await client.endSessionUrl(`${origin}${SIGNED_OUT}`);
    redirect(call, 303, end?.href ?? SIGNED_OUT, cookies, null);
  }

  function endedElsewhere(id: string, untilMs: number): void {
    if (untilMs > clock()) loggedOut.set(id, untilMs);
  }

  return { counters, handle, resume, writeDenial, endedElsewhere };
}
