import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSidecarConfig } from '../../src/inject/sidecar-config.ts';
import { makeSelfSignedCert } from '../unit/inbound/harness.ts';
import { inNs, must, netnsPair, run, waitFor } from './netns.ts';

/**
 * Traffic capture for real, in Linux network namespaces (root required; CI runs as root):
 *
 *   client netns  10.X.Y.1 ──veth── 10.X.Y.2  pod netns
 *   HTTP :9000 (records hits)                 app       node:http on :8080 and :8081 (records every request)
 *   curl                                      sidecar   `ward sidecar` as gid 1337, inbound :15006, admin :15000
 *                                             dev IdP   `ward dev-idp` on 127.0.0.1:4400
 *                                             the sidecar's egress listener on 127.0.0.1:15001, with one
 *                                                       destination `outside` (token exchanged at the dev IdP)
 *
 * `ward capture` (the injected init container's command, real mode) installs the rules inside
 * the pod netns. The test proves the app is reachable around the sidecar before, and only
 * through it after: no token → 401 and the app saw nothing; a token → 200 with identity headers;
 * another app port → still the sidecar; TLS to the app's port → the sidecar too (its certificate,
 * sniffed on the captured port); the app's outbound calls land on the egress listener
 * (a declared destination gets an exchanged token, an undeclared one is refused and never leaves
 * the pod); the sidecar's uid goes out directly (no loop).
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The second sidecar's ports: `inbound.tls.mode: strict`. */
const STRICT_PORT = 15016;
const STRICT_ADMIN = 15100;
const WARD = join(ROOT, 'bin/ward.js');
const NODE = process.execPath;
const PROXY_UID = 1337;

const NET_PAIR = netnsPair('wv');
const NS_CLIENT = NET_PAIR.client;
const NS_POD = NET_PAIR.pod;
const CLIENT_IP = NET_PAIR.clientIp;
const POD_IP = NET_PAIR.podIp;

const inPod = (args: readonly string[]): string[] => inNs(NS_POD, args);
const inClient = (args: readonly string[]): string[] => inNs(NS_CLIENT, args);
const asUid = (uid: number, args: readonly string[]): string[] => ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', ...args];
const asGid = (gid: number, args: readonly string[]): string[] => ['setpriv', `--regid=${gid}`, '--clear-groups', ...args];

/** curl from the client namespace: status code and body. */
async function clientCall(url: string, headers: Record<string, string> = {}, curlOptions: readonly string[] = []): Promise<{ status: number; body: string }> {
  const args = [...curlOptions, '-s', '-m', '5', '-o', '-', '-w', '\n%{http_code}', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url];
  const r = await run('ip', inClient(['curl', ...args]));
  const nl = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
}

const children: ChildProcess[] = [];
function startIn(args: readonly string[], name: string): { proc: ChildProcess; out: string[] } {
  const proc = spawn('ip', [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  const collect = (d: Buffer): void => {
    for (const line of d.toString().split('\n')) if (line !== '') out.push(line);
  };
  proc.stdout?.on('data', collect);
  proc.stderr?.on('data', collect);
  proc.on('exit', (code) => out.push(`[${name} exited ${code}]`));
  children.push(proc);
  return { proc, out };
}


// The app: two ports, one JSON line per request on stdout (what reached it, on which port).
const APP = `
const http = require('node:http');
for (const port of [8080, 8081]) {
  http.createServer((req, res) => {
    console.log(JSON.stringify({ port, path: req.url, headers: req.headers }));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ app: true, port, subject: req.headers['x-ward-subject'] ?? null }));
  }).listen(port, '0.0.0.0', () => console.log('listening ' + port));
}`;

// An h2c client that reports how the server ended the connection.
const H2C_PROBE = `
const s = require('node:http2').connect(process.argv[1]);
s.on('goaway', (code, last, data) => { console.log(JSON.stringify({ goaway: code, debug: data.toString('latin1') })); process.exit(0); });
s.on('error', () => {});
s.on('close', () => process.exit(0));
const r = s.request({ ':path': '/orders' }); r.on('error', () => {}); r.end();
setTimeout(() => { console.log(JSON.stringify({ goaway: null })); process.exit(0); }, 5000);
`;

// The outside world, in the client namespace: records each hit with the token it carried.
const OUTSIDE = `
const http = require('node:http');
http.createServer((req, res) => {
  const auth = req.headers.authorization ?? '';
  const claims = auth.startsWith('Bearer ') ? JSON.parse(Buffer.from(auth.slice(7).split('.')[1], 'base64url').toString()) : null;
  console.log(JSON.stringify({ direct: req.url, host: req.headers.host, claims }));
  res.end('direct');
}).listen(9000, '${CLIENT_IP}', () => console.log('listening 9000'));`;

const POLICY = `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: http://127.0.0.1:4400
    audiences: [urn:ward:orders]
rules:
  - name: readers
    action: allow
    match:
      http: [{ methods: [GET], prefix: / }]
    when:
      - scopes: { allOf: [orders.read] }
`;

describe('ward capture in network namespaces', () => {
  let dir = '';
  let app: { proc: ChildProcess; out: string[] };
  let outside: { proc: ChildProcess; out: string[] };
  let sidecar: { proc: ChildProcess; out: string[] };
  let strictSidecar: { proc: ChildProcess; out: string[] };
  let token = '';
  const appRequests = (): Record<string, unknown>[] => app.out.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

  beforeAll(async () => {
    // Fail loudly, never skip: CI runs as root and must run this test.
    if (process.getuid?.() !== 0) throw new Error('capture-netns.test.ts must run as root (ip netns, iptables); CI runs as root');
    for (const bin of ['iptables-restore', 'ip6tables', 'curl', 'setpriv']) {
      if ((await run('sh', ['-c', `command -v ${bin}`])).code !== 0) throw new Error(`${bin} is missing: install iptables, curl and util-linux (see .ci/run)`);
    }


    await NET_PAIR.up();

    dir = mkdtempSync(join(tmpdir(), 'ward-capture-'));
    chmodSync(dir, 0o755); // the sidecar runs as uid 1337 and reads its config and policy here
    writeFileSync(join(dir, 'policy.yaml'), POLICY, { mode: 0o644 });
    writeFileSync(join(dir, 'client-secret'), 'orders-sidecar-secret\n', { mode: 0o644 }); // the dev IdP's public demo secret
    // The workload's certificate (ward.dev/inbound-tls-secret): TLS on the captured port too.
    const cert = makeSelfSignedCert();
    copyFileSync(cert.certFile, join(dir, 'tls.crt'));
    copyFileSync(cert.keyFile, join(dir, 'tls.key'));
    chmodSync(join(dir, 'tls.key'), 0o644);
    cert.cleanup();
    // The config an injected pod would get (same generator), pointed at this policy file.
    const podConfig = (ports: { inbound: number; admin: number; outbound: number | null }, overrides: readonly string[]): string =>
      buildSidecarConfig({
        service: 'orders',
        inboundPort: ports.inbound,
        adminPort: ports.admin,
        outboundPort: ports.outbound,
        appPort: 8080,
        appProtocol: 'http1',
        policy: { kind: 'file' },
        credentials: null,
        drainSeconds: 1,
        logLevel: 'info',
        overrides: [`policy: { file: ${join(dir, 'policy.yaml')} }`, 'authn:', '  jwks: { timeoutMs: 1000, cooldownMs: 0 }', ...overrides].join('\n'),
      });
    const config = podConfig({ inbound: 15006, admin: 15000, outbound: 15001 }, [
      `  credentials: [{ issuer: 'http://127.0.0.1:4400', clientId: orders-sidecar, clientSecretFile: ${join(dir, 'client-secret')} }]`,
      `inbound: { tls: { certFile: ${join(dir, 'tls.crt')}, keyFile: ${join(dir, 'tls.key')} } }`,
      'outbound:',
      `  destinations: [{ name: outside, url: 'http://${CLIENT_IP}:9000', protocol: http1, resource: 'urn:ward:payments', scopes: [payments.charge] }]`,
    ]);
    writeFileSync(join(dir, 'sidecar.yaml'), config, { mode: 0o644 });
    // A second sidecar in the same pod, TLS-only for the network (inbound.tls.mode: strict), on
    // port 15016, which capture leaves alone (excluded below): reached directly.
    const strict = podConfig({ inbound: STRICT_PORT, admin: STRICT_ADMIN, outbound: null }, [
      `inbound: { tls: { certFile: ${join(dir, 'tls.crt')}, keyFile: ${join(dir, 'tls.key')}, mode: strict } }`,
    ]);
    writeFileSync(join(dir, 'strict.yaml'), strict, { mode: 0o644 });

    const idp = startIn(inPod([NODE, WARD, 'dev-idp', '--port', '4400']), 'dev-idp');
    app = startIn(inPod([NODE, '-e', APP]), 'app');
    outside = startIn(inClient([NODE, '-e', OUTSIDE]), 'outside');
    await waitFor('the dev IdP', () => idp.out.some((l) => l.includes('dev-idp issuer')));
    await waitFor('the app', () => app.out.filter((l) => l.startsWith('listening')).length === 2);
    await waitFor('the outside server', () => outside.out.includes('listening 9000'));

    // The sidecar runs with the proxy's gid (its uid stays root: the checkout may sit where
    // uid 1337 cannot read, e.g. under /root or a 0700 temp dir in CI). Its traffic is thus
    // exempted by the `--gid-owner` rule; the `--uid-owner` rule is proven below by a process
    // running as uid 1337 (curl) going out directly.
    sidecar = startIn(inPod(asGid(PROXY_UID, [NODE, WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')])), 'sidecar');
    await waitFor('the sidecar to be ready', async () => {
      const r = await run('ip', inPod(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:15000/readyz']));
      return r.stdout === '200';
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; sidecar output:\n${sidecar.out.join('\n')}`, { cause: err });
    });

    strictSidecar = startIn(inPod(asGid(PROXY_UID, [NODE, WARD, 'sidecar', '--config', join(dir, 'strict.yaml')])), 'strict-sidecar');
    await waitFor('the strict sidecar to be ready', async () => {
      const r = await run('ip', inPod(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${STRICT_ADMIN}/readyz`]));
      return r.stdout === '200';
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; strict sidecar output:\n${strictSidecar.out.join('\n')}`, { cause: err });
    });

    const tok = await must('ip', inPod(['curl', '-s', '-u', 'frontend:frontend-secret', '-d', 'grant_type=client_credentials', '-d', 'resource=urn:ward:orders', '-d', 'scope=orders.read', 'http://127.0.0.1:4400/token']));
    token = (JSON.parse(tok.stdout) as { access_token: string }).access_token;
    expect(token).toMatch(/^ey/);
  }, 60_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    // Deleting a namespace removes its veth end, its rules and every address in it.
    await NET_PAIR.down();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('captures inbound and outbound traffic; the app is reachable only through the sidecar', async () => {
    // Before capture: the app answers anyone directly, with no token (the hole capture closes).
    const before = await clientCall(`http://${POD_IP}:8080/orders`);
    expect(before.status).toBe(200);
    expect(JSON.parse(before.body)).toMatchObject({ app: true, port: 8080, subject: null });
    const directEgress = await run('ip', inPod(['curl', '-s', '-m', '5', `http://${CLIENT_IP}:9000/before`]));
    expect(directEgress.stdout).toBe('direct');

    // The init container's command, for real.
    const captureArgs = [NODE, WARD, 'capture', '--inbound-port', '15006', '--outbound-port', '15001',
      '--proxy-uid', String(PROXY_UID), '--proxy-gid', String(PROXY_UID), '--exclude-inbound-ports', `15000,${STRICT_PORT}`, '--exclude-outbound-ports', '53'];
    const cap = await run('ip', inPod(captureArgs));
    expect(cap.stderr).toBe('');
    expect(cap.code).toBe(0);
    expect(cap.stdout).toContain('ipv4 rules applied');
    // Running it again (an init container restarted in the same netns) does not stack rules.
    expect((await run('ip', inPod(captureArgs))).code).toBe(0);
    const nat = await must('ip', inPod(['iptables', '-t', 'nat', '-S']));
    expect(nat.stdout.split('\n').filter((l) => l === '-A PREROUTING -p tcp -j WARD_INBOUND')).toHaveLength(1);
    expect(nat.stdout.split('\n').filter((l) => l === '-A OUTPUT -p tcp -j WARD_OUTPUT')).toHaveLength(1);
    expect(nat.stdout).toContain(`--uid-owner ${PROXY_UID}`);

    const seenBefore = appRequests().length;

    // No token: the sidecar answers 401; nothing reached the app, even with a spoofed identity header.
    const denied = await clientCall(`http://${POD_IP}:8080/orders`, { 'x-ward-subject': 'admin' });
    expect(denied.status).toBe(401);
    const deniedOther = await clientCall(`http://${POD_IP}:8081/debug`);
    expect(deniedOther.status).toBe(401);
    expect(appRequests()).toHaveLength(seenBefore);

    // A valid token: allowed, forwarded by the sidecar (the app sees the verified identity).
    const allowed = await clientCall(`http://${POD_IP}:8080/orders`, { authorization: `Bearer ${token}` });
    expect(allowed.status).toBe(200);
    expect(JSON.parse(allowed.body)).toMatchObject({ app: true, port: 8080, subject: 'frontend' });
    const last = appRequests().at(-1)!;
    expect((last['headers'] as Record<string, string>)['x-ward-issuer']).toBe('http://127.0.0.1:4400');
    // Another app port is no way around it: the sidecar took it and forwarded to the app port.
    const viaOther = await clientCall(`http://${POD_IP}:8081/orders`, { authorization: `Bearer ${token}` });
    expect(viaOther.status).toBe(200);
    expect(JSON.parse(viaOther.body)).toMatchObject({ port: 8080, subject: 'frontend' });

    // TLS to the captured port (what another pod's sidecar does for an https:// destination):
    // the sidecar answers it on the same port, HTTP/1.1 and HTTP/2 alike, with the same policy.
    const tls = ['--cacert', join(dir, 'tls.crt'), '--resolve', `localhost:8080:${POD_IP}`];
    const overTls = await clientCall('https://localhost:8080/orders', { authorization: `Bearer ${token}` }, tls);
    expect(overTls.status).toBe(200);
    expect(JSON.parse(overTls.body)).toMatchObject({ app: true, port: 8080, subject: 'frontend' });
    expect((await clientCall('https://localhost:8080/orders', { authorization: `Bearer ${token}` }, [...tls, '--http2'])).status).toBe(200);
    const seenTls = appRequests().length;
    expect((await clientCall('https://localhost:8080/orders', {}, tls)).status).toBe(401);
    expect(appRequests()).toHaveLength(seenTls);

    // The admin port is excluded from capture: kubelet probes reach the sidecar's /healthz.
    expect((await clientCall(`http://${POD_IP}:15000/healthz`)).status).toBe(200);

    // The app's egress goes to the egress listener, never straight out. An undeclared
    // destination is refused there (and never reaches the outside server)...
    const direct = (): string[] => outside.out.filter((l) => l.includes('"direct"'));
    const hitsBefore = direct().length;
    for (const uid of [0, 1000]) {
      const r = await run('ip', inPod(asUid(uid, ['curl', '-s', '-m', '5', '-D', '-', `http://${CLIENT_IP}:9000/from-app`])));
      expect(r.stdout).not.toContain('direct');
      expect(r.stdout.toLowerCase()).toContain('err_destination_unknown');
    }
    expect(direct()).toHaveLength(hitsBefore);
    // ...and the declared one goes out with a token exchanged for it (RFC 8693: new audience, `act`).
    const viaEgress = await run('ip', inPod(asUid(1000, ['curl', '-s', '-m', '10', '-H', 'host: outside', '-H', `authorization: Bearer ${token}`, `http://${CLIENT_IP}:9000/from-app`])));
    expect(viaEgress.stdout).toBe('direct');
    const hit = JSON.parse(direct().at(-1)!) as { direct: string; claims: Record<string, unknown> | null };
    expect(hit.direct).toBe('/from-app');
    expect(hit.claims).toMatchObject({ aud: 'urn:ward:payments', sub: 'frontend', act: { sub: 'orders-sidecar' } });

    // The sidecar's own uid goes out directly: no redirect loop.
    const fromSidecarUid = await run('ip', inPod(asUid(PROXY_UID, ['curl', '-s', '-m', '5', `http://${CLIENT_IP}:9000/from-sidecar`])));
    expect(fromSidecarUid.stdout).toBe('direct');
    // Loopback inside the pod is not captured: the sidecar → app hop and app → itself.
    const loop = await run('ip', inPod(['curl', '-s', '-m', '5', 'http://127.0.0.1:8081/self']));
    expect(JSON.parse(loop.stdout)).toMatchObject({ port: 8081 });

    expect(sidecar.out.join('\n')).not.toContain(token);
  }, 60_000);

  it('inbound.tls.mode strict: cleartext from the network is refused before a request is read; TLS, and cleartext from the pod itself, are served', async () => {
    const seen = appRequests().length;
    // HTTP/1.1 in clear from another host: 403 ERR_TLS_REQUIRED, and the token never got read
    const clear = await run('ip', inClient(['curl', '-s', '-m', '5', '-D', '-', '-o', '/dev/null', '-H', `authorization: Bearer ${token}`, `http://${POD_IP}:${STRICT_PORT}/orders`]));
    expect(clear.stdout).toMatch(/^HTTP\/1\.1 403/);
    expect(clear.stdout.toLowerCase()).toContain('x-ward-reason: err_tls_required');
    // h2c (so gRPC) in clear: GOAWAY with INADEQUATE_SECURITY and the code as debug data
    const h2c = await run('ip', inClient([NODE, '-e', H2C_PROBE, `http://${POD_IP}:${STRICT_PORT}`]));
    expect(JSON.parse(h2c.stdout)).toEqual({ goaway: 0xc, debug: 'ERR_TLS_REQUIRED' });
    expect(appRequests()).toHaveLength(seen);
    // over TLS from the network: the policy decides as on any port
    const tls = ['--cacert', join(dir, 'tls.crt'), '--resolve', `localhost:${STRICT_PORT}:${POD_IP}`];
    expect((await clientCall(`https://localhost:${STRICT_PORT}/orders`, { authorization: `Bearer ${token}` }, tls)).status).toBe(200);
    expect((await clientCall(`https://localhost:${STRICT_PORT}/orders`, {}, tls)).status).toBe(401);
    // cleartext from inside the pod (loopback) is the pod talking to itself: served
    const local = await run('ip', inPod(['curl', '-s', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', '-H', `authorization: Bearer ${token}`, `http://127.0.0.1:${STRICT_PORT}/orders`]));
    expect(local.stdout).toBe('200');
    expect(strictSidecar.out.join('\n')).toContain('cleartext connection refused');
    expect(strictSidecar.out.join('\n')).not.toContain(token);
  }, 30_000);
});
