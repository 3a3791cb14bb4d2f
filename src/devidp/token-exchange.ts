import { createLocalJWKSet, jwtVerify, type JWK, type JWTPayload } from 'jose';
import { errors, type Provider, type TokenEndpointGrantContext } from 'oidc-provider';
import type { DevIdpClient } from './config.ts';

/**
 * RFC 8693 token exchange as an oidc-provider custom grant (research §3.4 recipe). The
 * authenticated client is the actor: the new token keeps the subject token's `sub` and carries
 * `act: { sub: <client>, act: <the subject token's own act, if any> }`, so the delegation chain
 * nests outward (RFC 8693 §4.1). A client may only exchange tokens addressed to a resource it
 * `serves`, and only for a target listed in its `resources`.
 */

export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

export const TOKEN_EXCHANGE_PARAMS = [
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'requested_token_type',
  'audience',
  'resource',
  'scope',
] as const;
/** RFC 8693 §2.1 lets `resource` and `audience` repeat; we then refuse more than one target ourselves. */
export const TOKEN_EXCHANGE_DUPLICATES = ['audience', 'resource'] as const;

type Params = { [K in (typeof TOKEN_EXCHANGE_PARAMS)[number]]?: string | string[] | undefined };

/** The `act` claim to put into the token being issued for this request (read by extraTokenClaims). */
export const pendingAct = new WeakMap<object, Record<string, unknown>>();

export interface ExchangeDeps {
  readonly provider: Provider;
  readonly clients: ReadonlyMap<string, DevIdpClient>;
  /** Public keys currently published (current + retained), for verifying JWT subject tokens. */
  readonly publicJwks: () => { keys: JWK[] };
  /** Resource server info for `client`, or throws InvalidTarget. */
  readonly resourceServerInfo: (resource: string, clientId: string) => ResourceServerData;
}

export interface ResourceServerData {
  scope: string;
  audience: string;
  accessTokenTTL: number;
  accessTokenFormat: 'jwt' | 'opaque';
  jwt?: { sign: { alg: 'RS256' | 'ES256'; kid: string } };
}

interface Subject {
  readonly sub: string;
  readonly aud: readonly string[];
  readonly act: unknown;
  /** When the subject token expires (seconds since the epoch); undefined when it says not. */
  readonly exp: number | undefined;
}

function single(v: string | string[] | undefined): string | undefined {
  if (Array.isArray(v)) return v.length === 1 ? v[0] : undefined;
  return v;
}

function list(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

export function tokenExchangeHandler(deps: ExchangeDeps): (ctx: TokenEndpointGrantContext<Params>) => Promise<void> {
  const { provider } = deps;

  async function verifySubject(token: string): Promise<Subject> {
    if (token.split('.').length === 3) {
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, createLocalJWKSet(deps.publicJwks()), {
          issuer: provider.issuer,
          typ: 'at+jwt',
          algorithms: ['RS256', 'ES256'],
        }));
      } catch {
        // RFC 8693 §2.2.2: an unacceptable subject_token is invalid_request, not invalid_grant
        throw new errors.InvalidRequest('subject_token is invalid');
      }
      if (typeof payload.sub !== 'string') throw new errors.InvalidRequest('subject_token has no sub');
      const aud = typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []);
      return { sub: payload.sub, aud, act: payload['act'], exp: payload.exp };
    }
    // an opaque access token of ours (client credentials or an earlier exchange)
    const found = (await provider.ClientCredentials.find(token)) ?? (await provider.AccessToken.find(token));
    if (found === undefined || !found.isValid) throw new errors.InvalidRequest('subject_token is invalid');
    const sub = found.kind === 'AccessToken' ? found.accountId : found.clientId;
    if (typeof sub !== 'string') throw new errors.InvalidRequest('subject_token has no subject');
    const aud = typeof found.aud === 'string' ? [found.aud] : (found.aud ?? []);
    return { sub, aud, act: found.extra?.['act'], exp: found.exp };
  }

  return async (ctx) => {
    const { params, client } = ctx.oidc;
    const self = deps.clients.get(client.clientId);
    if (self === undefined) throw new errors.UnauthorizedClient('unknown client');

    const subjectToken = single(params.subject_token);
    const subjectTokenType = single(params.subject_token_type);
    if (subjectToken === undefined || subjectTokenType === undefined) {
      throw new errors.InvalidRequest('subject_token and subject_token_type are required');
    }
    if (subjectTokenType !== ACCESS_TOKEN_TYPE && subjectTokenType !== JWT_TOKEN_TYPE) {
      throw new errors.InvalidRequest('unsupported subject_token_type');
    }
    if (params.actor_token !== undefined) {
      // the authenticated client is the actor; a separate actor token would let it claim to be someone else
      throw new errors.InvalidRequest('actor_token is not supported: the authenticated client is the actor');
    }
    const requested = single(params.requested_token_type);
    if (requested !== undefined && requested !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('only access tokens can be requested');
    }

    const targets = [...new Set([...list(params.resource), ...list(params.audience)])];
    if (targets.length !== 1) throw new errors.InvalidTarget('exactly one resource or audience is required');
    const target = targets[0] as string;
    const rsInfo = deps.resourceServerInfo(target, client.clientId); // throws InvalidTarget

    const subject = await verifySubject(subjectToken);
    if (!subject.aud.some((a) => self.serves.includes(a))) {
      // the client may only trade tokens that were sent to it, not any token it has seen
      throw new errors.InvalidRequest('subject_token was not issued for a resource this client serves');
    }

    // The delegated token must not outlive the credential it came from (docs/outbound.md:
    // found in review, it got the resource's full TTL, so the destination, and its own egress
    // exchanging onward, held a live token after the caller's had expired). `iat` and `exp` are
    // fixed here from one reading of the clock (oidc-provider's epochTime reads Date.now):
    // left to oidc-provider, `exp` is stamped at save time, a second tick later than `left` was
    // measured, and overshot the subject's by a second. `expiresIn` is the `expires_in` answered.
    const now = Math.floor(Date.now() / 1000);
    let expiresIn = rsInfo.accessTokenTTL;
    if (subject.exp !== undefined) {
      const left = subject.exp - now;
      // expired between its check and now: as unacceptable as one found expired (§2.2.2)
      if (left <= 0) throw new errors.InvalidRequest('subject_token is invalid');
      expiresIn = Math.min(expiresIn, left);
    }

    const rs = new provider.ResourceServer(target, rsInfo);
    const allowed = rs.scopes;
    const scope = (single(params.scope) ?? '').split(' ').filter((s) => s !== '' && allowed.has(s)).join(' ') || undefined;

    const grant = new provider.Grant({ accountId: subject.sub, clientId: client.clientId });
    grant.addResourceScope(target, scope ?? '');
    const grantId = await grant.save();

    const act: Record<string, unknown> = { sub: client.clientId };
    if (subject.act !== null && typeof subject.act === 'object') act['act'] = subject.act;
    pendingAct.set(ctx, act);

    const at = new provider.AccessToken({
      accountId: subject.sub,
      client,
      grantId,
      gty: 'token-exchange',
      ...(scope === undefined ? {} : { scope }),
      resourceServer: rs,
      iat: now,
      exp: now + expiresIn,
      expiresIn,
    });
    ctx.body = {
      access_token: await at.save(),
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: at.tokenType,
      expires_in: at.expiration,
      ...(scope === undefined ? {} : { scope }),
    };
  };
}
