import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import * as z from '../../lib/schema.ts';
import { ConfigError } from '../../errors/ward-error.ts';
import { parseYamlFile } from '../../lib/yaml-schema.ts';
import { createYamlLocator, type YamlLocator } from '../../lib/yaml-locate.ts';
import type { IssuerTrust } from '../../policy/model.ts';
import { telemetryReceiverSchema } from './otlp/config.ts';
import { MAX_POLICY_FILE_BYTES } from '../wire.ts';
import { DEBOUNCE_MAX_WAIT } from './store.ts';

/**
 * The control plane's config file (`ward control-plane --config FILE`). Each option carries its
 * description, default and example here; docs/control-plane.md documents the same options.
 */

const port = z.int().min(0).max(65535);

const listen = z.strictObject({
  host: z.string().min(1).default('127.0.0.1').meta({
    description: 'Address to bind. Sidecars on other hosts need `0.0.0.0` (and then `tls`, so bearer tokens do not cross the network in clear).',
    examples: ['0.0.0.0'],
  }),
  port: port.default(15010).meta({ description: 'TCP port (0 picks a free one).', examples: [15010] }),
});

const tls = z.strictObject({
  certFile: z.string().min(1).meta({ description: 'PEM certificate chain, relative to the config file. Re-read when it changes (a renewed Secret): new connections get the new certificate.' }),
  keyFile: z.string().min(1).meta({ description: 'PEM private key, relative to the config file. Re-read with the certificate.' }),
});

const health = z.strictObject({
  host: z.string().min(1).default('127.0.0.1').meta({
    description: 'Address to bind. The kubelet probes the pod\'s IP: `0.0.0.0` in a cluster.',
    examples: ['0.0.0.0'],
  }),
  port: port.meta({ description: 'TCP port (0 picks a free one).', examples: [15011] }),
});

const watch = z.strictObject({
  debounceMs: z.int().min(0).max(5000).default(100).meta({
    description:
      `After a change event in the policy directory, wait this long for more events before re-reading it (an editor or a ConfigMap swap produces several); each new event starts the wait again, up to ${DEBOUNCE_MAX_WAIT} times this long after the first event of a burst.`,
  }),
  pollIntervalMs: z.int().min(100).max(600_000).default(1000).meta({
    description: 'Re-read the directory this often even without events: the fallback for file systems where change events are lost (network mounts, some container runtimes).',
  }),
  maxFileBytes: z.int().min(1024).max(MAX_POLICY_FILE_BYTES).default(1024 * 1024).meta({
    description: 'Larger policy files are refused (recorded as an error of that file).',
  }),
});

const issuer = z.strictObject({
  issuer: z.url().meta({ description: 'Issuer of the sidecars\' access tokens (exact `iss`).', examples: ['http://127.0.0.1:9400'] }),
  audiences: z.array(z.string().min(1)).min(1).meta({
    description: 'Accepted `aud` values: the token must name one of them. Use an audience reserved for the control plane, so a token issued for a service cannot subscribe to policies.',
    examples: [['urn:ward:control-plane']],
  }),
  jwksUri: z.url().optional().meta({ description: 'JWKS URL; without it, OIDC discovery at the issuer finds it.' }),
  algorithms: z.array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])).min(1).default(['RS256', 'ES256']).meta({
    description: 'Accepted JWS algorithms (never `none`, never HMAC).',
  }),
  requireAtJwtType: z.boolean().default(true).meta({ description: 'Require the RFC 9068 `typ: at+jwt` header, so an ID token is not accepted as an access token.' }),
});

const binding = z
  .strictObject({
    subject: z.string().min(1).optional().meta({
      description: 'Token subject (`sub`, or `client_id` when a client-credentials token has none) this binding applies to. Set exactly one of `subject` and `claim`.',
      examples: ['orders-sidecar'],
    }),
    claim: z.string().min(1).optional().meta({
      description: 'Name of a token claim that lists the services the identity may subscribe to (a string, a space-separated string or an array of strings). Set exactly one of `subject` and `claim`.',
      examples: ['ward_services'],
    }),
    issuer: z.url().optional().meta({ description: 'Only tokens from this issuer match the binding (default: any trusted issuer).' }),
    services: z.array(z.string().min(1)).optional().meta({
      description: 'With `subject`: the services the identity may subscribe to.',
      examples: [['orders']],
    }),
  })
  .superRefine((b, ctx) => {
    if ((b.subject === undefined) === (b.claim === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'set exactly one of subject or claim' });
      return;
    }
    if (b.subject !== undefined && (b.services === undefined || b.services.length === 0)) {
      ctx.addIssue({ code: 'custom', path: ['services'], message: 'a subject binding needs at least one service' });
    }
    if (b.claim !== undefined && b.services !== undefined) ctx.addIssue({ code: 'custom', path: ['services'], message: 'a claim binding takes its services from the claim' });
  });

const status = z.strictObject({
  allowLoopbackWithoutToken: z.boolean().default(true).meta({
    description: 'Answer GetStatus (`ward status`) from loopback addresses without a token. Off: every caller needs a token from a trusted issuer whose subject is in `subjects`.',
  }),
  subjects: z.array(z.string().min(1)).default([]).meta({
    description: 'Token subjects allowed to call GetStatus from anywhere (with `authorization: Bearer`).',
    examples: [['ward-operator']],
  }),
});

export const controlPlaneConfigSchema = z
  .strictObject({
    id: z.string().min(1).max(128).optional().meta({
      description: 'Name of this replica in responses, `ward status` and logs (default: the host name).',
    }),
    listen: listen.prefault({}).meta({ description: 'gRPC listener (PolicyDiscovery and grpc.health.v1.Health).' }),
    tls: tls.optional().meta({ description: 'Serve TLS instead of cleartext h2c.' }),
    health: health.optional().meta({
      description:
        'A second, cleartext listener that serves grpc.health.v1.Health alone, for probes that speak no TLS (the kubelet\'s `grpc` probe). It reveals only whether the control plane is serving.',
    }),
    policyDir: z.string().min(1).meta({
      description: 'Directory of policy files (`*.yaml`, `*.yml`; one service per file), relative to the config file. Entries whose names start with `.` are ignored, so a Kubernetes ConfigMap volume (`..data` symlink swapped atomically) works as is.',
      examples: ['policies'],
    }),
    watch: watch.prefault({}).meta({ description: 'How the policy directory is watched.' }),
    authn: z.strictObject({
      issuers: z.array(issuer).min(1).meta({ description: 'Issuers trusted for sidecar tokens.' }),
      clockSkewSeconds: z.int().min(0).max(300).default(30).meta({ description: 'Tolerance for `exp`, `nbf` and `iat`.' }),
      maxTokenBytes: z.int().min(256).max(65536).default(8192).meta({ description: 'Longer bearer tokens are refused unparsed.' }),
    }).meta({ description: 'How sidecars (and `ward status` callers) authenticate: bearer access tokens verified by ward\'s authenticator.' }),
    bindings: z.array(binding).default([]).meta({
      description: 'Which identity may subscribe to which service. An authenticated identity that no binding allows gets PERMISSION_DENIED.',
    }),
    status: status.prefault({}).meta({ description: 'Who may call GetStatus (`ward status`).' }),
    maxStreams: z.int().positive().default(10_000).meta({ description: 'Open policy streams beyond this are refused with RESOURCE_EXHAUSTED.' }),
    telemetry: telemetryReceiverSchema.prefault({}).meta({
      description: 'The OTLP/gRPC receiver on the same port (decisions from sidecars, `ward decisions`), and optional forwarding to another OTLP endpoint.',
    }),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info').meta({ description: 'Log level.' }),
  })
  .meta({ title: 'ward control-plane config' });

export type ControlPlaneConfig = Omit<z.output<typeof controlPlaneConfigSchema>, 'id'> & {
  readonly id: string;
  /** Directory of the config file; relative paths resolve against it. */
  readonly baseDir: string;
  /**
   * Where each field sits in the file, so that errors found at start (a certificate that cannot
   * be read) point at their field's line:column. Absent for a config built in code.
   */
  readonly locator?: YamlLocator;
};

export function loadControlPlaneConfig(file: string): Readonly<ControlPlaneConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }]);
  }
  return parseControlPlaneConfig(text, file);
}

export function parseControlPlaneConfig(text: string, file: string): Readonly<ControlPlaneConfig> {
  const parsed = parseYamlFile(text, file, controlPlaneConfigSchema);
  const baseDir = dirname(resolve(file));
  return deepFreeze({
    ...parsed,
    id: parsed.id ?? hostname(),
    policyDir: resolve(baseDir, parsed.policyDir),
    baseDir,
    locator: createYamlLocator(text, file),
  });
}

/** The config's issuers in the shape the authenticator takes. */
export function trustedIssuers(cfg: Pick<ControlPlaneConfig, 'authn'>): readonly IssuerTrust[] {
  return cfg.authn.issuers.map((i) =>
    Object.freeze({
      issuer: i.issuer,
      audiences: i.audiences,
      jwksUri: i.jwksUri,
      discovery: i.jwksUri === undefined,
      algorithms: i.algorithms,
      requireAtJwtType: i.requireAtJwtType,
      hmacSecret: undefined,
      introspection: false,
      requiredClaims: [],
    }),
  );
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
