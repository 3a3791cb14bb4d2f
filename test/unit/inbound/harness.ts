import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { type SidecarConfig, sidecarConfigSchema } from '../../../src/config/sidecar.ts';
import { ordersClientConstructor } from '../../../src/demo/orders-app.ts';
import type { ErrorCode } from '../../../src/errors/codes.ts';
import { WardError } from '../../../src/errors/ward-error.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import type { CompiledPolicy, Facts, Identity, Permit, Verdict } from '../../../src/policy/model.ts';
import { createInbound, type DecisionRecord, type Inbound, type InboundDeps } from '../../../src/inbound/server.ts';
import type { AuthResult } from '../../../src/inbound/types.ts';

/**
 * Test doubles and real peers for the inbound stage: a token→identity authenticator, a
 * path-rule evaluate, recording HTTP/1.1 and h2c apps, and a proxy factory. Shared by
 * test/unit/inbound and test/integration/proxy-*.test.ts.
 */

export const ISSUER = 'https://idp.test';

export function identity(subject: string, extra: Partial<Identity> = {}): Identity {
  return {
    issuer: ISSUER,
    subject,
    claims: { iss: ISSUER, sub: subject, scope: 'orders.read' },
    tokenKind: 'jwt',
    expiresAt: 4_000_000_000,
    actors: [],
    scopes: new Set(['orders.read']),
    ...extra,
  };
}

/** Tokens the test authenticator knows: `good-alice`, `good-bob`, `expired`, `async-alice` (resolves later). */
export function testTokens(): Map<string, Identity | ErrorCode> {
  return new Map<string, Identity | ErrorCode>([
    ['good-alice', identity('alice')],
    ['good-bob', identity('bob')],
    ['async-alice', identity('alice')],
    ['expired', 'ERR_TOKEN_EXPIRED'],
    ['newline-sub', identity('eve\nx-evil: 1')],
  ]);
}

export function testAuthenticate(tokens = testTokens()): (token: string) => AuthResult | Promise<AuthResult> {
  return (token) => {
    const v = tokens.get(token);
    const r: AuthResult =
      v === undefined
        ? { ok: false, error: new WardError('ERR_TOKEN_SIGNATURE', 'unknown test token') }
        : typeof v === 'string'
          ? { ok: false, error: new WardError(v, 'test') }
          : { ok: true, identity: v };
    return token.startsWith('async-') ? new Promise((resolve) => setImmediate(() => resolve(r))) : r;
  };
}

/** Test extraction: `Bearer <token>`, repeated fields → ERR_TOKEN_MULTIPLE. */
export function testExtract(value: string | readonly string[] | undefined): ReturnType<InboundDeps['extractBearer']> {
  if (value === undefined) return { kind: 'none' };
  if (typeof value !== 'string') return { kind: 'error', code: 'ERR_TOKEN_MULTIPLE', detail: 'repeated' };
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(value);
  return m === null ? { kind: 'error', code: 'ERR_TOKEN_MALFORMED', detail: 'not bearer' } : { kind: 'token', token: m[1] as string };
}

export const TEST_POLICY: CompiledPolicy = {
  service: 'orders',
  version: 'v-test',
  source: 'test',
  issuers: [],
  dryRun: false,
  rules: [],
};

export type Rule = (facts: Facts) => { allow: true; rule: string } | { allow: false; code: ErrorCode; rule: string | null };

/**
 * Default rule: no token → ERR_TOKEN_MISSING; DeleteOrder, `/admin…` and `/private…` →
 * ERR_POLICY_DENIED; everything else allowed by rule `allow-all`.
 */
export const defaultRule: Rule = (f) => {
  if (f.identity === null) return { allow: false, code: 'ERR_TOKEN_MISSING', rule: null };
  if (f.request.grpcMethod === '/ward.demo.v1.Orders/DeleteOrder') return { allow: false, code: 'ERR_POLICY_DENIED', rule: 'no-delete' };
  if (f.request.path.startsWith('/admin') || f.request.path.startsWith('/private')) {
    return { allow: false, code: 'ERR_POLICY_DENIED', rule: 'no-admin' };
  }
  return { allow: true, rule: 'allow-all' };
};

export function testEvaluate(rule: Rule = defaultRule, seen: Facts[] = []): InboundDeps['evaluate'] {
  return (policy, facts): Verdict => {
    seen.push(facts);
    const r = rule(facts);
    if (r.allow) {
      const decision = { kind: 'allow' as const, rule: r.rule, reason: 'test', policyVersion: policy.version, dryRunDenial: undefined };
      return { decision, permit: { decision, identity: facts.identity } as unknown as Permit };
    }
    return { decision: { kind: 'deny', code: r.code, rule: r.rule, reason: 'test', policyVersion: policy.version }, permit: null };
  };
}

export function testConfig(over: {
  upstreamPort: number;
  protocol?: 'h2c' | 'http1';
  tls?: { certFile: string; keyFile: string };
  paths?: { mergeSlashes?: boolean; rejectEscapedSlashes?: boolean };
  stripAuthorization?: boolean;
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  maxRequests?: number;
}): Readonly<SidecarConfig> {
  const parsed = sidecarConfigSchema.parse({
    service: 'orders',
    inbound: {
      listen: { host: '127.0.0.1', port: 0 },
      ...(over.tls === undefined ? {} : { tls: { host: '127.0.0.1', port: 0, ...over.tls } }),
    },
    upstream: {
      url: `http://127.0.0.1:${over.upstreamPort}`,
      protocol: over.protocol ?? 'h2c',
      requestTimeoutMs: over.requestTimeoutMs ?? 0,
      connectTimeoutMs: over.connectTimeoutMs ?? 2000,
      ...(over.maxRequests === undefined ? {} : { maxRequests: over.maxRequests }),
    },
    policy: { file: 'policy.yaml' },
    identityHeaders: { stripAuthorization: over.stripAuthorization ?? false },
    paths: over.paths ?? {},
  });
  return Object.freeze({ ...parsed, baseDir: '/' });
}

export interface TestProxy {
  readonly inbound: Inbound;
  readonly port: number;
  readonly decisions: DecisionRecord[];
  readonly facts: Facts[];
  close(): Promise<void>;
}

export async function startProxy(
  cfg: Readonly<SidecarConfig>,
  opts: {
    rule?: Rule;
    policy?: () => CompiledPolicy | null;
    authenticate?: InboundDeps['authenticate'];
    authenticateThen?: InboundDeps['authenticateThen'];
    extractBearer?: InboundDeps['extractBearer'];
    configFile?: InboundDeps['configFile'];
    certPollMs?: InboundDeps['certPollMs'];
    log?: InboundDeps['log'];
  } = {},
): Promise<TestProxy> {
  const decisions: DecisionRecord[] = [];
  const facts: Facts[] = [];
  const inbound = await createInbound({
    config: cfg,
    ...(opts.configFile === undefined ? {} : { configFile: opts.configFile }),
    ...(opts.certPollMs === undefined ? {} : { certPollMs: opts.certPollMs }),
    authenticate: opts.authenticate ?? testAuthenticate(),
    ...(opts.authenticateThen === undefined ? {} : { authenticateThen: opts.authenticateThen }),
    extractBearer: opts.extractBearer ?? testExtract,
    policy: opts.policy ?? (() => TEST_POLICY),
    evaluate: testEvaluate(opts.rule, facts),
    log: opts.log ?? silentLogger,
    clock: () => 1_700_000_000_000,
    onDecision: (r) => decisions.push(r),
  });
  return { inbound, port: inbound.ports.cleartext, decisions, facts, close: () => inbound.close() };
}

// ---- recording apps

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  readonly trailers: Record<string, string | undefined>;
}

export interface RecordingApp {
  readonly port: number;
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * App behaviour by path: `/echo` answers the body back; `/trailers` sends a body and the
 * trailer `x-app-trailer: done`; `/slow` never answers (and records `aborted` in `events`);
 * `/delay` answers after 100 ms; `/reset` destroys the response mid-body; anything else answers `ok <path>`.
 */
export interface AppEvents {
  readonly events: string[];
  /** TCP connections the app accepted (the proxy must reuse them). */
  connections(): number;
}

export async function startH1App(): Promise<RecordingApp & AppEvents> {
  const requests: RecordedRequest[] = [];
  const events: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        method: req.method ?? '',
        path: req.url ?? '',
        headers: { ...req.headers },
        body: Buffer.concat(chunks).toString(),
        trailers: { ...req.trailers },
      });
      appRespond(req.url ?? '', Buffer.concat(chunks), res, events);
    });
    res.on('close', () => {
      if (!res.writableFinished) events.push(`aborted ${req.url ?? ''}`);
    });
  });
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    events,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function appRespond(path: string, body: Buffer, res: http.ServerResponse, events: string[]): void {
  if (path.startsWith('/echo')) {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-app': 'h1' });
    res.end(body);
  } else if (path.startsWith('/trailers')) {
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-app-trailer' });
    res.write('part1 ');
    res.addTrailers({ 'x-app-trailer': 'done' });
    res.end('part2');
  } else if (path.startsWith('/slow')) {
    events.push(`slow ${path}`);
  } else if (path.startsWith('/delay')) {
    events.push(`delay ${path}`);
    setTimeout(() => res.end(`ok ${path}`), 100);
  } else if (path.startsWith('/reset')) {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('partial');
    setImmediate(() => res.socket?.destroy());
  } else {
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'keep-alive', 'keep-alive': 'timeout=5' });
    res.end(`ok ${path}`);
  }
}

export async function startH2App(): Promise<RecordingApp & AppEvents> {
  const requests: RecordedRequest[] = [];
  const events: string[] = [];
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    const path = headers[':path'] ?? '';
    let trailers: Record<string, string | undefined> = {};
    stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
      trailers = { ...(t as Record<string, string>) };
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => {});
    stream.on('close', () => {
      if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) events.push(`reset ${path} ${stream.rstCode}`);
    });
    stream.on('end', () => {
      // Node also emits 'end' for a stream the client reset with CANCEL: that is no request.
      if (stream.aborted || (stream.rstCode ?? 0) !== 0) return;
      requests.push({ method: headers[':method'] ?? '', path, headers: { ...headers }, body: Buffer.concat(chunks).toString(), trailers });
      if (path.startsWith('/echo')) {
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'x-app': 'h2' });
        stream.end(Buffer.concat(chunks));
      } else if (path.startsWith('/never-indexed')) {
        // A response field the app sends as a never-indexed literal (RFC 7541 §6.2.3).
        stream.respond({ ':status': 200, 'x-app-secret': 'app-s3cret', 'x-app-plain': 'p', [http2.sensitiveHeaders]: ['x-app-secret'] });
        stream.end('ok');
      } else if (path.startsWith('/trailers')) {
        stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'x-app-trailer': 'done' }));
        stream.write('part1 ');
        stream.end('part2');
      } else if (path.startsWith('/slow')) {
        events.push(`slow ${path}`);
      } else if (path.startsWith('/delay')) {
        events.push(`delay ${path}`);
        setTimeout(() => {
          if (stream.destroyed) return;
          stream.respond({ ':status': 200, 'content-type': 'text/plain' });
          stream.end(`ok ${path}`);
        }, 100);
      } else if (path.startsWith('/reset')) {
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.write('partial');
        // destroy (not close): close() would end the stream cleanly before resetting it
        setImmediate(() => stream.destroy(new Error('app crashed mid-response')));
      } else {
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end(`ok ${path}`);
      }
    });
  });
  const sessions = new Set<http2.Http2Session>();
  let connections = 0;
  server.on('session', (s) => {
    connections++;
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    events,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}

// ---- clients

export interface H1Response {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  readonly trailers: Record<string, string | undefined>;
}

export function h1Request(
  port: number,
  opts: { method?: string; path: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer; agent?: http.Agent },
): Promise<H1Response> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers ?? {}, agent: opts.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), trailers: { ...res.trailers } }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

export interface H2Response {
  readonly headers: http2.IncomingHttpHeaders;
  readonly body: string;
  readonly trailers: http2.IncomingHttpHeaders;
  readonly rstCode: number;
}

export function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders | string[], body?: string | Buffer): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const s = session.request(headers, { endStream: body === undefined });
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
    s.on('close', () => resolve({ headers: resHeaders, body: Buffer.concat(chunks).toString(), trailers, rstCode: s.rstCode ?? 0 }));
    session.once('error', reject);
    if (body !== undefined) s.end(body);
  });
}

export function h2Connect(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`, { strictSingleValueFields: false } as http2.ClientSessionOptions);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** A raw TCP exchange: sends `text`, returns everything the server sent until it closed or went quiet. */
export function rawExchange(port: number, text: string, quietMs = 150): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let t = setTimeout(() => s.destroy(), quietMs);
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      clearTimeout(t);
      t = setTimeout(() => s.destroy(), quietMs);
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
}

// ---- gRPC

export type OrdersClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export function ordersClient(port: number, creds = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}): OrdersClient {
  const Ctor = ordersClientConstructor();
  return new Ctor(`127.0.0.1:${port}`, creds, options) as unknown as OrdersClient;
}

export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

export interface UnaryOutcome<T> {
  readonly err: grpc.ServiceError | null;
  readonly res: T | undefined;
  readonly trailers: grpc.Metadata | undefined;
}

export function unary<T>(client: OrdersClient, method: string, req: unknown, md: grpc.Metadata, options: grpc.CallOptions = {}): Promise<UnaryOutcome<T>> {
  return new Promise((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = client[method]?.(req, md, options, (err: grpc.ServiceError | null, res: T) => {
      // `status` fires before the callback on success; on error the metadata rides on err.
      setImmediate(() => resolve({ err, res, trailers: trailers ?? err?.metadata }));
    }) as grpc.ClientUnaryCall;
    call.on('status', (s: grpc.StatusObject) => {
      trailers = s.metadata;
    });
  });
}

// ---- TLS material

export interface TlsFiles {
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  cleanup(): void;
}

/** A self-signed certificate for 127.0.0.1/localhost, generated with openssl into a temp dir. */
export function makeSelfSignedCert(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), 'ward-tls-'));
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  return { dir, certFile, keyFile, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A private CA and a server certificate it signed (ECDSA P-256, one day), written under
 * `dir/name` with openssl, as deploy/scripts/control-plane-cert.sh makes them. `san`: the
 * certificate's subjectAltName, e.g. `DNS:ward-control-plane.ward-system.svc` or `IP:127.0.0.1`.
 */
export function makeCaSignedCert(dir: string, name: string, san: string): { readonly ca: string; readonly cert: string; readonly key: string } {
  const d = join(dir, name);
  mkdirSync(d);
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(d, 'ca.key'), '-out', join(d, 'ca.crt'), '-days', '1', '-subj', `/CN=${name}-ca`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(d, 'tls.key'), '-out', join(d, 'tls.csr'), '-subj', `/CN=${name}`]);
  writeFileSync(join(d, 'ext.cnf'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  run(['x509', '-req', '-in', join(d, 'tls.csr'), '-CA', join(d, 'ca.crt'), '-CAkey', join(d, 'ca.key'), '-CAcreateserial', '-out', join(d, 'tls.crt'), '-days', '1', '-extfile', join(d, 'ext.cnf')]);
  return { ca: join(d, 'ca.crt'), cert: join(d, 'tls.crt'), key: join(d, 'tls.key') };
}
