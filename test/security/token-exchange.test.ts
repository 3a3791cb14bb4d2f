import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningSidecar, startSidecar } from '../../src/cli/sidecar.ts';
import { parseSidecarConfig } from '../../src/config/sidecar.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { type RecordingApp, startRecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';

/**
 * Token exchange (RFC 8693) on the egress path, with the real dev IdP and a sidecar started by
 * `startSidecar` (as `ward sidecar` does), the app being the test: it sends through the egress
 * listener whatever a compromised or confused app could.
 *
 * - Confused deputy (RFC 8693 §2.1 / §5, RFC 9700 §4.10 "misuse of stolen access tokens",
 *   Hardy 1988): the sidecar must not lend its client identity to tokens that were never for
 *   its service, to destinations it was not told about, or by letting the app's own token leave.
 * - Cache mixing (an exchanged-token cache keyed wrongly: "token cache poisoning"): one
 *   caller's exchanged token must never be handed
 *   to another caller, destination, grant, or outlive the subject token.
 */

let idp: TestIdp;
let payments: RecordingApp;
let ledger: RecordingApp;
let sidecar: RunningSidecar;
let dir: string;
let egress: number;

beforeAll(async () => {
  idp = await startTestIdp();
  payments = await startRecordingApp('http1');
  ledger = await startRecordingApp('http1');
  dir = mkdtempSync(join(tmpdir(), 'ward-sec-exchange-'));
  writeFileSync(join(dir, 'client-secret'), 'orders-sidecar-secret\n');
  writeFileSync(
    join(dir, 'policy.yaml'),
    `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: ${idp.issuer}
    audiences: [urn:ward:orders]
rules:
  - name: all
    action: allow
    match: { http: [{ prefix: / }] }
`,
  );
  const yaml = `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:9", protocol: http1 }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
authn:
  credentials:
    - { issuer: "${idp.issuer}", clientId: orders-sidecar, clientSecretFile: client-secret }
outbound:
  listen: { host: 127.0.0.1, port: 0 }
  exchange: { refusalCacheSeconds: 5 }
  destinations:
    - { name: payments, url: "http://127.0.0.1:${payments.port}", protocol: http1, resource: "urn:ward:payments", scopes: [payments.charge], noToken: client-credentials }
    - { name: ledger, url: "http://127.0.0.1:${ledger.port}", protocol: http1, resource: "urn:ward:ledger" }
telemetry: { enabled: false }
`;
  const file = join(dir, 'sidecar.yaml');
  writeFileSync(file, yaml);
  sidecar = await startSidecar(parseSidecarConfig(yaml, file), { log: silentLogger, configFile: file });
  egress = sidecar.ports.outbound as number;
});
afterAll(async () => {
  await sidecar.stop();
  await payments.close();
  await ledger.close();
  await idp.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  payments.reset();
  ledger.reset();
});

interface Reply {
  readonly status: number;
  readonly reason: string | undefined;
}

/** The app's outgoing call through the egress listener. */
function out(host: string, headers: http.OutgoingHttpHeaders = {}, path = '/charge'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: egress, path, method: 'POST', headers: { host, ...headers }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-ward-reason'] as string | undefined }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Claims of the bearer the destination received. */
function received(app: RecordingApp, i = 0): Record<string, unknown> {
  const auth = app.seen[i]?.headers['authorization'];
  expect(typeof auth).toBe('string');
  return decodeJwt(String(auth).slice('Bearer '.length));
}

/** A token for this service, as a caller would present it to the orders sidecar. */
const callerToken = (sub: string): Promise<string> => idp.craft({ sub, client_id: 'frontend' });

describe('confused deputy — RFC 8693 §5, RFC 9700 §4.10', () => {
  it('baseline: the destination gets a token exchanged for it, never the app\'s own', async () => {
    const subject = await callerToken('alice');
    expect(await out('payments', { authorization: `Bearer ${subject}` })).toEqual({ status: 200, reason: undefined });
    const auth = String(payments.seen[0]?.headers['authorization']);
    expect(auth).not.toContain(subject);
    const c = received(payments);
    expect(c).toMatchObject({ sub: 'alice', aud: 'urn:ward:payments', act: { sub: 'orders-sidecar' } });
  });

  it('a token issued for another service (aud urn:ward:other) is not exchanged: the sidecar only vouches for tokens addressed to it', async () => {
    const foreign = await idp.token('intruder', 'urn:ward:other', 'other.read');
    expect(await out('payments', { authorization: `Bearer ${foreign}` })).toEqual({ status: 403, reason: 'ERR_EXCHANGE_REFUSED' });
    expect(payments.seen).toEqual([]);
  });

  it('a forged subject token (signed by nobody the IdP knows) is not exchanged', async () => {
    const real = await callerToken('mallory');
    const [h, p] = real.split('.');
    const forged = `${h}.${p}.${Buffer.alloc(256, 7).toString('base64url')}`;
    const r = await out('payments', { authorization: `Bearer ${forged}` });
    expect(r.status).toBe(403);
    expect(r.reason).toBe('ERR_EXCHANGE_REFUSED');
    expect(payments.seen).toEqual([]);
  });

  it('an already-exchanged token (aud payments) replayed into this egress is refused: no re-exchange into a second hop', async () => {
    await out('payments', { authorization: `Bearer ${await callerToken('alice')}` });
    const exchanged = String(payments.seen[0]?.headers['authorization']).slice(7);
    payments.reset();
    expect(await out('payments', { authorization: `Bearer ${exchanged}` })).toEqual({ status: 403, reason: 'ERR_EXCHANGE_REFUSED' });
    expect(payments.seen).toEqual([]);
  });

  it('a declared destination this workload may not reach (IdP says invalid_target): refused, nothing sent', async () => {
    expect(await out('ledger', { authorization: `Bearer ${await callerToken('alice')}` })).toEqual({ status: 403, reason: 'ERR_EXCHANGE_REFUSED' });
    expect(ledger.seen).toEqual([]);
  });

  it.each([
    ['an undeclared name', 'evil.example'],
    ['a suffix of a declared name', 'payments.evil.example'],
    ['a declared name as userinfo', 'payments@evil.example'],
    ['the IdP itself', '127.0.0.1'],
  ])('Host %s (%s): refused before any token request; the app\'s token goes nowhere', async (_name, host) => {
    const r = await out(host, { authorization: `Bearer ${await callerToken('alice')}` });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(['ERR_DESTINATION_UNKNOWN', 'ERR_REQUEST_INVALID']).toContain(r.reason);
    expect(payments.seen).toEqual([]);
    expect(ledger.seen).toEqual([]);
  });

  it.each([['PAYMENTS'], ['payments.'], ['payments:8080']])('Host %s is the same name (case, root dot, port): it reaches payments with a token exchanged for payments, nothing else', async (host) => {
    expect((await out(host, { authorization: `Bearer ${await callerToken('alice')}` })).status).toBe(200);
    expect(received(payments)).toMatchObject({ sub: 'alice', aud: 'urn:ward:payments' });
    expect(ledger.seen).toEqual([]);
  });

  it('absolute-form target naming another host overrides Host: payments (RFC 9112 §3.2.2): refused', async () => {
    const x = await h1raw(egress, `GET http://evil.example/charge HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${await callerToken('alice')}\r\nConnection: close\r\n\r\n`);
    expect(x.replies[0]?.status).toBe(403);
    expect(x.replies[0]?.headers['x-ward-reason']).toBe('ERR_DESTINATION_UNKNOWN');
    expect(payments.seen).toEqual([]);
  });

  it('two Authorization fields from the app: refused, neither is exchanged', async () => {
    const a = await callerToken('alice');
    const x = await h1raw(egress, `POST /charge HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${a}\r\nAuthorization: Bearer ${a}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    expect(x.replies[0]?.status).toBe(400);
    expect(x.replies[0]?.headers['x-ward-reason']).toBe('ERR_TOKEN_MULTIPLE');
    expect(payments.seen).toEqual([]);
  });

  it('identity headers the app adds (x-ward-*) never leave the pod', async () => {
    await out('payments', { authorization: `Bearer ${await callerToken('alice')}`, 'x-ward-subject': 'root', 'x-ward-claims': 'e30' });
    expect(payments.seen[0]?.headers['x-ward-subject']).toBeUndefined();
    expect(payments.seen[0]?.headers['x-ward-claims']).toBeUndefined();
  });
});

describe('exchanged-token cache mixing — cache-key confusion (one caller\'s token served to another; RFC 8693 §2.2.1 tokens are per subject and audience)', () => {
  it('alternating subjects on a warm cache: each destination call carries its own subject, never another\'s', async () => {
    const alice = await callerToken('alice');
    const bob = await callerToken('bob');
    const order = ['alice', 'bob', 'alice', 'bob', 'bob', 'alice'];
    for (const who of order) expect((await out('payments', { authorization: `Bearer ${who === 'alice' ? alice : bob}` })).status).toBe(200);
    expect(order.map((_, i) => received(payments, i)['sub'])).toEqual(order);
  });

  it('concurrent first requests for different subjects (single-flight per subject) are not merged', async () => {
    const subs = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
    const tokens = await Promise.all(subs.map(callerToken));
    const rs = await Promise.all(tokens.flatMap((t) => [out('payments', { authorization: `Bearer ${t}` }), out('payments', { authorization: `Bearer ${t}` })]));
    expect(rs.every((r) => r.status === 200)).toBe(true);
    const byCall = payments.seen.map((s) => decodeJwt(String(s.headers['authorization']).slice(7)).sub);
    expect(byCall.sort()).toEqual([...subs, ...subs].sort());
  });

  it('no token from the app: a client-credentials token of the workload, never a cached exchange of a previous caller', async () => {
    await out('payments', { authorization: `Bearer ${await callerToken('alice')}` });
    await out('payments');
    const cc = received(payments, 1);
    expect(cc['sub'] ?? cc['client_id']).toBe('orders-sidecar');
    expect(cc['act']).toBeUndefined();
    expect(received(payments, 0)['sub']).toBe('alice');
  });

  it('a refusal cached for one subject does not refuse another', async () => {
    const foreign = await idp.token('intruder', 'urn:ward:other', 'other.read');
    expect((await out('payments', { authorization: `Bearer ${foreign}` })).reason).toBe('ERR_EXCHANGE_REFUSED');
    expect((await out('payments', { authorization: `Bearer ${await callerToken('carol')}` })).status).toBe(200);
    expect(received(payments)['sub']).toBe('carol');
  });

  it('a cached exchange does not outlive the subject token it came from', async () => {
    const shortLived = await idp.craft({ sub: 'dave', client_id: 'frontend', exp: Math.floor(Date.now() / 1000) + 2 });
    expect((await out('payments', { authorization: `Bearer ${shortLived}` })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 2300));
    const after = await out('payments', { authorization: `Bearer ${shortLived}` });
    expect(after).toEqual({ status: 403, reason: 'ERR_EXCHANGE_REFUSED' });
    expect(payments.seen).toHaveLength(1);
  });
});
