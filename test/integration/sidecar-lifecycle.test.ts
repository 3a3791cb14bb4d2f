import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { startOrdersApp } from '../../src/demo/orders-app.ts';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startTestIdp } from '../support/idp.ts';
import { OrdersClient, startMesh, waitFor } from './harness.ts';

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));
const TERM_ON_START = fileURLToPath(new URL('../support/term-on-start.js', import.meta.url));

describe('policy reload', () => {
  it('reaches calls on an already-open HTTP/2 connection; a bad edit keeps the last good version', async () => {
    const mesh = await startMesh();
    try {
      const client = mesh.client(); // one grpc-js channel = one HTTP/2 connection throughout
      const token = await mesh.idp.token('reporting', 'urn:ward:orders', 'orders.read');
      expect((await client.unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);

      // 1) an invalid edit: refused with file:line, the old policy stays in force
      mesh.writePolicy(`${ordersPolicyText(mesh.idp.issuer)}\n  - name: broken\n    action: maybe\n`);
      await waitFor(() => mesh.logs.some((l) => l.includes('action')), 5000, 'the refusal to be logged');
      const refusal = mesh.logs.find((l) => l.includes('policy.yaml:') && l.includes('action'));
      expect(refusal).toBeDefined();
      expect((await client.unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);

      // 2) a valid edit that turns GetOrder into a denial: the same connection sees it
      const readersDenied = ordersPolicyText(mesh.idp.issuer).replace('- name: no-deletes', '- name: freeze-reads\n    action: deny\n    match:\n      grpc: [/ward.demo.v1.Orders/GetOrder]\n  - name: no-deletes');
      mesh.writePolicy(readersDenied);
      let last: status | undefined;
      await waitFor(async () => {
        const r = await client.unary('GetOrder', { id: '1' }, token);
        last = r.code;
        return r.code === status.PERMISSION_DENIED && r.trailers['x-ward-reason'] === 'ERR_POLICY_DENIED';
      }, 5000, `GetOrder denied after reload (last status ${last})`);
    } finally {
      await mesh.close();
    }
  });
});

describe('IdP outage', () => {
  it('serves with cached keys within the grace period, then fails closed with UNAVAILABLE', async () => {
    const mesh = await startMesh({ jwks: { refreshIntervalMs: 200, graceMs: 1500, cooldownMs: 0, timeoutMs: 300 }, cacheEntries: 0 });
    try {
      const client = mesh.client();
      const token = await mesh.idp.token('reporting', 'urn:ward:orders', 'orders.read');
      await mesh.idp.close(); // the IdP is gone from now on
      // within grace: keys are cached, the (uncached) token still verifies
      expect((await client.unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);
      // after grace: fail closed, transient
      let r = await client.unary('GetOrder', { id: '1' }, token);
      await waitFor(async () => {
        r = await client.unary('GetOrder', { id: '1' }, token);
        return r.code !== status.OK;
      }, 8000, 'the grace period to end');
      expect(r.code).toBe(status.UNAVAILABLE);
      expect(r.trailers['x-ward-reason']).toBe('ERR_KEYS_UNAVAILABLE');
    } finally {
      await mesh.close();
    }
  });
});

describe('readiness', () => {
  it('is not ready (and fails closed) until the issuer keys are loaded, then becomes ready', async () => {
    const first = await startTestIdp();
    const port = first.port;
    await first.close(); // the IdP is down when the sidecar starts
    const down = { ...first, close: async () => {} };
    const mesh = await startMesh({ idp: down, waitReady: false, jwks: { refreshIntervalMs: 200, cooldownMs: 0, timeoutMs: 300 } });
    let idp: Awaited<ReturnType<typeof startTestIdp>> | undefined;
    try {
      const readyz = async (): Promise<number> => (await fetch(`http://127.0.0.1:${mesh.sidecar.ports.admin}/readyz`)).status;
      expect(await readyz()).toBe(503);
      expect((await fetch(`http://127.0.0.1:${mesh.sidecar.ports.admin}/healthz`)).status).toBe(200);
      const client = mesh.client();
      const early = await client.unary('GetOrder', { id: '1' }, await first.craft());
      expect(early.code).toBe(status.UNAVAILABLE);
      expect(mesh.app.calls).toHaveLength(0);

      idp = await startTestIdp({ port }); // the IdP comes back on the same address
      await waitFor(async () => (await readyz()) === 200, 10_000, 'readyz 200 once keys load');
      const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
      expect((await client.unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);
    } finally {
      await mesh.close();
      await idp?.close();
    }
  });
});

describe('ward sidecar process', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('becomes ready, and drains in-flight calls on SIGTERM before exiting 0', async () => {
    const idp = await startTestIdp();
    const app = await startOrdersApp();
    const dir = mkdtempSync(join(tmpdir(), 'ward-proc-'));
    writeFileSync(join(dir, 'policy.yaml'), ordersPolicyText(idp.issuer));
    writeFileSync(join(dir, 'secret'), 'orders-sidecar-secret');
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:${app.port}" }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
authn:
  credentials: [{ issuer: "${idp.issuer}", clientId: orders-sidecar, clientSecretFile: secret }]
drainTimeoutMs: 5000
`,
    );
    const child = spawn(process.execPath, [WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await waitFor(() => stderr.includes('sidecar started'), 15_000, 'sidecar start');
    const started = JSON.parse(stderr.split('\n').find((l) => l.includes('sidecar started')) ?? '{}') as { inbound: number; admin: number };
    await waitFor(async () => (await fetch(`http://127.0.0.1:${started.admin}/readyz`)).status === 200, 10_000, 'ready');

    const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
    const client = new OrdersClient(`127.0.0.1:${started.inbound}`);
    const inflight = client.unary('Sleep', { ms: 800 }, token);
    await waitFor(() => app.calls.some((c) => c.method === 'Sleep'), 5000, 'the Sleep call to reach the app');
    child.kill('SIGTERM');
    const r = await inflight;
    expect(r.code).toBe(status.OK);
    expect(r.value?.completed).toBe(true);
    expect(await exited).toBe(0);
    expect(stderr).toContain('draining');
    expect(stderr).not.toContain(token);
    client.close();
    await app.close();
    await idp.close();
  });

  // Regression: the commands installed their signal listener only after start-up returned, so a
  // SIGTERM in between (a pod deleted as it comes up) killed the process undrained; the footprint
  // test, which stops its sidecars as soon as they log "sidecar started", failed about once in ten
  // runs for it. Here the signal comes from inside the process, synchronously with that log line
  // (test/support/term-on-start.js), so the old code fails every time.
  it.each([
    ['a policy file', 'policy: { file: policy.yaml }\n'],
    ['a policy file, two workers', 'policy: { file: policy.yaml }\nconcurrency: 2\n'],
    ['a control plane', 'policy:\n  controlPlane: { address: "127.0.0.1:9", stateDir: state, issuer: "http://127.0.0.1:9", instanceId: signals }\n'],
  ])('drains and exits 0 on a SIGTERM at the instant it says it started (%s)', async (_name, policy) => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-signals-'));
    writeFileSync(join(dir, 'policy.yaml'), ordersPolicyText('http://127.0.0.1:9'));
    writeFileSync(join(dir, 'secret'), 'not-a-real-secret');
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      `service: orders\ninbound: { listen: { host: 127.0.0.1, port: 0 } }\nupstream: { url: "http://127.0.0.1:9" }\nadmin: { host: 127.0.0.1, port: 0 }\n${policy}authn: { credentials: [{ issuer: "http://127.0.0.1:9", clientId: orders-sidecar, clientSecretFile: secret }] }\ntelemetry: { enabled: false }\ndrainTimeoutMs: 100\n`,
    );
    const child = spawn(process.execPath, ['--import', TERM_ON_START, WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (c, sig) => r([c, sig])));
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(stderr).toContain('"msg":"signal received"');
    expect(stderr).toContain('"msg":"stopped"');
  });

  // Regression: a start-up that failed part-way left what it had started running (the listeners,
  // the policy watch, JWKS refresh), so the process never exited and a SIGTERM was swallowed;
  // with workers, one that failed to start kept its IPC channel, and the primary waited for ever.
  it.each([
    ['concurrency 1, the admin port taken', '', true],
    ['two workers, a session secret missing (seen only by the workers)', 'concurrency: 2\nsession: { issuer: "http://127.0.0.1:9", clientId: web, clientSecretEnv: WARD_TEST_UNSET_SECRET_X, secretFiles: [nope.key] }\n', false],
  ] as const)('a start-up that fails part-way exits 1 at once, saying why (%s)', async (_name, extra, takeAdmin) => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const busy = (blocker.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), 'ward-startfail-'));
    writeFileSync(join(dir, 'policy.yaml'), ordersPolicyText('http://127.0.0.1:9'));
    writeFileSync(join(dir, 'secret'), 'not-a-real-secret');
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      `service: orders\ninbound: { listen: { host: 127.0.0.1, port: 0 } }\nupstream: { url: "http://127.0.0.1:9" }\nadmin: { host: 127.0.0.1, port: ${takeAdmin ? busy : 0} }\npolicy: { file: policy.yaml }\nauthn: { credentials: [{ issuer: "http://127.0.0.1:9", clientId: orders-sidecar, clientSecretFile: secret }] }\ntelemetry: { enabled: false }\n${extra}`,
    );
    const child = spawn(process.execPath, [WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const t0 = Date.now();
    const code = await Promise.race([
      new Promise<number | null>((r) => child.on('exit', (c) => r(c))),
      new Promise<'still running'>((r) => setTimeout(() => r('still running'), 15_000)),
    ]);
    blocker.close();
    expect(code).toBe(1);
    expect(stderr).toMatch(takeAdmin ? /EADDRINUSE/ : /session\.clientSecretEnv: environment variable WARD_TEST_UNSET_SECRET_X/);
    // Closed, not cut by bin/ward.js's 2 s backstop (concurrency 1; workers take their own start-up time).
    if (takeAdmin) expect(Date.now() - t0).toBeLessThan(5000);
  });
});
