import * as oidc from 'openid-client';
import { boundedFetch, isLoopbackHttp, MAX_DOCUMENT_BYTES } from '../authn/fetch.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import { isOutageError } from '../lib/oauth-errors.ts';

/**
 * The sidecar as an OAuth client of the sign-in provider, through openid-client (authorization
 * code with PKCE, refresh, revocation, RP-initiated logout). One pattern for the remote calls
 * (STYLE habit 7): discovery is lazy and single-flight with a cooldown after a failure (the
 * sidecar starts, and keeps serving bearer calls, while the provider is down), every call has a
 * timeout and follows no redirects (openid-client uses `redirect: 'manual'`), `fetch` is
 * injectable, and outcomes are counted.
 *
 * ID tokens: openid-client checks `iss`, `aud`, `exp`, `iat`, `nonce`, `azp` when `aud` has
 * several values, and (with `enableNonRepudiationChecks`) the signature against the provider's
 * JWKS; `azp` present with a single audience is checked here (OIDC Core §3.1.3.7 item 5).
 */

export type ProviderFailure =
  /** The provider said no (an OAuth error such as `invalid_grant`). */
  | { readonly kind: 'refused'; readonly error: string }
  /** A response that does not validate (ID token signature, claims, state, PKCE). */
  | { readonly kind: 'invalid'; readonly detail: string }
  /** The provider could not be reached, timed out, failed (5xx), or asked to be asked later (429, `temporarily_unavailable`). */
  | { readonly kind: 'unavailable'; readonly detail: string };

export type ProviderResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly failure: ProviderFailure };

export interface TokenSet {
  readonly accessToken: string;
  /** Seconds since the epoch, from `expires_in` (undefined when the provider gave none). */
  readonly expiresAt: number | undefined;
  readonly refreshToken: string | undefined;
  /** Validated ID token claims (sign-in only; a refresh may carry none). */
  readonly idClaims: Readonly<Record<string, unknown>> | undefined;
}

export interface SignInClientOptions {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly scopes: readonly string[];
  readonly resource: string | undefined;
  readonly timeoutMs: number;
  readonly log: Logger;
  readonly clock: Clock;
  readonly fetch?: typeof fetch | undefined;
  /** Minimum time between discovery attempts after a failure. */
  readonly cooldownMs?: number;
}

export interface AuthorizationRequest {
  readonly redirectUri: string;
  readonly state: string;
  readonly nonce: string;
  readonly codeVerifier: string;
}

export interface ProviderCounters {
  discoveryOk: number;
  discoveryFailed: number;
  codeExchanges: number;
  codeExchangeFailures: number;
  refreshes: number;
  refreshFailures: number;
}

export interface SignInClient {
  readonly counters: Readonly<ProviderCounters>;
  authorizationUrl(r: AuthorizationRequest): Promise<ProviderResult<URL>>;
  /** Exchanges the code in `callbackUrl` (the callback URL as the browser requested it). */
  exchangeCode(callbackUrl: URL, checks: { state: string; nonce: string; codeVerifier: string }): Promise<ProviderResult<TokenSet>>;
  refresh(refreshToken: string): Promise<ProviderResult<TokenSet>>;
  /** RFC 7009, best effort: false when the provider has no revocation endpoint or refused. */
  revoke(refreshToken: string): Promise<boolean>;
  /** The end-session URL for RP-initiated logout, or null when the provider offers none. */
  endSessionUrl(postLogoutRedirectUri: string): Promise<URL | null>;
}

const DEFAULT_COOLDOWN_MS = 5000;

/** Sorts an openid-client / oauth4webapi error into what the session stage acts on. */
export function classify(err: unknown): ProviderFailure {
  if (err instanceof oidc.ResponseBodyError) {
    // A rate limit (429, RFC 6585 §4; Auth0 answers it with `too_many_requests`) or a
    // "try later" error is the provider busy, not the provider refusing this grant (found in
    // review: a rate-limited refresh ended sessions whose access token was still valid).
    if (err.status >= 500 || err.status === 429 || isOutageError(err.error)) return { kind: 'unavailable', detail: `HTTP ${err.status} ${err.error}` };
    return { kind: 'refused', error: err.error };
  }
  if (err instanceof oidc.AuthorizationResponseError) {
    return isOutageError(err.error) ? { kind: 'unavailable', detail: `authorization response ${err.error}` } : { kind: 'refused', error: err.error };
  }
  if (err instanceof oidc.ClientError) {
    const code = err.code ?? '';
    // A body that cannot be read or parsed (including one cut at the size cap) is the provider
    // failing, not the user's sign-in being invalid: fail closed as unavailable (503).
    if (code === 'OAUTH_TIMEOUT' || code === 'OAUTH_ABORT' || code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' || code === 'OAUTH_RESPONSE_IS_NOT_JSON' || code === 'OAUTH_PARSE_ERROR') {
      return { kind: 'unavailable', detail: `${code}: ${err.message}` };
    }
    return { kind: 'invalid', detail: `${code}: ${err.message}` };
  }
  // fetch() failures are TypeErrors ("fetch failed"), timeouts DOMExceptions
  if (err instanceof Error) return { kind: 'unavailable', detail: `${err.name}: ${err.message}` };
  return { kind: 'unavailable', detail: String(err) };
}

export function createSignInClient(o: SignInClientOptions): SignInClient {
  const issuer = new URL(o.issuer);
  const cooldownMs = o.cooldownMs ?? DEFAULT_COOLDOWN_MS;
  const counters: ProviderCounters = { discoveryOk: 0, discoveryFailed: 0, codeExchanges: 0, codeExchangeFailures: 0, refreshes: 0, refreshFailures: 0 };
  let config: oidc.Configuration | undefined;
  let inflight: Promise<oidc.Configuration> | undefined;
  let failedAt = -Infinity;
  let lastError = '';
  const scope = o.scopes.join(' ');
  const resourceParam: Record<string, string> = o.resource === undefined ? {} : { resource: o.resource };

  async function discover(): Promise<oidc.Configuration> {
    const options: oidc.DiscoveryRequestOptions = {
      timeout: o.timeoutMs / 1000,
      // openid-client refuses http: unless told; only loopback issuers (dev IdP, tests) get that.
      execute: isLoopbackHttp(issuer) ? [oidc.allowInsecureRequests] : [],
    };
    // Every IdP response (discovery, JWKS, token, refresh) is size-capped like authn's fetches:
    // an endless body must not be buffered.
    options[oidc.customFetch] = boundedFetch(o.fetch, MAX_DOCUMENT_BYTES) as oidc.CustomFetch;
    // RFC 6749 §2.3.1: HTTP Basic is the client authentication every server must support.
    const c = await oidc.discovery(issuer, o.clientId, undefined, oidc.ClientSecretBasic(o.clientSecret), options);
    oidc.enableNonRepudiationChecks(c); // verify ID token signatures against the provider's JWKS
    return c;
  }

  /** The configuration; discovery runs at most once at a time and not again within the cooldown of a failure. */
  function configuration(): Promise<oidc.Configuration> {
    if (config !== undefined) return Promise.resolve(config);
    if (inflight !== undefined) return inflight;
    if (o.clock() - failedAt < cooldownMs) return Promise.reject(new Error(`discovery failed recently: ${lastError}`));
    inflight = discover().then(
      (c) => {
        counters.discoveryOk++;
        config = c;
        inflight = undefined;
        o.log.info('sign-in provider discovered', { issuer: o.issuer });
        return c;
      },
      (err: unknown) => {
        counters.discoveryFailed++;
        failedAt = o.clock();
        const f = classify(err);
        lastError = f.kind === 'refused' ? f.error : f.detail;
        inflight = undefined;
        o.log.warn('sign-in provider discovery failed', { issuer: o.issuer, error: lastError });
        throw err;
      },
    );
    return inflight;
  }

  function tokenSet(r: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers, withId: boolean): TokenSet {
    const expiresIn = r.expiresIn();
    return {
      accessToken: r.access_token,
      expiresAt: expiresIn === undefined ? undefined : Math.floor(o.clock() / 1000) + expiresIn,
      refreshToken: r.refresh_token,
      idClaims: withId ? r.claims() : undefined,
    };
  }

  return {
    counters,
    async authorizationUrl(r) {
      try {
        const c = await configuration();
        const challenge = await oidc.calculatePKCECodeChallenge(r.codeVerifier);
        return {
          ok: true,
          value: oidc.buildAuthorizationUrl(c, {
            redirect_uri: r.redirectUri,
            scope,
            code_challenge: challenge,
            code_challenge_method: 'S256',
            state: r.state,
            nonce: r.nonce,
            ...resourceParam,
          }),
        };
      } catch (err) {
        return { ok: false, failure: classify(err) };
      }
    },

    async exchangeCode(callbackUrl, checks) {
      counters.codeExchanges++;
      try {
        const c = await configuration();
        const r = await oidc.authorizationCodeGrant(
          c,
          callbackUrl,
          { pkceCodeVerifier: checks.codeVerifier, expectedState: checks.state, expectedNonce: checks.nonce, idTokenExpected: true },
          resourceParam,
        );
        const set = tokenSet(r, true);
        const azp = set.idClaims?.['azp'];
        if (azp !== undefined && azp !== o.clientId) {
          counters.codeExchangeFailures++;
          return { ok: false, failure: { kind: 'invalid', detail: 'ID token azp is not this client' } };
        }
        return { ok: true, value: set };
      } catch (err) {
        counters.codeExchangeFailures++;
        return { ok: false, failure: classify(err) };
      }
    },

    async refresh(refreshToken) {
      counters.refreshes++;
      try {
        const c = await configuration();
        const r = await oidc.refreshTokenGrant(c, refreshToken, resourceParam);
        // a refresh response may carry a new ID token; openid-client validated it if so
        return { ok: true, value: { ...tokenSet(r, false), refreshToken: r.refresh_token ?? refreshToken } };
      } catch (err) {
        counters.refreshFailures++;
        return { ok: false, failure: classify(err) };
      }
    },

    async revoke(refreshToken) {
      try {
        const c = await configuration();
        if (c.serverMetadata().revocation_endpoint === undefined) return false;
        await oidc.tokenRevocation(c, refreshToken, { token_type_hint: 'refresh_token' });
        return true;
      } catch (err) {
        o.log.info('refresh token revocation failed', { issuer: o.issuer, failure: classify(err) });
        return false;
      }
    },

    async endSessionUrl(postLogoutRedirectUri) {
      try {
        const c = await configuration();
        if (c.serverMetadata().end_session_endpoint === undefined) return null;
        return oidc.buildEndSessionUrl(c, { post_logout_redirect_uri: postLogoutRedirectUri });
      } catch {
        return null; // the local session is gone either way; the provider's is its own
      }
    },
  };
}
