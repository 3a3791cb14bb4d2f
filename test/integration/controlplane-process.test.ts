import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyWatch, type PolicyWatch } from '../../src/controlplane/client/watch.ts';
import { healthClient, type StatusResponseWire } from '../../src/controlplane/proto.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { parsePolicyText } from '../../src/policy/load.ts';
import type { CompiledPolicy } from '../../src/policy/model.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { configMap, eventually, invalidPolicy, policy } from '../unit/controlplane/fixtures.ts';
import { CP_AUDIENCE, controlPlaneYaml, idpWithControlPlane } from '../unit/controlplane/idp-setup.ts';

/**
 * The real `ward control-plane` process over a ConfigMap-style policy directory, with several
 * sidecar policy watches holding dev-IdP tokens: edits (valid, invalid) reach every sidecar of
 * the service and no other; `ward status` shows the view; a SIGKILLed control plane leaves
 * sidecars enforcing their policy, a sidecar restarted meanwhile restores it from its state
 * directory, and the restarted control plane re-applies nothing.
 */

const RUNNER = 'const [file, ...args] = process.argv.slice(1); const { command } = await import(file); process.exitCode = await command.run(args);';
const CLI = (name: string): string => fileURLToPath(new URL(`../../src/cli/${name}.ts`, import.meta.url));

function wardProcess(cmd: string, args: readonly string[]): ChildProcess {
  return spawn(process.execPath, ['--input-type=module', '-e', RUNNER, CLI(cmd), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function wardRun(cmd: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', RUNNER, CLI(cmd), ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

interface CpProcess {
  readonly proc: ChildProcess;
  readonly port: number;
  /** From the second line it prints (`health` in the config). */
  readonly healthPort: number;
  readonly exited: Promise<number | null>;
}

async function startCp(configFile: string, port = 0): Promise<CpProcess> {
  const proc = wardProcess('control-plane', ['--config', configFile, '--port', String(port)]);
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  let out = '';
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const [listening, health] = await new Promise<[number, number]>((resolve, reject) => {
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /control-plane listening on [^:]+:(\d+)\ncontrol-plane health on 127\.0\.0\.1:(\d+)\n/.exec(out);
      if (m?.[1] !== undefined && m[2] !== undefined) resolve([Number(m[1]), Number(m[2])]);
    });
    void exited.then((code) => reject(new Error(`control plane exited (${code}) before listening: ${err}`)));
  });
  return { proc, port: listening, healthPort: health, exited };
}

const V = (text: string): string => parsePolicyText(text, 'x').version;

let idp: TestIdp;
let root: string;
let policies: string;
let configFile: string;
let cp: CpProcess;
let generation = 0;
const sidecars: { service: string; watch: PolicyWatch; applied: CompiledPolicy[]; stateDir: string }[] = [];

function publish(files: Record<string, string>): void {
  configMap(policies, `..2026_11_26_10_00_${String(++generation).padStart(2, '0')}.${generation}`, files);
}

function startSidecar(service: string, i: number, stateDir = mkdtempSync(join(root, `state-${service}-`))): (typeof sidecars)[number] {
  const applied: CompiledPolicy[] = [];
  const watch = createPolicyWatch({
    address: `127.0.0.1:${cp.port}`,
    service,
    instanceId: `${service}-${i}`,
    token: () => idp.token(`${service}-sidecar`, CP_AUDIENCE),
    stateDir,
    compile: (t, f) => parsePolicyText(t, f, { service }),
    onPolicy: (p) => applied.push(p),
    log: silentLogger,
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const s = { service, watch, applied, stateDir };
  sidecars.push(s);
  return s;
}

const live = (service: string): (typeof sidecars)[number][] => sidecars.filter((s) => s.service === service && !closed.has(s));
const closed = new Set<(typeof sidecars)[number]>();

async function statusJson(): Promise<StatusResponseWire> {
  const r = await wardRun('status', ['--address', `127.0.0.1:${cp.port}`, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as StatusResponseWire;
}

beforeAll(async () => {
  idp = await startTestIdp(idpWithControlPlane());
  root = mkdtempSync(join(tmpdir(), 'ward-cp-proc-'));
  policies = join(root, 'policies');
  mkdirSync(policies);
  publish({ 'orders.yaml': policy('orders', ['GetOrder'], idp.issuer), 'payments.yaml': policy('payments', ['GetOrder'], idp.issuer) });
  configFile = join(root, 'control-plane.yaml');
  writeFileSync(configFile, `${controlPlaneYaml(idp.issuer, policies)}logLevel: warn\nhealth: { host: 127.0.0.1, port: 0 }\n`);
  cp = await startCp(configFile);
});

afterAll(async () => {
  for (const s of sidecars) await s.watch.close();
  cp?.proc.kill('SIGKILL');
  await idp?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('ward control-plane (real process) with several sidecars', () => {
  const orders1 = policy('orders', ['GetOrder'], 'ISSUER');
  const orders2 = policy('orders', ['GetOrder', 'ListOrders'], 'ISSUER');
  const orders3 = policy('orders', ['CreateOrder'], 'ISSUER');
  const withIssuer = (t: string): string => t.replace('ISSUER', idp.issuer);

  it('prints its health port, which answers grpc.health.v1 in cleartext', async () => {
    expect(cp.healthPort).toBeGreaterThan(0);
    expect(cp.healthPort).not.toBe(cp.port);
    const Health = healthClient();
    const client = new Health(`127.0.0.1:${cp.healthPort}`, credentials.createInsecure()) as unknown as {
      Check(req: { service: string }, cb: (err: Error | null, res?: { status: string }) => void): void;
      close(): void;
    };
    try {
      const res = await new Promise<{ status: string } | undefined>((resolve, reject) => client.Check({ service: 'ward.v1.PolicyDiscovery' }, (e, r) => (e === null ? resolve(r) : reject(e))));
      expect(res?.status).toBe('SERVING');
    } finally {
      client.close();
    }
  });

  it('serves every sidecar its service\'s policy, and an edit reaches every sidecar of that service only', async () => {
    for (let i = 0; i < 4; i++) startSidecar('orders', i);
    for (let i = 0; i < 2; i++) startSidecar('payments', i);
    await eventually(() => sidecars.every((s) => s.applied.length === 1), 15_000, 'every sidecar to get its policy');
    expect(live('orders').map((s) => s.watch.current()?.version)).toEqual(Array(4).fill(V(withIssuer(orders1))));

    publish({ 'orders.yaml': withIssuer(orders2), 'payments.yaml': policy('payments', ['GetOrder'], idp.issuer) });
    await eventually(() => live('orders').every((s) => s.applied.length === 2), 15_000, 'the edit to reach every orders sidecar');
    expect(live('orders').map((s) => s.watch.current()?.version)).toEqual(Array(4).fill(V(withIssuer(orders2))));
    expect(live('payments').map((s) => s.applied.length)).toEqual([1, 1]);
  });

  it('an invalid edit changes nothing for sidecars and shows in ward status with file:line', async () => {
    publish({ 'orders.yaml': invalidPolicy('orders').replace('http://127.0.0.1:4400', idp.issuer), 'payments.yaml': policy('payments', ['GetOrder'], idp.issuer) });
    await expect.poll(async () => (await statusJson()).files.length, { timeout: 15_000, interval: 100 }).toBe(1);
    const st = await statusJson();
    expect(st.files).toMatchObject([{ file: 'orders.yaml', service: 'orders', issues: [{ line: 9, path: 'rules[0].action' }] }]);
    expect(st.services.find((s) => s.service === 'orders')).toMatchObject({ version: V(withIssuer(orders2)), lastError: [{ line: 9 }] });
    expect(st.sidecars).toHaveLength(6);
    expect(st.sidecars.filter((s) => s.service === 'orders').map((s) => s.ackedVersion)).toEqual(Array(4).fill(V(withIssuer(orders2))));
    expect(live('orders').map((s) => s.applied.length)).toEqual([2, 2, 2, 2]);

    const table = await wardRun('status', ['--address', `127.0.0.1:${cp.port}`]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('SERVICES');
    expect(table.stdout).toMatch(/orders\s+[0-9a-f]{12}\s+orders\.yaml\s+\S+\s+orders\.yaml:9:\d+: rules\[0\]\.action/);
    expect(table.stdout).toMatch(/orders\s+orders-3\s+orders-sidecar/);
  });

  it('a SIGKILLed control plane leaves sidecars enforcing; a sidecar restarted meanwhile restores its state; the restart re-applies nothing', async () => {
    const port = cp.port;
    cp.proc.kill('SIGKILL');
    await cp.exited;
    await eventually(() => sidecars.every((s) => !s.watch.connected()), 15_000, 'sidecars to notice');
    expect(live('orders').map((s) => s.watch.current()?.version)).toEqual(Array(4).fill(V(withIssuer(orders2))));

    // restart one orders sidecar while the control plane is down
    const old = live('orders')[0];
    if (old === undefined) throw new Error('no sidecar');
    await old.watch.close();
    closed.add(old);
    const restarted = startSidecar('orders', 0, old.stateDir);
    expect(restarted.watch.current()?.version).toBe(V(withIssuer(orders2)));

    // fix the file while the control plane is down, then restart it on the same port
    publish({ 'orders.yaml': withIssuer(orders2), 'payments.yaml': policy('payments', ['GetOrder'], idp.issuer) });
    cp = await startCp(configFile, port);
    await eventually(() => live('orders').concat(live('payments')).every((s) => s.watch.connected()), 15_000, 'every sidecar to reconnect');
    const st = await statusJson();
    expect(st.sidecars).toHaveLength(6);
    expect(st.sidecars.every((s) => s.pendingVersion === '')).toBe(true);
    expect(live('orders').map((s) => s.applied.length)).toEqual([2, 2, 2, 1]); // the restarted one (last): restored once; nothing re-applied
    expect(live('payments').map((s) => s.applied.length)).toEqual([1, 1]);

    publish({ 'orders.yaml': withIssuer(orders3), 'payments.yaml': policy('payments', ['GetOrder'], idp.issuer) });
    await eventually(() => live('orders').every((s) => s.watch.current()?.version === V(withIssuer(orders3))), 15_000, 'the next version');
  });

  it('SIGTERM ends the sidecar streams and exits 0; sidecars keep their policy', async () => {
    cp.proc.kill('SIGTERM');
    expect(await cp.exited).toBe(0);
    await eventually(() => sidecars.every((s) => !s.watch.connected()), 15_000, 'sidecars to notice');
    expect(live('orders').every((s) => s.watch.current()?.version === V(withIssuer(orders3)))).toBe(true);
  });
});
