/**
 * The load benchmark (issue 8, BENCHMARKS.md): ward against the direct path, HAProxy 2.6
 * `jwt_verify` and a naive `node:http2` + jose proxy, under h2load, on one machine, in one run.
 *
 *   npm run bench                      # full run: every scenario, 5 interleaved rounds (~45 min)
 *   npm run bench -- --quick           # 1 round, short phases (a smoke test of the harness)
 *   npm run bench -- --rounds 5 --scenarios direct,ward,haproxy
 *   npm run bench -- --profile --rates saturation   # ward alone under load with --cpu-prof; top functions
 *   npm run bench -- --perf --scenarios ward-nocache   # Linux perf under saturation: native code too, µs per call
 *   npm run bench -- --serve ward      # start the app and one scenario, print an h2load line, wait for Ctrl-C
 *   npm run bench -- --soak 600        # ward alone at 2000 rps for 10 minutes, RSS sampled every 10 s
 *
 * Installs nothing: it checks for `h2load` (Debian nghttp2-client), `nghttpd` (nghttp2-server,
 * the app; `--app node` uses a node:http2 app instead) and `haproxy` (Debian haproxy 2.6), and
 * stops with the apt-get line if one is missing.
 *
 * Pinning (taskset): the proxy under test runs alone on `--proxy-cpus` (default core 1); h2load,
 * the app, the issuer and the OTLP sink share `--load-cpus` (default core 0). Per round and per
 * scenario a fresh proxy process is started, checked (an allowed and a forged-token call), then
 * measured for each workload: saturation (closed loop, as fast as it goes), then fixed rates of
 * 1000 and 2000 requests/s with per-request latencies from h2load's log file. Scenario order
 * rotates between rounds. Every figure is reported as the median over rounds of the per-round
 * value (ratios and added latency are computed within a round, against that round's direct run).
 *
 * Output: scripts/bench/results/latest.json (every sample and the medians) and the markdown
 * table between the BENCH:BEGIN/END markers of BENCHMARKS.md (`--no-write-md` to skip).
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import http2 from 'node:http2';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { arch, cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { percentile, runH2load, type H2loadResult } from './h2load.ts';
import { grpcFrame, jsonBody } from './payloads.ts';
import {
  cpuMicros,
  freePort,
  hasCommand,
  mintToken,
  newRsaKey,
  peakRssKb,
  privateKb,
  type Proc,
  rssKb,
  sleep,
  startIssuer,
  startOtlpSink,
  startPinned,
  tcpOpen,
  waitFor,
} from './peers.ts';
import { median, renderMarkdown, summarize, type Sample, type Results } from './report.ts';
import { summarizeProfile } from './profile-summary.ts';
import { parsePerfReport, renderPerfSummary, summarizePerf } from './perf-summary.ts';
import { SIDECAR_NODE_OPTIONS } from '../../src/inject/settings.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    scenarios: { type: 'string', default: 'direct,ward,ward-nocache,ward-notel,haproxy,naive,ward-2w' },
    workloads: { type: 'string', default: 'grpc,get' },
    'sat-seconds': { type: 'string', default: '5' },
    'rate-seconds': { type: 'string', default: '8' },
    'warmup-seconds': { type: 'string', default: '1' },
    'prime-seconds': { type: 'string', default: '10' },
    rates: { type: 'string', default: '1000,2000' },
    'sat-clients': { type: 'string', default: '4' },
    'sat-streams': { type: 'string', default: '32' },
    'rate-clients': { type: 'string', default: '2' },
    'proxy-cpus': { type: 'string', default: '1' },
    'load-cpus': { type: 'string', default: '0' },
    app: { type: 'string', default: 'nghttpd' },
    'ward-node-flags': { type: 'string' },
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    perf: { type: 'boolean', default: false },
    soak: { type: 'string' },
    serve: { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'scripts/bench/results/latest.json') },
    'no-write-md': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    baseline: { type: 'string' },
    variants: { type: 'string' },
    alloc: { type: 'string' },
  },
});

/**
 * Node/V8 flags for the sidecar in the benchmark: what an injected sidecar runs with
 * (`SIDECAR_NODE_OPTIONS`, docs/performance.md): a small young generation (1 MB semi-spaces
 * instead of V8's 16 MB), so each scavenge pauses for a millisecond or two instead of 15-50 ms on
 * a pinned core, and an old-generation limit under 2 GB, so V8 lets the heap grow ~2x its live
 * set between full collections instead of ~4x (results/gc-flags.json, docs/performance.md).
 */
export const WARD_NODE_FLAGS: readonly string[] = SIDECAR_NODE_OPTIONS.split(' ');
/** The environment the image gives ward (deploy/Dockerfile): two malloc arenas. */
const WARD_ENV: NodeJS.ProcessEnv = { ...process.env, MALLOC_ARENA_MAX: '2' };

const quick = opt.quick;
const rounds = quick ? 1 : Number(opt.rounds);
const satSeconds = quick ? 2 : Number(opt['sat-seconds']);
const rateSeconds = quick ? 3 : Number(opt['rate-seconds']);
const warmupSeconds = Number(opt['warmup-seconds']);
// A fresh proxy process is primed with this much unmeasured saturation per workload before its
// first measured phase. V8 compiles the request path while it runs: a ward process took ~10 s of
// gRPC saturation to reach its steady rate (18k calls/s in its first 5 s, 27-30k after; cache
// off 6.6k, then 10-11k), so a phase that began 1 s after start measured the compiler at work.
// Every scenario gets it, the peers too.
const primeSeconds = quick ? 1 : Number(opt['prime-seconds']);
// Fixed request rates; `saturation` in the list is accepted and ignored (the closed-loop phase always runs).
const rates = opt.rates
  .split(',')
  .filter((r) => r !== '' && r !== 'saturation')
  .map((r) => {
    const n = Number(r);
    if (!Number.isInteger(n) || n <= 0) {
      console.error(`bench: --rates: '${r}' is not a request rate (a positive integer, or 'saturation')`);
      process.exit(2);
    }
    return n;
  });
const proxyCpus = opt['proxy-cpus'];
const loadCpus = opt['load-cpus'];
const wardNodeFlags = opt['ward-node-flags'] === undefined ? WARD_NODE_FLAGS : opt['ward-node-flags'].split(' ').filter((s) => s !== '');

// ---- prerequisites

function requireCommand(cmd: string, pkg: string): void {
  if (!hasCommand(cmd)) {
    console.error(`bench: '${cmd}' not found. Install it with: sudo apt-get install -y ${pkg}`);
    process.exit(2);
  }
}
requireCommand('taskset', 'util-linux');
requireCommand('h2load', 'nghttp2-client');
if (opt.app === 'nghttpd') requireCommand('nghttpd', 'nghttp2-server');
const scenarioIds = opt.scenarios.split(',');
if (scenarioIds.includes('haproxy')) requireCommand('haproxy', 'haproxy');
if (opt.perf) requireCommand('perf', 'linux-perf');
const workloadIds = opt.workloads.split(',') as ('grpc' | 'get')[];

// ---- fixtures

const work = mkdtempSync(join(tmpdir(), 'ward-bench-'));
const logs = join(work, 'logs');
mkdirSync(logs);
console.log(`bench: work dir ${work}`);

const key = newRsaKey();
const issuer = await startIssuer(key);
const sink = await startOtlpSink();
const AUDIENCE = 'urn:ward:bench';
const SCOPE = 'bench.call';
const now = Math.floor(Date.now() / 1000);
const claims = {
  iss: issuer.issuer,
  sub: 'bench-client',
  client_id: 'bench-client',
  aud: AUDIENCE,
  scope: `${SCOPE} bench.read`,
  iat: now,
  exp: now + 6 * 3600,
  jti: 'b3c1f6d2-5a0e-4e8f-9d7c-2f4b6a8e1c03',
};
const token = mintToken(key, claims);
const forged = `${token.slice(0, -6)}AAAAAA`;
writeFileSync(join(work, 'pub.pem'), key.publicPem);

const GRPC_PATH = '/ward.bench.v1.Bench/Call';
const GET_PATH = '/api/items';
const grpcBody = grpcFrame(1021);
writeFileSync(join(work, 'request.bin'), grpcBody);
const htdocs = join(work, 'htdocs');
mkdirSync(join(htdocs, 'ward.bench.v1.Bench'), { recursive: true });
mkdirSync(join(htdocs, 'api'));
writeFileSync(join(htdocs, GRPC_PATH), grpcBody);
writeFileSync(join(htdocs, GET_PATH), jsonBody(1024));

// ---- the app (shared by every scenario)

const appPort = await freePort();
const app: Proc =
  opt.app === 'nghttpd'
    ? startPinned('app', loadCpus, 'nghttpd', ['--no-tls', '-a', '127.0.0.1', '-d', htdocs, '--trailer', 'grpc-status: 0', String(appPort)], join(logs, 'app.log'))
    : startPinned('app', loadCpus, process.execPath, [join(ROOT, 'scripts/bench/app.ts'), '--port', String(appPort)], join(logs, 'app.log'));
await waitFor('the app', () => tcpOpen(appPort));

// ---- scenarios

interface Running {
  readonly port: number;
  readonly proc: Proc | null;
  readonly metricsUrl?: string;
  /** ward's admin `/memory` document. */
  readonly memoryUrl?: string;
}

interface Scenario {
  readonly id: string;
  readonly label: string;
  start(tag: string, extraNodeFlags?: readonly string[]): Promise<Running>;
}

interface WardOptions {
  readonly cacheEntries: number;
  readonly concurrency: number;
  readonly telemetry?: boolean;
  readonly cpus?: string;
  /** Run ward from this checkout instead of this one (`--baseline REV`). */
  readonly root?: string;
  /** Node flags instead of `--ward-node-flags` (`--variants`). */
  readonly nodeFlags?: readonly string[];
  /** Environment variables on top of ward's (`--variants` items spelled `NAME=value`). */
  readonly env?: Readonly<Record<string, string>>;
  /** The client speaks TLS to ward (`inbound.tls`, sniffed on the one port; ALPN h2). */
  readonly tls?: boolean;
}

/** Ports served over TLS in this run (`tls` scenarios): h2load and the checks use https there. */
const tlsPorts = new Set<number>();

/** A self-signed certificate for 127.0.0.1 in the work directory (openssl), made once. */
let benchCert: { cert: string; key: string } | null = null;
function tlsCertificate(): { cert: string; key: string } {
  if (benchCert === null) {
    const cert = join(work, 'tls.crt');
    const key = join(work, 'tls.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    benchCert = { cert, key };
  }
  return benchCert;
}

function wardConfig(port: number, adminPort: number, o: WardOptions): string {
  const policy = `apiVersion: ward.dev/v1
kind: Policy
service: bench
issuers:
  - issuer: ${issuer.issuer}
    audiences: [${AUDIENCE}]
    algorithms: [RS256]
rules:
  - name: no-admin
    action: deny
    match:
      grpc: [/ward.bench.v1.Bench/Admin]
  - name: callers
    action: allow
    match:
      grpc: [${GRPC_PATH}]
      http: [{ methods: [GET], prefix: /api }]
    when:
      - scopes: { allOf: [${SCOPE}] }
`;
  writeFileSync(join(work, 'policy.yaml'), policy);
  const tls = o.tls === true ? `\n  tls: { certFile: ${tlsCertificate().cert}, keyFile: ${tlsCertificate().key} }` : '';
  return `service: bench
inbound:
  listen: { host: 127.0.0.1, port: ${port} }${tls}
upstream:
  url: http://127.0.0.1:${appPort}
  protocol: h2c
policy:
  file: policy.yaml
admin: { host: 127.0.0.1, port: ${adminPort} }
authn:
  cacheEntries: ${o.cacheEntries}
${o.telemetry === false ? 'telemetry: { enabled: false }' : `telemetry:\n  endpoint: http://127.0.0.1:${sink.port}\n  sampleRatio: 1`}
${o.concurrency > 1 ? `concurrency: ${o.concurrency}\n` : ''}logLevel: info
`;
}

/** How each ward scenario runs, for warmCompileCaches. */
const wardRuns = new Map<string, WardOptions>();

/** The checkout, Node flags and environment a ward scenario runs with. */
function wardProcess(o: WardOptions): { root: string; flags: readonly string[]; env: NodeJS.ProcessEnv } {
  return { root: o.root ?? ROOT, flags: o.nodeFlags ?? wardNodeFlags, env: o.env === undefined ? WARD_ENV : { ...WARD_ENV, ...o.env } };
}

function wardScenario(id: string, label: string, o: WardOptions): Scenario {
  wardRuns.set(id, o);
  return {
    id,
    label,
    async start(tag, extraNodeFlags = []) {
      const port = await freePort();
      const adminPort = await freePort();
      const cfg = join(work, `${id.replace(/[^A-Za-z0-9._-]/g, '_')}.yaml`);
      writeFileSync(cfg, wardConfig(port, adminPort, o));
      const w = wardProcess(o);
      const proc = startPinned(
        id,
        o.cpus ?? proxyCpus,
        process.execPath,
        [...w.flags, ...extraNodeFlags, join(w.root, 'bin/ward.js'), 'sidecar', '--config', cfg],
        join(logs, `${id.replace(/[^A-Za-z0-9._-]/g, '_')}-${tag}.log`),
        w.env,
      );
      await waitFor(`${id} readiness`, async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200);
      if (o.tls === true) tlsPorts.add(port);
      return { port, proc, metricsUrl: `http://127.0.0.1:${adminPort}/metrics`, memoryUrl: `http://127.0.0.1:${adminPort}/memory` };
    },
  };
}

function haproxyConfig(port: number): string {
  // The HAProxy blog's JWT recipe (alg allow-list, iss, aud, signature, exp, scope), RS256 with
  // the issuer's public key, HTTP/2 prior knowledge on both sides, one thread.
  return `global
  nbthread 1
  maxconn 4000
  log stderr format raw local0 err

defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s

frontend fe
  bind 127.0.0.1:${port} proto h2
  http-request deny deny_status 401 unless { req.hdr(authorization) -m found }
  http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('$.alg')
  http-request set-var(txn.iss) http_auth_bearer,jwt_payload_query('$.iss')
  http-request set-var(txn.aud) http_auth_bearer,jwt_payload_query('$.aud')
  http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('$.exp','int')
  http-request set-var(txn.scope) http_auth_bearer,jwt_payload_query('$.scope')
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.iss) -m str ${issuer.issuer} }
  http-request deny deny_status 401 unless { var(txn.aud) -m str ${AUDIENCE} }
  http-request deny deny_status 401 unless { http_auth_bearer,jwt_verify(txn.alg,"${join(work, 'pub.pem')}") -m int 1 }
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny deny_status 403 unless { var(txn.scope) -m sub ${SCOPE} }
  http-request deny deny_status 403 unless { path ${GRPC_PATH} } || { method GET } { path_beg /api/ }
  default_backend app

backend app
  server app 127.0.0.1:${appPort} proto h2
`;
}

const ALL: Scenario[] = [
  {
    id: 'direct',
    label: 'direct (h2load → app)',
    start: async () => ({ port: appPort, proc: null }),
  },
  wardScenario('ward', 'ward, every feature on', { cacheEntries: 10_000, concurrency: 1 }),
  wardScenario('ward-nocache', 'ward, verified-token cache off', { cacheEntries: 0, concurrency: 1 }),
  {
    id: 'haproxy',
    label: 'HAProxy 2.6 jwt_verify',
    async start(tag) {
      const port = await freePort();
      const cfg = join(work, 'haproxy.cfg');
      writeFileSync(cfg, haproxyConfig(port));
      const proc = startPinned('haproxy', proxyCpus, 'haproxy', ['-db', '-f', cfg], join(logs, `haproxy-${tag}.log`));
      await waitFor('haproxy', () => tcpOpen(port));
      return { port, proc };
    },
  },
  {
    id: 'naive',
    label: 'naive node:http2 + jose',
    async start(tag) {
      const port = await freePort();
      const proc = startPinned(
        'naive',
        proxyCpus,
        process.execPath,
        [
          join(ROOT, 'scripts/bench/naive-proxy.ts'),
          '--port', String(port),
          '--app', `http://127.0.0.1:${appPort}`,
          '--jwks', issuer.jwksUri,
          '--issuer', issuer.issuer,
          '--audience', AUDIENCE,
          '--scope', SCOPE,
        ],
        join(logs, `naive-${tag}.log`),
      );
      await waitFor('naive proxy', () => tcpOpen(port));
      return { port, proc };
    },
  },
  wardScenario('ward-notel', 'ward, telemetry off', { cacheEntries: 10_000, concurrency: 1, telemetry: false }),
  wardScenario('ward-2w', 'ward, concurrency 2 (both cores)', { cacheEntries: 10_000, concurrency: 2, cpus: `${proxyCpus},${loadCpus}` }),
  // Not in the default list: what TLS from the caller (inbound.tls) adds to every feature on.
  wardScenario('ward-tls', 'ward, every feature on, TLS from h2load', { cacheEntries: 10_000, concurrency: 1, tls: true }),
];

// `--baseline REV`: every ward scenario also runs from that commit (src/ and bin/ extracted with
// git archive next to this checkout's node_modules), interleaved with the others: how an
// optimisation is measured (BENCHMARKS.md "what each optimisation bought").
const WARD_OPTIONS: Record<string, WardOptions> = {
  ward: { cacheEntries: 10_000, concurrency: 1 },
  'ward-nocache': { cacheEntries: 0, concurrency: 1 },
  'ward-notel': { cacheEntries: 10_000, concurrency: 1, telemetry: false },
  'ward-tls': { cacheEntries: 10_000, concurrency: 1, tls: true },
};
// `--variants 'small=--max-semi-space-size=1;st=--single-threaded-gc'`: every selected ward
// scenario also runs with each set of Node flags (how the GC settings were chosen). An item
// spelled `NAME=value` (no leading `--`) sets an environment variable instead, and keeps the
// default flags unless the variant names flags too: `je=LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`.
if (opt.variants !== undefined) {
  for (const v of opt.variants.split(';')) {
    const eq = v.indexOf('=');
    const name = v.slice(0, eq);
    const items = v.slice(eq + 1).split(' ').filter((x) => x !== '');
    const isEnv = (x: string): boolean => !x.startsWith('-') && /^[A-Za-z_][A-Za-z0-9_]*=/.test(x);
    const flags = items.filter((x) => !isEnv(x));
    const env = Object.fromEntries(items.filter(isEnv).map((x) => [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)]));
    const envOnly = flags.length === 0 && Object.keys(env).length > 0;
    for (const id of scenarioIds.filter((x) => WARD_OPTIONS[x] !== undefined)) {
      const twin = `${id}[${name}]`;
      const label = `${ALL.find((x) => x.id === id)?.label ?? id} [${items.join(' ') || 'no flags'}]`;
      ALL.push(wardScenario(twin, label, { ...(WARD_OPTIONS[id] as WardOptions), ...(envOnly ? {} : { nodeFlags: flags }), env }));
      scenarioIds.push(twin);
    }
  }
}
if (opt.baseline !== undefined) {
  const rev = opt.baseline;
  const root = join(work, `baseline-${rev.replace(/[^A-Za-z0-9._-]/g, '_')}`);
  mkdirSync(root);
  // native/ from the eighteenth session on: the baseline's ward trims its file pages as it would
  // have (its addon built from its own source), or the A/B would compare RSS unfairly.
  const hasNative = spawnSync('git', ['-C', ROOT, 'cat-file', '-e', `${rev}:native`]).status === 0;
  execFileSync('sh', ['-c', `git -C '${ROOT}' archive '${rev}' src bin package.json${hasNative ? ' native' : ''} | tar -x -C '${root}'`]);
  execFileSync('ln', ['-s', join(ROOT, 'node_modules'), join(root, 'node_modules')]);
  if (hasNative) execFileSync(process.execPath, [join(root, 'bin', 'build-native.js'), '--require'], { stdio: 'ignore' });
  for (const id of scenarioIds.filter((x) => WARD_OPTIONS[x] !== undefined)) {
    const o = WARD_OPTIONS[id];
    if (o === undefined) continue;
    const twin = `${id}@${rev}`;
    ALL.push(wardScenario(twin, `${ALL.find((x) => x.id === id)?.label ?? id} (at ${rev})`, { ...o, root }));
    scenarioIds.push(twin);
  }
}

// ---- checks and measurement

interface CallOutcome {
  readonly status: number;
  readonly grpcStatus: string | undefined;
  readonly bytes: number;
}

function call(port: number, workload: 'grpc' | 'get', bearer: string): Promise<CallOutcome> {
  return new Promise((resolveCall, reject) => {
    const s = tlsPorts.has(port)
      ? http2.connect(`https://127.0.0.1:${port}`, { ca: readFileSync(tlsCertificate().cert) })
      : http2.connect(`http://127.0.0.1:${port}`);
    s.on('error', reject);
    const headers: http2.OutgoingHttpHeaders =
      workload === 'grpc'
        ? { ':method': 'POST', ':path': GRPC_PATH, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${bearer}` }
        : { ':method': 'GET', ':path': GET_PATH, authorization: `Bearer ${bearer}` };
    const req = s.request(headers, { endStream: workload === 'get' });
    let status = 0;
    let grpcStatus: string | undefined;
    let bytes = 0;
    req.on('response', (h) => {
      status = Number(h[':status']);
      grpcStatus = h['grpc-status'] as string | undefined;
    });
    req.on('trailers', (t) => {
      grpcStatus = (t['grpc-status'] as string | undefined) ?? grpcStatus;
    });
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('close', () => {
      s.close();
      resolveCall({ status, grpcStatus, bytes });
    });
    req.on('error', reject);
    if (workload === 'grpc') req.end(grpcBody);
  });
}

/** The scenario really serves allowed calls, and really refuses a forged token. */
async function check(sc: Scenario, port: number): Promise<void> {
  for (const w of workloadIds) {
    const ok = await call(port, w, token);
    const good = ok.status === 200 && (w === 'get' ? ok.bytes === 1024 : ok.grpcStatus === '0' && ok.bytes === grpcBody.length);
    if (!good) throw new Error(`${sc.id}/${w}: allowed call failed: ${JSON.stringify(ok)}`);
    if (sc.id === 'direct') continue;
    const bad = await call(port, w, forged);
    if (bad.status === 200 && (w === 'get' || bad.grpcStatus === '0')) throw new Error(`${sc.id}/${w}: a forged token was let through`);
  }
}

function h2loadHeaders(w: 'grpc' | 'get'): string[] {
  const h = [`authorization: Bearer ${token}`];
  if (w === 'grpc') h.push('content-type: application/grpc', 'te: trailers');
  return h;
}

function url(port: number, w: 'grpc' | 'get'): string {
  return `${tlsPorts.has(port) ? 'https' : 'http'}://127.0.0.1:${port}${w === 'grpc' ? GRPC_PATH : GET_PATH}`;
}

function assertClean(r: H2loadResult, what: string): void {
  const bad = r.failed + r.errored + r.status4xx + r.status5xx;
  if (bad > 0 || r.succeeded === 0) {
    throw new Error(`${what}: ${r.succeeded} succeeded, ${r.failed} failed, ${r.errored} errored, ${r.status4xx} 4xx, ${r.status5xx} 5xx\n${r.raw}`);
  }
}

/** h2load's closed loop on `port` (`--sat-clients` × `--sat-streams`), no warm-up of its own; at a rate per connection if given. */
function saturationLoad(port: number, w: 'grpc' | 'get', durationS: number, rpsPerClient?: number): Promise<H2loadResult> {
  return runH2load({
    url: url(port, w),
    cpus: loadCpus,
    headers: h2loadHeaders(w),
    ...(w === 'grpc' ? { dataFile: join(work, 'request.bin') } : {}),
    clients: Number(opt['sat-clients']),
    streams: Number(opt['sat-streams']),
    durationS,
    warmupS: 0,
    ...(rpsPerClient === undefined ? {} : { rpsPerClient }),
  });
}

/** Unmeasured saturation, so that what is measured next is the process's steady state. */
async function prime(sc: Scenario, run: Running, w: 'grpc' | 'get'): Promise<void> {
  assertClean(await saturationLoad(run.port, w, primeSeconds), `${sc.id}/${w} priming`);
}

async function measure(sc: Scenario, run: Running, w: 'grpc' | 'get', round: number): Promise<Sample> {
  const pid = run.proc?.pid;
  const base = {
    url: url(run.port, w),
    cpus: loadCpus,
    headers: h2loadHeaders(w),
    ...(w === 'grpc' ? { dataFile: join(work, 'request.bin') } : {}),
  };

  // Saturation: closed loop; CPU read around the measured part only (after h2load's warm-up).
  const satWarm = warmupSeconds;
  const cpuAt = pid === undefined ? null : { t0: 0, c0: 0 };
  const satPromise = runH2load({ ...base, clients: Number(opt['sat-clients']), streams: Number(opt['sat-streams']), durationS: satSeconds, warmupS: satWarm });
  // The proxy's private pages through the saturation run, where its peak RSS falls: no
  // high-water mark is kept for them, so they are polled (every 25 ms; ~70 µs of CPU each, on
  // the orchestrator, which is not pinned).
  let peakPrivate = 0;
  const poll = pid === undefined ? undefined : setInterval(() => (peakPrivate = Math.max(peakPrivate, privateKb(pid))), 25);
  satPromise.finally(() => clearInterval(poll)).catch(() => undefined); // a failed run is reported where it is awaited
  if (pid !== undefined && cpuAt !== null) {
    await sleep(satWarm * 1000 + 100);
    cpuAt.c0 = cpuMicros(pid);
    cpuAt.t0 = performance.now();
  }
  const sat = await satPromise;
  assertClean(sat, `${sc.id}/${w} saturation`);
  let satCpu: number | null = null;
  if (pid !== undefined && cpuAt !== null) {
    const secs = Math.min(satSeconds, (performance.now() - cpuAt.t0) / 1000);
    satCpu = (cpuMicros(pid) - cpuAt.c0) / (sat.rps * secs);
  }

  const fixed: Sample['fixed'] = {};
  for (const rate of rates) {
    // One stream at a time per connection: with many streams h2load's --rps sends in bursts,
    // which measures the burst, not the proxy.
    const clients = Number(opt['rate-clients']);
    const logFile = join(work, `lat-${sc.id}-${w}-${rate}.tsv`);
    const p = runH2load({ ...base, clients, streams: 1, durationS: rateSeconds, warmupS: warmupSeconds, rpsPerClient: rate / clients, logFile });
    let c0 = 0;
    let t0 = 0;
    if (pid !== undefined) {
      await sleep(warmupSeconds * 1000 + 100);
      c0 = cpuMicros(pid);
      t0 = performance.now();
    }
    const r = await p;
    assertClean(r, `${sc.id}/${w} at ${rate}/s`);
    const lat = r.latencies as Float64Array;
    let cpu: number | null = null;
    if (pid !== undefined) {
      const secs = (performance.now() - t0) / 1000;
      cpu = (cpuMicros(pid) - c0) / (r.rps * Math.min(secs, rateSeconds));
    }
    fixed[String(rate)] = { rps: r.rps, p50Us: percentile(lat, 50), p90Us: percentile(lat, 90), p99Us: percentile(lat, 99), cpuUsPerReq: cpu, n: lat.length };
  }
  return {
    scenario: sc.id,
    workload: w,
    round,
    saturationRps: sat.rps,
    saturationCpuUsPerReq: satCpu,
    fixed,
    peakRssMb: pid === undefined ? null : peakRssKb(pid) / 1024,
    peakPrivateMb: pid === undefined ? null : peakPrivate / 1024,
  };
}

async function metricValue(u: string | undefined, name: string): Promise<number | null> {
  if (u === undefined) return null;
  try {
    const text = await (await fetch(u)).text();
    let total = 0;
    let seen = false;
    for (const line of text.split('\n')) {
      if (line.startsWith(name)) {
        total += Number(line.slice(line.lastIndexOf(' ') + 1));
        seen = true;
      }
    }
    return seen ? total : null;
  } catch {
    return null;
  }
}

// ---- modes

function machine(): Results['machine'] {
  const lscpu = execFileSync('lscpu', { encoding: 'utf8' });
  const field = (n: string): string => new RegExp(`^${n}:\\s+(.*)$`, 'm').exec(lscpu)?.[1]?.trim() ?? '?';
  const ver = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]?.trim() ?? '?';
    } catch {
      return 'not installed';
    }
  };
  let commit = '?';
  try {
    commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    // not a checkout
  }
  return {
    cpu: `${field('Model name')} (${field('CPU\\(s\\)')} vCPU, ${field('Hypervisor vendor')} guest)`,
    cores: cpus().length,
    kernel: `${release()} ${arch()}`,
    node: process.version,
    h2load: ver('h2load', ['--version']),
    haproxy: ver('haproxy', ['-v']),
    app: opt.app === 'nghttpd' ? ver('nghttpd', ['--version']) : 'scripts/bench/app.ts (node:http2)',
    commit,
  };
}

/**
 * Fills the compile cache of every tree and flag set the selected ward scenarios run with, before
 * anything is measured. Node keys the cache by a module's path and by the V8 flags other than heap
 * sizes, so the first ward process of a new checkout, worktree or `--baseline` tree would load the
 * type stripper (~20 MB for its whole life): the first round's peak came out ~20 MB above the
 * others in every run before this.
 */
function warmCompileCaches(ids: readonly string[]): void {
  const done = new Set<string>();
  for (const id of ids) {
    const o = wardRuns.get(id);
    if (o === undefined) continue;
    const { root, flags, env } = wardProcess(o);
    const key = JSON.stringify([root, flags, env]);
    if (done.has(key)) continue;
    done.add(key);
    execFileSync(process.execPath, [...flags, join(root, 'bin/warm-compile-cache.js')], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  }
}

/** A ward process that loaded the type stripper is not measured as injected: refuse the sample. */
async function assertCompiled(sc: Scenario, run: Running): Promise<void> {
  if (run.memoryUrl === undefined) return;
  // A `--baseline` older than the field does not say.
  const m = (await (await fetch(run.memoryUrl)).json()) as { typeStripperLoaded?: boolean };
  if (m.typeStripperLoaded === true) {
    throw new Error(`${sc.id}: ward loaded Node's type stripper (a module missed the compile cache), so its memory is ~20 MB above an injected sidecar's`);
  }
}

async function benchmark(): Promise<void> {
  warmCompileCaches(scenarioIds);
  const selected = scenarioIds.map((id) => {
    const s = ALL.find((x) => x.id === id);
    if (s === undefined) throw new Error(`unknown scenario ${id} (known: ${ALL.map((x) => x.id).join(', ')})`);
    return s;
  });
  const samples: Sample[] = [];
  const extras: Record<string, unknown> = {};
  for (let round = 0; round < rounds; round++) {
    // Rotate the order so no scenario always runs first (or right after the same neighbour).
    const order = selected.map((_, i) => selected[(i + round) % selected.length] as Scenario);
    for (const sc of order) {
      console.log(`bench: round ${round + 1}/${rounds}: ${sc.id}`);
      const run = await sc.start(`r${round}`);
      try {
        await check(sc, run.port);
        for (const w of workloadIds) {
          if (primeSeconds > 0) await prime(sc, run, w);
          const s = await measure(sc, run, w, round);
          samples.push(s);
          const f = (v: number | null | undefined, d = 0): string => (v === null || v === undefined ? '-' : v.toFixed(d));
          console.log(
            `  ${w}: ${f(s.saturationRps)} rps, ${f(s.saturationCpuUsPerReq, 1)} µs/req` +
              rates.map((r) => ` | @${r}: p50 ${f(s.fixed[String(r)]?.p50Us)} p99 ${f(s.fixed[String(r)]?.p99Us)} µs, ${f(s.fixed[String(r)]?.cpuUsPerReq, 1)} µs/req`).join('') +
              ` | peak ${f(s.peakRssMb, 1)} MB`,
          );
        }
        await assertCompiled(sc, run);
        const dropped = await metricValue(run.metricsUrl, 'ward_telemetry_dropped_total');
        if (dropped !== null) extras[`${sc.id}-r${round}-telemetryDropped`] = dropped;
      } finally {
        await run.proc?.stop();
      }
    }
  }
  const results: Results = {
    generatedAt: new Date().toISOString(),
    machine: machine(),
    method: {
      rounds,
      primeSeconds,
      saturation: { clients: Number(opt['sat-clients']), streamsPerClient: Number(opt['sat-streams']), seconds: satSeconds, warmupSeconds },
      fixedRate: { rates, clients: Number(opt['rate-clients']), seconds: rateSeconds, warmupSeconds },
      pinning: { proxy: proxyCpus, loadGeneratorAndApp: loadCpus },
      wardNodeFlags,
      token: { alg: 'RS256', bytes: token.length },
      grpcRequestBytes: grpcBody.length,
      otlpSink: { calls: sink.stats.calls, bytes: sink.stats.bytes },
      extras,
    },
    scenarios: selected.map((s) => ({ id: s.id, label: s.label })),
    samples,
    summary: summarize(samples, workloadIds, rates),
  };
  mkdirSync(dirname(opt.out), { recursive: true });
  writeFileSync(opt.out, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`bench: wrote ${opt.out}`);
  const md = renderMarkdown(results);
  console.log(`\n${md}`);
  if (!opt['no-write-md']) {
    const file = join(ROOT, 'BENCHMARKS.md');
    const text = readFileSync(file, 'utf8');
    const a = text.indexOf('<!-- BENCH:BEGIN -->');
    const b = text.indexOf('<!-- BENCH:END -->');
    if (a !== -1 && b > a) {
      writeFileSync(file, `${text.slice(0, a + '<!-- BENCH:BEGIN -->'.length)}\n${md}\n${text.slice(b)}`);
      console.log('bench: updated BENCHMARKS.md');
    }
  }
}

/**
 * ward alone under gRPC load with --cpu-prof (saturation with `--rates saturation`, else the first
 * of `--rates`); prints the heaviest functions by self time.
 */
async function profile(): Promise<void> {
  const sc = ALL.find((s) => s.id === (scenarioIds.length === 1 ? scenarioIds[0] : 'ward')) as Scenario;
  const dir = join(work, 'prof');
  mkdirSync(dir);
  const run = await sc.start('prof', ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
  try {
    await check(sc, run.port);
    const r = await saturationLoad(run.port, 'grpc', satSeconds * 2, opt.rates === 'saturation' ? undefined : Number(opt.rates.split(',')[0]) / Number(opt['sat-clients']));
    assertClean(r, 'profile');
    console.log(`${r.rps.toFixed(0)} rps`);
  } finally {
    // SIGINT lets Node write the profile on the way out (as SIGTERM does through ward's drain).
    await run.proc?.stop(15_000);
  }
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  for (const f of files) {
    console.log(`profile: ${join(dir, f)}`);
    console.log(summarizeProfile(readFileSync(join(dir, f), 'utf8'), 40));
  }
}

/**
 * `--perf`: one scenario (default ward) at gRPC saturation under Linux `perf record -e cpu-clock`
 * (software clock sampling: it works in a VM without hardware counters), with `--perf-basic-prof`
 * so JIT-compiled JavaScript has names. Unlike `--profile`, native code is its own: OpenSSL, V8's
 * collector and runtime, libc, the kernel. Primed first (`--prime-seconds`), then
 * `--sat-seconds` recorded; µs per call from the samples and the calls h2load completed in that
 * window. Writes `perf-<scenario>.json` next to `--out`.
 */
const PERF_HZ = 1999;

async function perfProfile(): Promise<void> {
  const sc = ALL.find((s) => s.id === (scenarioIds.length === 1 ? scenarioIds[0] : 'ward'));
  if (sc === undefined) throw new Error(`unknown scenario ${scenarioIds.join(',')}`);
  warmCompileCaches([sc.id]);
  const run = await sc.start('perf', ['--perf-basic-prof']);
  const data = join(work, 'perf.data');
  const load = (durationS: number): Promise<H2loadResult> => saturationLoad(run.port, 'grpc', durationS);
  let r: H2loadResult;
  try {
    await check(sc, run.port);
    assertClean(await load(Math.max(1, primeSeconds)), 'perf priming');
    const pid = String(run.proc?.pid);
    const recorded = new Promise<void>((resolveRec, reject) => {
      execFile('perf', ['record', '-q', '-e', 'cpu-clock', '-F', String(PERF_HZ), '-p', pid, '-o', data, '--', 'sleep', String(satSeconds)], (err) =>
        err === null ? resolveRec() : reject(new Error(`perf record: ${err.message}`)),
      );
    });
    r = await load(satSeconds);
    assertClean(r, 'perf');
    await recorded;
  } finally {
    await run.proc?.stop();
  }
  const report = execFileSync('perf', ['report', '-i', data, '--no-children', '--sort', 'dso,sym', '-g', 'none', '-n', '-q', '--percent-limit', '0'], {
    maxBuffer: 256 * 1024 * 1024,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const calls = r.rps * satSeconds;
  const summary = summarizePerf(parsePerfReport(report), PERF_HZ, calls, 40);
  console.log(`${sc.id}: ${r.rps.toFixed(0)} calls/s under perf`);
  console.log(renderPerfSummary(summary));
  const file = join(dirname(opt.out), `perf-${sc.id.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ scenario: sc.id, machine: machine(), hz: PERF_HZ, seconds: satSeconds, rps: r.rps, ...summary }, null, 2)}\n`);
  console.log(`bench: wrote ${file}`);
}

/** ward alone at 2000 gRPC calls/s for `seconds`; RSS every 10 s. */
async function soak(seconds: number): Promise<void> {
  const sc = ALL.find((s) => s.id === 'ward') as Scenario;
  warmCompileCaches([sc.id]);
  const run = await sc.start('soak');
  const pid = run.proc?.pid as number;
  const series: { t: number; rssMb: number }[] = [];
  try {
    await check(sc, run.port);
    const t0 = Date.now();
    const load = runH2load({
      url: url(run.port, 'grpc'),
      cpus: loadCpus,
      headers: h2loadHeaders('grpc'),
      dataFile: join(work, 'request.bin'),
      clients: 10,
      streams: 1,
      durationS: seconds,
      warmupS: 0,
      rpsPerClient: 200,
    });
    let done = false;
    void load.finally(() => (done = true));
    while (!done) {
      series.push({ t: Math.round((Date.now() - t0) / 1000), rssMb: rssKb(pid) / 1024 });
      await Promise.race([sleep(10_000), load.catch(() => undefined)]);
    }
    const r = await load;
    assertClean(r, 'soak');
    await assertCompiled(sc, run);
    const peak = peakRssKb(pid) / 1024;
    const first = series.find((x) => x.t >= 60) ?? series[0];
    const last = series[series.length - 1];
    const out = { seconds, rps: r.rps, requests: r.succeeded, peakRssMb: peak, rssAfter1MinMb: first?.rssMb, rssAtEndMb: last?.rssMb, series };
    const file = join(dirname(opt.out), 'soak.json');
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
    console.log(JSON.stringify({ ...out, series: undefined }, null, 2));
    console.log(`bench: wrote ${file}`);
  } finally {
    await run.proc?.stop();
  }
}

/**
 * `--alloc N`: bytes the sidecar allocates per call, from V8's own GC trace (the sum of
 * `allocated=` over every collection while N gRPC calls are served, divided by N). Unlike CPU
 * time this does not depend on what else the machine runs, so it measures an allocation change
 * even on a noisy machine. Each selected ward scenario (and its `--baseline` twin) in turn, for
 * `--rounds` rounds.
 */
async function allocation(n: number): Promise<void> {
  const rows: { scenario: string; round: number; bytesPerCall: number; gcs: number }[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const id of scenarioIds) {
      const sc = ALL.find((s) => s.id === id);
      if (sc === undefined || !id.startsWith('ward')) continue;
      const run = await sc.start(`alloc${round}`, ['--trace-gc-nvp']);
      try {
        await check(sc, run.port);
        const log = join(logs, `${id.replace(/[^A-Za-z0-9._-]/g, '_')}-alloc${round}.log`);
        // Warm-up (JIT, pools), then the measured calls.
        await runH2loadCount(run.port, 5000);
        await sleep(200);
        const before = readFileSync(log, 'utf8').length;
        await runH2loadCount(run.port, n);
        await sleep(200);
        const text = readFileSync(log, 'utf8').slice(before);
        let bytes = 0;
        let gcs = 0;
        for (const m of text.matchAll(/allocated=(\d+)/g)) {
          bytes += Number(m[1]);
          gcs++;
        }
        rows.push({ scenario: id, round, bytesPerCall: bytes / n, gcs });
        console.log(`  ${id}: ${(bytes / n / 1024).toFixed(2)} KiB allocated per call (${gcs} collections)`);
      } finally {
        await run.proc?.stop();
      }
    }
  }
  const ids = [...new Set(rows.map((r) => r.scenario))];
  const summary = Object.fromEntries(ids.map((id) => [id, median(rows.filter((r) => r.scenario === id).map((r) => r.bytesPerCall))]));
  console.log(JSON.stringify(summary, null, 2));
  mkdirSync(dirname(opt.out), { recursive: true });
  writeFileSync(opt.out, `${JSON.stringify({ generatedAt: new Date().toISOString(), calls: n, rows, medianBytesPerCall: summary }, null, 2)}\n`);
  console.log(`bench: wrote ${opt.out}`);
}

async function runH2loadCount(port: number, n: number): Promise<void> {
  const r = await new Promise<string>((resolveRun, reject) => {
    const args = ['-c', loadCpus, 'h2load', '-t', '1', '-c', '4', '-m', '8', '-n', String(n), '-d', join(work, 'request.bin')];
    for (const h of h2loadHeaders('grpc')) args.push('-H', h);
    args.push(url(port, 'grpc'));
    execFile('taskset', args, (err, stdout) => (err === null ? resolveRun(stdout) : reject(new Error(err.message))));
  });
  if (!r.includes(`${n} succeeded`)) throw new Error(`h2load: not every call succeeded:\n${r}`);
}

/** Starts the app and one scenario, prints an h2load command for it, and waits for Ctrl-C. */
async function serve(id: string): Promise<void> {
  const sc = ALL.find((s) => s.id === id);
  if (sc === undefined) throw new Error(`unknown scenario ${id}`);
  warmCompileCaches([sc.id]);
  const run = await sc.start('serve');
  try {
    await check(sc, run.port);
    const q = (a: string): string => `'${a}'`;
    console.log(`${sc.id} on port ${run.port} (pid ${run.proc?.pid ?? '-'}); logs in ${logs}; for example:`);
    console.log(`taskset -c ${loadCpus} h2load -c 4 -m 32 -D 10 -d ${join(work, 'request.bin')} ${h2loadHeaders('grpc').map((h) => `-H ${q(h)}`).join(' ')} ${url(run.port, 'grpc')}`);
    await new Promise<void>((r) => process.once('SIGINT', () => r()));
  } finally {
    await run.proc?.stop();
  }
}

try {
  if (opt.serve !== undefined) await serve(opt.serve);
  else if (opt.alloc !== undefined) await allocation(Number(opt.alloc));
  else if (opt.profile) await profile();
  else if (opt.perf) await perfProfile();
  else if (opt.soak !== undefined) await soak(Number(opt.soak));
  else await benchmark();
} finally {
  await app.stop();
  await issuer.close();
  await sink.close();
  if (!opt.keep) rmSync(work, { recursive: true, force: true });
}
