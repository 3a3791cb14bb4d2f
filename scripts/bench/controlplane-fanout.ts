/**
 * Control-plane fan-out: N sidecar policy watches (the real client, `createPolicyWatch`) on one
 * real control plane over loopback gRPC; then a policy file edit, and the time until every
 * watch holds the new version. Prints push latency (min/median/max over all watches, per
 * round) and the process's heap/RSS growth for the N streams. Client and server share this
 * process (and its 2 cores), so the numbers are an upper bound for the server side.
 *
 *   npx node --expose-gc scripts/bench/controlplane-fanout.ts [--streams 500] [--rounds 3]
 */
import { mkdirSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createPolicyWatch, type PolicyWatch } from '../../src/controlplane/client/watch.ts';
import { parseControlPlaneConfig } from '../../src/controlplane/server/config.ts';
import { startControlPlane } from '../../src/controlplane/server/control-plane.ts';
import { validatePolicyForControlPlane } from '../../src/controlplane/server/validate.ts';
import { silentLogger } from '../../src/lib/log.ts';
import type { Identity } from '../../src/policy/model.ts';
import { parsePolicyText } from '../../src/policy/load.ts';

const { values } = parseArgs({ options: { streams: { type: 'string', default: '500' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.streams);
const ROUNDS = Number(values.rounds);

const policy = (n: number): string => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - { issuer: "http://127.0.0.1:4400", audiences: [urn:ward:orders] }
rules:
  - name: readers-${n}
    action: allow
    match: { grpc: [/ward.demo.v1.Orders/GetOrder] }
`;

const dir = mkdtempSync(join(tmpdir(), 'ward-fanout-'));
mkdirSync(join(dir, 'policies'));
const publish = (n: number): void => {
  writeFileSync(join(dir, 'policies', '.tmp'), policy(n));
  renameSync(join(dir, 'policies', '.tmp'), join(dir, 'policies', 'orders.yaml'));
};
publish(0);
const cfg = parseControlPlaneConfig(
  `listen: { host: 127.0.0.1, port: 0 }\npolicyDir: policies\nmaxStreams: ${N + 10}\nauthn:\n  issuers: [{ issuer: "http://127.0.0.1:4400", audiences: [urn:ward:control-plane] }]\nbindings: [{ subject: orders-sidecar, services: [orders] }]\n`,
  join(dir, 'cp.yaml'),
);
// The benchmark measures fan-out, not token checks: one fixed identity for every stream.
const id: Identity = { issuer: 'http://127.0.0.1:4400', subject: 'orders-sidecar', claims: {}, tokenKind: 'jwt', expiresAt: 4_000_000_000, actors: [], scopes: new Set() };
const cp = await startControlPlane(cfg, { log: silentLogger, parse: validatePolicyForControlPlane, authenticator: { authenticate: () => ({ ok: true, identity: id }) } });

const gc = (globalThis as { gc?: () => void }).gc;
const mem = (): { heap: number; rss: number } => {
  gc?.();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
};
const base = mem();

const arrived: number[] = new Array<number>(N).fill(0);
let target = '';
const watches: PolicyWatch[] = [];
for (let i = 0; i < N; i++) {
  const w = createPolicyWatch({
    address: `127.0.0.1:${cp.port}`,
    service: 'orders',
    instanceId: `bench-${i}`,
    token: async () => 'bench',
    stateDir: join(dir, 'state', String(i)),
    compile: (text, file) => parsePolicyText(text, file, { service: 'orders' }),
    onPolicy: (p) => {
      if (p.version === target) arrived[i] = performance.now();
    },
    log: silentLogger,
  });
  watches.push(w);
}
const waitAll = async (pred: () => boolean, ms: number): Promise<boolean> => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
};
const first = parsePolicyText(policy(0), 'x', { service: 'orders' }).version;
await waitAll(() => watches.every((w) => w.current()?.version === first), 60_000);
const loaded = mem();

const pct = (xs: number[], p: number): number => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN;
console.log(`streams: ${N}; heap +${((loaded.heap - base.heap) / 2 ** 20).toFixed(1)} MiB, rss +${((loaded.rss - base.rss) / 2 ** 20).toFixed(1)} MiB for the streams (client and server in this process)`);
for (let r = 1; r <= ROUNDS; r++) {
  target = parsePolicyText(policy(r), 'x', { service: 'orders' }).version;
  arrived.fill(0);
  const t0 = performance.now();
  publish(r);
  const ok = await waitAll(() => arrived.every((t) => t > 0), 30_000);
  const lat = arrived.map((t) => t - t0).sort((a, b) => a - b);
  console.log(`round ${r}: ${ok ? 'all' : 'NOT all'} ${N} watches on the new version; push latency after the file write: min ${lat[0]?.toFixed(0)} ms, p50 ${pct(lat, 0.5).toFixed(0)} ms, max ${lat.at(-1)?.toFixed(0)} ms (includes the ${cfg.watch.debounceMs} ms watch debounce)`);
}
await Promise.all(watches.map((w) => w.close()));
await cp.close();
