import { execFileSync, spawnSync, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { sidecarMemory } from '../support/sidecar-process.ts';

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));
const WARM = fileURLToPath(new URL('../../bin/warm-compile-cache.js', import.meta.url));
const V8_FLAGS = new URL('../../bin/v8-flags.js', import.meta.url).href;
const RECORD = fileURLToPath(new URL('../support/record-loads.js', import.meta.url));
/** Node's type stripper (WebAssembly, ~20 MB of RSS), as `process.moduleLoadList` names it. */
const STRIPPER = 'NativeModule internal/deps/amaro/dist/index';

/**
 * What a `ward sidecar` process loads. Every module's code stays in memory for the life of the
 * process, so the sidecar loads only what its configuration uses (docs/performance.md, "Memory"):
 * never the dev IdP (oidc-provider, koa), the injector, the control-plane server or the demo; the
 * control-plane client, browser sessions, the egress listener, telemetry and the cluster only
 * when configured.
 */

const POLICY = `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: http://127.0.0.1:9
    audiences: [urn:ward:orders]
    algorithms: [RS256]
rules:
  - name: readers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
`;

/**
 * Starts `ward sidecar` with `config`, stops it once started (and once `until` holds), and
 * returns what it loaded.
 */
async function loadsOf(config: string, env: NodeJS.ProcessEnv = {}, policy = POLICY, until: () => boolean = () => true, files: Readonly<Record<string, string>> = {}): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'ward-footprint-'));
  writeFileSync(join(dir, 'policy.yaml'), policy);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  writeFileSync(join(dir, 'sidecar.yaml'), config);
  const out = join(dir, 'loads.txt');
  const child = spawn(process.execPath, ['--import', RECORD, WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env, WARD_TEST_RECORD_LOADS: out },
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const deadline = Date.now() + 15_000;
  while (!stderr.includes('sidecar started') || !until()) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the sidecar did not start:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
  const root = new URL('../../', import.meta.url).href;
  return readFileSync(out, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (l.startsWith(root) ? l.slice(root.length) : l));
}

/** Starts `ward sidecar` with `config`, reads its admin `/memory` once started, and stops it. */
function memoryOf(config: string, env: NodeJS.ProcessEnv): Promise<unknown> {
  return sidecarMemory({ 'policy.yaml': POLICY, 'sidecar.yaml': config }, env);
}

const BASE = `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:9" }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
drainTimeoutMs: 100
`;

/** Modules no `ward sidecar` loads, whatever its configuration. */
const NEVER = [
  /^node_modules\/(oidc-provider|koa|@koa|kubernetes-models|playwright-core|vitest|typescript|zod)\//,
  /^src\/(devidp|inject|demo)\//,
  /^src\/controlplane\/server\//,
  /^src\/cli\/(?!main|command|sidecar)/,
];

/** Modules only a sidecar configured to use them loads. */
const OPTIONAL = [
  /^node_modules\/(@grpc|protobufjs|@opentelemetry)\//,
  /^src\/(session|cluster|exchange|outbound|telemetry|controlplane)\//,
];

describe('ward sidecar loads only what its configuration uses', () => {
  it('a policy file, telemetry off: no control-plane client, sessions, egress, telemetry or cluster', async () => {
    const loaded = await loadsOf(`${BASE}telemetry: { enabled: false }\n`);
    // The recording works: the sidecar's own path and its dependencies are there.
    expect(loaded).toContain('src/cli/sidecar.ts');
    expect(loaded.some((m) => m.startsWith('node_modules/yaml/'))).toBe(true);
    const unexpected = loaded.filter((m) => [...NEVER, ...OPTIONAL].some((re) => re.test(m)));
    expect(unexpected).toEqual([]);
  });

  it('telemetry on: ward\'s own metrics, encoders and exporter (no OTel SDK, no grpc-js), still nothing from the other commands', async () => {
    const loaded = await loadsOf(`${BASE}telemetry: { endpoint: "http://127.0.0.1:9" }\n`);
    expect(loaded).toContain('src/telemetry/telemetry.ts');
    expect(loaded).toContain('src/telemetry/otlp-metrics.ts');
    expect(loaded).toContain('src/h2/grpc-unary.ts');
    // the OTel metrics SDK, its resources and otlp-transformer held ~3 MB of heap (docs/performance.md)
    expect(loaded.filter((m) => m.startsWith('node_modules/@grpc/') || m.startsWith('node_modules/@opentelemetry/'))).toEqual([]);
    expect(loaded.filter((m) => NEVER.some((re) => re.test(m)))).toEqual([]);
    expect(loaded.filter((m) => /^src\/(session|cluster|exchange|outbound\/server|controlplane)\//.test(m) || m.startsWith('node_modules/protobufjs/'))).toEqual([]);
    expect(loaded.filter((m) => m.includes('internal/deps/undici'))).toEqual([]);
  });
});

describe('a sidecar fed by the control plane', () => {
  it('speaks the policy stream over ward\'s own HTTP/2: neither grpc-js nor protobufjs loaded', async () => {
    const config = `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:9" }
admin: { host: 127.0.0.1, port: 0 }
policy:
  controlPlane: { address: "127.0.0.1:9", stateDir: state, issuer: "http://127.0.0.1:9", instanceId: footprint }
authn:
  credentials:
    - { issuer: "http://127.0.0.1:9", clientId: orders-sidecar, clientSecretFile: client-secret }
telemetry: { enabled: false }
drainTimeoutMs: 100
`;
    const loaded = await loadsOf(config, {}, POLICY, () => true, { 'client-secret': 'not-a-real-secret\n' });
    expect(loaded).toContain('src/controlplane/client/watch.ts');
    expect(loaded).toContain('src/h2/grpc-stream.ts');
    // grpc-js, proto-loader and protobufjs: 4 MB of heap, 5–7 MB of RSS (docs/performance.md)
    expect(loaded.filter((m) => /^node_modules\/(@grpc|protobufjs|@protobufjs|long)\//.test(m) || m === 'src/controlplane/proto.ts')).toEqual([]);
    expect(loaded.filter((m) => NEVER.some((re) => re.test(m)))).toEqual([]);
  });
});

describe('ward sidecar fetches keys without undici, openid-client or jose', () => {
  it('discovery and JWKS from a live issuer: no WebAssembly compiled (undici\'s llhttp: up to 20 MB of peak RSS), neither undici, openid-client nor jose loaded', async () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' };
    const served: string[] = [];
    const idp = createServer((req, res) => {
      served.push(req.url ?? '');
      const origin = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
      if (req.url === '/.well-known/openid-configuration') res.setHeader('content-type', 'application/json').end(JSON.stringify({ issuer: origin, jwks_uri: `${origin}/jwks` }));
      else if (req.url === '/jwks') res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [jwk] }));
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
    try {
      const issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
      const loaded = await loadsOf(`${BASE}telemetry: { enabled: false }\n`, {}, POLICY.replace('http://127.0.0.1:9', issuer), () => served.includes('/jwks'));
      expect(served).toEqual(['/.well-known/openid-configuration', '/jwks']);
      expect(loaded.filter((m) => m.startsWith('WebAssembly.'))).toEqual([]);
      // openid-client is for introspection issuers only; undici's bundle comes with it or with an
      // ESM import of node:http (src/lib/node-http.ts), and ward's own requests do not need it.
      expect(loaded.filter((m) => /^node_modules\/(openid-client|oauth4webapi)\//.test(m) || m.includes('internal/deps/undici'))).toEqual([]);
      // keys are imported with node:crypto (source.ts importVerifyKey): jose only for HMAC issuers
      expect(loaded.filter((m) => m.startsWith('node_modules/jose/'))).toEqual([]);
      expect(loaded).toContain('src/authn/source.ts');
    } finally {
      idp.closeAllConnections();
      await new Promise((r) => idp.close(r));
    }
  });
});

describe('the compile cache (bin/compile-cache.js)', () => {
  it('once warmed, ward sidecar never loads the type stripper; without it, it does', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'ward-compile-cache-'));
    const config = `${BASE}telemetry: { endpoint: "http://127.0.0.1:9" }\n`;
    // NODE_COMPILE_CACHE overrides ward's default directory, so this test has a cache of its own.
    const warmed = execFileSync(process.execPath, [WARM], { env: { ...process.env, NODE_COMPILE_CACHE: cache }, encoding: 'utf8' });
    expect(warmed).toContain(cache);
    const loaded = await loadsOf(config, { NODE_COMPILE_CACHE: cache });
    expect(loaded).toContain('src/cli/sidecar.ts');
    expect(loaded).not.toContain(STRIPPER);
    // The check can fail: with the cache off, the same sidecar strips its types at start-up.
    expect(await loadsOf(config, { NODE_DISABLE_COMPILE_CACHE: '1' })).toContain(STRIPPER);
  });

  it('the admin /memory document says whether the type stripper was loaded', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'ward-compile-cache-'));
    execFileSync(process.execPath, [WARM], { env: { ...process.env, NODE_COMPILE_CACHE: cache } });
    expect(await memoryOf(BASE, { NODE_COMPILE_CACHE: cache })).toMatchObject({ typeStripperLoaded: false });
    expect(await memoryOf(BASE, { NODE_DISABLE_COMPILE_CACHE: '1' })).toMatchObject({ typeStripperLoaded: true });
  });

  it('is on by default: a second run of a command finds its modules in node_modules/.cache/ward', () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['NODE_COMPILE_CACHE'];
    delete env['NODE_DISABLE_COMPILE_CACHE'];
    const dir = mkdtempSync(join(tmpdir(), 'ward-default-cache-'));
    const run = (n: number): string[] => {
      const out = join(dir, `loads-${n}.txt`);
      execFileSync(process.execPath, ['--import', RECORD, WARD, 'policy', 'check', '--help'], { env: { ...env, WARD_TEST_RECORD_LOADS: out } });
      return readFileSync(out, 'utf8').split('\n');
    };
    run(1); // fills the cache on exit, if an earlier run has not already
    expect(run(2)).not.toContain(STRIPPER);
  });
});

describe('the V8 flags ward sets for itself (bin/v8-flags.js)', () => {
  /** How many functions V8 marked for Maglev while `ward policy check --help` ran. */
  const maglevMarks = (env: NodeJS.ProcessEnv): number => {
    const out = execFileSync(process.execPath, ['--trace-opt', WARD, 'policy', 'check', '--help'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    return out.split('\n').filter((l) => l.startsWith('[marking') && l.includes('for optimization to MAGLEV')).length;
  };

  it('turns Maglev off before ward loads its modules; WARD_V8_FLAGS empty keeps V8 as it is', () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['WARD_V8_FLAGS'];
    // Node's own start-up, before bin/ward.js runs, may still reach Maglev for a function or two.
    expect(maglevMarks(env)).toBeLessThanOrEqual(2);
    expect(maglevMarks({ ...env, WARD_V8_FLAGS: '' })).toBeGreaterThan(20);
  });

  /**
   * Allocation sites V8 decided to pretenure in a process that applied ward's V8 flags the way
   * bin/ward.js does, then kept objects of one site alive across scavenges, as a call in flight
   * keeps its objects under saturation.
   */
  const tenuredSites = (env: NodeJS.ProcessEnv): number => {
    const script = [
      `import { applyV8Flags } from ${JSON.stringify(V8_FLAGS)};`,
      'applyV8Flags();',
      'const inFlight = new Array(20000);',
      'for (let i = 0; i < 300000; i++) inFlight[i % 20000] = { i, next: null };',
    ].join('\n');
    const out = execFileSync(process.execPath, ['--max-semi-space-size=1', '--trace-pretenuring', '--trace-pretenuring-statistics', '--input-type=module', '-e', script], { env, encoding: 'utf8' });
    return out.split('\n').filter((l) => l.includes('=> tenure')).length;
  };

  it('turns allocation-site pretenuring off: objects that outlive a scavenge are not allocated old from then on', () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['WARD_V8_FLAGS'];
    expect(tenuredSites(env)).toBe(0);
    // The same process with only Maglev off: V8 pretenures the site.
    expect(tenuredSites({ ...env, WARD_V8_FLAGS: '--no-maglev' })).toBeGreaterThan(0);
  });

  it('refuses a WARD_V8_FLAGS item that is not spelled as a flag: status 2 and the item named', () => {
    let err: (Error & { status?: number; stderr?: string }) | undefined;
    try {
      execFileSync(process.execPath, [WARD, 'policy', 'check', '--help'], { env: { ...process.env, WARD_V8_FLAGS: '--no-maglev oops' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      err = e as Error & { status?: number; stderr?: string };
    }
    expect(err?.status).toBe(2);
    expect(err?.stderr).toContain("ward: WARD_V8_FLAGS: 'oops' is not a V8 flag (spelled --name or --name=value)");
  });

  /** Status and stderr of `ward policy check --help` with `flags` as WARD_V8_FLAGS. */
  const withFlags = (flags: string): { status: number; stderr: string } => {
    const r = spawnSync(process.execPath, [WARD, 'policy', 'check', '--help'], { env: { ...process.env, WARD_V8_FLAGS: flags }, encoding: 'utf8' });
    return { status: r.status ?? -1, stderr: r.stderr };
  };

  it('refuses a flag this V8 does not know, or a value not of its type: V8 alone would warn and run without it (found in review)', () => {
    const misspelt = withFlags('--no-maglve');
    expect(misspelt.status).toBe(2);
    expect(misspelt.stderr).toContain("ward: WARD_V8_FLAGS: '--no-maglve': this V8 has no flag --no-maglve");
    const badValue = withFlags('--no-maglev --max-semi-space-size=1mb');
    expect(badValue.status).toBe(2);
    expect(badValue.stderr).toContain("'--max-semi-space-size=1mb': --max-semi-space-size takes a value of type size_t");
    // --no- only for a boolean; a boolean takes no value
    expect(withFlags('--no-heap-growing-percent').status).toBe(2);
    expect(withFlags('--maglev=true').stderr).toContain('--maglev takes no value');
  });

  it('takes what V8 takes: --noname, underscores, numbers of the flag type', () => {
    for (const flags of ['--nomaglev', '--no_maglev --heap_growing_percent=60', '--no-maglev --stack-size=900']) {
      const r = withFlags(flags);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  });
});
