/**
 * Micro-benchmark of the authentication hot path (STYLE habit 10):
 *   npx node scripts/bench/micro-authn.ts [--quick]
 *
 * Measures `extractBearer` and `authenticate()` on a verified-token cache hit, and for scale a
 * full ES256 / RS256 verification (cache disabled). Single thread, sequential, after warm-up;
 * iteration counts are fixed so a run takes a few seconds. Numbers are indicative only: compare
 * runs on the same machine, never assert on them in tests.
 */
import { hash } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey } from 'jose';
import { createAuthenticator } from '../../src/authn/authenticator.ts';
import type { Authenticator } from '../../src/authn/authenticator.ts';
import { extractBearer } from '../../src/authn/extract.ts';
import { silentLogger } from '../../src/lib/log.ts';
import type { IssuerTrust } from '../../src/policy/model.ts';

const quick = process.argv.includes('--quick');
const scale = quick ? 0.1 : 1;
const ISSUER = 'https://idp.bench.invalid';

interface Row {
  readonly name: string;
  readonly iterations: number;
  readonly opsPerSec: number;
  readonly nsPerOp: number;
}

let sink = 0; // consumed at the end so the measured calls cannot be optimised away

function benchSync(name: string, iterations: number, f: () => unknown): Row {
  const n = Math.max(1, Math.round(iterations * scale));
  for (let i = 0; i < Math.min(n, 10_000); i++) if (f() !== undefined) sink++;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) if (f() !== undefined) sink++;
  return row(name, n, process.hrtime.bigint() - start);
}

async function benchAsync(name: string, iterations: number, f: () => Promise<unknown>): Promise<Row> {
  const n = Math.max(1, Math.round(iterations * scale));
  for (let i = 0; i < Math.min(n, 200); i++) if ((await f()) !== undefined) sink++;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) if ((await f()) !== undefined) sink++;
  return row(name, n, process.hrtime.bigint() - start);
}

function row(name: string, n: number, elapsedNs: bigint): Row {
  const ns = Number(elapsedNs);
  return { name, iterations: n, opsPerSec: (n * 1e9) / ns, nsPerOp: ns / n };
}

/** A JWKS served by an injected fetch: no network, so only our code and crypto are measured. */
function jwksFetch(jwks: unknown): typeof fetch {
  return async () => new Response(JSON.stringify(jwks), { status: 200, headers: { 'content-type': 'application/json' } });
}

async function authenticatorFor(keys: readonly { kid: string; alg: string; publicKey: CryptoKey }[], cacheEntries: number): Promise<Authenticator> {
  const jwks = { keys: await Promise.all(keys.map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: k.alg, use: 'sig' }))) };
  const a = createAuthenticator({
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheEntries,
    introspectionCacheMaxSeconds: 60,
    jwks: { timeoutMs: 5000, refreshIntervalMs: 3_600_000, cooldownMs: 30_000, graceMs: 3_600_000 },
    credentials: [],
    log: silentLogger,
    fetch: jwksFetch(jwks),
  });
  const trust: IssuerTrust = {
    issuer: ISSUER,
    audiences: ['orders'],
    jwksUri: `${ISSUER}/jwks`,
    discovery: false,
    algorithms: ['ES256', 'RS256'],
    requireAtJwtType: true,
    hmacSecret: undefined,
    introspection: false,
    requiredClaims: [],
  };
  a.setIssuers([trust]);
  if (!(await a.whenReady(5000))) throw new Error('bench authenticator not ready');
  return a;
}

function mint(alg: string, kid: string, key: CryptoKey): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  // A realistic RFC 9068 access token: ~700 bytes with a few custom claims.
  return new SignJWT({
    sub: 'spiffe://cluster.local/ns/shop/sa/checkout',
    client_id: 'checkout',
    scope: 'orders:read orders:write inventory:read',
    jti: 'b6d9f1c2-5a7e-4c1b-9f3e-2d8a6c4b1e07',
    tenant: 'acme',
    roles: ['buyer', 'support'],
    act: { sub: 'spiffe://cluster.local/ns/edge/sa/gateway' },
  })
    .setProtectedHeader({ alg, kid, typ: 'at+jwt' })
    .setIssuer(ISSUER)
    .setAudience('orders')
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(key);
}

async function main(): Promise<void> {
  const es = await generateKeyPair('ES256');
  const rs = await generateKeyPair('RS256');
  const keys = [
    { kid: 'es', alg: 'ES256', publicKey: es.publicKey },
    { kid: 'rs', alg: 'RS256', publicKey: rs.publicKey },
  ];
  const esToken = await mint('ES256', 'es', es.privateKey);
  const rsToken = await mint('RS256', 'rs', rs.privateKey);
  const header = `Bearer ${esToken}`;
  // Two clients taking turns: every call misses the one-value memos (extract, cache key).
  const esToken2 = await mint('ES256', 'es', es.privateKey);
  const headers = [header, `Bearer ${esToken2}`];
  const tokens = [esToken, esToken2];
  let turn = 0;
  // A server decodes a new string for every request: equal values, distinct objects (so the
  // memo compares contents, as it does in production).
  const copies = Array.from({ length: 1024 }, () => Buffer.from(header).toString('latin1'));
  const tokenCopies = Array.from({ length: 1024 }, () => Buffer.from(esToken).toString('latin1'));

  const cached = await authenticatorFor(keys, 10_000);
  const first = await cached.authenticate(esToken);
  if (!first.ok) throw new Error(`bench token rejected: ${first.error.code}`);
  if (cached.authenticate(esToken) instanceof Promise) throw new Error('expected a synchronous cache hit');
  if (!(await cached.authenticate(esToken2)).ok) throw new Error('bench token 2 rejected');
  const uncached = await authenticatorFor(keys, 0);

  const rows: Row[] = [
    benchSync('extractBearer: valid JWT header (repeated)', 2_000_000, () => extractBearer(copies[turn++ & 1023], 8192)),
    benchSync('extractBearer: valid JWT header (alternating)', 2_000_000, () => extractBearer(headers[turn++ & 1], 8192)),
    benchSync('extractBearer: Basic (rejected)', 2_000_000, () => extractBearer('Basic dXNlcjpwYXNz', 8192)),
    benchSync('extractBearer: two fields (rejected)', 2_000_000, () => extractBearer([header, header], 8192)),
    benchSync('sha256 cache key alone', 500_000, () => hash('sha256', esToken, 'base64url')),
    benchSync('authenticate: cache hit (repeated token)', 500_000, () => cached.authenticate(tokenCopies[turn++ & 1023] as string)),
    benchSync('authenticate: cache hit (alternating)', 500_000, () => cached.authenticate(tokens[turn++ & 1] as string)),
    await benchAsync('authenticate: ES256, no cache', 3_000, async () => uncached.authenticate(esToken)),
    await benchAsync('authenticate: RS256, no cache', 3_000, async () => uncached.authenticate(rsToken)),
  ];
  cached.close();
  uncached.close();

  const w = Math.max(...rows.map((r) => r.name.length));
  const lines = [
    `node ${process.version}, token ${esToken.length} bytes${quick ? ', --quick' : ''}`,
    `${'operation'.padEnd(w)}  ${'iterations'.padStart(10)}  ${'ops/s'.padStart(12)}  ${'ns/op'.padStart(10)}`,
    `${'-'.repeat(w)}  ${'-'.repeat(10)}  ${'-'.repeat(12)}  ${'-'.repeat(10)}`,
    ...rows.map(
      (r) =>
        `${r.name.padEnd(w)}  ${String(r.iterations).padStart(10)}  ${Math.round(r.opsPerSec).toLocaleString('en-US').padStart(12)}  ${r.nsPerOp.toFixed(0).padStart(10)}`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (sink < 0) process.stdout.write('unreachable\n');
}

await main();
