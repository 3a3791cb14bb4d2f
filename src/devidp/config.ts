import { readFileSync } from 'node:fs';
import * as z from '../lib/schema.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { parseYamlFile } from '../lib/yaml-schema.ts';

/**
 * The development IdP's config file (`ward dev-idp --config FILE`). Without a file the embedded
 * DEFAULT_DEV_IDP_YAML below is used: it holds the demo's clients and resource servers, so the
 * demo, the tests and a developer's first run all see the same identities.
 */

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** Host names the IdP accepts: loopback only, because every secret in its config is public. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1' || host === '[::1]') return true;
  return /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(host) && host.split('.').every((o) => Number(o) <= 255);
}

const absoluteUri = z
  .string()
  .refine((s) => URL.canParse(s) && !s.includes('#'), { message: 'must be an absolute URI without a fragment (RFC 8707 §2)' });

const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, { message: 'not a valid scope token (RFC 6749 §3.3)' });

const resourceServer = z.strictObject({
  resource: absoluteUri.meta({
    description: 'Resource indicator (RFC 8707) of the protected service; becomes the `aud` of its tokens.',
    examples: ['urn:ward:orders'],
  }),
  scopes: z.array(scopeToken).default([]).meta({
    description: 'Scopes this resource server understands. Requested scopes outside this list are dropped from the token.',
    examples: [['orders.read', 'orders.write']],
  }),
  accessTokenFormat: z.enum(['jwt', 'opaque']).default('jwt').meta({
    description: '`jwt`: RFC 9068 JWT access tokens (`typ: at+jwt`). `opaque`: random handles, checked by introspection (RFC 7662).',
  }),
  accessTokenTtlSeconds: z.int().positive().max(86_400).default(300).meta({ description: 'Lifetime of access tokens for this resource. One issued by token exchange lives at most as long as its subject token has left.' }),
});

const client = z.strictObject({
  clientId: z.string().regex(/^[A-Za-z0-9._-]+$/).meta({ description: 'OAuth client id.', examples: ['frontend'] }),
  clientSecret: z.string().min(8).meta({
    description: 'Client secret (client_secret_basic or client_secret_post). Dev only: it sits in this file in clear.',
  }),
  grantTypes: z.array(z.enum(['client_credentials', 'token-exchange', 'authorization_code', 'refresh_token'])).default([]).meta({
    description: `Grants the client may use. \`token-exchange\` is RFC 8693 (\`${TOKEN_EXCHANGE_GRANT}\`). \`authorization_code\` (with PKCE) is interactive sign-in at the login page, for a web client such as a ward sidecar with a \`session\` section; \`refresh_token\` lets it refresh. Empty: an introspection-only client (a resource server).`,
  }),
  redirectUris: z.array(absoluteUri).default([]).meta({
    description:
      'Where `authorization_code` may send the browser back (exact match). A loopback `http://127.0.0.1/...` or `http://[::1]/...` URI matches any port (RFC 8252 §7.3), so a sidecar on a dynamic port needs no new entry.',
    examples: [['http://127.0.0.1/.ward/callback']],
  }),
  postLogoutRedirectUris: z.array(absoluteUri).default([]).meta({
    description: 'Where RP-initiated logout (`/session/end`) may send the browser afterwards; loopback URIs match any port, as above.',
    examples: [['http://127.0.0.1/.ward/signed-out']],
  }),
  resources: z.record(absoluteUri, z.array(scopeToken)).default({}).meta({
    description: 'Resources this client may get tokens for, each with the scopes it may receive. Any other resource gets `invalid_target`.',
    examples: [{ 'urn:ward:orders': ['orders.read'] }],
  }),
  rotateRefreshTokens: z.boolean().default(false).meta({
    description:
      'Issue a new refresh token on every refresh and retire the one used (rotation, as Keycloak\'s "Revoke Refresh Token" or Auth0\'s rotation). A retired refresh token presented again is reuse: the IdP revokes the whole grant. Off: a refresh token is replaced only in the last 30% of its life (oidc-provider\'s default for confidential clients).',
  }),
  serves: z.array(absoluteUri).default([]).meta({
    description:
      'Resources this client is (the sidecar of): it may introspect tokens issued for them, and exchange tokens addressed to them (RFC 8693 `subject_token`).',
    examples: [['urn:ward:orders']],
  }),
});

/** Claims a user's tokens may not carry from the file: the IdP sets them itself. */
export const RESERVED_USER_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'scope', 'client_id', 'act', 'azp', 'nonce', 'at_hash', 'cnf'] as const;

const user = z.strictObject({
  username: z.string().regex(/^[A-Za-z0-9._@-]+$/).max(64).meta({ description: 'Login name; also the `sub` of the user\'s tokens.', examples: ['alice'] }),
  password: z.string().min(1).meta({ description: 'Password for the login page (public: development only).', examples: ['alice-password'] }),
  claims: z
    .record(z.string(), z.unknown())
    .default({})
    .refine((c) => RESERVED_USER_CLAIMS.every((k) => !Object.hasOwn(c, k)), { message: `must not set ${RESERVED_USER_CLAIMS.join(', ')}` })
    .meta({
      description: 'Extra claims of the user, carried in the access tokens issued to them (and in the ID token), so policies can test them.',
      examples: [{ name: 'Alice Example', roles: ['viewer'] }],
    }),
});

export const devIdpConfigSchema = z
  .strictObject({
    host: z
      .string()
      .refine(isLoopbackHost, { message: 'must be a loopback host (127.0.0.1, ::1 or localhost): the dev IdP\'s secrets are public' })
      .default('127.0.0.1')
      .meta({
        description: 'Host of the issuer URL and address bound. Loopback only (127.0.0.0/8, ::1, localhost): anything else is refused.',
      }),
    port: z.int().min(0).max(65535).default(4400).meta({ description: 'TCP port (0 picks a free one; the issuer URL carries the real port).' }),
    signingAlg: z.enum(['RS256', 'ES256']).default('RS256').meta({ description: 'JWS algorithm of access tokens (RFC 9068 requires RS256 support).' }),
    retainedKeys: z.int().min(1).max(10).default(2).meta({
      description: 'How many previous signing keys stay published in the JWKS after `rotateKeys()`, so tokens they signed still verify.',
    }),
    resourceServers: z.array(resourceServer).default([]).meta({ description: 'Protected resources (RFC 8707 resource indicators).' }),
    clients: z.array(client).default([]).meta({ description: 'Registered clients.' }),
    users: z.array(user).default([]).meta({
      description: 'Test users of the login page (`authorization_code`). Their passwords sit in this file in clear: development only.',
    }),
  })
  .superRefine((cfg, ctx) => {
    const known = new Map(cfg.resourceServers.map((rs) => [rs.resource, rs]));
    const seenRs = new Set<string>();
    cfg.resourceServers.forEach((rs, i) => {
      if (seenRs.has(rs.resource)) ctx.addIssue({ code: 'custom', path: ['resourceServers', i, 'resource'], message: `duplicate resource '${rs.resource}'` });
      seenRs.add(rs.resource);
    });
    const seenUsers = new Set<string>();
    cfg.users.forEach((u, i) => {
      if (seenUsers.has(u.username)) ctx.addIssue({ code: 'custom', path: ['users', i, 'username'], message: `duplicate user '${u.username}'` });
      seenUsers.add(u.username);
    });
    const seenClients = new Set<string>();
    cfg.clients.forEach((c, i) => {
      if (seenClients.has(c.clientId)) ctx.addIssue({ code: 'custom', path: ['clients', i, 'clientId'], message: `duplicate client '${c.clientId}'` });
      seenClients.add(c.clientId);
      for (const [resource, scopes] of Object.entries(c.resources)) {
        const rs = known.get(resource);
        if (rs === undefined) {
          ctx.addIssue({ code: 'custom', path: ['clients', i, 'resources', resource], message: `unknown resource '${resource}' (not in resourceServers)` });
          continue;
        }
        scopes.forEach((s, j) => {
          if (!rs.scopes.includes(s)) ctx.addIssue({ code: 'custom', path: ['clients', i, 'resources', resource, j], message: `scope '${s}' is not a scope of '${resource}'` });
        });
      }
      c.serves.forEach((resource, j) => {
        if (!known.has(resource)) ctx.addIssue({ code: 'custom', path: ['clients', i, 'serves', j], message: `unknown resource '${resource}' (not in resourceServers)` });
      });
      if (c.grantTypes.includes('authorization_code') && c.redirectUris.length === 0) {
        ctx.addIssue({ code: 'custom', path: ['clients', i, 'redirectUris'], message: 'an authorization_code client needs at least one redirect URI' });
      }
      if (c.grantTypes.includes('refresh_token') && !c.grantTypes.includes('authorization_code')) {
        ctx.addIssue({ code: 'custom', path: ['clients', i, 'grantTypes'], message: 'refresh_token needs authorization_code (refresh tokens come from sign-ins)' });
      }
      if (c.grantTypes.includes('token-exchange') && c.serves.length === 0) {
        // without it any token from this issuer could be exchanged by this client
        ctx.addIssue({ code: 'custom', path: ['clients', i, 'serves'], message: 'a token-exchange client must list the resources whose tokens it may exchange' });
      }
    });
  })
  .meta({ title: 'ward dev-idp config' });

export type DevIdpConfig = z.output<typeof devIdpConfigSchema>;
export type DevIdpClient = DevIdpConfig['clients'][number];
export type DevIdpResourceServer = DevIdpConfig['resourceServers'][number];
export type DevIdpUser = DevIdpConfig['users'][number];

/**
 * The demo's identities. Secrets here are public by design: the IdP only ever binds loopback.
 * - frontend: reads and writes orders; reporting: reads only; intruder: tokens for another service.
 * - orders-sidecar: the orders service's own client (introspection of its opaque tokens, and
 *   token exchange towards payments); payments-sidecar continues the chain to the ledger.
 */
export const DEFAULT_DEV_IDP_YAML = `# ward dev-idp: development only. Every secret below is public.
host: 127.0.0.1
port: 4400
signingAlg: RS256
resourceServers:
  - resource: urn:ward:orders
    scopes: [orders.read, orders.write]
    accessTokenFormat: jwt
    accessTokenTtlSeconds: 300
  - resource: urn:ward:orders-opaque
    scopes: [orders.read, orders.write]
    accessTokenFormat: opaque
    accessTokenTtlSeconds: 300
  - resource: urn:ward:payments
    scopes: [payments.charge]
    accessTokenFormat: jwt
    accessTokenTtlSeconds: 120
  - resource: urn:ward:ledger
    scopes: [ledger.append]
    accessTokenFormat: jwt
    accessTokenTtlSeconds: 120
  - resource: urn:ward:other
    scopes: [other.read]
    accessTokenFormat: jwt
    accessTokenTtlSeconds: 300
  - resource: urn:ward:control-plane
    scopes: []
    accessTokenFormat: jwt
    accessTokenTtlSeconds: 300
  # the demo web app's own API audience (browser sign-in at its sidecar)
  - resource: urn:ward:webapp
    scopes: []
    accessTokenFormat: jwt
    accessTokenTtlSeconds: 300
clients:
  - clientId: frontend
    clientSecret: frontend-secret
    grantTypes: [client_credentials]
    resources:
      urn:ward:orders: [orders.read, orders.write]
      urn:ward:orders-opaque: [orders.read, orders.write]
  - clientId: reporting
    clientSecret: reporting-secret
    grantTypes: [client_credentials]
    resources:
      urn:ward:orders: [orders.read]
      urn:ward:orders-opaque: [orders.read]
  - clientId: intruder
    clientSecret: intruder-secret
    grantTypes: [client_credentials]
    resources:
      urn:ward:other: [other.read]
  - clientId: orders-sidecar
    clientSecret: orders-sidecar-secret
    grantTypes: [token-exchange, client_credentials]
    serves: [urn:ward:orders, urn:ward:orders-opaque]
    resources:
      urn:ward:payments: [payments.charge]
      urn:ward:control-plane: []
  - clientId: payments-sidecar
    clientSecret: payments-sidecar-secret
    grantTypes: [token-exchange, client_credentials]
    serves: [urn:ward:payments]
    resources:
      urn:ward:ledger: [ledger.append]
      urn:ward:control-plane: []
  # a ward sidecar with a \`session\` section (browser sign-in): loopback callback, any port
  - clientId: webapp
    clientSecret: webapp-secret
    grantTypes: [authorization_code, refresh_token]
    redirectUris: [http://127.0.0.1/.ward/callback]
    postLogoutRedirectUris: [http://127.0.0.1/.ward/signed-out]
    resources:
      urn:ward:webapp: []
# fixed users of the development login page; bob is an admin (the demo web app's /admin needs it)
users:
  - username: alice
    password: alice-password
    claims: { name: Alice Example, email: alice@example.com, roles: [viewer] }
  - username: bob
    password: bob-password
    claims: { name: Bob Example, email: bob@example.com, roles: [viewer, admin] }
`;

export function parseDevIdpConfig(text: string, file: string): DevIdpConfig {
  return parseYamlFile(text, file, devIdpConfigSchema);
}

export function loadDevIdpConfig(file: string): DevIdpConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  return parseDevIdpConfig(text, file);
}

/** The embedded default config (a fresh copy each call; callers may override fields). */
export function defaultDevIdpConfig(): DevIdpConfig {
  return parseDevIdpConfig(DEFAULT_DEV_IDP_YAML, '<embedded dev-idp config>');
}
