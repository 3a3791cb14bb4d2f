import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import http2, { type ClientHttp2Session } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { type ClusteredWard, h2Fields, spawnClusteredWard, waitFor } from './harness.ts';
import { hmacPolicy, hs256, kubeletSecretDir, SECRET_A, SECRET_B, type SecretDir } from '../unit/policy/secret-files.ts';

/**
 * `concurrency: 2` for real: `ward sidecar` as a process (a primary and two node:cluster workers)
 * in front of the sample gRPC app. Calls are made over raw HTTP/2 connections, one session per
 * "client", so which worker a connection landed on is known: the decision id in every response
 * starts with a per-worker random prefix.
 */


/** A gRPC frame holding a message with one field 1: a string (GetOrder) or a varint (Sleep). */
function frame(field: { string: string } | { varint: number }): Buffer {
  const body =
    'string' in field
      ? Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(field.string)]), Buffer.from(field.string)])
      : Buffer.from([0x08, ...varint(field.varint)]);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

interface Outcome {
  readonly grpcStatus: string | undefined;
  readonly reason: string | undefined;
  /** The worker's decision-id prefix. */
  readonly worker: string;
}

async function call(session: ClientHttp2Session, method: 'GetOrder' | 'Sleep', body: Buffer, token: string): Promise<Outcome> {
  const fields = await h2Fields(
    session,
    { ':method': 'POST', ':path': `/ward.demo.v1.Orders/${method}`, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` },
    body,
  );
  return { grpcStatus: fields['grpc-status'], reason: fields['x-ward-reason'], worker: (fields['x-ward-decision-id'] ?? '').split('.')[0] ?? '' };
}

const GET = frame({ string: '1' });

describe('concurrency: 2 (node:cluster workers)', () => {
  let idp: TestIdp;
  let app: OrdersApp;
  let dir: string;
  let policyFile: string;
  let proc: ChildProcess;
  let lines: string[] = [];
  let inbound = 0;
  let admin = 0;
  const sessions: ClientHttp2Session[] = [];

  const connect = (): ClientHttp2Session => {
    const s = http2.connect(`http://127.0.0.1:${inbound}`);
    s.on('error', () => {});
    sessions.push(s);
    return s;
  };
  const status = async (): Promise<{ policyVersion: string; signatures: unknown; workers: { worker: number; pid: number; policyVersion: string | null; ready: boolean }[] }> =>
    (await fetch(`http://127.0.0.1:${admin}/status`)).json() as never;
  const readyz = async (): Promise<number> => (await fetch(`http://127.0.0.1:${admin}/readyz`)).status;

  beforeAll(async () => {
    idp = await startTestIdp();
    app = await startOrdersApp();
    dir = mkdtempSync(join(tmpdir(), 'ward-workers-'));
    policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, ordersPolicyText(idp.issuer));
    writeFileSync(join(dir, 'client-secret'), 'orders-sidecar-secret\n');
    const config = join(dir, 'sidecar.yaml');
    writeFileSync(
      config,
      `service: orders
inbound:
  listen: { host: 127.0.0.1, port: 0 }
upstream:
  url: http://127.0.0.1:${app.port}
admin: { host: 127.0.0.1, port: 0 }
policy:
  file: policy.yaml
authn:
  credentials:
    - { issuer: "${idp.issuer}", clientId: orders-sidecar, clientSecretFile: client-secret }
telemetry: { enabled: false }
concurrency: 2
drainTimeoutMs: 5000
`,
    );
    const ward = await spawnClusteredWard(config);
    proc = ward.proc;
    lines = ward.lines;
    inbound = ward.inbound;
    admin = ward.admin;
    await waitFor(async () => (await readyz()) === 200, 15_000, 'readiness');
  }, 60_000);

  afterAll(async () => {
    for (const s of sessions) s.destroy();
    if (proc.exitCode === null) proc.kill('SIGKILL');
    await app.close();
    await idp.close();
  });

  it('spreads connections over both workers, reloads policy in both, replaces a dead worker, and drains both on SIGTERM', async () => {
    const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
    expect(token).not.toContain('\n');

    // (1) Connections alternate between the workers: both serve calls.
    const byWorker = new Map<string, ClientHttp2Session>();
    for (let i = 0; i < 4; i++) {
      const s = connect();
      const r = await call(s, 'GetOrder', GET, token);
      expect(r.grpcStatus).toBe('0');
      byWorker.set(r.worker, s);
    }
    expect(byWorker.size).toBe(2);
    // The primary's admin port also reports its own memory.
    const mem = (await (await fetch(`http://127.0.0.1:${admin}/memory`)).json()) as { rssBytes: number; peakRssBytes: number };
    expect(mem.rssBytes).toBeGreaterThan(0);
    expect(mem.peakRssBytes).toBeGreaterThanOrEqual(mem.rssBytes);
    // Telemetry is off here: no /metrics, as at concurrency 1 (regression: 200 with an empty body).
    expect((await fetch(`http://127.0.0.1:${admin}/metrics`)).status).toBe(404);
    const st = await status();
    expect(st.workers.map((w) => w.policyVersion)).toEqual([st.policyVersion, st.policyVersion]);
    expect(st.signatures).toEqual({ rsa: 'native', detail: null });

    // (2) One edit of the policy file reaches both workers, on their already-open connections.
    const before = st.policyVersion;
    const frozen = ordersPolicyText(idp.issuer).replace(
      '- name: no-deletes',
      '- name: freeze-reads\n    action: deny\n    match:\n      grpc: [/ward.demo.v1.Orders/GetOrder]\n  - name: no-deletes',
    );
    writeFileSync(`${policyFile}.tmp`, frozen);
    renameSync(`${policyFile}.tmp`, policyFile);
    for (const [worker, s] of byWorker) {
      await waitFor(async () => (await call(s, 'GetOrder', GET, token)).reason === 'ERR_POLICY_DENIED', 10_000, `worker ${worker} to deny GetOrder`);
      const r = await call(s, 'GetOrder', GET, token);
      expect(r).toMatchObject({ grpcStatus: '7', reason: 'ERR_POLICY_DENIED', worker });
    }
    await waitFor(async () => {
      const now = await status();
      return now.policyVersion !== before && now.workers.every((w) => w.policyVersion === now.policyVersion);
    }, 5000, 'both workers to report the new version');
    expect(await readyz()).toBe(200);

    // (3) Readiness reflects every worker: one killed makes the sidecar unready until it is replaced.
    const victim = (await status()).workers[0] as { pid: number };
    process.kill(victim.pid, 'SIGKILL');
    await waitFor(async () => (await readyz()) === 503, 5000, 'readiness to drop with a worker gone');
    await waitFor(async () => (await readyz()) === 200, 20_000, 'the worker to be replaced');
    const replaced = await status();
    expect(replaced.workers.map((w) => w.pid)).not.toContain(victim.pid);
    // The replacement asked the primary for the policy: it enforces the new version too.
    expect(replaced.workers.every((w) => w.policyVersion === replaced.policyVersion)).toBe(true);

    // (4) SIGTERM to the primary drains both workers: calls in flight on each finish, then it exits 0.
    const onEach: ClientHttp2Session[] = [];
    const seen = new Set<string>();
    for (let i = 0; i < 6 && seen.size < 2; i++) {
      const s = connect();
      const r = await call(s, 'GetOrder', GET, token); // denied by the new policy, but names the worker
      if (!seen.has(r.worker)) {
        seen.add(r.worker);
        onEach.push(s);
      }
    }
    expect(onEach).toHaveLength(2);
    const sleeps = onEach.map((s) => call(s, 'Sleep', frame({ varint: 1500 }), token));
    await new Promise((r) => setTimeout(r, 300));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    await waitFor(async () => (await readyz().catch(() => 503)) === 503, 3000, 'readiness to drop while draining');
    const results = await Promise.all(sleeps);
    expect(results.map((r) => r.grpcStatus)).toEqual(['0', '0']);
    expect(new Set(results.map((r) => r.worker)).size).toBe(2);
    expect(await exited).toBe(0);
    expect(lines.filter((l) => l.includes('"msg":"draining"')).length).toBeGreaterThanOrEqual(3); // primary + 2 workers
    // Tokens never reach the logs.
    expect(lines.some((l) => l.includes(token))).toBe(false);
  }, 60_000);
});

describe('concurrency: 2 and a rotated hmacSecretFile', () => {
  let app: OrdersApp;
  let secret: SecretDir;
  let dir: string;
  let ward: ClusteredWard;
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    app = await startOrdersApp();
    secret = kubeletSecretDir(SECRET_A);
    dir = mkdtempSync(join(tmpdir(), 'ward-workers-secret-'));
    writeFileSync(join(dir, 'policy.yaml'), hmacPolicy(secret.file));
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      `service: orders
inbound:
  listen: { host: 127.0.0.1, port: 0 }
upstream:
  url: http://127.0.0.1:${app.port}
admin: { host: 127.0.0.1, port: 0 }
policy:
  file: policy.yaml
telemetry: { enabled: false }
concurrency: 2
`,
    );
    ward = await spawnClusteredWard(join(dir, 'sidecar.yaml'));
  }, 60_000);

  afterAll(async () => {
    for (const s of sessions) s.destroy();
    if (ward.proc.exitCode === null) ward.proc.kill('SIGKILL');
    await app.close();
    secret.cleanup();
  });

  it('every worker verifies with the new secret and refuses the old one (regression: workers kept the old secret)', async () => {
    const started = ward;
    await waitFor(async () => (await fetch(`http://127.0.0.1:${started.admin}/readyz`)).status === 200, 15_000, 'readiness');
    const oldToken = await hs256(SECRET_A);
    // One connection on each worker, told apart by the decision id's prefix.
    const byWorker = new Map<string, ClientHttp2Session>();
    for (let i = 0; i < 6 && byWorker.size < 2; i++) {
      const s = http2.connect(`http://127.0.0.1:${started.inbound}`);
      s.on('error', () => {});
      sessions.push(s);
      const r = await call(s, 'GetOrder', GET, oldToken);
      expect(r.grpcStatus).toBe('0');
      byWorker.set(r.worker, s);
    }
    expect(byWorker.size).toBe(2);

    secret.replace(SECRET_B);
    const newToken = await hs256(SECRET_B);
    for (const [worker, s] of byWorker) {
      await waitFor(async () => (await call(s, 'GetOrder', GET, newToken)).grpcStatus === '0', 10_000, `worker ${worker} to take the new secret`);
      // The old secret is refused from then on, on this worker too (its token was cached as verified).
      expect(await call(s, 'GetOrder', GET, oldToken)).toMatchObject({ grpcStatus: '16', reason: 'ERR_TOKEN_SIGNATURE', worker });
    }
    expect(ward.lines.some((l) => l.includes(SECRET_A) || l.includes(SECRET_B))).toBe(false);
  }, 60_000);
});
