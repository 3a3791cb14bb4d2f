import { execFile } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startMesh, type Mesh } from './harness.ts';

/**
 * Non-Node peers through the sidecar: Python grpcio (Debian python3-grpcio), curl (HTTP/1.1 and
 * h2c prior knowledge) and nghttp (nghttp2-client). .ci/run installs them.
 */
const PY_CLIENT = fileURLToPath(new URL('python/orders_client.py', import.meta.url));

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

async function py(target: string, call: string, token?: string): Promise<{ code: string; details: string; replies: Record<string, unknown>[]; trailers: Record<string, string> }> {
  const args = [PY_CLIENT, target, call, ...(token === undefined ? [] : ['--token', token])];
  const r = await run('/usr/bin/python3', args);
  if (r.code !== 0) throw new Error(`python client failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as never;
}

describe('Python grpcio through the sidecar', () => {
  let mesh: Mesh;
  let token: string;
  beforeAll(async () => {
    mesh = await startMesh();
    token = await mesh.idp.token('frontend', 'urn:ward:orders', 'orders.read orders.write');
  });
  afterAll(async () => mesh.close());

  it.each([
    ['get', 1],
    ['create', 1],
    ['list', 3],
    ['upload', 1],
    ['chat', 3],
  ] as const)('%s succeeds with a valid token', async (call, replies) => {
    const r = await py(mesh.target, call, token);
    expect(r.code).toBe('OK');
    expect(r.replies).toHaveLength(replies);
    if (call === 'create') expect(r.trailers['x-order-trailer']).toBe('created');
    if (call === 'upload') expect(r.replies[0]).toEqual({ '1': 3, '2': 3072 });
  });

  it('is refused without a token, and the app sees nothing', async () => {
    const before = mesh.app.calls.length;
    const r = await py(mesh.target, 'get');
    expect(r.code).toBe('UNAUTHENTICATED');
    expect(r.trailers['x-ward-reason']).toBe('ERR_TOKEN_MISSING');
    const d = await py(mesh.target, 'delete', token);
    expect(d.code).toBe('PERMISSION_DENIED');
    expect(mesh.app.calls.length).toBe(before);
  });
});

describe('curl and nghttp against an HTTP/1.1 app behind the sidecar', () => {
  let mesh: Mesh;
  let app: Server;
  const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
  let token: string;

  beforeAll(async () => {
    app = createServer((req, res) => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello ${String(req.headers['x-ward-subject'])}\n`);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const port = (app.address() as AddressInfo).port;
    mesh = await startMesh({
      upstream: { port, protocol: 'http1' },
      policy: (issuer) =>
        `${ordersPolicyText(issuer)}
  - name: api-readers
    action: allow
    match:
      http: [{ methods: [GET], prefix: /api }]
    when:
      - scopes: { allOf: [orders.read] }
`,
    });
    token = await mesh.idp.token('reporting', 'urn:ward:orders', 'orders.read');
  });
  afterAll(async () => {
    await mesh.close();
    await new Promise<void>((r) => app.close(() => r()));
  });

  const url = (path: string): string => `http://${mesh.target}${path}`;

  it('serves HTTP/1.1 and h2c prior knowledge on the same port', async () => {
    const h1 = await run('curl', ['-sS', '--http1.1', '-H', `Authorization: Bearer ${token}`, url('/api/orders'), '-w', '%{http_code} %{http_version}']);
    expect(h1.stdout).toBe('hello reporting\n200 1.1');
    const h2 = await run('curl', ['-sS', '--http2-prior-knowledge', '-H', `Authorization: Bearer ${token}`, url('/api/orders'), '-w', '%{http_code} %{http_version}']);
    expect(h2.stdout).toBe('hello reporting\n200 2');
    // every response carries a decision id, allowed ones included
    const withHeaders = await run('curl', ['-sS', '-i', '--http2-prior-knowledge', '-H', `Authorization: Bearer ${token}`, url('/api/orders')]);
    expect(withHeaders.stdout).toMatch(/^x-ward-decision-id: \S+/m);
    const h1Headers = await run('curl', ['-sS', '-i', '--http1.1', '-H', `Authorization: Bearer ${token}`, url('/api/orders')]);
    expect(h1Headers.stdout).toMatch(/^x-ward-decision-id: \S+/im);
    const ng = await run('nghttp', ['-n', '-s', '-H', `authorization: Bearer ${token}`, url('/api/x')]);
    expect(ng.code).toBe(0);
    expect(seen.at(-1)?.url).toBe('/api/x');
  });

  it('answers 401 with a Bearer challenge, and the app sees nothing', async () => {
    const before = seen.length;
    const r = await run('curl', ['-sS', '-i', '--http1.1', url('/api/orders')]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 401/);
    expect(r.stdout).toMatch(/www-authenticate: Bearer realm="orders"/i);
    expect(r.stdout).toMatch(/x-ward-reason: ERR_TOKEN_MISSING/i);
    const bad = await run('curl', ['-sS', '-i', '--http2-prior-knowledge', '-H', 'Authorization: Bearer abc.def.ghi', url('/api/orders')]);
    expect(bad.stdout).toMatch(/^HTTP\/2 401/);
    expect(bad.stdout).toMatch(/error="invalid_token"/);
    expect(seen.length).toBe(before);
  });

  it('normalizes the path once and forwards that form; refuses ambiguous encodings', async () => {
    const ok = await run('curl', ['-sS', '--path-as-is', '--http1.1', '-H', `Authorization: Bearer ${token}`, url('/x/..//api/%6Frders'), '-o', '/dev/null', '-w', '%{http_code}']);
    expect(ok.stdout).toBe('200');
    expect(seen.at(-1)?.url).toBe('/api/orders');
    const before = seen.length;
    for (const path of ['/api%2F..%2Fadmin', '/api/%2e%2e/%5Cadmin', '/api/a%00b']) {
      const r = await run('curl', ['-sS', '--path-as-is', '--http1.1', '-H', `Authorization: Bearer ${token}`, url(path), '-o', '/dev/null', '-w', '%{http_code}']);
      expect(r.stdout, path).toBe('400');
    }
    // a dot-segment cannot climb out of an allowed prefix into a denied route
    const climb = await run('curl', ['-sS', '--path-as-is', '--http1.1', '-H', `Authorization: Bearer ${token}`, url('/api/../admin'), '-o', '/dev/null', '-w', '%{http_code}']);
    expect(climb.stdout).toBe('403');
    expect(seen.length).toBe(before);
  });

  it('strips spoofed identity headers before the app sees them', async () => {
    await run('curl', ['-sS', '--http1.1', '-H', `Authorization: Bearer ${token}`, '-H', 'x-ward-subject: admin', '-H', 'X-Ward-Claims: e30', url('/api/orders')]);
    const h = seen.at(-1)?.headers;
    expect(h?.['x-ward-subject']).toBe('reporting');
    expect(h?.['x-ward-claims']).not.toBe('e30');
  });
});
