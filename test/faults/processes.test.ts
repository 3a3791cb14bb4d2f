import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import { parsePolicyText } from '../../src/policy/load.ts';
import { type Mesh, OrdersClient, startMesh, waitFor } from '../integration/harness.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { configMap, policy } from '../unit/controlplane/fixtures.ts';
import { controlPlaneYaml } from '../unit/controlplane/idp-setup.ts';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { securityPolicy } from '../security/support/ward.ts';

/**
 * Fault injection with real `ward` processes:
 * - `ward sidecar` gets SIGTERM while calls are in flight and new ones keep coming: every call
 *   that was in flight completes normally (none is lost), the process exits 0;
 * - `ward control-plane` is SIGKILLed right after a new policy version is published (mid-push)
 *   while a sidecar serves traffic, and restarted: the sidecar keeps enforcing a complete policy
 *   throughout (never none, never a partial one), no call fails for want of a policy, and it
 *   converges on the newest version once the control plane is back.
 */

const BIN = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

interface WardProc {
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly stderr: () => string;
}

function startWardProcess(args: readonly string[], ready: RegExp): Promise<WardProc & { match: RegExpExecArray }> {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  let out = '';
  const onData = (d: Buffer): void => {
    out += d.toString();
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', onData);
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const m = ready.exec(out);
      if (m !== null) {
        proc.stdout?.off('data', check);
        proc.stderr?.off('data', check);
        resolve({ proc, exited, stderr: () => out, match: m });
      }
    };
    proc.stdout?.on('data', check);
    proc.stderr?.on('data', check);
    void exited.then((code) => reject(new Error(`ward ${args[0]} exited (${code}) before it was ready:\n${out}`)));
  });
}

describe('ward sidecar: SIGTERM during load', () => {
  let iss: TestIssuer;
  let app: OrdersApp;
  let dir: string;

  beforeAll(async () => {
    iss = await startTestIssuer();
    app = await startOrdersApp();
    dir = mkdtempSync(join(tmpdir(), 'ward-sigterm-'));
  });
  afterAll(async () => {
    await app.close();
    await iss.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every call in flight at SIGTERM completes; the process exits 0', async () => {
    writeFileSync(join(dir, 'policy.yaml'), securityPolicy(iss.issuer));
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:${app.port}", protocol: h2c }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
drainTimeoutMs: 10000
telemetry: { enabled: false }
logLevel: info
`,
    );
    const sidecar = await startWardProcess(['sidecar', '--config', join(dir, 'sidecar.yaml')], /"msg":"sidecar started".*?"inbound":(\d+)/);
    const port = Number(sidecar.match[1]);
    const token = iss.token();
    const clients = Array.from({ length: 4 }, () => new OrdersClient(`127.0.0.1:${port}`));
    try {
      // warm up: keys fetched, connections open
      for (const c of clients) expect((await c.unary('GetOrder', { id: '1' }, token)).code).toBe(grpc.status.OK);

      // 20 slow calls in flight, and a stream of short ones that keeps going through the signal
      const slow = Array.from({ length: 20 }, (_, i) => (clients[i % 4] as OrdersClient).unary('Sleep', { ms: 1500 }, token, 20_000));
      let stop = false;
      const short: Promise<grpc.status>[] = [];
      const pump = (async () => {
        for (let i = 0; !stop; i++) {
          short.push((clients[i % 4] as OrdersClient).unary('GetOrder', { id: String(i) }, token, 5000).then((r) => r.code));
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      await waitFor(() => app.calls.filter((c) => c.method === 'Sleep').length === 20, 10_000, 'the slow calls to reach the app');
      sidecar.proc.kill('SIGTERM');
      const results = await Promise.all(slow);
      stop = true;
      await pump;
      const shortCodes = await Promise.all(short);

      expect(results.map((r) => r.code)).toEqual(Array(20).fill(grpc.status.OK));
      expect(results.every((r) => r.value?.['completed'] === true)).toBe(true);
      // calls that began after the signal are either served or refused as unavailable — never an error of another kind
      for (const c of shortCodes) expect([grpc.status.OK, grpc.status.UNAVAILABLE]).toContain(c);
      expect(await sidecar.exited).toBe(0);
      expect(sidecar.stderr()).toContain('"msg":"stopped"');
    } finally {
      for (const c of clients) c.close();
      sidecar.proc.kill('SIGKILL');
    }
  });
});

describe('ward control-plane: killed mid-push and restarted, while a sidecar serves traffic', () => {
  let idp: TestIdp;
  let root: string;
  let policies: string;
  let mesh: Mesh;
  let cp: WardProc & { port: number };
  let generation = 0;

  const v1 = (): string => policy('orders', ['GetOrder'], idp.issuer);
  const v2 = (): string => policy('orders', ['GetOrder', 'CreateOrder'], idp.issuer);
  const publish = (text: string): void => configMap(policies, `..gen_${++generation}`, { 'orders.yaml': text });

  async function startCp(port = 0): Promise<WardProc & { port: number }> {
    const p = await startWardProcess(['control-plane', '--config', join(root, 'cp.yaml'), '--port', String(port)], /control-plane listening on [^:]+:(\d+)/);
    return { ...p, port: Number(p.match[1]) };
  }

  beforeAll(async () => {
    idp = await startTestIdp();
    root = mkdtempSync(join(tmpdir(), 'ward-cp-fault-'));
    policies = join(root, 'policies');
    mkdirSync(policies);
    publish(v1());
    writeFileSync(join(root, 'cp.yaml'), `${controlPlaneYaml(idp.issuer, policies)}logLevel: warn\n`);
    cp = await startCp();
    mesh = await startMesh({ idp, controlPlane: { address: `127.0.0.1:${cp.port}`, stateDir: join(root, 'state') } });
  });
  afterAll(async () => {
    await mesh?.close();
    cp?.proc.kill('SIGKILL');
    await idp?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('the sidecar never runs without a complete policy, and converges after the restart', async () => {
    const token = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const client = mesh.client();
    const codes: grpc.status[] = [];
    let stop = false;
    const load = (async () => {
      while (!stop) codes.push((await client.unary('GetOrder', { id: '1' }, token)).code);
    })();
    const versions = new Set<string>();
    let notReady = 0;
    const sample = setInterval(() => {
      if (!mesh.sidecar.ready()) notReady++;
    }, 20);
    try {
      await waitFor(() => codes.length > 20, 10_000, 'traffic under v1');
      // publish v2 and kill the control plane while it is scanning / pushing it
      publish(v2());
      await new Promise((r) => setTimeout(r, 15));
      cp.proc.kill('SIGKILL');
      await cp.exited;
      const during = codes.length;
      await waitFor(() => codes.length > during + 20, 10_000, 'traffic with the control plane down');
      // the sidecar holds v1 or v2, whole: CreateOrder is allowed only under v2
      versions.add(String((await mesh.client().unary('CreateOrder', { id: 'x', item: 'i', quantity: 1 }, token)).code));

      cp = await startCp(cp.port);
      const writer = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
      await waitFor(
        async () => (await mesh.client().unary('CreateOrder', { id: 'y', item: 'i', quantity: 1 }, writer)).code === grpc.status.OK,
        20_000,
        'v2 to reach the sidecar after the restart',
      );
      const after = codes.length;
      await waitFor(() => codes.length > after + 20, 10_000, 'traffic after the restart');
    } finally {
      clearInterval(sample);
      stop = true;
      await load;
    }
    expect(codes.every((c) => c === grpc.status.OK)).toBe(true);
    expect(notReady).toBe(0);
    expect([...versions].every((c) => c === String(grpc.status.OK) || c === String(grpc.status.PERMISSION_DENIED))).toBe(true);
    expect(parsePolicyText(v2(), 'x').version).not.toBe(parsePolicyText(v1(), 'x').version);
  });
});
