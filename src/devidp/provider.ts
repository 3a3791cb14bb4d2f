import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CompactSign, type JWK } from 'jose';
import { errors, Provider, type ClientMetadata, type Configuration } from 'oidc-provider';
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';
import { type Logger, createLogger } from '../lib/log.ts';
import { type DevIdpClient, type DevIdpConfig, type DevIdpUser, isLoopbackHost, TOKEN_EXCHANGE_GRANT } from './config.ts';
import { INTERACTION_PATH, firstPartyGrant, handleInteraction, logoutSource, postLogoutSuccessSource } from './login.ts';
import { generateSigningKey, type SigningKey } from './keys.ts';
import {
  pendingAct,
  type ResourceServerData,
  TOKEN_EXCHANGE_DUPLICATES,
  TOKEN_EXCHANGE_PARAMS,
  tokenExchangeHandler,
} from './token-exchange.ts';

/**
 * The development OpenID Provider: oidc-provider 9 with its in-memory adapter, on loopback only.
 *
 * Key rotation. oidc-provider reads `jwks` once, at construction, and signs with the first key
 * of a matching alg. So the Provider sits behind a stable `node:http` front and `rotateKeys()`
 * builds a new Provider (same issuer, same clients, the new key first and the retained old keys
 * after it) and swaps it in. Nothing is lost in the swap: every Provider of one DevIdp gets the
 * same instance of oidc-provider's own in-memory adapter (`createMemoryAdapter()`, which is what
 * it builds by default, once per Provider), so opaque tokens and grants issued before the
 * rotation still introspect, while two DevIdps in one process stay apart. Old keys stay in the
 * JWKS for `retainedKeys` rotations, so JWTs they signed still verify.
 *
 * Routes besides oidc-provider's own: `POST /dev/rotate-keys` (rotate now; answers
 * `{"kid": "<new kid>"}`). It has no authentication: it is loopback-only and development-only.
 *
 * Interactive sign-in (clients with `authorization_code`): `/interaction/<uid>` is a
 * development login page for the fixed users of the config (login.ts); consent is implied (every
 * client is first-party here); refresh tokens go to clients allowed the `refresh_token` grant
 * and end with the IdP session (no `offline_access` needed); RP-initiated logout
 * (`/session/end`) signs out without a confirmation click.
 */

export interface DevIdp {
  readonly issuer: string;
  readonly port: number;
  readonly tokenEndpoint: string;
  readonly jwksUri: string;
  readonly introspectionEndpoint: string;
  /** kid of the key new tokens are signed with. */
  readonly currentKid: string;
  readonly config: DevIdpConfig;
  rotateKeys(): Promise<void>;
  /** A client_credentials access token, fetched over HTTP from the token endpoint. */
  clientCredentialsToken(clientId: string, resource: string, scope?: string): Promise<string>;
  /**
   * Signs `claims` as-is with the current private key (header defaults: `typ: at+jwt`, the key's
   * alg and kid). A test helper for expired, wrong-audience or otherwise odd tokens; never on HTTP.
   */
  signToken(claims: Record<string, unknown>, header?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

export const DEV_ONLY_NOTICE =
  'DEVELOPMENT ONLY: ward dev-idp is a test identity provider with public secrets and in-memory state. Never use it to protect anything real.';

const ROTATE_PATH = '/dev/rotate-keys';

export async function startDevIdp(cfg: DevIdpConfig, opts: { log?: Logger } = {}): Promise<DevIdp> {
  const log = (opts.log ?? createLogger()).child({ component: 'dev-idp' });
  if (!isLoopbackHost(cfg.host)) {
    throw new Error(
      `dev-idp refuses to listen on '${cfg.host}': it is a development IdP with public secrets and binds loopback only (127.0.0.1, ::1 or localhost)`,
    );
  }
  const bare = cfg.host.replace(/^\[|\]$/g, '');
  const bindHost = bare === 'localhost' ? '127.0.0.1' : bare;
  const urlHost = bare.includes(':') ? `[${bare}]` : bare;

  const clients = new Map<string, DevIdpClient>(cfg.clients.map((c) => [c.clientId, c]));
  const users = new Map<string, DevIdpUser>(cfg.users.map((u) => [u.username, u]));
  const clientResources = new Map(cfg.clients.map((c) => [c.clientId, c.resources]));
  const resourceServers = new Map(cfg.resourceServers.map((rs) => [rs.resource, rs]));
  // cookies are never used by these clients, but oidc-provider insists on keys for them
  const cookieKeys = [randomBytes(32).toString('base64url')];
  const adapter = createMemoryAdapter();

  let keys: SigningKey[] = [await generateSigningKey(cfg.signingAlg)]; // keys[0] signs
  const current = (): SigningKey => keys[0] as SigningKey;
  const publicJwks = (): { keys: JWK[] } => ({ keys: keys.map((k) => k.publicJwk) });

  const resourceServerInfo = (resource: string, clientId: string): ResourceServerData => {
    const rs = resourceServers.get(resource);
    const allowed = clients.get(clientId)?.resources;
    const granted = allowed !== undefined && Object.hasOwn(allowed, resource) ? allowed[resource] : undefined;
    if (rs === undefined || granted === undefined) {
      throw new errors.InvalidTarget(`client may not get tokens for '${resource}'`);
    }
    return {
      scope: granted.join(' '),
      audience: rs.resource,
      accessTokenTTL: rs.accessTokenTtlSeconds,
      accessTokenFormat: rs.accessTokenFormat,
      ...(rs.accessTokenFormat === 'jwt' ? { jwt: { sign: { alg: current().alg, kid: current().kid } } } : {}),
    };
  };

  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, bindHost, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://${urlHost}:${port}`;

  const build = (): Provider => {
    const clientMeta: ClientMetadata[] = cfg.clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.clientSecret,
      grant_types: c.grantTypes.map((g) => (g === 'token-exchange' ? TOKEN_EXCHANGE_GRANT : g)),
      response_types: c.grantTypes.includes('authorization_code') ? ['code'] : [],
      redirect_uris: c.redirectUris,
      post_logout_redirect_uris: c.postLogoutRedirectUris,
      // RFC 8252 §7.3: oidc-provider lets loopback redirect URIs of native clients use any
      // port, which a sidecar on port 0 needs; nothing else differs for a confidential client.
      ...(c.redirectUris.length > 0 && [...c.redirectUris, ...c.postLogoutRedirectUris].every(isLoopbackHttp) ? { application_type: 'native' as const } : {}),
      token_endpoint_auth_method: 'client_secret_basic',
    }));
    const configuration: Configuration = {
      adapter,
      clients: clientMeta,
      jwks: { keys: keys.map((k) => k.privateJwk) },
      clientDefaults: { id_token_signed_response_alg: cfg.signingAlg, grant_types: [], response_types: [], token_endpoint_auth_method: 'client_secret_basic' },
      cookies: { keys: cookieKeys },
      findAccount: (_ctx, sub) => {
        const u = users.get(sub);
        return u === undefined ? undefined : { accountId: u.username, claims: () => ({ ...u.claims, sub: u.username }) };
      },
      claims: { openid: ['sub'], profile: ['name', 'email'] },
      // Every client here is first-party: consent is implied, for exactly what the client may get.
      loadExistingGrant: async (ctx) => {
        const client = ctx.oidc.client;
        const accountId = ctx.oidc.session?.accountId;
        if (client === undefined || accountId === undefined) return undefined;
        const existing = ctx.oidc.result?.consent?.grantId ?? ctx.oidc.session?.grantIdFor(client.clientId);
        const grantId = await firstPartyGrant(ctx.oidc.provider, client.clientId, accountId, clients.get(client.clientId)?.resources ?? {}, existing);
        return ctx.oidc.provider.Grant.find(grantId);
      },
      issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
      // oidc-provider's own rule for confidential clients (rotate in the last 30% of a token's
      // life) unless the client asks for rotation on every refresh; reuse of a rotated token
      // revokes the grant either way.
      rotateRefreshToken: (ctx) => {
        const client = ctx.oidc.client;
        if (client !== undefined && clients.get(client.clientId)?.rotateRefreshTokens === true) return true;
        return (ctx.oidc.entities.RefreshToken?.ttlPercentagePassed() ?? 0) >= 70;
      },
      features: {
        devInteractions: { enabled: false },
        rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
        clientCredentials: { enabled: true },
        introspection: {
          enabled: true,
          // a client may introspect its own tokens and tokens for the resources it serves
          allowedPolicy: (_ctx, client, token) => {
            if (token.clientId === client.clientId) return true;
            const aud = (token as { aud?: string | string[] }).aud;
            const serves = clients.get(client.clientId)?.serves ?? [];
            return (Array.isArray(aud) ? aud : aud === undefined ? [] : [aud]).some((a) => serves.includes(a));
          },
        },
        // a client may revoke its own tokens (the sidecar's sessions revoke their refresh token at logout)
        revocation: { enabled: true, allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => undefined,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, resource, client) => resourceServerInfo(resource, client.clientId),
        },
      },
      extraTokenClaims: (ctx, token) => {
        if (token.kind !== 'AccessToken') return undefined;
        // a signed-in user's claims from the config travel in their access tokens, for policies
        const user = token.accountId === undefined ? undefined : users.get(token.accountId);
        const claims = user === undefined ? undefined : { ...user.claims };
        if (token.gty !== 'token-exchange') return claims;
        const act = pendingAct.get(ctx);
        return act === undefined ? claims : { ...claims, act };
      },
      ttl: {
        AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
        ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
        Grant: 86_400,
        AuthorizationCode: 60,
        Interaction: 600,
        Session: 86_400,
        RefreshToken: 86_400,
        IdToken: 300,
      },
      renderError: (ctx, out) => {
        ctx.type = 'json';
        ctx.body = out;
      },
    };
    const provider = new Provider(issuer, configuration);
    provider.registerGrantType(
      TOKEN_EXCHANGE_GRANT,
      tokenExchangeHandler({ provider, clients, publicJwks, resourceServerInfo }),
      TOKEN_EXCHANGE_PARAMS,
      TOKEN_EXCHANGE_DUPLICATES,
    );
    provider.on('server_error', (_ctx, err) => log.error('dev-idp internal error', { err }));
    provider.on('grant.success', (ctx) => {
      log.debug('token issued', { client: ctx.oidc.client?.clientId, grant: ctx.oidc.params?.['grant_type'], kid: current().kid });
    });
    provider.on('grant.error', (ctx, err) => {
      log.info('token request refused', { client: ctx.oidc.client?.clientId, error: err.error, description: err.error_description });
    });
    return provider;
  };

  let provider = build();
  let handler = provider.callback();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith(INTERACTION_PATH) === true) {
      handleInteraction(provider, users, clientResources, req, res).catch((err: unknown) => {
        log.error('dev-idp login page failed', { err });
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('login failed\n');
      });
      return;
    }
    if (req.url === ROTATE_PATH || req.url?.startsWith(`${ROTATE_PATH}?`)) {
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST', 'content-type': 'application/json' }).end('{"error":"method_not_allowed"}');
        return;
      }
      req.resume();
      rotateKeys().then(
        () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kid: current().kid })),
        (err: unknown) => {
          log.error('key rotation failed', { err });
          res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"server_error"}');
        },
      );
      return;
    }
    void handler(req, res);
  });

  // one rotation at a time: each builds on the key list the previous one left
  let rotation: Promise<void> = Promise.resolve();
  const rotateKeys = (): Promise<void> => {
    const next = rotation.then(async () => {
      const fresh = await generateSigningKey(cfg.signingAlg);
      const previous = keys;
      keys = [fresh, ...previous.slice(0, cfg.retainedKeys)];
      try {
        provider = build();
        handler = provider.callback();
      } catch (err) {
        keys = previous;
        throw err;
      }
      log.info('dev-idp signing key rotated', { kid: fresh.kid, published: keys.map((k) => k.kid) });
    });
    rotation = next.catch(() => undefined);
    return next;
  };

  const tokenEndpoint = `${issuer}/token`;
  const clientCredentialsToken = async (clientId: string, resource: string, scope?: string): Promise<string> => {
    const c = clients.get(clientId);
    if (c === undefined) throw new Error(`dev-idp: unknown client '${clientId}'`);
    const body = new URLSearchParams({ grant_type: 'client_credentials', resource });
    if (scope !== undefined) body.set('scope', scope);
    const res = await fetch(tokenEndpoint, {
      method: 'POST',
      headers: { authorization: basicAuth(c.clientId, c.clientSecret), 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
    if (!res.ok || typeof json.access_token !== 'string') {
      throw new Error(`dev-idp: token request for ${clientId} \u2192 ${resource} failed: ${json.error ?? res.status} ${json.error_description ?? ''}`.trim());
    }
    return json.access_token;
  };

  const signToken = async (claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> => {
    const key = current();
    return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: key.alg, typ: 'at+jwt', kid: key.kid, ...header })
      .sign(key.privateKey);
  };

  log.warn(DEV_ONLY_NOTICE, { issuer });
  log.info('dev-idp listening', { issuer, kid: current().kid, clients: [...clients.keys()] });

  return {
    issuer,
    port,
    tokenEndpoint,
    jwksUri: `${issuer}/jwks`,
    introspectionEndpoint: `${issuer}/token/introspection`,
    get currentKid() {
      return current().kid;
    },
    config: cfg,
    rotateKeys,
    clientCredentialsToken,
    signToken,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function isLoopbackHttp(uri: string): boolean {
  const u = new URL(uri);
  return u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === '[::1]');
}

export function basicAuth(clientId: string, secret: string): string {
  // RFC 6749 §2.3.1: form-urlencode each part before base64
  const enc = (s: string): string => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}`;
}
