import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type http2 from 'node:http2';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { startSidecar, type RunningSidecar } from '../../src/cli/sidecar.ts';
import { parseSidecarConfig } from '../../src/config/sidecar.ts';
import { ordersClientConstructor, startOrdersApp, type OrdersApp } from '../../src/demo/orders-app.ts';
import { createLogger } from '../../src/lib/log.ts';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';

/**
 * A whole mesh hop for integration tests, all real and on loopback: the dev IdP, the sample
 * gRPC app, and a sidecar started through the same `startSidecar` as `ward sidecar`, with its
 * config and policy written to a temp dir. Logs are captured so tests can assert on them
 * (and that no token ever appears in them).
 */
export interface Mesh {
  readonly idp: TestIdp;
  readonly app: OrdersApp;
  readonly sidecar: RunningSidecar;
  readonly dir: string;
  readonly policyFile: string;
  readonly logs: string[];
  readonly target: string;
  /** Atomically replaces the policy file (write + rename, like an editor or a ConfigMap). */
  writePolicy(text: string): void;
  client(): OrdersClient;
  close(): Promise<void>;
}

export interface MeshOptions {
  /** Policy text for the IdP's issuer; default: test/fixtures/policies/orders.yaml. */
  policy?: (issuer: string) => string;
  /** Extra top-level YAML appended to the sidecar config (e.g. an `authn:` block is built in; use `extraYaml` for others). */
  extraYaml?: string;
  jwks?: { refreshIntervalMs?: number; cooldownMs?: number; graceMs?: number; timeoutMs?: number };
  cacheEntries?: number;
  idp?: TestIdp;
  /** Reach an app at this port instead of starting the sample gRPC app. */
  upstream?: { port: number; protocol: 'h2c' | 'http1' };
  /** Take the policy from this control plane (`host:port`) instead of a file. */
  controlPlane?: { address: string; stateDir?: string; tls?: { caFile: string } };
  /** Wait for /readyz before returning (default true). */
  waitReady?: boolean;
}

export async function startMesh(opts: MeshOptions = {}): Promise<Mesh> {
  const idp = opts.idp ?? (await startTestIdp());
  const app = await startOrdersApp();
  const dir = mkdtempSync(join(tmpdir(), 'ward-mesh-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, (opts.policy ?? ordersPolicyText)(idp.issuer));
  writeFileSync(join(dir, 'client-secret'), 'orders-sidecar-secret\n');
  const jwks = { refreshIntervalMs: 300_000, cooldownMs: 0, graceMs: 3_600_000, timeoutMs: 2000, ...opts.jwks };
  const upstream = opts.upstream ?? { port: app.port, protocol: 'h2c' };
  const yaml = `service: orders
inbound:
  listen: { host: 127.0.0.1, port: 0 }
upstream:
  url: http://127.0.0.1:${upstream.port}
  protocol: ${upstream.protocol}
admin: { host: 127.0.0.1, port: 0 }
policy:
${opts.controlPlane === undefined ? '  file: policy.yaml' : `  controlPlane: { address: "${opts.controlPlane.address}", stateDir: "${opts.controlPlane.stateDir ?? join(dir, 'state')}", issuer: "${idp.issuer}", instanceId: mesh-${Math.random().toString(36).slice(2, 8)}${opts.controlPlane.tls === undefined ? '' : `, tls: { caFile: "${opts.controlPlane.tls.caFile}" }`} }`}
authn:
  cacheEntries: ${opts.cacheEntries ?? 1000}
  jwks: ${JSON.stringify(jwks)}
  credentials:
    - { issuer: "${idp.issuer}", clientId: orders-sidecar, clientSecretFile: client-secret }
drainTimeoutMs: 2000
logLevel: debug
${opts.extraYaml ?? ''}`;
  const configFile = join(dir, 'sidecar.yaml');
  writeFileSync(configFile, yaml);
  const logs: string[] = [];
  const log = createLogger({ level: 'debug', sink: { write: (l) => logs.push(l) } });
  const sidecar = await startSidecar(parseSidecarConfig(yaml, configFile), { log, configFile });
  if (opts.waitReady !== false) await waitFor(() => sidecar.ready(), 10_000, 'sidecar ready');
  const target = `127.0.0.1:${sidecar.ports.inbound}`;
  const clients: OrdersClient[] = [];
  return {
    idp,
    app,
    sidecar,
    dir,
    policyFile,
    logs,
    target,
    writePolicy(text) {
      const tmp = `${policyFile}.tmp`;
      writeFileSync(tmp, text);
      renameSync(tmp, policyFile);
    },
    client() {
      const c = new OrdersClient(target);
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.close();
      await sidecar.stop();
      await app.close();
      if (opts.idp === undefined) await idp.close();
    },
  };
}

export interface CallResult {
  readonly code: grpc.status;
  readonly details: string;
  readonly value: Record<string, unknown> | undefined;
  /** Response trailers (or trailers-only metadata) as plain strings. */
  readonly trailers: Record<string, string>;
}

/** A grpc-js client for ward.demo.v1.Orders with promise helpers. One HTTP/2 connection per client. */
export class OrdersClient {
  readonly raw: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  /** Response headers of the last call that had any (grpc-js 'metadata' event). */
  lastHeaders: Record<string, string> = {};

  constructor(target: string) {
    const Ctor = ordersClientConstructor();
    this.raw = new Ctor(target, grpc.credentials.createInsecure()) as never;
  }

  unary(method: string, request: Record<string, unknown>, token?: string, deadlineMs = 10_000): Promise<CallResult> {
    const md = new grpc.Metadata();
    if (token !== undefined) md.set('authorization', `Bearer ${token}`);
    return new Promise((resolve) => {
      // grpc-js calls back before it emits 'status' (which carries the trailers): wait for both.
      let result: { err: grpc.ServiceError | null; value?: Record<string, unknown> } | undefined;
      let statusMd: grpc.Metadata | undefined;
      const settle = (): void => {
        if (result === undefined || statusMd === undefined) return;
        if (result.err !== null) resolve({ code: result.err.code, details: result.err.details, value: undefined, trailers: flat(result.err.metadata) });
        else resolve({ code: grpc.status.OK, details: '', value: result.value, trailers: flat(statusMd) });
      };
      const call = (this.raw[method] as (...a: unknown[]) => grpc.ClientUnaryCall).call(
        this.raw,
        request,
        md,
        { deadline: Date.now() + deadlineMs },
        (err: grpc.ServiceError | null, value?: Record<string, unknown>) => {
          result = value === undefined ? { err } : { err, value };
          settle();
        },
      );
      call.on('metadata', (md: grpc.Metadata) => {
        this.lastHeaders = flat(md);
      });
      call.on('status', (s: grpc.StatusObject) => {
        statusMd = s.metadata;
        settle();
      });
    });
  }

  close(): void {
    this.raw.close();
  }
}

function flat(md: grpc.Metadata | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (md === undefined) return out;
  for (const [k, v] of Object.entries(md.getMap())) out[k] = typeof v === 'string' ? v : v.toString();
  return out;
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const WARD_BIN = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

/** A `ward sidecar --config <file>` process with `concurrency` above 1, its output kept line by line. */
export interface ClusteredWard {
  readonly proc: ChildProcess;
  /** stdout and stderr, one JSON log line per entry, as they came. */
  readonly lines: string[];
  /** The primary's listening ports, from its `sidecar started` line. */
  readonly inbound: number;
  readonly admin: number;
}

/** Starts the sidecar of `configFile` as a process (bin/ward.js) and waits for its primary to listen. */
export async function spawnClusteredWard(configFile: string): Promise<ClusteredWard> {
  const proc = spawn(process.execPath, [WARD_BIN, 'sidecar', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  const onData = (d: Buffer): void => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', onData);
  const startedLine = (): string | undefined => lines.find((l) => l.includes('"role":"primary"') && l.includes('sidecar started'));
  await waitFor(() => startedLine() !== undefined, 30_000, 'the primary to start');
  const { inbound, admin } = JSON.parse(startedLine() as string) as { inbound: number; admin: number };
  return { proc, lines, inbound, admin };
}

/** One HTTP/2 request on `session`: the string fields of its response head and trailers, once the stream closed. */
export function h2Fields(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    const fields: Record<string, string> = {};
    const keep = (h: http2.IncomingHttpHeaders): void => {
      for (const [k, v] of Object.entries(h)) if (typeof v === 'string') fields[k] = v;
    };
    req.on('response', keep);
    req.on('trailers', keep);
    req.on('error', reject);
    req.resume();
    req.on('close', () => resolve(fields));
    req.end(body);
  });
}
