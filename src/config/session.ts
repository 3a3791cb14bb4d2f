import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as z from '../lib/schema.ts';
import { ms } from './units.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { issueAt, type FieldPath, type YamlLocator } from '../lib/yaml-locate.ts';

/**
 * The `session` section of the sidecar config: browser sign-in at the sidecar (OIDC
 * authorization code flow with PKCE) for the routes whose policy rule says `signIn: browser`.
 * Every option carries its description, default and example here; `scripts/gen-docs.ts` renders
 * them into docs/sidecar-config.md. Behaviour: docs/browser-sign-in.md.
 */

const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, { message: 'not a valid scope token (RFC 6749 §3.3)' });
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

/** https, or http towards loopback only (the dev IdP, tests). */
function httpsOrLoopback(s: string): boolean {
  if (!URL.canParse(s)) return false;
  const u = new URL(s);
  if (u.protocol === 'https:') return true;
  const h = u.hostname;
  return u.protocol === 'http:' && (h === 'localhost' || h === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h));
}

export const sessionConfigSchema = z
  .strictObject({
    issuer: z.string().refine(httpsOrLoopback, { message: 'must be an https URL (http only on loopback)' }).meta({
      description:
        'The OpenID Provider browsers sign in at (its OIDC discovery document is read from `<issuer>/.well-known/openid-configuration`). Its access tokens must be trusted by the policy (`issuers`), since every session call is authorized on them.',
      examples: ['https://idp.example.com/realms/prod'],
    }),
    clientId: z.string().min(1).meta({ description: 'The sidecar\'s OAuth client id at that provider (a confidential web client).', examples: ['orders-web'] }),
    clientSecretFile: z.string().min(1).optional().meta({
      description: 'File holding the client secret, relative to the config file. Exactly one of `clientSecretFile` or `clientSecretEnv`.',
      examples: ['secrets/orders-web.secret'],
    }),
    clientSecretEnv: envName.optional().meta({ description: 'Environment variable holding the client secret (leading and trailing whitespace removed, as from a file).', examples: ['ORDERS_WEB_SECRET'] }),
    secretFiles: z.array(z.string().min(1)).min(1, 'needs at least one file').meta({
      description:
        'Files holding the secrets the session cookie is sealed with (AES-256-GCM with keys derived by HKDF; at least 32 bytes each, e.g. `openssl rand -base64 48`). The first seals new cookies; the others are still accepted (rotation: put the new secret first, drop the old one after `maxAgeSeconds`). Relative to the config file.',
      examples: [['secrets/session.key', 'secrets/session.previous.key']],
    }),
    cookieName: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, "_" and "-" only')
      .max(64)
      .default('ward_session')
      .meta({
        description:
          'Name of the session cookie (longer sessions add `<name>.1`\u2026`<name>.4`; sign-ins in flight use `<name>.t.<id>`, with path `/.ward/`, or `/` for a `__Host-` name, which requires it). With TLS prefer `__Host-ward_session`: browsers then refuse the cookie from any other host, which stops cookie tossing from sibling subdomains.',
        examples: ['__Host-ward_session'],
      }),
    maxAgeSeconds: z.int().min(60).max(30 * 86_400).default(8 * 3600).meta({
      description: 'Absolute lifetime of a session: after it the browser signs in again, whatever the refresh token allows.',
      examples: [43200],
    }),
    scopes: z.array(scopeToken).min(1).default(['openid']).meta({
      description:
        'Scopes requested at sign-in (`openid` is required). Add `offline_access` for providers that issue refresh tokens only with it (Auth0, Okta, Entra ID); add resource scopes the policy checks.',
      examples: [['openid', 'offline_access', 'orders.read']],
    }),
    resource: z
      .string()
      .refine((s) => URL.canParse(s) && !s.includes('#'), { message: 'must be an absolute URI without a fragment (RFC 8707 §2)' })
      .optional()
      .meta({
        description: 'RFC 8707 resource indicator sent at sign-in and refresh: the audience of the access token, which the policy\'s `audiences` must accept.',
        examples: ['urn:ward:orders-web'],
      }),
    baseUrl: z
      .url({ protocol: /^https?$/, error: 'must be an absolute http(s) URL' })
      .refine((s) => {
        const u = new URL(s);
        return (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '';
      }, { message: 'must be an origin only (scheme, host and port; no path, query or fragment)' })
      .optional()
      .meta({
        description:
          'The origin browsers use to reach the app, when it differs from what the sidecar sees (TLS terminated in front of it). The callback is `<baseUrl>/.ward/callback`, which must be registered at the provider; cookies are `Secure` when it is `https:`; state-changing requests must come from this origin. Absent: taken from each request (its `Host` and whether it came over TLS).',
        examples: ['https://orders.example.com'],
      }),
    refreshBeforeSeconds: z.int().min(0).max(3600).default(60).meta({
      description:
        'Refresh the access token (with the refresh token) when it has less than this left. The browser is sent once through a redirect to the same URL carrying the new cookie; a refresh the provider refuses ends the session.',
      examples: [30],
    }),
    passAccessToken: z.boolean().default(false).meta({
      description: 'Also send the session\'s access token to the app, as `Authorization: Bearer \u2026`, on session-authenticated calls.',
      examples: [true],
    }),
    timeoutMs: ms().positive().default(5000).meta({ description: 'Timeout of one call to the provider (discovery, token, revocation).' }),
  })
  .refine((c) => (c.clientSecretFile === undefined) !== (c.clientSecretEnv === undefined), {
    message: 'set exactly one of clientSecretFile or clientSecretEnv',
  })
  .refine((c) => c.scopes.includes('openid'), { message: 'scopes must include openid', path: ['scopes'] });

export type SessionConfig = z.output<typeof sessionConfigSchema>;

export interface ResolvedSessionSecrets {
  readonly clientSecret: string;
  /** Sealing secrets, first one current. */
  readonly sealing: readonly Uint8Array[];
}

/** Shortest sealing secret accepted (256 bits). */
const MIN_SEALING_BYTES = 32;

/**
 * Reads the session's secrets once at start-up. A missing or short secret is a start-up error
 * naming the config file and the field (at its line:column with the config's `locator`), never
 * the secret.
 */
export function resolveSessionSecrets(
  s: SessionConfig,
  baseDir: string,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  locator?: YamlLocator,
): ResolvedSessionSecrets {
  const fail = (path: FieldPath, message: string): never => {
    throw new ConfigError([issueAt(locator, file, ['session', ...path], message)]);
  };
  let clientSecret: string | undefined;
  if (s.clientSecretFile !== undefined) {
    const p = resolve(baseDir, s.clientSecretFile);
    try {
      clientSecret = readFileSync(p, 'utf8').trim();
    } catch (err) {
      fail(['clientSecretFile'], `cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  } else if (s.clientSecretEnv !== undefined) {
    clientSecret = env[s.clientSecretEnv]?.trim(); // as the file's (a Secret's newline)
  }
  if (clientSecret === undefined || clientSecret === '') {
    // Named by the field that is set (found in review: an unset variable was blamed on the file).
    if (s.clientSecretFile === undefined && s.clientSecretEnv !== undefined) fail(['clientSecretEnv'], `environment variable ${s.clientSecretEnv} (the client secret for ${s.clientId}) is empty or unset`);
    fail(['clientSecretFile'], `client secret for ${s.clientId} is empty or unset`);
  }
  const sealing = s.secretFiles.map((f, i) => {
    const p = resolve(baseDir, f);
    let bytes: Buffer | undefined;
    try {
      // trailing newlines come from how secret files are written, not from the secret
      bytes = Buffer.from(readFileSync(p, 'latin1').replace(/[\r\n]+$/, ''), 'latin1');
    } catch (err) {
      fail(['secretFiles', i], `cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (bytes === undefined || bytes.length < MIN_SEALING_BYTES) {
      fail(['secretFiles', i], `${p} holds ${bytes?.length ?? 0} bytes; at least ${MIN_SEALING_BYTES} are required`);
    }
    return new Uint8Array(bytes as Buffer);
  });
  return Object.freeze({ clientSecret: clientSecret as string, sealing: Object.freeze(sealing) });
}
