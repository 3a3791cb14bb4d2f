import { createPublicKey, type KeyObject } from 'node:crypto';
import { nativeRsa } from './native-verify.ts';
import type * as oidc from 'openid-client';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import type { ErrorCode } from '../errors/codes.ts';
import type { Failure } from './claims.ts';
import { boundedFetch, checkFetchable, describeError, getJsonObject, isLoopbackHttp, MAX_DOCUMENT_BYTES } from './fetch.ts';
import type { JsonObject, JsonValue } from './json.ts';

/**
 * One trusted issuer's remote state: its OIDC discovery document and its JWKS. An issuer used
 * for introspection is discovered by openid-client, whose `Configuration` then makes the
 * introspection calls; any other is discovered by ward's own GET (`getJsonObject`), so a sidecar
 * that only verifies JWTs never loads openid-client (docs/performance.md, "Memory").
 *
 * jose's `createRemoteJWKSet` fails closed the moment its cache is stale and the IdP is down
 * (research §4.2), and Envoy never refetches on an unknown `kid` (istio-envoy §1.3); both cause
 * 401 storms. So the key set is ours:
 * - background refresh every `refreshIntervalMs` (sooner after a failure);
 * - an unknown `kid` triggers at most one refetch per `cooldownMs`; concurrent misses share it;
 * - keys stay usable for `graceMs` after the last successful fetch, whatever happened since
 *   (old keys are kept on a failed refresh, as istiod does); past that the issuer fails closed
 *   with ERR_KEYS_UNAVAILABLE (503, so clients retry rather than re-authenticate).
 */

export interface SourceSettings {
  readonly timeoutMs: number;
  readonly refreshIntervalMs: number;
  readonly cooldownMs: number;
  readonly graceMs: number;
  readonly clock: Clock;
  readonly fetch: typeof fetch | undefined;
  readonly log: Logger;
}

export interface SourceSpec {
  readonly issuer: string;
  readonly jwksUri: string | undefined;
  readonly discovery: boolean;
  /** The issuer accepts asymmetric algorithms, so a JWKS is needed. */
  readonly needsJwks: boolean;
  /** The issuer is used for introspection (needs the discovered `introspection_endpoint`). */
  readonly introspection: boolean;
  readonly credential: { readonly clientId: string; readonly clientSecret: string } | undefined;
}

/** Per-issuer health, as `Authenticator.status()` reports it. Times are clock milliseconds. */
export interface IssuerStatus {
  readonly issuer: string;
  readonly keysLoaded: boolean;
  readonly keyCount: number;
  /** When the last fetch (discovery or JWKS refresh) succeeded; undefined if never. */
  readonly lastFetchOk: number | undefined;
  /** The most recent fetch failure, kept after later successes for diagnosis. */
  readonly lastError: string | undefined;
  /** Serving cached keys after a failed refresh (still inside the grace window). */
  readonly degraded: boolean;
  /** Past the grace window (or never loaded while keys are needed): this issuer's tokens get 503. */
  readonly keysUnavailable: boolean;
  readonly discovered: boolean;
  readonly introspection: boolean;
  readonly fetchOk: number;
  readonly fetchFailed: number;
  readonly introspectionOk: number;
  readonly introspectionFailed: number;
}

/** `keyId`: the key's public material as published (see `IssuerSource.publishes`). */
export type KeyResult = { readonly ok: true; readonly key: KeyObject; readonly keyId: string } | ({ readonly ok: false } & Failure);

/** Longest delay `setTimeout` honours (about 24.8 days); longer ones fire immediately. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const JWKS_ACCEPT = 'application/jwk-set+json, application/json';

export class IssuerSource {
  readonly spec: SourceSpec;
  readonly #s: SourceSettings;
  readonly #log: Logger;
  #discovered: Discovered | undefined;
  #keys: KeySet | undefined;
  #lastOkAt: number | undefined;
  #lastAttemptAt: number | undefined;
  #lastFailAt: number | undefined;
  #lastError: string | undefined;
  #fetchOk = 0;
  #fetchFailed = 0;
  #introspectionOk = 0;
  #introspectionFailed = 0;
  #inflight: Promise<boolean> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #onSettled: () => void;

  constructor(spec: SourceSpec, settings: SourceSettings, onSettled: () => void) {
    this.spec = spec;
    this.#s = settings;
    this.#log = settings.log.child({ issuer: spec.issuer });
    this.#onSettled = onSettled;
  }

  /** Same remote shape: a changed trust entry may keep this source (and its keys). */
  sameShape(spec: SourceSpec): boolean {
    const a = this.spec;
    return (
      a.issuer === spec.issuer &&
      a.jwksUri === spec.jwksUri &&
      a.discovery === spec.discovery &&
      a.needsJwks === spec.needsJwks &&
      a.introspection === spec.introspection
    );
  }

  get needsDiscovery(): boolean {
    return this.spec.introspection || (this.spec.needsJwks && this.spec.jwksUri === undefined);
  }

  /** Starts the first fetch and the refresh timer. Nothing to do for an HMAC-only issuer. */
  start(): void {
    if (this.needsDiscovery || this.spec.needsJwks) void this.refresh();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  ready(): boolean {
    return (!this.spec.needsJwks || this.#keys !== undefined) && (!this.needsDiscovery || this.#discovered !== undefined);
  }

  /**
   * The key identified by `keyId` (from `resolveKey`) is still in the current key set. A key the
   * IdP withdrew (rotated out, or revoked after a compromise) stops vouching for tokens verified
   * with it before, as soon as the sidecar has fetched the key set without it.
   */
  publishes(keyId: string): boolean {
    return this.#keys !== undefined && this.#keys.has(keyId);
  }

  /** Keys loaded and the last success within `graceMs`. */
  usable(now: number): boolean {
    return this.#keys !== undefined && this.#lastOkAt !== undefined && now - this.#lastOkAt <= this.#s.graceMs;
  }

  #mayFetch(now: number): boolean {
    return this.#lastAttemptAt === undefined || now - this.#lastAttemptAt >= this.#s.cooldownMs;
  }

  /**
   * One fetch round (discovery if still missing, then the JWKS), shared by every caller that
   * arrives while it runs. Resolves true on success; never rejects.
   */
  refresh(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#inflight ??= this.#round().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #round(): Promise<boolean> {
    const clock = this.#s.clock;
    this.#lastAttemptAt = clock();
    let ok = false;
    try {
      if (this.needsDiscovery && this.#discovered === undefined) {
        this.#discovered = await this.#tryFetch(() => this.#discover());
      }
      if (this.spec.needsJwks) {
        const keys = await this.#tryFetch(() => this.#fetchKeys());
        if (!this.#closed) this.#keys = keys;
      }
      this.#lastOkAt = clock();
      ok = true;
    } catch (err) {
      this.#lastFailAt = clock();
      this.#lastError = describeError(err);
      this.#log.warn('issuer fetch failed', {
        error: this.#lastError,
        keysUsableUntil: this.#lastOkAt === undefined ? null : this.#lastOkAt + this.#s.graceMs,
      });
    }
    this.#schedule(ok);
    this.#onSettled();
    return ok;
  }

  async #tryFetch<T>(f: () => Promise<T>): Promise<T> {
    try {
      const v = await f();
      this.#fetchOk++;
      return v;
    } catch (err) {
      this.#fetchFailed++;
      throw err;
    }
  }

  #schedule(lastOk: boolean): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const { refreshIntervalMs, cooldownMs } = this.#s;
    // After a failure retry sooner than the normal period, but never faster than the cooldown
    // (or once a second): the IdP is likely struggling already.
    const delay = lastOk ? refreshIntervalMs : Math.min(refreshIntervalMs, Math.max(cooldownMs, 1000));
    this.#timer = setTimeout(() => void this.refresh(), Math.min(delay, MAX_TIMER_MS));
    this.#timer.unref();
  }

  async #discover(): Promise<Discovered> {
    const { issuer, discovery, credential, introspection } = this.spec;
    if (!discovery) throw new Error('no jwksUri configured and discovery is disabled');
    const url = new URL(issuer);
    if (introspection) {
      const oidc = await openidClient();
      const options: oidc.DiscoveryRequestOptions = {
        timeout: this.#s.timeoutMs / 1000,
        // openid-client refuses http: unless told; only loopback issuers (tests, dev IdP) get that.
        execute: isLoopbackHttp(url) ? [oidc.allowInsecureRequests] : [],
      };
      // Bounded like the JWKS GET: discovery and (through this Configuration) introspection.
      options[oidc.customFetch] = boundedFetch(this.#s.fetch, MAX_DOCUMENT_BYTES) as oidc.CustomFetch;
      // RFC 6749 §2.3.1: every server must support HTTP Basic client authentication, so it is the
      // safe default for the introspection call. Without credentials the Configuration is used for
      // its metadata only.
      const auth = credential === undefined ? oidc.None() : oidc.ClientSecretBasic(credential.clientSecret);
      const config = await oidc.discovery(url, credential?.clientId ?? 'ward-sidecar', undefined, auth, options);
      return { jwksUri: config.serverMetadata().jwks_uri, config };
    }
    checkFetchable(url);
    // OpenID Connect Discovery 1.0 §4: the issuer's path, then /.well-known/openid-configuration.
    const wellKnown = new URL(url.href);
    wellKnown.pathname = `${url.pathname}/.well-known/openid-configuration`.replace('//', '/');
    const doc = await getJsonObject(this.#s.fetch, wellKnown, this.#s.timeoutMs, 'application/json');
    // §4.3: the document must name the issuer it was fetched for (compared as URLs, as openid-client does).
    const named = doc['issuer'];
    if (typeof named !== 'string' || !sameUrl(named, url)) {
      throw new Error(`discovery document names issuer ${JSON.stringify(named ?? null)}, not ${issuer}`);
    }
    const jwksUri = doc['jwks_uri'];
    if (jwksUri !== undefined && typeof jwksUri !== 'string') throw new Error('discovery document has a non-string jwks_uri');
    return { jwksUri, config: undefined };
  }

  async #fetchKeys(): Promise<KeySet> {
    const uri = this.spec.jwksUri ?? this.#discovered?.jwksUri;
    if (uri === undefined) throw new Error('discovery document has no jwks_uri');
    const url = new URL(uri);
    checkFetchable(url);
    const doc = await getJsonObject(this.#s.fetch, url, this.#s.timeoutMs, JWKS_ACCEPT);
    const set = KeySet.from(doc, (msg, fields) => this.#log.warn(msg, fields));
    this.#log.debug('jwks loaded', { keys: set.size, kids: set.kids() });
    return set;
  }

  /**
   * RFC 7662 introspection of `token` at this issuer (discovered by openid-client, fetching the
   * discovery document once per cooldown if it is still missing). Undefined when the issuer is
   * not discovered; rejects when the call fails.
   */
  async introspect(token: string): Promise<unknown> {
    if (this.#discovered === undefined && (this.#inflight !== undefined || this.#mayFetch(this.#s.clock()))) {
      await this.refresh();
    }
    const config = this.#discovered?.config;
    if (config === undefined) return undefined;
    const oidc = await openidClient();
    return oidc.tokenIntrospection(config, token, { token_type_hint: 'access_token' });
  }

  countIntrospection(ok: boolean): void {
    if (ok) this.#introspectionOk++;
    else this.#introspectionFailed++;
  }

  /**
   * The verification key for (`alg`, `kid`). Refetches when the keys are missing or past grace,
   * or when `kid` is unknown, in both cases at most once per cooldown and single-flight.
   */
  /**
   * `resolveKey` without waiting, for the common case: keys usable, the key known and
   * importable. Undefined when anything would need a fetch or a log line: the caller
   * then takes `resolveKey`. (Saves the promise hops of a verification with the cache off.)
   */
  resolveKeyNow(alg: string, kid: string | undefined): KeyResult | undefined {
    if (!this.usable(this.#s.clock())) return undefined;
    const pick = (this.#keys as KeySet).select(alg, kid);
    if (typeof pick !== 'object') return undefined;
    const key = pick.key();
    return key instanceof Error ? undefined : { ok: true, key, keyId: pick.id }; // resolveKey logs a failed import
  }

  async resolveKey(alg: string, kid: string | undefined): Promise<KeyResult> {
    const clock = this.#s.clock;
    if (!this.usable(clock())) {
      if (this.#inflight !== undefined || this.#mayFetch(clock())) await this.refresh();
      if (!this.usable(clock())) return keysUnavailable(this.#keys === undefined ? 'keys never loaded' : 'keys past grace window');
    }
    let pick = (this.#keys as KeySet).select(alg, kid);
    if (pick === UNKNOWN_KID) {
      // A new kid usually means the IdP rotated keys after our last fetch.
      if (this.#inflight !== undefined || this.#mayFetch(clock())) {
        const ok = await this.refresh();
        // The kid may be legitimate and the IdP just unreachable: transient, so 503.
        if (!ok || !this.usable(clock())) return keysUnavailable('refetch for unknown kid failed');
        pick = (this.#keys as KeySet).select(alg, kid);
      }
    }
    if (typeof pick === 'string') {
      this.#log.debug('no verification key', { kid: kid ?? null, alg, reason: pick });
      return { ok: false, code: 'ERR_TOKEN_KEY_UNKNOWN', detail: `${pick} (kid ${kid ?? 'none'}, alg ${alg})` };
    }
    const key = pick.key();
    if (key instanceof Error) {
      // Once per key: tokens naming it would otherwise log a line each (STYLE habit 3).
      if (pick.firstFailure()) this.#log.warn('jwks key import failed', { kid: kid ?? null, alg, error: describeError(key) });
      return { ok: false, code: 'ERR_TOKEN_KEY_UNKNOWN', detail: 'key import failed' };
    }
    return { ok: true, key, keyId: pick.id };
  }

  status(): IssuerStatus {
    const now = this.#s.clock();
    const { issuer, needsJwks, introspection } = this.spec;
    return {
      issuer,
      keysLoaded: this.#keys !== undefined,
      keyCount: this.#keys?.size ?? 0,
      lastFetchOk: this.#lastOkAt,
      lastError: this.#lastError,
      degraded:
        this.#keys !== undefined && this.#lastFailAt !== undefined && (this.#lastOkAt === undefined || this.#lastFailAt > this.#lastOkAt),
      keysUnavailable: needsJwks && !this.usable(now),
      discovered: this.#discovered !== undefined,
      introspection,
      fetchOk: this.#fetchOk,
      fetchFailed: this.#fetchFailed,
      introspectionOk: this.#introspectionOk,
      introspectionFailed: this.#introspectionFailed,
    };
  }
}

/** What discovery gave: the JWKS location, and openid-client's view for introspection. */
interface Discovered {
  readonly jwksUri: string | undefined;
  readonly config: oidc.Configuration | undefined;
}

/** openid-client, imported on first use (introspection issuers only). */
let openidClientModule: Promise<typeof oidc> | undefined;
function openidClient(): Promise<typeof oidc> {
  openidClientModule ??= import('openid-client');
  return openidClientModule;
}

function sameUrl(a: string, b: URL): boolean {
  try {
    return new URL(a).href === b.href;
  } catch {
    return false;
  }
}

function keysUnavailable(detail: string): KeyResult {
  return { ok: false, code: 'ERR_KEYS_UNAVAILABLE' satisfies ErrorCode, detail };
}

/** The key-set lookup outcomes that are not a key. */
const UNKNOWN_KID = 'kid not in key set';
const NO_MATCH = 'no key of the right type';
const AMBIGUOUS = 'several keys match and the token has no distinguishing kid';
type Miss = typeof UNKNOWN_KID | typeof NO_MATCH | typeof AMBIGUOUS;

/** Public members per key type; everything else (notably private `d`) is never passed on. */
const PUBLIC_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  RSA: ['n', 'e'],
  EC: ['crv', 'x', 'y'],
  OKP: ['crv', 'x'],
};
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/** alg -> (kty, crv) it may be verified with (RFC 7518 §3.1, RFC 8037). */
const ALG_KEY: Readonly<Record<string, { readonly kty: string; readonly crv?: string }>> = {
  RS256: { kty: 'RSA' },
  RS384: { kty: 'RSA' },
  RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  PS384: { kty: 'RSA' },
  PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256' },
  ES384: { kty: 'EC', crv: 'P-384' },
  ES512: { kty: 'EC', crv: 'P-521' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
  Ed25519: { kty: 'OKP', crv: 'Ed25519' },
};

/** The asymmetric algorithms we verify with JWKS keys. */
export const ASYMMETRIC_ALGS: ReadonlySet<string> = new Set(Object.keys(ALG_KEY));

class VerifyKey {
  readonly kid: string | undefined;
  readonly kty: string;
  readonly crv: string | undefined;
  readonly alg: string | undefined;
  readonly keyOps: readonly string[] | undefined;
  readonly jwk: Readonly<Record<string, string>>;
  /**
   * kid, what it may be used for, and public members: equal for the same key in two fetches of
   * the key set. `key_ops` is part of it: a key republished without `verify` no longer vouches
   * for the tokens verified with it before (found in review: they were served from the cache).
   */
  readonly id: string;
  /** The imported key, or why the import failed; once per key (the algorithm is checked per call, verify.ts). */
  #imported: KeyObject | Error | undefined;
  #failureSeen = false;

  constructor(kid: string | undefined, kty: string, alg: string | undefined, keyOps: readonly string[] | undefined, jwk: Record<string, string>) {
    this.kid = kid;
    this.kty = kty;
    this.crv = jwk['crv'];
    this.alg = alg;
    this.keyOps = keyOps;
    this.jwk = Object.freeze(jwk);
    this.id = JSON.stringify([kid ?? null, kty, alg ?? null, keyOps ?? null, jwk]);
  }

  fits(alg: string): boolean {
    const want = ALG_KEY[alg];
    if (want === undefined || want.kty !== this.kty) return false;
    if (want.crv !== undefined && want.crv !== this.crv) return false;
    if (this.alg !== undefined && this.alg !== alg) return false; // RFC 7517 §4.4
    return this.keyOps === undefined || this.keyOps.includes('verify'); // RFC 7517 §4.3
  }

  /** True the first time it is asked after the import failed. */
  firstFailure(): boolean {
    const first = !this.#failureSeen;
    this.#failureSeen = true;
    return first;
  }

  /** The key, imported on first use, or why its members make no valid public key. */
  key(): KeyObject | Error {
    if (this.#imported === undefined) {
      try {
        this.#imported = importVerifyKey({ ...this.jwk, kty: this.kty });
      } catch (err) {
        this.#imported = err instanceof Error ? err : new Error(String(err));
      }
    }
    return this.#imported;
  }
}

/**
 * A JWKS key's public members as a node:crypto key (`createPublicKey` with `format: 'jwk'`:
 * OpenSSL checks the members make a valid key of that type and curve). Throws when they do not.
 * Whether the key suits a token's `alg` (type, curve, RSA length) is checked per call
 * (verify.ts); which keys may be used at all, here (`fits`: kty, crv, `alg`, `use`, `key_ops`).
 * jose's `importJWK` did this before, through WebCrypto: its import alone held ~0.8 MB of every
 * sidecar's heap (docs/performance.md "Memory").
 */
export function importVerifyKey(jwk: Readonly<Record<string, string>>): KeyObject {
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  if (key.type !== 'public') throw new Error('not a public key');
  const { n, e } = jwk;
  if (key.asymmetricKeyType === 'rsa' && n !== undefined && e !== undefined) nativeRsa.remember(key, n, e);
  return key;
}

class KeySet {
  readonly #byKid = new Map<string, VerifyKey[]>();
  readonly #all: VerifyKey[] = [];
  readonly #ids = new Set<string>();

  get size(): number {
    return this.#all.length;
  }

  has(id: string): boolean {
    return this.#ids.has(id);
  }

  kids(): string[] {
    return [...this.#byKid.keys()];
  }

  /**
   * Keeps public signing keys of supported types; skips (and reports) the rest. A document with
   * no usable key is an error, so a broken endpoint does not wipe keys that still work.
   */
  static from(doc: JsonObject, warn: (msg: string, fields: Record<string, unknown>) => void): KeySet {
    const keys = doc['keys'];
    if (!Array.isArray(keys)) throw new Error('JWKS has no keys array');
    const set = new KeySet();
    for (const raw of keys as readonly JsonValue[]) {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) continue;
      const k = raw as JsonObject;
      const kid = typeof k['kid'] === 'string' ? k['kid'] : undefined;
      const kty = k['kty'];
      const members = typeof kty === 'string' ? PUBLIC_MEMBERS[kty] : undefined;
      if (kty === undefined || members === undefined) continue; // oct, AKP, unknown: not ours to use
      if (PRIVATE_MEMBERS.some((m) => k[m] !== undefined)) {
        warn('jwks key with private material skipped', { kid: kid ?? null });
        continue;
      }
      if (k['use'] !== undefined && k['use'] !== 'sig') continue;
      const alg = k['alg'];
      if (alg !== undefined && typeof alg !== 'string') continue;
      const ops = k['key_ops'];
      let keyOps: string[] | undefined;
      if (ops !== undefined) {
        if (!Array.isArray(ops)) continue;
        keyOps = (ops as readonly JsonValue[]).filter((o): o is string => typeof o === 'string');
      }
      const jwk: Record<string, string> = {};
      let complete = true;
      for (const m of members) {
        const v = k[m];
        if (typeof v === 'string') jwk[m] = v;
        else complete = false;
      }
      if (!complete) continue;
      set.#add(new VerifyKey(kid, kty as string, alg, keyOps, jwk));
    }
    if (set.size === 0) throw new Error('JWKS has no usable signing key');
    return set;
  }

  #add(k: VerifyKey): void {
    this.#all.push(k);
    this.#ids.add(k.id);
    if (k.kid !== undefined) {
      const same = this.#byKid.get(k.kid);
      if (same === undefined) this.#byKid.set(k.kid, [k]);
      else same.push(k);
    }
  }

  /**
   * With a `kid`, only keys carrying that kid are candidates (as jose does); without one, all
   * keys. Exactly one must fit the algorithm: trying several would turn one bad token into N
   * signature computations.
   */
  select(alg: string, kid: string | undefined): VerifyKey | Miss {
    let candidates: readonly VerifyKey[];
    if (kid !== undefined) {
      const same = this.#byKid.get(kid);
      if (same === undefined) return UNKNOWN_KID;
      candidates = same;
    } else candidates = this.#all;
    let found: VerifyKey | undefined;
    for (const k of candidates) {
      if (!k.fits(alg)) continue;
      if (found !== undefined) return AMBIGUOUS;
      found = k;
    }
    return found ?? NO_MATCH;
  }
}
