/**
 * Soak: holds a mixed load on a real `ward sidecar` process for a configurable time and samples
 * its memory, then writes a results file and prints a summary.
 *
 *   npx node scripts/soak.ts --duration 60s [--concurrency 16] [--sample 2s] [--out tmp/soak.json]
 *
 * The sidecar runs in its own process (started through `startSidecar`, the code behind
 * `ward sidecar`, with `--expose-gc`), in front of the sample gRPC app, trusting a local test
 * issuer (test/security/support/issuer.ts: real keys, discovery, JWKS). Every sample asks the
 * sidecar process, over IPC, to run a full GC and report `process.memoryUsage()`: heap after GC
 * is what a leak grows. The load mixes what production sees:
 *   allowed unary calls, allowed server streams, calls denied by policy, calls without a token,
 *   calls with a forged signature, new connections (connect, call, close), and fresh tokens
 *   every 30 s (cache misses, JWKS lookups).
 * An "error" is any call whose outcome is not the one its kind must have (e.g. a denial of an
 * allowed call, an allow of a forged token, a transport failure).
 *
 * Exit code: 0 when there were no errors and heap after GC stayed flat (last-quarter median
 * within `--max-growth-mb` of the first-quarter median), 1 otherwise.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { ordersClientConstructor, startOrdersApp } from '../src/demo/orders-app.ts';
import { startTestIssuer, type TestIssuer } from '../test/security/support/issuer.ts';
import { securityPolicy } from '../test/security/support/ward.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function duration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (m === null) throw new Error(`not a duration: ${s} (e.g. 90s, 5m)`);
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
}

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60s' },
    concurrency: { type: 'string', default: '16' },
    sample: { type: 'string', default: '2s' },
    out: { type: 'string' },
    'max-growth-mb': { type: 'string', default: '8' },
  },
});
const durationMs = duration(values.duration);
const concurrency = Number(values.concurrency);
const sampleMs = duration(values.sample);
const maxGrowthBytes = Number(values['max-growth-mb']) * 1024 * 1024;
const outFile = resolve(values.out ?? join(ROOT, 'tmp', `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`));

// ---- the sidecar process: startSidecar + a memory probe on IPC

const CHILD = `
const { startSidecar } = await import(${JSON.stringify(join(ROOT, 'src/cli/sidecar.ts'))});
const { loadSidecarConfig } = await import(${JSON.stringify(join(ROOT, 'src/config/sidecar.ts'))});
const { createLogger } = await import(${JSON.stringify(join(ROOT, 'src/lib/log.ts'))});
const file = process.argv.at(-1);
const cfg = loadSidecarConfig(file);
const s = await startSidecar(cfg, { log: createLogger({ level: 'warn' }), configFile: file });
process.on('message', (m) => {
  if (m === 'mem') { for (let i = 0; i < 3; i++) globalThis.gc(); process.send({ mem: process.memoryUsage() }); }
  if (m === 'stop') void s.stop().then(() => process.exit(0));
});
process.send({ port: s.ports.inbound });
`;

interface Mem {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

function startSidecarProcess(config: string): Promise<{ proc: ChildProcess; port: number; mem(): Promise<Mem>; stop(): Promise<void> }> {
  const proc = fork('-e', [CHILD, config], { execArgv: ['--expose-gc', '--input-type=module'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolveStart, reject) => {
    proc.once('exit', (code) => reject(new Error(`sidecar exited early (${code})`)));
    proc.once('message', (m: { port: number }) => {
      resolveStart({
        proc,
        port: m.port,
        mem: () =>
          new Promise<Mem>((r) => {
            proc.once('message', (x: { mem: Mem }) => r(x.mem));
            proc.send('mem');
          }),
        stop: () =>
          new Promise<void>((r) => {
            proc.once('exit', () => r());
            proc.send('stop');
          }),
      });
    });
  });
}

// ---- load

type Kind = 'allowed-unary' | 'allowed-stream' | 'denied-policy' | 'no-token' | 'forged' | 'new-connection';
const KINDS: readonly Kind[] = ['allowed-unary', 'allowed-unary', 'allowed-unary', 'allowed-stream', 'denied-policy', 'no-token', 'forged', 'new-connection'];

interface Counts {
  ok: number;
  errors: number;
}

type OrdersStub = grpc.Client & Record<string, (...a: unknown[]) => unknown>;

function unary(c: OrdersStub, method: string, req: unknown, token: string | null): Promise<{ code: grpc.status; reason: string | undefined }> {
  const md = new grpc.Metadata();
  if (token !== null) md.set('authorization', `Bearer ${token}`);
  return new Promise((r) => {
    (c[method] as (...a: unknown[]) => void)(req, md, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null) => {
      const reason = err?.metadata.get('x-ward-reason')[0];
      r({ code: err === null ? grpc.status.OK : err.code, reason: typeof reason === 'string' ? reason : undefined });
    });
  });
}

function stream(c: OrdersStub, token: string): Promise<{ code: grpc.status; n: number }> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return new Promise((r) => {
    let n = 0;
    const call = (c['ListOrders'] as (...a: unknown[]) => grpc.ClientReadableStream<unknown>)({ count: 5, intervalMs: 0 }, md, { deadline: Date.now() + 10_000 });
    call.on('data', () => n++);
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => r({ code: s.code, n }));
  });
}

async function main(): Promise<number> {
  const iss: TestIssuer = await startTestIssuer();
  const app = await startOrdersApp();
  const dir = mkdtempSync(join(tmpdir(), 'ward-soak-'));
  writeFileSync(join(dir, 'policy.yaml'), securityPolicy(iss.issuer));
  writeFileSync(
    join(dir, 'sidecar.yaml'),
    `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:${app.port}", protocol: h2c }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
telemetry: { enabled: false }
logLevel: warn
`,
  );
  const sidecar = await startSidecarProcess(join(dir, 'sidecar.yaml'));
  const Ctor = ordersClientConstructor();
  const target = `127.0.0.1:${sidecar.port}`;
  const shared: OrdersStub[] = Array.from({ length: 4 }, () => new Ctor(target, grpc.credentials.createInsecure()) as unknown as OrdersStub);

  let token = iss.token();
  const forged = `${token.slice(0, token.lastIndexOf('.'))}.${Buffer.alloc(256, 1).toString('base64url')}`;
  const tokenTimer = setInterval(() => {
    token = iss.token({ jti: String(Date.now()) });
  }, 30_000);

  const counts = Object.fromEntries(KINDS.map((k) => [k, { ok: 0, errors: 0 }])) as Record<Kind, Counts>;
  const errorSamples: string[] = [];
  const fail = (k: Kind, what: string): void => {
    counts[k].errors++;
    if (errorSamples.length < 20) errorSamples.push(`${k}: ${what}`);
  };
  const started = Date.now();
  const deadline = started + durationMs;
  async function worker(w: number): Promise<void> {
    // Each worker cycles through every kind in turn, so the mix is the same whatever each costs.
    for (let n = w; Date.now() < deadline; n++) {
      const kind = KINDS[n % KINDS.length] as Kind;
      const c = shared[w % shared.length] as OrdersStub;
      try {
        switch (kind) {
          case 'allowed-unary': {
            const r = await unary(c, 'GetOrder', { id: '1' }, token);
            if (r.code === grpc.status.OK) counts[kind].ok++;
            else fail(kind, `${r.code} ${r.reason ?? ''}`);
            break;
          }
          case 'allowed-stream': {
            const r = await stream(c, token);
            if (r.code === grpc.status.OK && r.n === 5) counts[kind].ok++;
            else fail(kind, `${r.code} after ${r.n}`);
            break;
          }
          case 'denied-policy': {
            const r = await unary(c, 'DeleteOrder', { id: '1' }, token);
            if (r.code === grpc.status.PERMISSION_DENIED && r.reason === 'ERR_POLICY_DENIED') counts[kind].ok++;
            else fail(kind, `${r.code} ${r.reason ?? ''}`);
            break;
          }
          case 'no-token': {
            const r = await unary(c, 'GetOrder', { id: '1' }, null);
            if (r.code === grpc.status.UNAUTHENTICATED && r.reason === 'ERR_TOKEN_MISSING') counts[kind].ok++;
            else fail(kind, `${r.code} ${r.reason ?? ''}`);
            break;
          }
          case 'forged': {
            const r = await unary(c, 'GetOrder', { id: '1' }, forged);
            if (r.code === grpc.status.UNAUTHENTICATED && r.reason === 'ERR_TOKEN_SIGNATURE') counts[kind].ok++;
            else fail(kind, `${r.code} ${r.reason ?? ''}`);
            break;
          }
          case 'new-connection': {
            const fresh = new Ctor(target, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as unknown as OrdersStub;
            const r = await unary(fresh, 'GetOrder', { id: '1' }, token);
            fresh.close();
            if (r.code === grpc.status.OK) counts[kind].ok++;
            else fail(kind, `${r.code} ${r.reason ?? ''}`);
            break;
          }
        }
      } catch (err) {
        fail(kind, String(err));
      }
    }
  }

  const samples: { t: number; rss: number; heapUsed: number; heapTotal: number; external: number }[] = [];
  const sample = async (): Promise<void> => {
    const m = await sidecar.mem();
    samples.push({ t: Date.now() - started, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external });
  };
  await sample();
  const sampler = setInterval(() => void sample(), sampleMs);
  process.stdout.write(`soak: ${values.duration} at concurrency ${concurrency} against ${target}\n`);
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  clearInterval(sampler);
  clearInterval(tokenTimer);
  await new Promise((r) => setTimeout(r, 500)); // let the last calls' resources go
  await sample();

  for (const c of shared) c.close();
  await sidecar.stop();
  await app.close();
  await iss.close();
  rmSync(dir, { recursive: true, force: true });

  // ---- results
  const elapsedS = (Date.now() - started) / 1000;
  const total = Object.values(counts).reduce((n, c) => n + c.ok + c.errors, 0);
  const errors = Object.values(counts).reduce((n, c) => n + c.errors, 0);
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)] ?? 0;
  };
  // The first samples include warm-up (JIT, pools, caches): compare the second quarter with the last.
  const q = Math.max(1, Math.floor(samples.length / 4));
  const early = median(samples.slice(q, 2 * q).map((s) => s.heapUsed));
  const late = median(samples.slice(-q).map((s) => s.heapUsed));
  const growth = late - early;
  const mb = (b: number): number => Math.round((b / 1024 / 1024) * 10) / 10;
  const summary = {
    durationS: Math.round(elapsedS),
    concurrency,
    calls: total,
    callsPerSecond: Math.round(total / elapsedS),
    errors,
    heapAfterGcMb: { min: mb(Math.min(...samples.map((s) => s.heapUsed))), max: mb(Math.max(...samples.map((s) => s.heapUsed))), early: mb(early), late: mb(late), growth: mb(growth) },
    rssMb: { first: mb(samples[0]?.rss ?? 0), last: mb(samples.at(-1)?.rss ?? 0), max: mb(Math.max(...samples.map((s) => s.rss))) },
    externalMb: { first: mb(samples[0]?.external ?? 0), last: mb(samples.at(-1)?.external ?? 0) },
    flat: growth <= maxGrowthBytes,
  };
  const result = {
    when: new Date().toISOString(),
    node: process.version,
    settings: { duration: values.duration, concurrency, sample: values.sample, maxGrowthMb: Number(values['max-growth-mb']) },
    summary,
    byKind: counts,
    errorSamples,
    samples,
  };
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify({ summary, byKind: counts }, null, 2)}\nresults: ${outFile}\n`);
  return errors === 0 && summary.flat ? 0 : 1;
}

process.exitCode = await main();
