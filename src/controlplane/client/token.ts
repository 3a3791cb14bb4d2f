import * as oidc from 'openid-client';
import { boundedFetch, isLoopbackHttp, MAX_DOCUMENT_BYTES } from '../../authn/fetch.ts';
import { isSendableBearer, MAX_ISSUED_TOKEN_CHARS } from '../../lib/bearer.ts';
import { type Clock, systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';

/**
 * The sidecar's own access token for the control plane: OAuth client credentials (RFC 6749
 * §4.4) at its IdP, for the control plane's resource (RFC 8707), via openid-client. One token is
 * reused until shortly before it expires; concurrent callers share one request (single-flight);
 * a failure is not cached, so the watch's backoff paces the retries.
 */

export interface TokenSourceOptions {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The control plane's audience, e.g. `urn:ward:control-plane`. */
  readonly resource: string;
  readonly scope?: string;
  readonly timeoutMs?: number;
  /** Renew this long before `expires_in` runs out. */
  readonly refreshBeforeMs?: number;
  readonly log: Logger;
  readonly clock?: Clock;
  readonly fetch?: typeof fetch;
}

export function createClientCredentialsTokenSource(opts: TokenSourceOptions): () => Promise<string> {
  const clock = opts.clock ?? systemClock;
  const refreshBeforeMs = opts.refreshBeforeMs ?? 30_000;
  let config: oidc.Configuration | null = null;
  let cached: { token: string; renewAt: number } | null = null;
  let inflight: Promise<string> | null = null;

  async function configuration(): Promise<oidc.Configuration> {
    if (config !== null) return config;
    const url = new URL(opts.issuer);
    const options: oidc.DiscoveryRequestOptions = {
      timeout: (opts.timeoutMs ?? 5000) / 1000,
      // openid-client refuses http: unless told; only loopback issuers (tests, dev IdP) get that.
      execute: isLoopbackHttp(url) ? [oidc.allowInsecureRequests] : [],
    };
    // Size-capped like every IdP response (authn/fetch.ts), for discovery and the token request.
    options[oidc.customFetch] = boundedFetch(opts.fetch, MAX_DOCUMENT_BYTES) as oidc.CustomFetch;
    config = await oidc.discovery(url, opts.clientId, undefined, oidc.ClientSecretBasic(opts.clientSecret), options);
    return config;
  }

  async function fetchToken(): Promise<string> {
    const params: Record<string, string> = { resource: opts.resource };
    if (opts.scope !== undefined) params.scope = opts.scope;
    const started = clock();
    const r = await oidc.clientCredentialsGrant(await configuration(), params);
    if (!isSendableBearer(r.access_token)) throw new Error(`access_token is not a bearer token (RFC 6750 b64token of at most ${MAX_ISSUED_TOKEN_CHARS} characters)`);
    const lifetimeMs = (r.expires_in ?? 60) * 1000;
    cached = { token: r.access_token, renewAt: started + Math.max(lifetimeMs - refreshBeforeMs, lifetimeMs / 2) };
    opts.log.debug('control-plane token obtained', { issuer: opts.issuer, clientId: opts.clientId, expiresInS: r.expires_in ?? null });
    return r.access_token;
  }

  return () => {
    if (cached !== null && clock() < cached.renewAt) return Promise.resolve(cached.token);
    inflight ??= fetchToken().finally(() => {
      inflight = null;
    });
    return inflight;
  };
}
