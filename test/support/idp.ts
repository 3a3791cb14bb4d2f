import { randomUUID } from 'node:crypto';
import type * as z from '../../src/lib/schema.ts';
import { defaultDevIdpConfig, devIdpConfigSchema } from '../../src/devidp/config.ts';
import { basicAuth, type DevIdp, startDevIdp } from '../../src/devidp/provider.ts';
import { type Logger, silentLogger } from '../../src/lib/log.ts';
import { WEBAPP_AUDIENCE } from '../../src/demo/webapp.ts';

/**
 * A real dev IdP for tests: the embedded default config (clients `frontend`, `reporting`,
 * `intruder`, `orders-sidecar`, `payments-sidecar`; resources `urn:ward:orders` (JWT),
 * `urn:ward:orders-opaque`, `urn:ward:payments`, `urn:ward:ledger`, `urn:ward:other`) on
 * 127.0.0.1, port 0. Close it in afterAll: `await idp.close()`.
 *
 *   const idp = await startTestIdp();
 *   const at = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
 *   const expired = await idp.craft({ exp: Math.floor(Date.now() / 1000) - 60 });
 */

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface TestIdp extends DevIdp {
  /** client_credentials token (throws on an OAuth error). */
  token(clientId: string, resource: string, scope?: string): Promise<string>;
  /**
   * A token signed by the IdP's current key but never issued by it: a valid RFC 9068 claim set
   * for `frontend` → `urn:ward:orders` (`scope: orders.read`, 5 minutes), with `claims` merged
   * over it (a claim set to `undefined` is removed) and `header` over `{alg, typ: at+jwt, kid}`.
   */
  craft(claims?: Record<string, unknown>, header?: Record<string, unknown>): Promise<string>;
  /** Raw POST to the token endpoint as `clientId` (its configured secret): status and JSON body. */
  post(clientId: string, params: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }>;
  /** RFC 8693 exchange of `subjectToken` for `resource` as `clientId`: status and JSON body. */
  exchange(clientId: string, subjectToken: string, resource: string, scope?: string): Promise<{ status: number; body: Record<string, unknown> }>;
  /** RFC 7662 introspection as `clientId`. */
  introspect(clientId: string, token: string): Promise<Record<string, unknown>>;
}

export async function startTestIdp(
  overrides: Partial<z.input<typeof devIdpConfigSchema>> = {},
  opts: { log?: Logger } = {},
): Promise<TestIdp> {
  const cfg = devIdpConfigSchema.parse({ ...defaultDevIdpConfig(), port: 0, ...overrides });
  const idp = await startDevIdp(cfg, { log: opts.log ?? silentLogger });
  const secretOf = (clientId: string): string => {
    const c = cfg.clients.find((x) => x.clientId === clientId);
    if (c === undefined) throw new Error(`test idp: unknown client '${clientId}'`);
    return c.clientSecret;
  };
  const form = async (url: string, clientId: string, params: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { authorization: basicAuth(clientId, secretOf(clientId)), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  const extra: Omit<TestIdp, keyof DevIdp> = {
    token: (clientId, resource, scope) => idp.clientCredentialsToken(clientId, resource, scope),
    craft: (claims = {}, header = {}) => {
      const now = Math.floor(Date.now() / 1000);
      const merged: Record<string, unknown> = {
        iss: idp.issuer,
        sub: 'frontend',
        client_id: 'frontend',
        aud: 'urn:ward:orders',
        scope: 'orders.read',
        iat: now,
        exp: now + 300,
        jti: randomUUID(),
        ...claims,
      };
      for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
      return idp.signToken(merged, header);
    },
    post: (clientId, params) => form(idp.tokenEndpoint, clientId, params),
    exchange: (clientId, subjectToken, resource, scope) =>
      form(idp.tokenEndpoint, clientId, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: subjectToken,
        subject_token_type: ACCESS_TOKEN_TYPE,
        resource,
        ...(scope === undefined ? {} : { scope }),
      }),
    introspect: async (clientId, token) => (await form(idp.introspectionEndpoint, clientId, { token })).body,
  };
  // keep DevIdp's getters (currentKid) live: extend the object rather than copying it
  return Object.assign(idp, extra);
}

/**
 * The dev IdP for browser tests: the embedded config including its users and web clients, the
 * web app's access tokens living `accessTtlSeconds` when given, every client's refresh tokens
 * rotated on each use with `rotateRefreshTokens`.
 */
export function startWebTestIdp(accessTtlSeconds?: number, opts: { readonly rotateRefreshTokens?: boolean } = {}): Promise<TestIdp> {
  const web = defaultDevIdpConfig();
  return startTestIdp({
    resourceServers:
      accessTtlSeconds === undefined ? web.resourceServers : web.resourceServers.map((rs) => (rs.resource === WEBAPP_AUDIENCE ? { ...rs, accessTokenTtlSeconds: accessTtlSeconds } : rs)),
    clients: opts.rotateRefreshTokens === true ? web.clients.map((c) => ({ ...c, rotateRefreshTokens: true })) : web.clients,
    users: web.users,
  });
}
