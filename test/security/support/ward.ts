import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Authenticator, createAuthenticator } from '../../../src/authn/authenticator.ts';
import { extractBearer } from '../../../src/authn/extract.ts';
import { parseSidecarConfig, type SidecarConfig } from '../../../src/config/sidecar.ts';
import { createInbound, type DecisionRecord, type Inbound } from '../../../src/inbound/server.ts';
import { systemClock } from '../../../src/lib/clock.ts';
import { createLogger } from '../../../src/lib/log.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import { createFilePolicySource, type PolicySource } from '../../../src/policy/source.ts';
import { type RecordingApp, startRecordingApp } from './app.ts';
import { startTestIssuer, type TestIssuer } from './issuer.ts';

/**
 * The sidecar's request path assembled exactly as `cli/sidecar.ts` does it (real authenticator
 * with discovery + JWKS, real extractor, the policy file source, real `evaluate`, real
 * listeners), minus the admin port and telemetry, so tests can read what `startSidecar` keeps
 * private: the live counters (`activeStreams` back to 0), every decision record, the logs.
 */

export interface WardOptions {
  /** Issuer URL the policy trusts (a TestIssuer or the dev IdP). */
  readonly issuer: string;
  readonly app: { readonly port: number; readonly protocol: 'h2c' | 'http1' };
  /** Policy text; default: `securityPolicy(issuer)`. */
  readonly policy?: string;
  /** Extra YAML under `authn.jwks` (flow style object), e.g. `{ cooldownMs: 0 }`. */
  readonly jwks?: Record<string, number>;
  /** Extra top-level YAML appended to the config (`inbound:` is fixed). */
  readonly extraYaml?: string;
  readonly inbound?: { readonly maxHeaderListBytes?: number; readonly maxConcurrentStreams?: number };
  readonly upstream?: { readonly requestTimeoutMs?: number; readonly connectTimeoutMs?: number; readonly maxRequests?: number };
  /** Wait until the issuer's keys are loaded (default true). */
  readonly waitReady?: boolean;
  readonly cacheEntries?: number;
  /** The workload's client credentials per issuer (for introspection). */
  readonly credentials?: readonly { readonly issuer: string; readonly clientId: string; readonly clientSecret: string }[];
}

export interface Ward {
  readonly port: number;
  readonly url: string;
  readonly config: Readonly<SidecarConfig>;
  readonly counters: Inbound['counters'];
  readonly decisions: DecisionRecord[];
  readonly logs: string[];
  readonly authenticator: Authenticator;
  readonly inbound: Inbound;
  /** The last decision's code (null for an allow), or undefined when none was recorded. */
  lastCode(): string | null | undefined;
  close(): Promise<void>;
}

/**
 * The suites' policy: gRPC Orders (DeleteOrder denied for everyone), HTTP `/api/**` for
 * `orders.read`, `/api/internal/**` denied, `/public/**` open (a presented token must still be
 * valid), `/slow`, `/big`, `/inject` for `orders.read`.
 */
export function securityPolicy(issuer: string, extraIssuerYaml = ''): string {
  return `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: ${issuer}
    audiences: [urn:ward:orders]
    algorithms: [RS256, ES256, EdDSA]
${extraIssuerYaml}
rules:
  - name: no-deletes
    action: deny
    match:
      grpc: [/ward.demo.v1.Orders/DeleteOrder]
  - name: no-internal
    action: deny
    match:
      http: [{ prefix: /api/internal }]
  - name: public
    action: allow
    token: optional
    match:
      http: [{ methods: [GET], prefix: /public }]
  - name: readers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder, /ward.demo.v1.Orders/ListOrders, /ward.demo.v1.Orders/Sleep, /ward.demo.v1.Orders/Chat]
      http:
        - { prefix: /api }
        - { prefix: /slow }
        - { prefix: /big }
        - { prefix: /inject }
    when:
      - scopes: { allOf: [orders.read] }
  - name: writers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/CreateOrder, /ward.demo.v1.Orders/UploadOrders]
    when:
      - scopes: { allOf: [orders.write] }
`;
}

export async function startWard(o: WardOptions): Promise<Ward> {
  const dir = mkdtempSync(join(tmpdir(), 'ward-sec-'));
  writeFileSync(join(dir, 'policy.yaml'), o.policy ?? securityPolicy(o.issuer));
  const jwks = { refreshIntervalMs: 300_000, cooldownMs: 0, graceMs: 3_600_000, timeoutMs: 1000, ...o.jwks };
  const yaml = `service: orders
inbound:
  listen: { host: 127.0.0.1, port: 0 }
  maxHeaderListBytes: ${o.inbound?.maxHeaderListBytes ?? 65536}
  maxConcurrentStreams: ${o.inbound?.maxConcurrentStreams ?? 1000}
upstream:
  url: http://127.0.0.1:${o.app.port}
  protocol: ${o.app.protocol}
  requestTimeoutMs: ${o.upstream?.requestTimeoutMs ?? 0}
  connectTimeoutMs: ${o.upstream?.connectTimeoutMs ?? 2000}
  maxRequests: ${o.upstream?.maxRequests ?? 0}
policy: { file: policy.yaml }
authn:
  cacheEntries: ${o.cacheEntries ?? 1000}
  jwks: ${JSON.stringify(jwks)}
logLevel: debug
${o.extraYaml ?? ''}`;
  const file = join(dir, 'sidecar.yaml');
  writeFileSync(file, yaml);
  const config = parseSidecarConfig(yaml, file);
  const logs: string[] = [];
  const log = createLogger({ level: 'debug', sink: { write: (l) => logs.push(l) } });
  const authenticator = createAuthenticator({
    clockSkewSeconds: config.authn.clockSkewSeconds,
    maxTokenBytes: config.authn.maxTokenBytes,
    cacheEntries: config.authn.cacheEntries,
    introspectionCacheMaxSeconds: config.authn.introspectionCacheMaxSeconds,
    jwks: config.authn.jwks,
    credentials: o.credentials ?? [],
    log: log.child({ stage: 'authn' }),
    clock: systemClock,
  });
  const source: PolicySource = createFilePolicySource(join(dir, 'policy.yaml'), {
    service: 'orders',
    log,
    onChange: (p) => authenticator.setIssuers(p.issuers),
    watch: false,
    pollMs: 60_000,
  });
  const initial = source.current();
  if (initial !== null) authenticator.setIssuers(initial.issuers);
  const decisions: DecisionRecord[] = [];
  const inbound = await createInbound({
    config,
    authenticate: (t) => authenticator.authenticate(t),
    extractBearer,
    policy: () => source.current(),
    evaluate,
    log: log.child({ stage: 'inbound' }),
    clock: systemClock,
    onDecision: (r) => decisions.push(r),
  });
  if (o.waitReady !== false) await authenticator.whenReady(5000);
  const port = inbound.ports.cleartext;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    config,
    counters: inbound.counters,
    decisions,
    logs,
    authenticator,
    inbound,
    lastCode: () => (decisions.length === 0 ? undefined : (decisions[decisions.length - 1] as DecisionRecord).code),
    async close() {
      await inbound.close();
      source.close();
      authenticator.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- a well-behaved client, to show the sidecar still serves after an attack

export interface H2Result {
  readonly status: number;
  readonly reason: string | undefined;
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders;
  readonly body: string;
  readonly rstCode: number;
}

/** One request on a fresh h2c connection (closed afterwards). */
export function h2Once(port: number, headers: http2.OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Result> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const s = session.request({ ':method': 'GET', ':authority': 'orders', ...headers }, { endStream: body === undefined });
    let resHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    s.on('response', (h) => {
      resHeaders = h;
    });
    s.on('trailers', (t) => {
      trailers = t;
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      session.close();
      const reason = resHeaders['x-ward-reason'] ?? trailers['x-ward-reason'];
      resolve({
        status: Number(resHeaders[':status'] ?? 0),
        reason: reason === undefined ? undefined : String(reason),
        headers: resHeaders,
        trailers,
        body: Buffer.concat(chunks).toString(),
        rstCode: s.rstCode ?? 0,
      });
    });
    if (body !== undefined) s.end(body);
  });
}

/** Polls `cond` every 20 ms until it holds (throws after `ms`). For settling counters, not timing. */
export async function eventually(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Heap used after a full GC when `--expose-gc` is on (vitest forks: no), else after a pause. */
export async function settledHeap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage().heapUsed;
}

/** The suites' common set-up: one issuer, and a sidecar in front of each kind of app (h2c, HTTP/1.1). */
export interface TwoWards {
  readonly iss: TestIssuer;
  readonly h2app: RecordingApp;
  readonly h1app: RecordingApp;
  readonly wardH2: Ward;
  readonly wardH1: Ward;
  /** Forgets what the apps saw (between tests). */
  reset(): void;
  close(): Promise<void>;
}

export async function startTwoWards(): Promise<TwoWards> {
  const iss = await startTestIssuer();
  const h2app = await startRecordingApp('h2c');
  const h1app = await startRecordingApp('http1');
  const wardH2 = await startWard({ issuer: iss.issuer, app: h2app });
  const wardH1 = await startWard({ issuer: iss.issuer, app: h1app });
  return {
    iss,
    h2app,
    h1app,
    wardH2,
    wardH1,
    reset() {
      h2app.reset();
      h1app.reset();
    },
    async close() {
      await wardH2.close();
      await wardH1.close();
      await h2app.close();
      await h1app.close();
      await iss.close();
    },
  };
}
