import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import type { Clock } from '../lib/clock.ts';
import { tokenHash } from '../lib/hash.ts';
import type { Logger } from '../lib/log.ts';
import { Lru } from '../lib/lru.ts';
import { SingleFlight } from './single-flight.ts';
import type { GrantResult, TokenEndpointClient, TokenTarget } from './token-client.ts';
import { backoffDelay } from '../lib/backoff.ts';

/**
 * Tokens for outgoing calls: the exchanged-token cache in front of the token endpoint
 * (STYLE habit 7: single-flight, timeout, back-off, bounded cache, injectable clock, counters).
 *
 * - Key: (SHA-256 of the subject token, destination, scopes); the full digest, so a token
 *   obtained for one subject is never served to another (no truncated-hash collisions).
 *   Client-credentials tokens (no subject) have their own key space per destination.
 * - A token is served until `renewBeforeMs` (at most half its lifetime) before its
 *   `expires_in` runs out, and never after the subject token's own `exp` (a cached exchange
 *   must not outlive the credential it was derived from). Without `expires_in` it is not cached.
 * - Concurrent identical requests share one token request (single-flight).
 * - A refusal is remembered for `refusalCacheMs` for the same key (a retrying app does not
 *   hammer the IdP); an unreachable IdP puts every new request into back-off (exponential, equal
 *   jitter): until it ends, calls that need a new token fail at once with
 *   ERR_EXCHANGE_UNAVAILABLE; cached tokens keep being served.
 * - Cache hits are synchronous: no promise on the hot path.
 */

export type TokenOutcome =
  | {
      readonly ok: true;
      readonly token: string;
      /** `Bearer <token>`: the outgoing header value, built once per token rather than per call. */
      readonly authorization: string;
      readonly via: 'exchange' | 'client-credentials';
    }
  | { readonly ok: false; readonly code: 'ERR_EXCHANGE_REFUSED'; readonly oauthError: string; readonly detail: string }
  | { readonly ok: false; readonly code: 'ERR_EXCHANGE_UNAVAILABLE'; readonly oauthError: null; readonly detail: string };

/** Live counters (read them, do not write). */
export interface ExchangeCounters {
  /** `token()` calls. */
  requests: number;
  /** Served a valid cached token. */
  cacheHits: number;
  /** Served a remembered refusal. */
  refusalHits: number;
  /** Joined an identical request already in flight. */
  coalesced: number;
  /** Failed at once because the IdP is in back-off (not contacted). */
  backoffRejections: number;
  /** RFC 8693 requests sent to the token endpoint. */
  exchanges: number;
  /** Client-credentials requests sent to the token endpoint. */
  clientCredentials: number;
  /** Token requests answered with a token. */
  issued: number;
  /** Token requests the IdP refused. */
  refused: number;
  /** Token requests that failed: IdP unreachable, timed out or 5xx. */
  unavailable: number;
}

export interface ExchangeStats extends ExchangeCounters {
  readonly cacheSize: number;
  readonly inflight: number;
  /** cacheHits / requests (0 before the first request). */
  readonly hitRatio: number;
  /** Milliseconds left of the current back-off (0 when none). */
  readonly backoffMs: number;
}

export interface TokenBroker {
  /**
   * A token for `target`: exchanged from `subjectToken`, or a client-credentials token when it
   * is null. Synchronous on a cache hit. Never rejects.
   */
  token(target: TokenTarget, subjectToken: string | null): TokenOutcome | Promise<TokenOutcome>;
  readonly counters: Readonly<ExchangeCounters>;
  stats(): ExchangeStats;
  /** Drops every cached token and refusal (e.g. after the workload's credentials changed). */
  clear(): void;
}

export interface TokenBrokerOptions {
  readonly client: TokenEndpointClient;
  /** Cache capacity (0: no caching; single-flight still applies). */
  readonly cacheEntries: number;
  readonly renewBeforeMs: number;
  readonly refusalCacheMs: number;
  readonly retry: { readonly initialMs: number; readonly maxMs: number };
  readonly clock: Clock;
  readonly log: Logger;
  /** Jitter source (tests pass a constant). */
  readonly random?: () => number;
}

interface Entry {
  readonly outcome: TokenOutcome;
  /** Clock ms after which the entry is not served. */
  readonly until: number;
}

const IN_BACKOFF: TokenOutcome = Object.freeze({
  ok: false,
  code: 'ERR_EXCHANGE_UNAVAILABLE',
  oauthError: null,
  detail: 'token endpoint unreachable; waiting before the next attempt',
});

/** The subject token's `exp` in ms, when it is a JWT that has one. Only ever shortens caching. */
export function subjectExpiryMs(token: string): number | undefined {
  try {
    const exp = decodeJwt(token).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined; // opaque token: the IdP's expires_in is the only bound
  }
}

/** Cache key of a target: the destination and the scopes asked for. */
function targetKey(t: TokenTarget): string {
  return `${t.name}\n${t.scope}`;
}

/** The longest an issued token is cached, whatever its `expires_in`. */
export const MAX_CACHE_S = 86_400;

export function createTokenBroker(o: TokenBrokerOptions): TokenBroker {
  const { client, clock, log } = o;
  const random = o.random ?? Math.random;
  const cache = new Lru<string, Entry>(o.cacheEntries);
  const flights = new SingleFlight<string, TokenOutcome>();
  const counters: ExchangeCounters = {
    requests: 0,
    cacheHits: 0,
    refusalHits: 0,
    coalesced: 0,
    backoffRejections: 0,
    exchanges: 0,
    clientCredentials: 0,
    issued: 0,
    refused: 0,
    unavailable: 0,
  };
  let failures = 0;
  let blockedUntil = 0;
  /**
   * Counts the outcomes that moved the back-off (a failure counted, or a reset). A request
   * compares it with its value when it was sent: the calls in flight together when the IdP went
   * away are one failure, not one each (regression: six at once put the next exchange 30 s out
   * instead of 1 s), and an answer to a request sent before the last failure says nothing new.
   */
  let generation = 0;

  function settle(key: string, target: TokenTarget, subjectToken: string | null, started: number, sentAt: number, r: GrantResult): TokenOutcome {
    const now = clock();
    const via = subjectToken === null ? 'client-credentials' : 'exchange';
    const subject = subjectToken === null ? null : tokenHash(subjectToken);
    if (r.ok) {
      counters.issued++;
      if (sentAt === generation && failures > 0) {
        failures = 0;
        blockedUntil = 0;
        generation++;
      }
      const outcome: TokenOutcome = Object.freeze({ ok: true, token: r.token, authorization: `Bearer ${r.token}`, via });
      if (r.expiresInS !== undefined && r.expiresInS > 0) {
        // At most a day: an `expires_in` of 1e306 is Infinity in ms, kept for ever (found in review).
        const life = Math.min(r.expiresInS, MAX_CACHE_S) * 1000;
        // from when we asked, not when the answer came: the IdP started the clock before we got it
        let until = started + life - Math.min(o.renewBeforeMs, life / 2);
        if (subjectToken !== null) {
          const exp = subjectExpiryMs(subjectToken);
          if (exp !== undefined && exp < until) until = exp;
        }
        if (until > now) cache.set(key, { outcome, until });
      }
      if (log.enabled('debug')) log.debug('token obtained', { destination: target.name, via, subject, expiresInS: r.expiresInS ?? null });
      return outcome;
    }
    if (r.kind === 'refused') {
      counters.refused++;
      // the IdP answered: it is reachable
      if (sentAt === generation && failures > 0) {
        failures = 0;
        blockedUntil = 0;
        generation++;
      }
      const outcome: TokenOutcome = Object.freeze({
        ok: false,
        code: 'ERR_EXCHANGE_REFUSED',
        oauthError: r.oauthError,
        detail: `${r.oauthError}${r.description === undefined ? '' : `: ${r.description}`}`,
      });
      if (o.refusalCacheMs > 0) cache.set(key, { outcome, until: now + o.refusalCacheMs });
      log.info('token request refused', {
        destination: target.name,
        via,
        issuer: client.issuer,
        oauthError: r.oauthError,
        description: r.description ?? null,
        status: r.status,
        subject,
      });
      return outcome;
    }
    counters.unavailable++;
    let delay = Math.max(0, blockedUntil - now);
    if (sentAt === generation) {
      delay = backoffDelay(failures, o.retry, random);
      failures++;
      blockedUntil = now + delay;
      generation++;
    }
    log.warn('token endpoint unavailable', { destination: target.name, via, issuer: client.issuer, detail: r.detail, retryInMs: delay });
    return Object.freeze({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE', oauthError: null, detail: r.detail });
  }

  async function request(key: string, target: TokenTarget, subjectToken: string | null): Promise<TokenOutcome> {
    const started = clock();
    const sentAt = generation;
    let r: GrantResult;
    if (subjectToken === null) {
      counters.clientCredentials++;
      r = await client.clientCredentials(target);
    } else {
      counters.exchanges++;
      r = await client.exchange(subjectToken, target);
    }
    return settle(key, target, subjectToken, started, sentAt, r);
  }

  function failSafe(err: unknown): TokenOutcome {
    // request() does not throw (the client returns results); if it ever does, fail closed
    log.error('token request threw', { err });
    return Object.freeze({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE', oauthError: null, detail: 'internal error' });
  }

  return {
    counters,
    token(target, subjectToken) {
      counters.requests++;
      const key =
        subjectToken === null ? `c\n${targetKey(target)}` : `x\n${createHash('sha256').update(subjectToken).digest('base64url')}\n${targetKey(target)}`;
      const hit = cache.get(key);
      if (hit !== undefined) {
        if (clock() < hit.until) {
          if (hit.outcome.ok) counters.cacheHits++;
          else counters.refusalHits++;
          return hit.outcome;
        }
        cache.delete(key);
      }
      const running = flights.get(key);
      if (running !== undefined) {
        counters.coalesced++;
        return running;
      }
      if (clock() < blockedUntil) {
        counters.backoffRejections++;
        return IN_BACKOFF;
      }
      return flights.start(key, () => request(key, target, subjectToken).catch(failSafe));
    },
    stats() {
      return {
        ...counters,
        cacheSize: cache.size,
        inflight: flights.size,
        hitRatio: counters.requests === 0 ? 0 : counters.cacheHits / counters.requests,
        backoffMs: Math.max(0, blockedUntil - clock()),
      };
    },
    clear() {
      cache.clear();
    },
  };
}
