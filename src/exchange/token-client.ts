import * as oidc from 'openid-client';
import { boundedFetch, describeError, isLoopbackHttp, MAX_DOCUMENT_BYTES } from '../authn/fetch.ts';
import { isSendableBearer, MAX_ISSUED_TOKEN_CHARS } from '../lib/bearer.ts';
import { isOutageError } from '../lib/oauth-errors.ts';

/**
 * The sidecar's requests to its IdP's token endpoint, via openid-client (research §4.1):
 *
 * - RFC 8693 token exchange (`genericGrantRequest`): `subject_token` (the token the app
 *   forwarded), `subject_token_type` access_token, `resource` and/or `audience`, `scope`,
 *   authenticated as the workload's own OAuth client. The IdP puts the workload into `act`.
 * - RFC 6749 §4.4 client credentials (`clientCredentialsGrant`) for calls the app makes without
 *   a token to forward, when the destination allows it.
 *
 * Never throws: every answer is a `GrantResult`. What the IdP said no to (`invalid_target`,
 * `unauthorized_client`, `invalid_request`, `invalid_client`...: a 4xx OAuth error) is `refused`;
 * everything that says nothing about the request (timeout, connection refused, 5xx,
 * `temporarily_unavailable`, a response that is not a token response) is `unavailable`.
 * Discovery runs once, lazily, shared by concurrent callers; a failed discovery is retried by the
 * next request (the broker's back-off paces those).
 */

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
/** RFC 8693 §3: a JWT, which an access token may be. */
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

/** What to ask the IdP for: one destination's audience/resource and scopes. */
export interface TokenTarget {
  /** The destination's name (cache key part, logs). */
  readonly name: string;
  readonly resource: string | undefined;
  readonly audience: string | undefined;
  /** Space-delimited scopes to request; '' for none. */
  readonly scope: string;
}

export type GrantResult =
  | { readonly ok: true; readonly token: string; readonly expiresInS: number | undefined }
  | { readonly ok: false; readonly kind: 'refused'; readonly oauthError: string; readonly description: string | undefined; readonly status: number }
  | { readonly ok: false; readonly kind: 'unavailable'; readonly detail: string };

export interface TokenEndpointClient {
  readonly issuer: string;
  readonly clientId: string;
  exchange(subjectToken: string, target: TokenTarget): Promise<GrantResult>;
  clientCredentials(target: TokenTarget): Promise<GrantResult>;
}

export interface TokenClientOptions {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Skip discovery and use this token endpoint. */
  readonly tokenEndpoint?: string | undefined;
  readonly clientAuth: 'client_secret_basic' | 'client_secret_post';
  readonly timeoutMs: number;
  readonly fetch?: typeof fetch | undefined;
}

/** OAuth errors that mean "try again later", not "no": lib/oauth-errors.ts, and Auth0's `too_many_requests` (with its 429). */
function isTransientOAuthError(error: string): boolean {
  return isOutageError(error) || error === 'too_many_requests';
}

/** The IdP's `error_description` as kept and logged: a string, its first 256 characters. */
const MAX_DESCRIPTION = 256;

function shortDescription(d: unknown): string | undefined {
  if (typeof d !== 'string') return undefined;
  return d.length > MAX_DESCRIPTION ? `${d.slice(0, MAX_DESCRIPTION)}...` : d;
}

/**
 * The `token_type` of a 200 token response that openid-client would not accept, or undefined when
 * `err` is anything else. openid-client 6 (oauth4webapi `processGenericAccessTokenResponse`)
 * accepts only `bearer` and `dpop` (and `n_a` on the token-exchange grant), throws
 * `UnsupportedOperationError('unsupported token_type value', { cause: { body } })` for any
 * other, wrapped in a `ClientError` with code `OAUTH_UNSUPPORTED_OPERATION`, and takes no option
 * to recognise more. Matched by shape: oauth4webapi is not a dependency of ward's own, and only
 * this throw carries the response body as its cause.
 */
function unsupportedTokenType(err: unknown): string | undefined {
  if (!(err instanceof oidc.ClientError) || err.code !== 'OAUTH_UNSUPPORTED_OPERATION') return undefined;
  const inner: unknown = err.cause;
  if (!(inner instanceof Error) || inner.name !== 'UnsupportedOperationError') return undefined;
  const body: unknown = (inner.cause as { body?: unknown } | undefined)?.body;
  if (typeof body !== 'object' || body === null) return undefined;
  const tokenType: unknown = (body as { token_type?: unknown }).token_type;
  return typeof tokenType === 'string' ? tokenType : undefined;
}

/** Maps whatever openid-client threw to a result. Exported for unit tests. */
export function classifyGrantError(err: unknown): GrantResult {
  // The IdP answered, with a token ward cannot send as Bearer (docs/outbound.md "What may be
  // issued"): a refusal for this destination, like result()'s own check, which openid-client's
  // throw keeps from being reached. As `unavailable` (found in review) one audience's `mac` or
  // `pop` token started the back-off that fails calls to every destination.
  const tokenType = unsupportedTokenType(err);
  if (tokenType !== undefined) {
    return { ok: false, kind: 'refused', oauthError: 'unsupported_token_type', description: `token_type ${tokenType}`, status: 200 };
  }
  if (err instanceof oidc.ResponseBodyError) {
    // A rate limit (429, RFC 6585 §4) is the IdP busy, not refusing: a refusal is answered 403
    // and remembered (found in review: a 429 failed every call to the destination for
    // `refusalCacheSeconds`, and started no back-off).
    if (err.status >= 500 || err.status === 429 || isTransientOAuthError(err.error)) {
      return { ok: false, kind: 'unavailable', detail: `HTTP ${err.status} ${err.error}` };
    }
    // The description is the IdP's text: kept in the refusal cache and logged, so bounded (found
    // in review: up to the 512 KiB response cap per cached refusal; an object threw when logged).
    return { ok: false, kind: 'refused', oauthError: err.error, description: shortDescription(err.error_description), status: err.status };
  }
  if (err instanceof oidc.WWWAuthenticateChallengeError) {
    if (err.status >= 500 || err.status === 429) return { ok: false, kind: 'unavailable', detail: `HTTP ${err.status}` };
    const e = err.cause[0]?.parameters.error;
    const d = err.cause[0]?.parameters.error_description;
    return { ok: false, kind: 'refused', oauthError: e ?? 'invalid_client', description: shortDescription(d), status: err.status };
  }
  return { ok: false, kind: 'unavailable', detail: describeError(err) };
}

export function createTokenClient(o: TokenClientOptions): TokenEndpointClient {
  const issuerUrl = new URL(o.issuer);
  const auth = o.clientAuth === 'client_secret_post' ? oidc.ClientSecretPost(o.clientSecret) : oidc.ClientSecretBasic(o.clientSecret);
  const timeoutS = o.timeoutMs / 1000;
  const bounded = boundedFetch(o.fetch, MAX_DOCUMENT_BYTES) as oidc.CustomFetch;
  let config: oidc.Configuration | null = null;
  let configuring: Promise<oidc.Configuration> | null = null;

  function prepare(c: oidc.Configuration, url: URL): oidc.Configuration {
    c.timeout = timeoutS;
    // Size-capped like every other IdP response (authn/fetch.ts): an endless token response
    // must not grow memory until the timeout.
    c[oidc.customFetch] = bounded;
    // openid-client refuses http: unless told; only loopback IdPs (tests, the dev IdP) get that.
    if (isLoopbackHttp(url)) oidc.allowInsecureRequests(c);
    return c;
  }

  async function discover(): Promise<oidc.Configuration> {
    if (o.tokenEndpoint !== undefined) {
      const te = new URL(o.tokenEndpoint);
      return prepare(new oidc.Configuration({ issuer: o.issuer, token_endpoint: te.href }, o.clientId, undefined, auth), te);
    }
    const options: oidc.DiscoveryRequestOptions = {
      timeout: timeoutS,
      execute: isLoopbackHttp(issuerUrl) ? [oidc.allowInsecureRequests] : [],
    };
    options[oidc.customFetch] = bounded;
    const c = await oidc.discovery(issuerUrl, o.clientId, undefined, auth, options);
    const te = new URL(c.serverMetadata().token_endpoint ?? issuerUrl);
    // The client secret and the app's token go there. A loopback http: issuer's discovery left
    // plain http: allowed on the configuration, for whatever token endpoint it names (found in
    // review: one off loopback got both in clear); only https:, or http: on loopback, is used.
    if (te.protocol !== 'https:' && !isLoopbackHttp(te)) throw new Error(`the discovered token_endpoint ${te.origin} is not https: (plain http: only on loopback)`);
    return prepare(c, te);
  }

  function configuration(): Promise<oidc.Configuration> {
    if (config !== null) return Promise.resolve(config);
    configuring ??= discover().then(
      (c) => {
        config = c;
        configuring = null;
        return c;
      },
      (err: unknown) => {
        configuring = null;
        throw err;
      },
    );
    return configuring;
  }

  function targetParams(t: TokenTarget, into: Record<string, string>): Record<string, string> {
    if (t.resource !== undefined) into['resource'] = t.resource;
    if (t.audience !== undefined) into['audience'] = t.audience;
    if (t.scope !== '') into['scope'] = t.scope;
    return into;
  }

  function result(r: oidc.TokenEndpointResponse): GrantResult {
    // RFC 8693 §2.2.1: `token_type` N_A means "not an access token"; we can only send Bearer.
    // (openid-client lets through only bearer, dpop and, on the exchange grant, n_a: the rest
    // never get here but to classifyGrantError, which refuses them the same way.)
    if (r.token_type.toLowerCase() !== 'bearer') {
      return { ok: false, kind: 'refused', oauthError: 'unsupported_token_type', description: `token_type ${r.token_type}`, status: 200 };
    }
    // The token goes out in `Authorization: Bearer`: otherwise every call with it failed at the
    // header (blamed on the app as a malformed request) for as long as it stayed cached (found
    // in review).
    // A refusal, not an outage: the IdP answered, for this destination, and the back-off (which
    // holds every destination) must not start for one audience's bad token.
    if (!isSendableBearer(r.access_token)) {
      return { ok: false, kind: 'refused', oauthError: 'invalid_token', description: `access_token is not a bearer token (RFC 6750 b64token of at most ${MAX_ISSUED_TOKEN_CHARS} characters)`, status: 200 };
    }
    return { ok: true, token: r.access_token, expiresInS: r.expires_in };
  }

  return {
    issuer: o.issuer,
    clientId: o.clientId,
    async exchange(subjectToken, target) {
      try {
        const c = await configuration();
        const params = targetParams(target, { subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE });
        const r = await oidc.genericGrantRequest(c, TOKEN_EXCHANGE_GRANT, params);
        // RFC 8693 §2.2.1: what was issued. Only an access token (or a JWT one) may go out as one:
        // a refresh or ID token sent as Bearer would be a token for something else.
        // REQUIRED (found in review: an answer without it was sent as an access token), and ward
        // asks for no type, so it is the only statement of what came back.
        const issued = r['issued_token_type'];
        if (issued !== ACCESS_TOKEN_TYPE && issued !== JWT_TOKEN_TYPE) {
          return { ok: false, kind: 'refused', oauthError: 'unsupported_token_type', description: issued === undefined ? 'issued_token_type missing (RFC 8693 §2.2.1)' : `issued_token_type ${typeof issued === 'string' ? issued : JSON.stringify(issued)}`, status: 200 };
        }
        return result(r);
      } catch (err) {
        return classifyGrantError(err);
      }
    },
    async clientCredentials(target) {
      try {
        const c = await configuration();
        return result(await oidc.clientCredentialsGrant(c, targetParams(target, {})));
      } catch (err) {
        return classifyGrantError(err);
      }
    },
  };
}
