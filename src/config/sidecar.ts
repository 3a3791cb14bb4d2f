import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import * as z from '../lib/schema.ts';
import { MAX_TIMER_MS, ms } from './units.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { parseYamlFile } from '../lib/yaml-schema.ts';
import { createYamlLocator, issueAt, type FieldPath, type YamlLocator } from '../lib/yaml-locate.ts';
import { outboundConfigSchema } from './outbound.ts';
import { sessionConfigSchema } from './session.ts';
import { telemetryConfigSchema } from './telemetry.ts';

/**
 * The sidecar's config file. Each option carries its description, default and example here;
 * `scripts/gen-docs.ts` renders docs/sidecar-config.md and the JSON Schema from this one source.
 */

/** `authn.clockSkewSeconds` when not set; also what `ward policy explain` assumes. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 30;

const port = z.int().min(0).max(65535);
const host = z.string().min(1);

const listen = z.strictObject({
  host: host.default('0.0.0.0').meta({ description: 'Address to bind.', examples: ['127.0.0.1'] }),
  port: port.meta({ description: 'TCP port (0 picks a free one).', examples: [15006] }),
});

const tls = z.strictObject({
  host: host.default('0.0.0.0').meta({ description: 'Address to bind the TLS-only listener (with `port`).' }),
  port: port.optional().meta({
    description:
      'TCP port of a TLS-only listener (ALPN h2 and http/1.1). Optional: with `tls` set, a connection to `inbound.listen` that opens with a TLS handshake is served TLS with the same certificate, and one that opens in cleartext (h2c or HTTP/1.1) as before, so one captured port takes both.',
    examples: [15443],
  }),
  certFile: z.string().min(1).meta({
    description: 'PEM certificate chain, relative to the config file. Checked for a change every 10 s and re-read (a renewed Secret needs no restart): new connections get the new certificate; a pair that does not load keeps the previous one.',
  }),
  keyFile: z.string().min(1).meta({ description: 'PEM private key, relative to the config file. Re-read with the certificate.' }),
  mode: z.enum(['permissive', 'strict']).default('permissive').meta({
    description:
      '`permissive`: `inbound.listen` takes TLS and cleartext alike (callers can move to TLS one at a time). `strict`: a connection there that does not open with TLS is refused unless it comes from loopback (the pod itself): an HTTP/1.1 caller gets 403 `ERR_TLS_REQUIRED`, an h2c caller a GOAWAY with `INADEQUATE_SECURITY`. So no bearer token reaches this sidecar in clear from the network.',
  }),
});

const upstream = z.strictObject({
  url: z
    .url({ protocol: /^http$/ })
    .refine((s) => {
      const u = new URL(s);
      return u.username === '' && u.password === '' && (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '';
    }, { message: 'must be http://host:port only (no credentials, path, query or fragment: none would be used)' })
    .meta({
      description: 'The local app, as `http://host:port`. Cleartext only: the app sits on the same pod.',
      examples: ['http://127.0.0.1:8080'],
    }),
  protocol: z.enum(['h2c', 'http1']).default('h2c').meta({
    description: 'How the app is reached: HTTP/2 prior knowledge (`h2c`, required for gRPC apps) or HTTP/1.1.',
  }),
  connectTimeoutMs: ms().positive().default(2000).meta({ description: 'Connect timeout to the app.' }),
  requestTimeoutMs: ms().nonnegative().default(0).meta({
    description: 'Overall timeout for non-gRPC requests (0 = none). gRPC calls use their `grpc-timeout`.',
  }),
  maxSessions: z.int().positive().default(4).meta({ description: 'h2c: HTTP/2 connections kept to the app.' }),
  maxSockets: z.int().positive().default(256).meta({ description: 'http1: keep-alive sockets kept to the app.' }),
  maxRequests: z.int().nonnegative().default(0).meta({
    description:
      'Calls at the app at once, at most: counted from when an allowed call is sent to the app until its caller\'s stream closes (a gRPC stream holds one for its whole life). One more is refused at once with `ERR_UPSTREAM_OVERLOADED` (503, gRPC `UNAVAILABLE`, which clients may retry) and never reaches the app, so a slow or stuck app cannot make the sidecar hold calls without bound (Envoy\'s `max_requests` circuit breaker). Per worker under `concurrency`. 0 = no limit (the default, as in Istio).',
  }),
});

const identityHeaders = z.strictObject({
  prefix: z.string().regex(/^[a-z][a-z0-9-]*-$/).default('x-ward-').meta({
    description:
      'Prefix of the identity headers sent to the app (`<prefix>subject`, `<prefix>issuer`, `<prefix>claims`, `<prefix>decision-id`). Any inbound header with this prefix is stripped first, also when spelled with `_` for `-` (`x_ward_subject`), which CGI-style apps read as the same header.',
  }),
  stripAuthorization: z.boolean().default(false).meta({ description: 'Remove `Authorization` before forwarding to the app.' }),
});

const paths = z.strictObject({
  mergeSlashes: z.boolean().default(true).meta({ description: 'Collapse repeated `/` before matching and forwarding, after `.` and `..` segments are resolved (`/a//..` is `/a/`, as Envoy\'s `normalize_path` then `merge_slashes`).' }),
  rejectEscapedSlashes: z.boolean().default(true).meta({
    description: 'Refuse `%2F` and `%5C` in paths with 400 (Envoy CVE-2021-29492 class). Set false only if the app needs them; they are then kept encoded and never treated as separators.',
  }),
});

const jwks = z.strictObject({
  timeoutMs: ms().positive().default(5000).meta({ description: 'Timeout of one discovery/JWKS fetch.' }),
  refreshIntervalMs: ms().positive().default(300_000).meta({ description: 'Background JWKS refresh period.' }),
  cooldownMs: z.int().nonnegative().default(30_000).meta({
    description: 'Minimum time between refetches triggered by an unknown `kid`.',
  }),
  graceMs: z.int().nonnegative().default(3_600_000).meta({
    description:
      'How long cached keys keep being used after the last successful fetch while the IdP is unreachable. After that, tokens of that issuer fail closed (503).',
  }),
});

const credential = z.strictObject({
  issuer: z.string().min(1).meta({ description: 'Issuer these credentials are for (exact match).' }),
  clientId: z.string().min(1).meta({ description: 'The workload\'s OAuth client id at that issuer.' }),
  clientSecretFile: z.string().min(1).optional().meta({ description: 'File holding the client secret.' }),
  clientSecretEnv: z.string().min(1).optional().meta({ description: 'Environment variable holding the client secret (leading and trailing whitespace removed, as from a file).' }),
}).refine((c) => (c.clientSecretFile === undefined) !== (c.clientSecretEnv === undefined), {
  message: 'set exactly one of clientSecretFile or clientSecretEnv',
});

const authn = z.strictObject({
  clockSkewSeconds: z.int().min(0).max(300).default(DEFAULT_CLOCK_SKEW_SECONDS).meta({ description: 'Tolerance for `exp`, `nbf` and `iat`.' }),
  maxTokenBytes: z.int().min(256).max(65536).default(8192).meta({ description: 'Longer bearer tokens are refused unparsed.' }),
  cacheEntries: z.int().nonnegative().default(10_000).meta({
    description: 'Verified-token cache size (0 disables it). Entries never outlive the token\'s `exp`.',
  }),
  introspectionCacheMaxSeconds: z.int().nonnegative().max(Math.floor(MAX_TIMER_MS / 1000)).default(60).meta({
    description: 'Upper bound on caching an introspection result (never beyond the token\'s `exp`).',
  }),
  jwks: jwks.prefault({}).meta({ description: 'Discovery and JWKS fetching, refresh and outage grace.' }),
  credentials: z.array(credential).default([]).meta({
    description: 'The workload\'s own client credentials per issuer (used for introspection and outbound token exchange). Secrets come from a file or env var only.',
  }),
});

const controlPlane = z.strictObject({
  address: z
    .string()
    .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, { error: 'must be host:port' })
    .refine((a) => {
      const port = Number(a.slice(a.lastIndexOf(':') + 1));
      return port >= 1 && port <= 65535;
    }, { message: 'the port must be 1-65535' })
    .meta({
      description: 'gRPC address of the control plane (`ward control-plane`).',
      examples: ['ward-control-plane.ward-system.svc:15010'],
    }),
  stateDir: z.string().min(1).meta({
    description:
      'Directory where the last accepted policy version is persisted (relative to the config file), so a restart while the control plane is down still enforces it.',
    examples: ['/var/lib/ward'],
  }),
  issuer: z.string().min(1).meta({
    description:
      'Issuer of the sidecar\'s own access token for the control plane; the client id and secret come from the matching `authn.credentials` entry.',
  }),
  resource: z.string().min(1).default('urn:ward:control-plane').meta({ description: 'Audience (RFC 8707 resource) of that token.' }),
  scope: z.string().optional().meta({ description: 'Scope to request for that token, if the IdP needs one.' }),
  instanceId: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[\x20-\x7e]+$/, { message: 'must be printable ASCII (the control plane refuses anything else)' })
    .optional()
    .meta({
      description: 'How this sidecar appears in `ward status`; default `<hostname>:<pid>`. Printable ASCII, at most 128 characters: the control plane refuses any other.',
    }),
  tls: z
    .strictObject({
      caFile: z.string().min(1).optional().meta({
        description:
          'PEM file of the CA(s) that sign the control plane\'s certificate (relative to the config file); default the system roots. Read again at each connection, so a CA bundle updated in place needs no restart.',
        examples: ['/etc/ward/control-plane-ca.pem'],
      }),
    })
    .optional()
    .meta({
      description:
        'Connect over TLS (a control plane started with `tls`), verifying its certificate for the host in `address`. Without it the connection is cleartext and the sidecar\'s access token crosses the network in clear: the sidecar warns at start unless `address` is loopback. Telemetry exported to the control plane by default follows the same setting.',
    }),
});

export const sidecarConfigSchema = z
  .strictObject({
    service: z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/).meta({
      description: 'Name of the service this sidecar guards; the policy file must name the same service.',
      examples: ['orders'],
    }),
    inbound: z
      .strictObject({
      listen: listen.meta({ description: 'Cleartext listener: HTTP/1.1 and HTTP/2 prior knowledge (h2c) on one port.' }),
      tls: tls.optional().meta({ description: 'Optional TLS listener with ALPN (h2, http/1.1).' }),
      maxHeaderListBytes: z.int().min(4096).default(65536).meta({ description: 'Largest accepted request header list (octets, as RFC 9113 counts them). A larger one is answered 431 (HTTP/2 and HTTP/1.1; a gRPC call gets `grpc-status` 8) and never reaches the app.' }),
      maxConcurrentStreams: z.int().positive().default(1000).meta({ description: 'HTTP/2 streams per connection.' }),
      })
      .meta({ description: 'Listeners for calls to the app.' }),
    upstream: upstream.meta({ description: 'The local app the sidecar guards (reached only after a call is allowed).' }),
    admin: z
      .strictObject({
        host: host.default('127.0.0.1').meta({ description: 'Admin listener address (`/healthz`, `/readyz`, `/status`, `/memory`, `/metrics`).' }),
        port: port.default(15000).meta({ description: 'Admin listener port.' }),
      })
      .prefault({})
      .meta({ description: 'Admin listener for probes and status; keep it on loopback or a pod-only port.' }),
    policy: z
      .strictObject({
        file: z.string().min(1).optional().meta({
          description: 'Policy file of this service, relative to the config file. Reloaded on change. Exactly one of `file` or `controlPlane`.',
        }),
        controlPlane: controlPlane.optional().meta({
          description: 'Take the policy from the control plane (xDS-style stream) instead of a file. Exactly one of `file` or `controlPlane`.',
        }),
      })
      .refine((p) => (p.file === undefined) !== (p.controlPlane === undefined), {
        message: 'set exactly one of policy.file or policy.controlPlane',
      })
      .meta({ description: 'Where the service policy comes from.' }),
    identityHeaders: identityHeaders.prefault({}).meta({ description: 'The verified identity headers the app receives on an allowed call.' }),
    paths: paths.prefault({}).meta({ description: 'Path normalization: done once; the normalized path is both matched and forwarded.' }),
    authn: authn.prefault({}).meta({ description: 'Token validation settings shared by every trusted issuer of the policy.' }),
    outbound: outboundConfigSchema.optional().meta({
      description:
        'The egress listener for the app\'s calls to other services: each call to a declared destination carries a token exchanged for it (RFC 8693), see docs/outbound.md. Absent: no egress listener.',
    }),
    session: sessionConfigSchema.optional().meta({
      description:
        'Browser sign-in at the sidecar (OIDC authorization code flow with PKCE, sealed cookie sessions, refresh, logout) for the routes whose policy rule says `signIn: browser`; see docs/browser-sign-in.md. Absent: no cookie is ever looked at, and those routes behave like any other.',
    }),
    drainTimeoutMs: z.int().nonnegative().max(86_400_000, 'at most 86400000 (a day)').default(10_000).meta({
      description: 'On SIGTERM: how long in-flight calls may finish after listeners close.',
    }),
    concurrency: z.int().min(1).max(64).default(1).meta({
      description:
        'Worker processes sharing the listeners, one core each (like Envoy\'s worker threads). With more than 1, a primary process holds the policy watch and the admin port and hands each new connection to the next worker; every worker runs the whole request path with its own verified-token cache, JWKS fetches and telemetry. Readiness needs every worker ready; SIGTERM drains them all. See docs/performance.md.',
      examples: [2],
    }),
    telemetry: telemetryConfigSchema.prefault({}).meta({
      description:
        'OpenTelemetry: a span, a decision log record and metrics for every call, exported over OTLP/gRPC (by default to the control plane) and served as Prometheus text on the admin `/metrics`. The standard `OTEL_*` variables apply; see docs/telemetry.md.',
    }),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info').meta({ description: 'Log level. At `info` each refused call is logged with its decision id and reason code, 10 lines a second at most (`notLogged` counts the lines left out); `debug` logs every refusal with its detail.' }),
  })
  .meta({ title: 'ward sidecar config' });

export type SidecarConfig = z.output<typeof sidecarConfigSchema> & {
  readonly baseDir: string;
  /**
   * Where each field sits in the file it was parsed from, so that errors found after parsing (an
   * unset secret, a file it names that cannot be read) point at their field's line:column as
   * schema errors do. Absent for a config built in code: such errors are then at 1:1.
   */
  readonly locator?: YamlLocator;
};

/** Reads and validates a sidecar config file; relative paths resolve against its directory. */
export function loadSidecarConfig(file: string): Readonly<SidecarConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  return parseSidecarConfig(text, file);
}

export function parseSidecarConfig(text: string, file: string): Readonly<SidecarConfig> {
  const parsed = parseYamlFile(text, file, sidecarConfigSchema);
  const cfg: SidecarConfig = { ...parsed, baseDir: dirname(resolve(file)), locator: createYamlLocator(text, file) };
  return deepFreeze(cfg);
}

export interface ResolvedCredential {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
}

/**
 * Reads the workload's client secrets (files or env vars). Called once at start-up; a missing
 * secret is a start-up error naming the config file and the credential, never the secret.
 */
export function resolveCredentials(cfg: SidecarConfig, file: string, env: NodeJS.ProcessEnv = process.env): readonly ResolvedCredential[] {
  return cfg.authn.credentials.map((c, i) => {
    let secret: string | undefined;
    if (c.clientSecretFile !== undefined) {
      secret = readReferencedFile(resolveFrom(cfg, c.clientSecretFile), file, ['authn', 'credentials', i, 'clientSecretFile'], cfg.locator).toString('utf8').trim();
    } else if (c.clientSecretEnv !== undefined) {
      // Trimmed as the file's is: a Secret made with `--from-file` carries the file's newline
      // into the variable too (found in review: the IdP then refused the client).
      secret = env[c.clientSecretEnv]?.trim();
    }
    if (secret === undefined || secret === '') {
      // At the field that is set (the schema lets exactly one be).
      const field = c.clientSecretFile === undefined ? 'clientSecretEnv' : 'clientSecretFile';
      throw new ConfigError([issueAt(cfg.locator, file, ['authn', 'credentials', i, field], `client secret for ${c.clientId} is empty or unset`)]);
    }
    return Object.freeze({ issuer: c.issuer, clientId: c.clientId, clientSecret: secret });
  });
}

export function resolveFrom(cfg: { readonly baseDir: string }, path: string): string {
  return resolve(cfg.baseDir, path);
}

/**
 * A file the config names (a secret, a CA), read at start: one that cannot be read is a
 * ConfigError at the field that names it (`locator`: the config's, for its line:column).
 */
export function readReferencedFile(path: string, configFile: string, field: FieldPath, locator?: YamlLocator): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError([issueAt(locator, configFile, field, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)]);
  }
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
