import * as z from '../lib/schema.ts';
import { ms } from './units.ts';

/**
 * The `outbound` section of the sidecar config: the egress listener the app sends its calls to
 * other services through, the destinations it may reach, and how the sidecar gets a token for
 * each (RFC 8693 token exchange, or client credentials). Every option carries its description,
 * default and example here; `scripts/gen-docs.ts` renders them into docs/sidecar-config.md.
 */

const port = z.int().min(0).max(65535);

/** A DNS host name, lower case, without port: what the app puts in `Host` / `:authority`. */
const DESTINATION_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, { message: 'not a valid scope token (RFC 6749 §3.3)' });

const destination = z
  .strictObject({
    name: z.string().max(253).regex(DESTINATION_NAME, { message: 'must be a lower-case DNS name without port' }).meta({
      description:
        'The name the app calls: matched against the request\'s `:authority` (HTTP/2) or `Host` (HTTP/1.1) with any port removed, case-insensitively. `http://payments/\u2026` and `http://payments:8080/\u2026` both reach destination `payments`.',
      examples: ['payments'],
    }),
    url: z.url({ protocol: /^https?$/ }).meta({
      description:
        'Where the destination is reached: usually the inbound port of its ward sidecar. `http://host:port` is cleartext; `https://host:port` is TLS that the sidecar originates, verifying the destination\'s certificate (see `tls`), so the exchanged token never crosses the network in clear.',
      examples: ['http://payments.default.svc:15006', 'https://payments.default.svc:15443'],
    }),
    protocol: z.enum(['h2c', 'h2', 'http1']).optional().meta({
      description:
        'How the destination is reached: HTTP/2 (`h2c` over `http://` with prior knowledge, `h2` over `https://` with ALPN; required for gRPC) or HTTP/1.1 (`http1`, either scheme). Default: `h2c` for `http://`, `h2` for `https://`.',
    }),
    tls: z
      .strictObject({
        caFile: z.string().min(1).optional().meta({
          description: 'PEM file of the CA(s) that sign the destination\'s certificate (relative to the config file); default the system roots. Read at start (unreadable: the sidecar does not start) and again for each new connection, so a bundle updated in place needs no restart.',
          examples: ['/etc/ward/mesh-ca.pem'],
        }),
        serverName: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, { message: 'must be a DNS name' }).optional().meta({
          description: 'The name the certificate must be valid for, also sent as SNI; default the host of `url`.',
          examples: ['payments.default.svc'],
        }),
      })
      .optional()
      .meta({ description: 'With an `https://` url: how the destination\'s certificate is verified. A destination whose certificate does not verify is never sent the call (`ERR_UPSTREAM_UNAVAILABLE`).' }),
    resource: z
      .string()
      .refine((s) => URL.canParse(s) && !s.includes('#'), { message: 'must be an absolute URI without a fragment (RFC 8707 §2)' })
      .optional()
      .meta({
        description: 'RFC 8707 resource indicator sent as `resource` in the token request: the `aud` the destination accepts.',
        examples: ['urn:ward:payments'],
      }),
    audience: z.string().min(1).optional().meta({
      description:
        'RFC 8693 `audience` sent in the token request (a logical name, as Keycloak, Okta and Auth0 expect). At least one of `resource` or `audience` is required.',
      examples: ['payments-api'],
    }),
    scopes: z.array(scopeToken).default([]).meta({
      description: 'Scopes to request for the destination (`scope`). The IdP may grant fewer.',
      examples: [['payments.charge']],
    }),
    noToken: z.enum(['refuse', 'client-credentials']).default('refuse').meta({
      description:
        'When the app\'s call carries no bearer token to exchange: `refuse` it (`ERR_TOKEN_MISSING`), or send a client-credentials token of the workload\'s own identity for the destination.',
      examples: ['client-credentials'],
    }),
    connectTimeoutMs: ms().positive().default(2000).meta({ description: 'Connect timeout to the destination.' }),
    requestTimeoutMs: ms().nonnegative().default(0).meta({
      description: 'Overall timeout for non-gRPC calls (0 = none). gRPC calls use their `grpc-timeout`.',
    }),
    maxSessions: z.int().positive().default(4).meta({ description: 'h2c: HTTP/2 connections kept to the destination.' }),
    maxSockets: z.int().positive().default(64).meta({ description: 'http1: keep-alive sockets kept to the destination.' }),
    maxRequests: z.int().nonnegative().default(0).meta({
      description:
        'Calls to the destination at once, at most, as `upstream.maxRequests` for the app: one more is refused at once with `ERR_UPSTREAM_OVERLOADED` (503, gRPC `UNAVAILABLE`) and never sent, so a slow destination cannot make the sidecar hold the app\'s calls without bound. 0 = no limit (the default).',
    }),
  })
  .refine((d) => d.resource !== undefined || d.audience !== undefined, { message: 'set resource, audience or both' })
  .superRefine((d, ctx) => {
    const https = d.url.startsWith('https:');
    if (d.protocol === 'h2c' && https) ctx.addIssue({ code: 'custom', path: ['protocol'], message: 'h2c is HTTP/2 in cleartext: an https:// url speaks h2 or http1' });
    if (d.protocol === 'h2' && !https) ctx.addIssue({ code: 'custom', path: ['protocol'], message: 'h2 is HTTP/2 over TLS: it needs an https:// url (h2c for http://)' });
    if (d.tls !== undefined && !https) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls applies only to an https:// url' });
  });

const exchange = z.strictObject({
  issuer: z.string().min(1).optional().meta({
    description:
      'The IdP that exchanges tokens: one of the issuers under `authn.credentials`, whose client id and secret the sidecar authenticates with. May be left out when `authn.credentials` has exactly one entry.',
    examples: ['https://idp.example.com'],
  }),
  tokenEndpoint: z.url({ protocol: /^https?$/ }).optional().meta({
    description: 'Token endpoint URL. When absent it comes from OIDC discovery (`<issuer>/.well-known/openid-configuration`), fetched once.',
    examples: ['https://idp.example.com/oauth2/token'],
  }),
  clientAuth: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic').meta({
    description: 'How the sidecar authenticates to the token endpoint (RFC 6749 §2.3.1).',
  }),
  timeoutMs: z.int().positive().max(60_000).default(3000).meta({
    description: 'Timeout of one token request (and of discovery). A call waiting on an IdP that does not answer fails with `ERR_EXCHANGE_UNAVAILABLE` after it.',
  }),
  cacheEntries: z.int().nonnegative().default(10_000).meta({
    description:
      'Most tokens kept, keyed by (SHA-256 of the subject token, destination, scopes); least recently used go first. Remembered refusals (`refusalCacheSeconds`) take entries of the same cache. 0 disables caching, refusals included: every call exchanges.',
  }),
  renewBeforeSeconds: z.int().nonnegative().default(30).meta({
    description:
      'A cached token is used until this long before its `expires_in` runs out (at most half its lifetime), and never past the subject token\'s own `exp`.',
  }),
  refusalCacheSeconds: z.int().nonnegative().default(5).meta({
    description: 'An IdP refusal (e.g. `invalid_target`) is remembered this long for the same subject token and destination, so a retrying app does not hammer the IdP. Kept in the token cache: none with `cacheEntries: 0`.',
  }),
  retryInitialMs: ms().positive().default(1000).meta({
    description:
      'After the IdP could not be reached, calls needing a new token fail at once (`ERR_EXCHANGE_UNAVAILABLE`) for this long; the wait doubles on each further failure (with jitter) up to `retryMaxMs`. Cached tokens keep being used.',
  }),
  retryMaxMs: ms().positive().default(30_000).meta({ description: 'Longest wait between token requests while the IdP is unreachable.' }),
});

export const outboundConfigSchema = z
  .strictObject({
    listen: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1').meta({
          description:
            'Address to bind. Keep it on loopback (the default): whoever reaches this port can have tokens exchanged and, with `noToken: client-credentials`, act as this workload.',
        }),
        port: port.default(15001).meta({ description: 'TCP port (0 picks a free one).', examples: [15001] }),
      })
      .prefault({})
      .meta({ description: 'The egress listener: HTTP/1.1 and HTTP/2 prior knowledge (h2c) on one port, for the app\'s outgoing calls.' }),
    maxHeaderListBytes: z.int().min(4096).default(65536).meta({ description: 'Largest accepted request header list (octets, as RFC 9113 counts them). A larger one is answered 431 (HTTP/2 and HTTP/1.1; a gRPC call gets `grpc-status` 8) and never reaches the app.' }),
    maxConcurrentStreams: z.int().positive().default(1000).meta({ description: 'HTTP/2 streams per connection from the app.' }),
    passthrough: z.boolean().default(false).meta({
      description:
        'A call to a name not under `destinations` is refused (`ERR_DESTINATION_UNKNOWN`) unless this is true: it then goes, in cleartext, to the host and port of its `:authority`/`Host` (default port 80), with the app\'s `Authorization` removed and no token added.',
    }),
    maxPassthroughTargets: z.int().positive().default(64).meta({
      description: 'With `passthrough`: connection pools kept for different pass-through hosts (least recently used closed first: its calls in flight finish, then its connections close).',
    }),
    exchange: exchange.prefault({}).meta({ description: 'Token exchange (RFC 8693) and client credentials at the IdP.' }),
    destinations: z.array(destination).default([]).meta({ description: 'The services the app may call through the egress listener.' }),
  })
  .superRefine((o, ctx) => {
    const seen = new Set<string>();
    o.destinations.forEach((d, i) => {
      if (seen.has(d.name)) ctx.addIssue({ code: 'custom', path: ['destinations', i, 'name'], message: `duplicate destination '${d.name}'` });
      seen.add(d.name);
    });
    if (o.exchange.retryMaxMs < o.exchange.retryInitialMs) {
      ctx.addIssue({ code: 'custom', path: ['exchange', 'retryMaxMs'], message: 'must not be less than retryInitialMs' });
    }
  });

export type OutboundConfig = z.output<typeof outboundConfigSchema>;
export type DestinationConfig = OutboundConfig['destinations'][number];
export type ExchangeConfig = OutboundConfig['exchange'];
