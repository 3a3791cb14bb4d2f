import { hash, type KeyObject } from 'node:crypto';
import type { ErrorCode } from '../errors/codes.ts';
import { WardError } from '../errors/ward-error.ts';
import { systemClock } from '../lib/clock.ts';
import type { Clock } from '../lib/clock.ts';
import { tokenHash } from '../lib/hash.ts';
import type { Logger } from '../lib/log.ts';
import { Lru } from '../lib/lru.ts';
import type { Identity, IssuerTrust } from '../policy/model.ts';
import { checkAudience, checkIntrospectedType, checkNotSenderConstrained, checkRequired, checkTime, identityParts, isFailure } from './claims.ts';
import type { Failure, IdentityParts } from './claims.ts';
import { describeError } from './fetch.ts';
import { deepFreeze, isJsonObject, toStrictJson } from './json.ts';
import type { JsonObject } from './json.ts';
import { isAccessTokenType, isCompactJws, parseJwt } from './jwt.ts';
import { ASYMMETRIC_ALGS, IssuerSource } from './source.ts';
import { supportsDirectVerify, verifyJwsSignature } from './verify.ts';
import type { IssuerStatus, SourceSettings, SourceSpec } from './source.ts';
import { isPromise } from '../lib/promise.ts';

export type { IssuerStatus } from './source.ts';

/**
 * The authentication stage: a bearer token in, an `Identity` or a coded `WardError` out.
 *
 * Order of checks (STYLE habit 6, Envoy `authenticator.cc`), cheapest first so that junk costs
 * as little as possible and the expensive signature runs only for tokens that would otherwise
 * pass: size -> verified-token cache -> parse -> `alg` allow-list -> exact `iss` -> RFC 9068 `typ` ->
 * `exp`/`nbf`/`iat` -> `aud` -> required claims and claim shapes -> key by `kid` -> signature.
 * Failures before the key lookup are returned synchronously; so is every cache hit.
 *
 * Signatures are checked in batches: a JWT for a JWKS key joins the signature queue, and
 * the queue is worked through once per event-loop turn (`setImmediate`), after the loop has read
 * what every connection sent. Under load a turn brings tens of new tokens; verifying them one
 * after another, rather than each between its call's parsing and forwarding, cut the CPU of a
 * call with the verified-token cache off by ~12% (BENCHMARKS.md, "what each optimisation bought").
 */

export interface AuthenticatorOptions {
  readonly clockSkewSeconds: number;
  readonly maxTokenBytes: number;
  /** Verified-token cache size; 0 disables it. */
  readonly cacheEntries: number;
  readonly introspectionCacheMaxSeconds: number;
  readonly jwks: {
    readonly timeoutMs: number;
    readonly refreshIntervalMs: number;
    readonly cooldownMs: number;
    readonly graceMs: number;
  };
  /** The workload's own client credentials per issuer (secrets resolved by the caller). */
  readonly credentials: readonly { readonly issuer: string; readonly clientId: string; readonly clientSecret: string }[];
  readonly log: Logger;
  readonly clock?: Clock;
  readonly fetch?: typeof fetch;
}

export type AuthResult = { readonly ok: true; readonly identity: Identity } | { readonly ok: false; readonly error: WardError };

export interface Authenticator {
  /** Synchronous on a cache hit and on cheap rejections; never throws or rejects. */
  authenticate(token: string): AuthResult | Promise<AuthResult>;
  /**
   * `authenticate` without a promise for the caller's wait: the result when it is at hand (a
   * cache hit, a cheap rejection), else undefined, and `done(ctx, result)` is called once,
   * later. For the request path, where a promise, its reactions and the closures over the call
   * were ~0.65 KiB of garbage per call with a new token (BENCHMARKS.md). `done` should not
   * throw; if it does, the error is logged and the other waiting calls still get theirs.
   */
  authenticateThen<C>(token: string, ctx: C, done: (ctx: C, r: AuthResult) => void): AuthResult | undefined;
  /** Policy (re)load. Unchanged issuers keep their keys and state; removed ones stop at once. */
  setIssuers(issuers: readonly IssuerTrust[]): void;
  /** Every issuer has its keys (and, for introspection, its discovery document). */
  ready(): boolean;
  /** Resolves true once `ready()`, false after `timeoutMs`. */
  whenReady(timeoutMs: number): Promise<boolean>;
  status(): readonly IssuerStatus[];
  /** JWS signatures checked so far (a verified-token cache hit checks none). */
  readonly signatureChecks: number;
  /** Stops refresh timers. */
  close(): void;
}

const HMAC_ALGS: ReadonlySet<string> = new Set(['HS256', 'HS384', 'HS512']);

/** How long an `active: false` answer is remembered: long enough to absorb a retry storm, short
 *  enough that a token activated just after (clock skew at the IdP) is not refused for long. */
const NEGATIVE_INTROSPECTION_MS = 5_000;

/** One trusted issuer as compiled from its `IssuerTrust`. Replaced (new object) when the trust
 *  changes, so cache entries that point at an old object stop matching. */
interface IssuerState {
  readonly trust: IssuerTrust;
  readonly source: IssuerSource;
  /** `trust.algorithms` minus `none`, unsupported names, and HMAC unless `hmacSecret` is set. */
  readonly algorithms: ReadonlySet<string>;
}

interface CacheEntry {
  /** The frozen result handed out on every hit (a hit allocates nothing). */
  readonly result: AuthResult;
  /** Clock milliseconds: never served at or after. `exp`, or sooner for introspection. */
  readonly deadlineMs: number;
  readonly state: IssuerState;
  /** Verified with a JWKS key: a hit also requires those keys to be within grace. */
  readonly viaJwks: boolean;
  /** That key (`IssuerSource.publishes`): a hit also requires the IdP to still publish it. */
  readonly keyId: string | undefined;
}

interface NegativeEntry {
  readonly deadlineMs: number;
  readonly state: IssuerState;
}

interface PendingJwt {
  readonly payloadSegment: string;
  readonly state: IssuerState;
  readonly alg: string;
  readonly kid: string | undefined;
  readonly payload: JsonObject;
  readonly exp: number;
  readonly parts: IdentityParts;
}

/** A JWT waiting in the signature queue: everything but the signature has been checked. */
interface QueuedJwt {
  readonly token: string;
  readonly cacheKey: string | undefined;
  readonly again: boolean;
  readonly pending: PendingJwt;
  /** Who waits: `done(ctx, result)` (a promise's resolve for `authenticate`). */
  readonly ctx: unknown;
  readonly done: Done;
  /** Set when the batch has checked it, before any waiting call is given its result. */
  result: AuthResult | Promise<AuthResult> | undefined;
}

type Done = (ctx: unknown, r: AuthResult) => void;

/** `done` for `authenticate`: the context is the promise's resolve. */
function settle(resolve: unknown, r: AuthResult): void {
  (resolve as (r: AuthResult) => void)(r);
}

export function createAuthenticator(opts: AuthenticatorOptions): Authenticator {
  return new TokenAuthenticator(opts);
}

function deny(code: ErrorCode, detail: string): AuthResult {
  return { ok: false, error: new WardError(code, detail) };
}

/**
 * Cache key: SHA-256 of the token, not the token. Entries then cost 43 bytes of key instead of
 * up to `maxTokenBytes`, and the long-lived cache (which a heap snapshot or core dump would
 * expose) holds no replayable bearer credential. The price is one native hash per request:
 * ~0.5 µs of a ~0.85 µs hit for a 600-byte token, against the ~50-100 µs RS256/ES256
 * verification a hit saves (scripts/bench/micro-authn.ts). A false hit would need a SHA-256
 * second preimage.
 */
function cacheKeyOf(token: string): string {
  return hash('sha256', token, 'base64url');
}

class TokenAuthenticator implements Authenticator {
  readonly #opts: AuthenticatorOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #settings: SourceSettings;
  readonly #cache: Lru<string, CacheEntry>;
  /** Inactive introspection answers, briefly; bounded like the main cache. */
  readonly #negative: Lru<string, NegativeEntry>;
  readonly #introspecting = new Map<string, Promise<AuthResult>>();
  #issuers = new Map<string, IssuerState>();
  /** Union of every trusted issuer's allowed algorithms: the first, issuer-independent filter. */
  #anyAlg: ReadonlySet<string> = new Set();
  #introspectionIssuer: IssuerState | undefined;
  readonly #started = new WeakSet<IssuerSource>();
  #waiters = new Set<() => void>();
  #closed = false;
  /**
   * The last token hashed and its cache key: a client sends the same token on call after call,
   * so the SHA-256 is skipped when it repeats (~0.5 µs per call, BENCHMARKS.md). One token at a
   * time, replaced by the next different one: the cache itself still holds no token.
   */
  #lastToken = '';
  signatureChecks = 0;
  #lastKey = '';
  /** Tokens waiting for their signature check, in arrival order; worked through by `#drain`. */
  #queue: QueuedJwt[] = [];
  #drainScheduled = false;
  readonly #drain = (): void => this.#verifyQueued();

  constructor(opts: AuthenticatorOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#log = opts.log;
    this.#settings = {
      ...opts.jwks,
      clock: this.#clock,
      fetch: opts.fetch,
      log: opts.log,
    };
    this.#cache = new Lru(opts.cacheEntries);
    this.#negative = new Lru(Math.min(opts.cacheEntries, 1024));
  }

  authenticate(token: string): AuthResult | Promise<AuthResult> {
    try {
      return this.#authenticate(token, false, undefined, undefined) as AuthResult | Promise<AuthResult>;
    } catch (err) {
      return this.#internal(err);
    }
  }

  authenticateThen<C>(token: string, ctx: C, done: (ctx: C, r: AuthResult) => void): AuthResult | undefined {
    let r: AuthResult | Promise<AuthResult> | undefined;
    try {
      r = this.#authenticate(token, false, ctx, done as Done);
    } catch (err) {
      return this.#internal(err);
    }
    if (r === undefined || !isPromise(r)) return r;
    // The paths that fetch (a key not loaded yet, introspection, HMAC through jose): rare, and
    // their promises never reject (each ends in `#internal`).
    void r.then((res) => this.#deliver(ctx, done as Done, res));
    return undefined;
  }

  /** Gives a waiting caller its result; a throw there is logged and stops nothing else. */
  #deliver(ctx: unknown, done: Done, r: AuthResult): void {
    try {
      done(ctx, r);
    } catch (err) {
      this.#log.error('a waiting call threw on its authentication result', { error: describeError(err) });
    }
  }

  #internal(err: unknown): AuthResult {
    this.#log.error('authentication failed unexpectedly', { error: describeError(err) });
    return deny('ERR_INTERNAL', 'unexpected authenticator failure');
  }

  /**
   * `again`: this is the one re-run after the issuer's trust changed mid-verification. With
   * `done`, a token that joins the signature queue returns undefined and is answered through
   * `done(ctx, result)`; without, through the promise returned.
   */
  #authenticate(token: string, again: boolean, ctx: unknown, done: Done | undefined): AuthResult | Promise<AuthResult> | undefined {
    // Length in UTF-16 units <= bytes, and anything non-ASCII fails the parse below anyway.
    if (token.length > this.#opts.maxTokenBytes) return deny('ERR_TOKEN_TOO_LARGE', `token of ${token.length} bytes`);
    if (token.length === 0) return deny('ERR_TOKEN_MALFORMED', 'empty token');
    const now = this.#clock();

    let key: string | undefined;
    if (this.#cache.capacity > 0) {
      if (token === this.#lastToken) key = this.#lastKey;
      else {
        key = cacheKeyOf(token);
        this.#lastToken = token;
        this.#lastKey = key;
      }
      const hit = this.#cache.get(key);
      if (hit !== undefined) {
        if (this.#stillValid(hit, now)) return hit.result;
        this.#cache.delete(key); // expired, issuer gone or changed, keys past grace or key withdrawn: re-verify
      }
    }

    if (!isCompactJws(token)) return this.#opaque(token, key, now);

    const jwt = parseJwt(token);
    if (typeof jwt === 'string') return this.#reject(token, 'ERR_TOKEN_MALFORMED', jwt);
    const { payload, alg, kid } = jwt;
    // `none` and anything no issuer allows is refused before we even look at `iss` (RFC 8725 §3.1).
    if (!this.#anyAlg.has(alg)) return this.#reject(token, 'ERR_TOKEN_ALG_NOT_ALLOWED', `alg ${alg}`, undefined, kid);

    const iss = payload['iss'];
    if (typeof iss !== 'string') return this.#reject(token, 'ERR_TOKEN_ISSUER_UNKNOWN', 'iss missing', undefined, kid);
    // Exact string comparison (RFC 9068 §4): no normalisation, no trailing-slash leniency.
    const state = this.#issuers.get(iss);
    if (state === undefined) return this.#reject(token, 'ERR_TOKEN_ISSUER_UNKNOWN', 'issuer not trusted', undefined, kid);
    if (!state.algorithms.has(alg)) return this.#reject(token, 'ERR_TOKEN_ALG_NOT_ALLOWED', `alg ${alg} not allowed for issuer`, iss, kid);

    // RFC 9068 §4: explicit typing keeps ID tokens and other JWTs from passing as access tokens.
    if (state.trust.requireAtJwtType && !isAccessTokenType(jwt.typ)) {
      return this.#reject(token, 'ERR_TOKEN_TYPE', `typ ${jwt.typ ?? 'missing'}`, iss, kid);
    }
    const f =
      checkTime(payload, now, this.#opts.clockSkewSeconds, true) ??
      checkAudience(payload['aud'], state.trust.audiences) ??
      checkRequired(payload, state.trust.requiredClaims) ??
      checkNotSenderConstrained(payload);
    if (f !== undefined) return this.#reject(token, f.code, f.detail, iss, kid);
    const parts = identityParts(payload);
    if (isFailure(parts)) return this.#reject(token, parts.code, parts.detail, iss, kid);

    const exp = payload['exp'] as number; // checkTime made it a number
    const pending: PendingJwt = { payloadSegment: jwt.payloadSegment, state, alg, kid, payload, exp, parts };
    if (!HMAC_ALGS.has(alg) && supportsDirectVerify(alg)) {
      // The signature queue: the key is looked up when the batch runs (usually at hand; if not,
      // that token goes on to the path that fetches).
      if (done !== undefined) {
        this.#enqueue({ token, cacheKey: key, again, pending, ctx, done, result: undefined });
        return undefined;
      }
      return new Promise<AuthResult>((resolve) => this.#enqueue({ token, cacheKey: key, again, pending, ctx: resolve, done: settle, result: undefined }));
    }
    return this.#verifySignature(token, key, again, pending).catch((err: unknown) => this.#internal(err));
  }

  /** A cache entry may still answer: not expired, its issuer's trust unchanged, its key still published. */
  #stillValid(hit: CacheEntry, now: number): boolean {
    return (
      hit.deadlineMs > now &&
      this.#issuers.get(hit.state.trust.issuer) === hit.state &&
      (!hit.viaJwks || (hit.state.source.usable(now) && hit.keyId !== undefined && hit.state.source.publishes(hit.keyId)))
    );
  }

  #enqueue(q: QueuedJwt): void {
    this.#queue.push(q);
    if (!this.#drainScheduled) {
      this.#drainScheduled = true;
      setImmediate(this.#drain);
    }
  }

  /**
   * Works through the signature queue: every token queued since the last turn, in order, all
   * checked before any waiting call goes on (the RSA code and the request path, run back to
   * back, keep to the CPU's caches; BENCHMARKS.md "After batching").
   */
  #verifyQueued(): void {
    this.#drainScheduled = false;
    const queue = this.#queue;
    this.#queue = [];
    for (const q of queue) {
      try {
        q.result = this.#verifyOne(q);
      } catch (err) {
        q.result = this.#internal(err);
      }
    }
    for (const q of queue) {
      const r = q.result as AuthResult | Promise<AuthResult>;
      if (isPromise(r)) void r.then((res) => this.#deliver(q.ctx, q.done, res));
      else this.#deliver(q.ctx, q.done, r);
    }
  }

  #verifyOne(q: QueuedJwt): AuthResult | Promise<AuthResult> {
    const { state, alg, kid } = q.pending;
    const iss = state.trust.issuer;
    // The policy may have been reloaded since the token was queued.
    if (this.#issuers.get(iss) !== state) return this.#trustChanged(q.token, iss, q.again);
    if (q.cacheKey !== undefined) {
      // A burst of calls carrying one new token: the first one's verification answers the rest.
      const hit = this.#cache.peek(q.cacheKey);
      if (hit !== undefined && this.#stillValid(hit, this.#clock())) return hit.result;
    }
    // The key as the issuer's keys stand now, not as they stood when the token was queued: a
    // refresh in between may have withdrawn it. Gone from what is at hand: the path that fetches.
    const r = state.source.resolveKeyNow(alg, kid);
    if (r === undefined || !r.ok) return this.#verifySignature(q.token, q.cacheKey, q.again, q.pending).catch((err: unknown) => this.#internal(err));
    this.signatureChecks++;
    const why = verifyJwsSignature(alg, q.token, r.key);
    if (why !== null) return this.#reject(q.token, 'ERR_TOKEN_SIGNATURE', why, iss, kid);
    const p = q.pending;
    return this.#accept(q.cacheKey, state, p.payload, p.parts, p.exp, p.payloadSegment, true, r.keyId);
  }

  async #verifySignature(token: string, cacheKey: string | undefined, again: boolean, p: PendingJwt): Promise<AuthResult> {
    const { state, alg, kid } = p;
    const iss = state.trust.issuer;
    let verifyKey: KeyObject | Uint8Array;
    let keyId: string | undefined;
    const viaJwks = !HMAC_ALGS.has(alg);
    if (viaJwks) {
      const r = await state.source.resolveKey(alg, kid);
      if (this.#issuers.get(iss) !== state) return this.#trustChanged(token, iss, again);
      if (!r.ok) return this.#reject(token, r.code, r.detail, iss, kid);
      verifyKey = r.key;
      keyId = r.keyId;
    } else {
      // HMAC only with the configured secret, never with anything from a JWKS (alg confusion:
      // an RSA public key is public, so "HS256 keyed with it" is forgeable by anyone).
      verifyKey = state.trust.hmacSecret as Uint8Array;
    }
    this.signatureChecks++;
    if (viaJwks && supportsDirectVerify(alg)) {
      // node:crypto directly: half the cost of jose's WebCrypto path (verify.ts).
      const why = verifyJwsSignature(alg, token, verifyKey as KeyObject);
      if (why !== null) return this.#reject(token, 'ERR_TOKEN_SIGNATURE', why, iss, kid);
    } else {
      try {
        // jose only here (HMAC with a configured secret): not loaded by a sidecar that never needs it
        const { compactVerify } = await import('jose');
        await compactVerify(token, verifyKey, { algorithms: [alg] });
      } catch (err) {
        return this.#reject(token, 'ERR_TOKEN_SIGNATURE', describeError(err), iss, kid);
      }
    }
    // The policy may have been reloaded while we awaited the key or the signature.
    if (this.#issuers.get(iss) !== state) return this.#trustChanged(token, iss, again);

    return this.#accept(cacheKey, p.state, p.payload, p.parts, p.exp, p.payloadSegment, viaJwks, keyId);
  }

  /** A verified JWT: its identity, cached until `exp`. */
  #accept(
    cacheKey: string | undefined,
    state: IssuerState,
    payload: JsonObject,
    parts: IdentityParts,
    exp: number,
    payloadSegment: string,
    viaJwks: boolean,
    keyId: string | undefined,
  ): AuthResult {
    const identity = makeIdentity(state.trust.issuer, payload, parts, 'jwt', exp, payloadSegment);
    const result: AuthResult = Object.freeze({ ok: true, identity });
    const deadlineMs = exp * 1000;
    if (cacheKey !== undefined && deadlineMs > this.#clock()) {
      this.#cache.set(cacheKey, { result, deadlineMs, state, viaJwks, keyId });
    }
    return result;
  }

  /**
   * The issuer's trust was replaced while we awaited. Removed: refuse, it is no longer trusted.
   * Changed (audiences, claims, keys source...): the checks already run were against the old
   * trust, so run the whole verification once more against the new one.
   */
  #trustChanged(token: string, iss: string, again: boolean): AuthResult | Promise<AuthResult> {
    if (this.#issuers.has(iss) && !again) return this.#authenticate(token, true, undefined, undefined) as AuthResult | Promise<AuthResult>;
    return this.#reject(token, 'ERR_TOKEN_ISSUER_UNKNOWN', 'issuer removed or changed during verification', iss);
  }

  /**
   * Opaque tokens go to RFC 7662 introspection. Only when exactly one trusted issuer has
   * `introspection: true`: an opaque token names no issuer, and sending it to several IdPs in
   * turn would hand a bearer credential to every one of them (and multiply latency). With none
   * or several configured, opaque tokens are refused as malformed.
   */
  #opaque(token: string, cacheKey: string | undefined, now: number): AuthResult | Promise<AuthResult> {
    if (!isB64token(token)) return this.#reject(token, 'ERR_TOKEN_MALFORMED', 'neither a JWT nor a b64token');
    const state = this.#introspectionIssuer;
    if (state === undefined) return this.#reject(token, 'ERR_TOKEN_MALFORMED', 'opaque token and not exactly one introspection issuer');
    const key = cacheKey ?? cacheKeyOf(token);
    const neg = this.#negative.peek(key);
    if (neg !== undefined) {
      if (neg.deadlineMs > now && neg.state === state) return this.#reject(token, 'ERR_TOKEN_INACTIVE', 'inactive (cached)', state.trust.issuer);
      this.#negative.delete(key);
    }
    // Single-flight: a burst of calls carrying the same new token costs one introspection.
    let pending = this.#introspecting.get(key);
    if (pending === undefined) {
      pending = this.#introspect(token, cacheKey, key, state)
        .catch((err: unknown) => this.#internal(err))
        .finally(() => this.#introspecting.delete(key));
      this.#introspecting.set(key, pending);
    }
    return pending;
  }

  async #introspect(token: string, cacheKey: string | undefined, key: string, state: IssuerState): Promise<AuthResult> {
    const { source } = state;
    const iss = state.trust.issuer;
    if (source.spec.credential === undefined) {
      this.#log.error('introspection issuer has no client credentials', { issuer: iss });
      return this.#reject(token, 'ERR_INTROSPECTION_UNAVAILABLE', 'no credentials for introspection', iss);
    }
    let raw: unknown;
    try {
      raw = await source.introspect(token);
      if (raw === undefined) return this.#reject(token, 'ERR_INTROSPECTION_UNAVAILABLE', 'issuer not discovered', iss);
      source.countIntrospection(true);
    } catch (err) {
      source.countIntrospection(false);
      this.#log.warn('introspection failed', { issuer: iss, error: describeError(err) });
      return this.#reject(token, 'ERR_INTROSPECTION_UNAVAILABLE', describeError(err), iss);
    }
    const resp = toStrictJson(raw);
    if (!isJsonObject(resp)) return this.#reject(token, 'ERR_INTROSPECTION_UNAVAILABLE', 'introspection response unusable', iss);

    // The policy may have been reloaded while we awaited: judge the answer by the current trust
    // of the issuer that gave it (no second network call), or refuse if it is no longer the
    // introspection issuer.
    const current = this.#introspectionIssuer;
    if (current === undefined || current.trust.issuer !== iss) {
      return this.#reject(token, 'ERR_TOKEN_ISSUER_UNKNOWN', 'introspection issuer removed during introspection', iss);
    }
    const trust = current.trust;
    const now = this.#clock();
    if (resp['active'] !== true) {
      const ttl = Math.min(NEGATIVE_INTROSPECTION_MS, this.#opts.introspectionCacheMaxSeconds * 1000);
      if (ttl > 0) this.#negative.set(key, { deadlineMs: now + ttl, state: current });
      return this.#reject(token, 'ERR_TOKEN_INACTIVE', 'introspection: active false', iss);
    }
    // The IdP vouches for activity; the claims it returns still have to fit this service.
    const respIss = resp['iss'];
    if (respIss !== undefined && respIss !== iss) return this.#reject(token, 'ERR_TOKEN_ISSUER_UNKNOWN', 'introspection iss differs', iss);
    const f: Failure | undefined =
      checkIntrospectedType(resp) ??
      checkNotSenderConstrained(resp) ??
      checkTime(resp, now, this.#opts.clockSkewSeconds, false) ??
      // RFC 7662 makes `aud` optional; without it nothing says the token is for this service (a
      // refresh token introspects as active too), so it is required unless the policy says not.
      (resp['aud'] === undefined && trust.requireIntrospectedAudience === false ? undefined : checkAudience(resp['aud'], trust.audiences)) ??
      checkRequired(resp, trust.requiredClaims);
    if (f !== undefined) return this.#reject(token, f.code, f.detail, iss);
    const parts = identityParts(resp);
    if (isFailure(parts)) return this.#reject(token, parts.code, parts.detail, iss);

    const maxMs = this.#opts.introspectionCacheMaxSeconds * 1000;
    const exp = resp['exp'];
    // Without `exp` the identity is valid for as long as we would cache the answer.
    const expiresAt = typeof exp === 'number' ? exp : Math.floor((now + maxMs) / 1000);
    const identity = makeIdentity(iss, resp, parts, 'opaque', expiresAt);
    const result: AuthResult = Object.freeze({ ok: true, identity });
    // Cache no longer than min(exp, introspectionCacheMaxSeconds): revocation at the IdP takes
    // effect here within that bound.
    const deadlineMs = Math.min(expiresAt * 1000, now + maxMs);
    if (cacheKey !== undefined && deadlineMs > now) this.#cache.set(cacheKey, { result, deadlineMs, state: current, viaJwks: false, keyId: undefined });
    return result;
  }

  /** Per-request rejections are quiet (STYLE habit 3): debug only, never the token itself. */
  #reject(token: string, code: ErrorCode, detail: string, issuer?: string, kid?: string): AuthResult {
    if (this.#log.enabled('debug')) {
      this.#log.debug('token rejected', { code, detail, issuer: issuer ?? null, kid: kid ?? null, token: tokenHash(token) });
    }
    return deny(code, detail);
  }

  setIssuers(issuers: readonly IssuerTrust[]): void {
    if (this.#closed) {
      this.#log.warn('setIssuers after close ignored');
      return;
    }
    const next = new Map<string, IssuerState>();
    const anyAlg = new Set<string>();
    const introspecting: IssuerState[] = [];
    for (const trust of issuers) {
      if (next.has(trust.issuer)) {
        this.#log.warn('issuer listed twice; the first entry wins', { issuer: trust.issuer });
        continue;
      }
      const old = this.#issuers.get(trust.issuer);
      let state: IssuerState;
      if (old !== undefined && sameTrust(old.trust, trust)) state = old;
      else {
        const spec = this.#specFor(trust);
        const source = old !== undefined && old.source.sameShape(spec) ? old.source : this.#newSource(spec);
        state = { trust, source, algorithms: allowedAlgorithms(trust) };
      }
      next.set(trust.issuer, state);
      for (const a of state.algorithms) anyAlg.add(a);
      if (trust.introspection) introspecting.push(state);
      if (state.algorithms.size === 0 && !trust.introspection) {
        this.#log.warn('issuer allows no usable algorithm; its tokens will all be refused', { issuer: trust.issuer });
      }
    }
    const kept = new Set<IssuerSource>([...next.values()].map((s) => s.source));
    for (const s of this.#issuers.values()) if (!kept.has(s.source)) s.source.close();

    this.#issuers = next;
    this.#anyAlg = anyAlg;
    this.#introspectionIssuer = introspecting.length === 1 ? introspecting[0] : undefined;
    if (introspecting.length > 1) {
      this.#log.warn('several issuers allow introspection; opaque tokens will be refused', {
        issuers: introspecting.map((s) => s.trust.issuer),
      });
    }
    // Entries of removed or changed issuers would never hit again; drop them now.
    const stale = (e: { readonly state: IssuerState }): boolean => next.get(e.state.trust.issuer) !== e.state;
    this.#cache.prune(stale);
    this.#negative.prune(stale);
    for (const s of kept) {
      if (this.#started.has(s)) continue;
      this.#started.add(s);
      s.start();
    }
    this.#settle();
  }

  #specFor(trust: IssuerTrust): SourceSpec {
    const cred = this.#opts.credentials.find((c) => c.issuer === trust.issuer);
    let needsJwks = false;
    for (const a of trust.algorithms) if (ASYMMETRIC_ALGS.has(a)) needsJwks = true;
    return {
      issuer: trust.issuer,
      jwksUri: trust.jwksUri,
      discovery: trust.discovery,
      needsJwks,
      introspection: trust.introspection,
      credential: cred === undefined ? undefined : { clientId: cred.clientId, clientSecret: cred.clientSecret },
    };
  }

  #newSource(spec: SourceSpec): IssuerSource {
    if (spec.introspection && spec.credential === undefined) {
      this.#log.error('issuer allows introspection but no credentials are configured for it', { issuer: spec.issuer });
    }
    return new IssuerSource(spec, this.#settings, () => this.#settle());
  }

  ready(): boolean {
    for (const s of this.#issuers.values()) if (!s.source.ready()) return false;
    return true;
  }

  #settle(): void {
    if (this.#waiters.size === 0 || !this.ready()) return;
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const w of waiters) w();
  }

  whenReady(timeoutMs: number): Promise<boolean> {
    if (this.ready()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(done);
        resolve(this.ready());
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#waiters.add(done);
    });
  }

  status(): readonly IssuerStatus[] {
    return [...this.#issuers.values()].map((s) => s.source.status());
  }

  close(): void {
    this.#closed = true;
    this.#lastToken = '';
    this.#lastKey = '';
    for (const s of this.#issuers.values()) s.source.close();
  }
}

function makeIdentity(
  issuer: string,
  claims: JsonObject,
  parts: IdentityParts,
  tokenKind: 'jwt' | 'opaque',
  expiresAt: number,
  claimsBase64url?: string,
): Identity {
  const frozen = deepFreeze(claims);
  if (claimsBase64url === undefined) {
    return Object.freeze({ issuer, subject: parts.subject, claims: frozen, tokenKind, expiresAt, actors: parts.actors, scopes: parts.scopes });
  }
  return Object.freeze({ issuer, subject: parts.subject, claims: frozen, tokenKind, expiresAt, actors: parts.actors, scopes: parts.scopes, claimsBase64url });
}

/** What the issuer may use: never `none`, only algorithms we verify, HMAC only with a secret. */
function allowedAlgorithms(trust: IssuerTrust): ReadonlySet<string> {
  const out = new Set<string>();
  for (const a of trust.algorithms) {
    if (ASYMMETRIC_ALGS.has(a) || (HMAC_ALGS.has(a) && trust.hmacSecret !== undefined && trust.hmacSecret.length > 0)) out.add(a);
  }
  return out;
}

function sameTrust(a: IssuerTrust, b: IssuerTrust): boolean {
  return (
    a.issuer === b.issuer &&
    a.jwksUri === b.jwksUri &&
    a.discovery === b.discovery &&
    a.requireAtJwtType === b.requireAtJwtType &&
    a.introspection === b.introspection &&
    (a.requireIntrospectedAudience !== false) === (b.requireIntrospectedAudience !== false) &&
    sameList(a.audiences, b.audiences) &&
    sameList(a.algorithms, b.algorithms) &&
    sameList(a.requiredClaims, b.requiredClaims) &&
    sameBytes(a.hmacSecret, b.hmacSecret)
  );
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

/** RFC 6750 §2.1 b64token, for opaque tokens that did not come through `extractBearer`. */
function isB64token(s: string): boolean {
  let i = 0;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ok =
      (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
      c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e || c === 0x2b || c === 0x2f;
    if (!ok) break;
  }
  if (i === 0) return false;
  while (i < s.length && s.charCodeAt(i) === 0x3d) i++;
  return i === s.length;
}
