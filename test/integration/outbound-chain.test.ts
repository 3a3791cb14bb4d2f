import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSidecar, startSidecar } from '../../src/cli/sidecar.ts';
import { parseSidecarConfig } from '../../src/config/sidecar.ts';
import { ordersClientConstructor, type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import { createLogger } from '../../src/lib/log.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { waitFor } from './harness.ts';

/**
 * The three-hop chain over loopback with the real dev IdP and three sidecars started by
 * `startSidecar` (as `ward sidecar` does):
 *
 *   client ──► [orders sidecar] ──► app A ──egress──► [payments sidecar] ──► app B ──egress (gRPC)──► [ledger sidecar] ──► orders gRPC app (C)
 *              aud urn:ward:orders       exchange as orders-sidecar          aud urn:ward:payments   exchange as payments-sidecar       aud urn:ward:ledger
 *
 * Apps A and B forward the caller's Authorization on their onward call, as an app in a mesh
 * does; their sidecars' egress exchange it (RFC 8693). Each hop's policy conditions on the `act`
 * chain. Then: replayed tokens, an exchange the IdP refuses, concurrent subjects, the cache, and
 * an IdP outage mid-traffic.
 */

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

function claimsOf(h: string | string[] | undefined): Record<string, unknown> | null {
  return typeof h === 'string' ? (JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>) : null;
}

interface H1Result {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function h1(port: number, path: string, headers: http.OutgoingHttpHeaders, method = 'GET'): Promise<H1Result> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

function listen(server: http.Server): Promise<number> {
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
}

/** What each app reports back: what it saw, and what its onward call got. */
interface Hop {
  readonly service: string;
  readonly claims: Record<string, unknown> | null;
  /** The bearer the app received, so tests can replay it elsewhere. */
  readonly token: string | null;
  readonly traceparent: string | null;
  readonly downstream: { status: number; reason: string | null; body: unknown };
}

/** App A (orders): `/chain` → payments, `/to-ledger` → ledger (a hop its IdP client may not make). */
function appA(egress: () => number): http.Server {
  return http.createServer((req, res) => {
    const dest = req.url === '/to-ledger' ? 'ledger' : 'payments';
    const auth = req.headers.authorization;
    const tp = req.headers.traceparent;
    void h1(egress(), '/charge', { host: dest, ...(auth === undefined ? {} : { authorization: auth }), ...(tp === undefined ? {} : { traceparent: tp }) }, 'POST').then(
      (r) => {
        let body: unknown = r.body;
        try {
          body = JSON.parse(r.body);
        } catch {
          /* a ward error body is text */
        }
        const hop: Hop = {
          service: 'orders',
          claims: claimsOf(req.headers['x-ward-claims']),
          token: auth?.slice(7) ?? null,
          traceparent: typeof tp === 'string' ? tp : null,
          downstream: { status: r.status, reason: (r.headers['x-ward-reason'] as string | undefined) ?? null, body },
        };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(hop));
      },
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
}

/** App B (payments): `/charge` → ledger over gRPC (GetOrder), through its egress with `:authority` ledger. */
function appB(egress: () => number): { server: http.Server; close(): void } {
  let client: grpc.Client | null = null;
  const server = http.createServer((req, res) => {
    const Ctor = ordersClientConstructor();
    client ??= new Ctor(`127.0.0.1:${egress()}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'ledger' });
    const md = new grpc.Metadata();
    const auth = req.headers.authorization;
    if (auth !== undefined) md.set('authorization', auth);
    const fn = (client as unknown as Record<string, (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v?: { seenSubject: string }) => void) => void>)['GetOrder'];
    fn?.call(client, { id: 'o-1' }, md, (err, v) => {
      const hop: Hop = {
        service: 'payments',
        claims: claimsOf(req.headers['x-ward-claims']),
        token: auth?.slice(7) ?? null,
        traceparent: (req.headers.traceparent as string | undefined) ?? null,
        downstream:
          err === null
            ? { status: 0, reason: null, body: { seenSubject: v?.seenSubject } }
            : { status: err.code, reason: (err.metadata.get('x-ward-reason')[0] as string | undefined) ?? null, body: null },
      };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(hop));
    });
  });
  return { server, close: () => client?.close() };
}

describe('outbound: a three-service chain with token exchange at every hop', () => {
  let idp: TestIdp;
  let c: OrdersApp;
  let a: http.Server;
  let b: ReturnType<typeof appB>;
  let sidecarA: RunningSidecar;
  let sidecarB: RunningSidecar;
  let sidecarC: RunningSidecar;
  const logs: string[] = [];
  const tokensSeen: string[] = [];
  const dirs: string[] = [];
  /** While true, sidecar A's requests to the IdP's token endpoint hang (until their own timeout aborts them). */
  let idpHangs = false;
  const fetchA: typeof fetch = (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    if (idpHangs && url.endsWith('/token')) {
      return new Promise((_resolve, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal?.reason as Error)));
    }
    return fetch(input, init);
  };

  async function sidecar(p: {
    service: string;
    appPort: number;
    protocol: 'h2c' | 'http1';
    policy: string;
    clientId?: string;
    outbound?: string;
    fetch?: typeof fetch;
  }): Promise<RunningSidecar> {
    const dir = mkdtempSync(join(tmpdir(), `ward-chain-${p.service}-`));
    dirs.push(dir);
    writeFileSync(join(dir, 'policy.yaml'), p.policy);
    const secret = p.clientId === undefined ? undefined : idp.config.clients.find((x) => x.clientId === p.clientId)?.clientSecret;
    if (secret !== undefined) writeFileSync(join(dir, 'secret'), `${secret}\n`);
    const yaml = `service: ${p.service}
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:${p.appPort}", protocol: ${p.protocol} }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
authn:
  jwks: { cooldownMs: 0, timeoutMs: 1000 }
${secret === undefined ? '' : `  credentials: [{ issuer: "${idp.issuer}", clientId: ${p.clientId}, clientSecretFile: secret }]`}
telemetry: { enabled: false }
drainTimeoutMs: 1000
logLevel: debug
${p.outbound ?? ''}`;
    const file = join(dir, 'sidecar.yaml');
    writeFileSync(file, yaml);
    const log = createLogger({ level: 'debug', base: { service: p.service }, sink: { write: (l) => logs.push(l) } });
    const s = await startSidecar(parseSidecarConfig(yaml, file), { log, configFile: file, ...(p.fetch === undefined ? {} : { fetch: p.fetch }) });
    await waitFor(() => s.ready(), 10_000, `${p.service} ready`);
    return s;
  }

  const policy = (service: string, audience: string, rules: string): string => `apiVersion: ward.dev/v1
kind: Policy
service: ${service}
issuers:
  - { issuer: "${idp.issuer}", audiences: [${audience}] }
rules:
${rules}`;

  beforeAll(async () => {
    idp = await startTestIdp();
    c = await startOrdersApp();
    let egressA = 0;
    let egressB = 0;
    a = appA(() => egressA);
    b = appB(() => egressB);
    const portA = await listen(a);
    const portB = await listen(b.server);

    // C (ledger): only calls made for a user, through payments, which was itself called through orders
    sidecarC = await sidecar({
      service: 'ledger',
      appPort: c.port,
      protocol: 'h2c',
      policy: policy(
        'ledger',
        'urn:ward:ledger',
        `  - name: ledger-via-payments
    action: allow
    match: { grpc: [/ward.demo.v1.Orders/GetOrder] }
    when:
      - actor: { anyOf: [payments-sidecar] }
      - via: { allOf: [orders-sidecar] }
      - maxDepth: 2
      - scopes: { allOf: [ledger.append] }
`,
      ),
    });
    // B (payments): only on someone's behalf through orders
    sidecarB = await sidecar({
      service: 'payments',
      appPort: portB,
      protocol: 'http1',
      clientId: 'payments-sidecar',
      policy: policy(
        'payments',
        'urn:ward:payments',
        `  - name: charge-through-orders
    action: allow
    match: { http: [{ methods: [POST], exact: /charge }] }
    when:
      - actor: { anyOf: [orders-sidecar] }
      - scopes: { allOf: [payments.charge] }
`,
      ),
      outbound: `outbound:
  listen: { port: 0 }
  destinations:
    - { name: ledger, url: "http://127.0.0.1:${sidecarC.ports.inbound}", protocol: h2c, resource: "urn:ward:ledger", scopes: [ledger.append] }
`,
    });
    // A (orders): direct calls from users' frontends
    sidecarA = await sidecar({
      service: 'orders',
      appPort: portA,
      protocol: 'http1',
      clientId: 'orders-sidecar',
      fetch: fetchA,
      policy: policy(
        'orders',
        'urn:ward:orders',
        `  - name: readers
    action: allow
    match: { http: [{ methods: [GET], prefix: / }] }
    when:
      - delegated: false
      - scopes: { allOf: [orders.read] }
`,
      ),
      outbound: `outbound:
  listen: { port: 0 }
  exchange: { timeoutMs: 500, retryInitialMs: 60000, retryMaxMs: 60000 }
  destinations:
    - { name: payments, url: "http://127.0.0.1:${sidecarB.ports.inbound}", protocol: http1, resource: "urn:ward:payments", scopes: [payments.charge] }
    - { name: ledger, url: "http://127.0.0.1:${sidecarC.ports.inbound}", protocol: h2c, resource: "urn:ward:ledger", scopes: [ledger.append] }
`,
    });
    egressA = sidecarA.ports.outbound ?? 0;
    egressB = sidecarB.ports.outbound ?? 0;
  });

  afterAll(async () => {
    b.close();
    await Promise.all([sidecarA.stop(), sidecarB.stop(), sidecarC.stop()]);
    a.closeAllConnections();
    a.close();
    b.server.closeAllConnections();
    b.server.close();
    await c.close();
    await idp.close().catch(() => undefined);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    // never a token in any sidecar's log
    const all = logs.join('');
    for (const t of tokensSeen) expect(all.includes(t), 'a token appeared in a log').toBe(false);
  });

  async function callChain(token: string, path = '/chain'): Promise<{ status: number; reason: string | null; a: Hop | null }> {
    tokensSeen.push(token);
    const r = await h1(sidecarA.ports.inbound, path, { host: 'orders', authorization: `Bearer ${token}`, traceparent: TRACEPARENT });
    const hopA = r.status === 200 ? (JSON.parse(r.body) as Hop) : null;
    if (hopA?.token) tokensSeen.push(hopA.token);
    const hopB = hopA?.downstream.body as Hop | undefined;
    if (hopB?.token) tokensSeen.push(hopB.token);
    return { status: r.status, reason: (r.headers['x-ward-reason'] as string | undefined) ?? null, a: hopA };
  }

  async function status(s: RunningSidecar): Promise<{ outbound: { forwarded: number; refused: number; exchange: Record<string, number> } }> {
    const r = await fetch(`http://127.0.0.1:${s.ports.admin}/status`);
    return (await r.json()) as never;
  }

  it('C sees the original subject and the whole actor chain; each hop sees its own audience', async () => {
    const user = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const r = await callChain(user);
    expect(r.status).toBe(200);
    const hopA = r.a as Hop;
    expect(hopA.claims).toMatchObject({ sub: 'frontend', aud: 'urn:ward:orders' });
    expect(hopA.claims).not.toHaveProperty('act');
    expect(hopA.downstream.status).toBe(200);

    const hopB = hopA.downstream.body as Hop;
    expect(hopB.claims).toMatchObject({ sub: 'frontend', aud: 'urn:ward:payments', scope: 'payments.charge', act: { sub: 'orders-sidecar' } });
    expect(hopB.traceparent).toBe(TRACEPARENT);
    expect(hopB.downstream).toMatchObject({ status: grpc.status.OK, body: { seenSubject: 'frontend' } });

    const atC = claimsOf(c.calls.at(-1)?.metadata['x-ward-claims']);
    expect(atC).toMatchObject({
      sub: 'frontend',
      aud: 'urn:ward:ledger',
      scope: 'ledger.append',
      client_id: 'payments-sidecar',
      act: { sub: 'payments-sidecar', act: { sub: 'orders-sidecar' } },
    });
    // A got the user's token; B and C each got a different one, made for them
    const tokenAtC = c.calls.at(-1)?.metadata['authorization']?.slice(7) ?? '';
    tokensSeen.push(tokenAtC);
    expect(hopA.token).toBe(user);
    expect(new Set([user, hopB.token, tokenAtC]).size).toBe(3);
    expect(decodeJwt(tokenAtC).aud).toBe('urn:ward:ledger');
  });

  it('a token for one hop replayed against the next is refused by that hop\'s sidecar', async () => {
    const user = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const r = await callChain(user);
    const hopB = (r.a as Hop).downstream.body as Hop;

    // A's token straight at B: wrong audience
    const atB = await h1(sidecarB.ports.inbound, '/charge', { host: 'payments', authorization: `Bearer ${user}` }, 'POST');
    expect(atB.status).toBe(401);
    expect(atB.headers['x-ward-reason']).toBe('ERR_TOKEN_AUDIENCE');
    // B's (exchanged) token straight at C: wrong audience too
    const client = new (ordersClientConstructor())(`127.0.0.1:${sidecarC.ports.inbound}`, grpc.credentials.createInsecure());
    try {
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${hopB.token ?? ''}`);
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        (client as unknown as Record<string, (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void) => void>)['GetOrder']?.call(client, { id: '1' }, md, resolve),
      );
      expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(err?.metadata.get('x-ward-reason')).toEqual(['ERR_TOKEN_AUDIENCE']);
    } finally {
      client.close();
    }
    // B's token back at A: A accepts only its own audience
    const atA = await h1(sidecarA.ports.inbound, '/chain', { host: 'orders', authorization: `Bearer ${hopB.token ?? ''}` });
    expect(atA.headers['x-ward-reason']).toBe('ERR_TOKEN_AUDIENCE');
  });

  it('inbound policy conditions on the act chain: a payments token that did not come through orders is refused', async () => {
    // validly signed for payments, with payments.charge, but nobody acted: not through orders
    const direct = await idp.craft({ aud: 'urn:ward:payments', scope: 'payments.charge', sub: 'mallory', client_id: 'mallory' });
    tokensSeen.push(direct);
    const r = await h1(sidecarB.ports.inbound, '/charge', { host: 'payments', authorization: `Bearer ${direct}` }, 'POST');
    expect(r.status).toBe(403);
    expect(r.headers['x-ward-reason']).toBe('ERR_POLICY_NO_MATCH');
    // and a ledger token with an actor chain that skipped orders
    const skipped = await idp.craft({ aud: 'urn:ward:ledger', scope: 'ledger.append', act: { sub: 'payments-sidecar' } });
    tokensSeen.push(skipped);
    const before = c.calls.length;
    const client = new (ordersClientConstructor())(`127.0.0.1:${sidecarC.ports.inbound}`, grpc.credentials.createInsecure());
    try {
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${skipped}`);
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        (client as unknown as Record<string, (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void) => void>)['GetOrder']?.call(client, { id: '1' }, md, resolve),
      );
      expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
    } finally {
      client.close();
    }
    expect(c.calls.length).toBe(before);
    // A refuses delegated tokens: users call it directly
    const delegated = await idp.craft({ act: { sub: 'somebody' } });
    tokensSeen.push(delegated);
    expect((await h1(sidecarA.ports.inbound, '/chain', { host: 'orders', authorization: `Bearer ${delegated}` })).status).toBe(403);
  });

  it('an exchange the IdP refuses is PERMISSION_DENIED with the OAuth code in the decision log; nothing reaches the destination', async () => {
    const user = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const before = c.calls.length;
    const r = await callChain(user, '/to-ledger'); // orders-sidecar may not exchange for urn:ward:ledger
    expect(r.status).toBe(200);
    expect(r.a?.downstream).toMatchObject({ status: 403, reason: 'ERR_EXCHANGE_REFUSED' });
    expect(c.calls.length).toBe(before);
    const refusal = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'token request refused' && l['destination'] === 'ledger');
    expect(refusal).toMatchObject({ service: 'orders', oauthError: 'invalid_target', issuer: idp.issuer });
    const denied = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'outbound call refused' && l['code'] === 'ERR_EXCHANGE_REFUSED');
    expect(denied).toMatchObject({ oauthError: 'invalid_target', destination: 'ledger' });
  });

  it('many concurrent callers with different subjects through one sidecar never get each other\'s tokens', async () => {
    const subjects = Array.from({ length: 16 }, (_, i) => `user-${i}`);
    const tokens = await Promise.all(subjects.map((sub) => idp.craft({ sub, client_id: 'frontend' })));
    tokensSeen.push(...tokens);
    // every subject three times at once: coalesced exchanges, then cached ones
    const calls = [...tokens, ...tokens, ...tokens].map((t, i) => ({ sub: subjects[i % subjects.length] as string, t }));
    const before = await status(sidecarA);
    const results = await Promise.all(calls.map(async ({ sub, t }) => ({ sub, r: await callChain(t) })));
    for (const { sub, r } of results) {
      expect(r.status).toBe(200);
      const hopA = r.a as Hop;
      const hopB = hopA.downstream.body as Hop;
      expect(hopA.claims?.['sub']).toBe(sub);
      expect(hopB.claims?.['sub'], 'B got a token for another subject').toBe(sub);
      expect(hopB.downstream.body, 'C saw another subject').toEqual({ seenSubject: sub });
    }
    const after = await status(sidecarA);
    const d = (k: string): number => (after.outbound.exchange[k] ?? 0) - (before.outbound.exchange[k] ?? 0);
    expect(d('requests')).toBe(48);
    expect(d('exchanges')).toBe(16); // one per subject: the rest joined in flight or hit the cache
    expect(d('coalesced') + d('cacheHits')).toBe(32);
  });

  it('repeated calls are served from the cache: hit ratio measured on /status', async () => {
    const user = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const before = await status(sidecarA);
    for (let i = 0; i < 20; i++) expect((await callChain(user)).a?.downstream.status).toBe(200);
    const after = await status(sidecarA);
    const hits = after.outbound.exchange['cacheHits']! - before.outbound.exchange['cacheHits']!;
    const requests = after.outbound.exchange['requests']! - before.outbound.exchange['requests']!;
    expect(requests).toBe(20);
    expect(hits).toBe(19);
    // B's broker: one exchange per distinct subject token it received, hits for the rest
    const bStats = (await status(sidecarB)).outbound.exchange;
    expect(bStats['cacheHits']).toBeGreaterThanOrEqual(19);
    expect(after.outbound.exchange['hitRatio']).toBeGreaterThan(0);
  });

  it('an IdP outage mid-traffic: cached exchanges go on, a new one fails closed with UNAVAILABLE after the bounded timeout, then at once', async () => {
    const cached = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const fresh = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const fresh2 = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    expect((await callChain(cached)).a?.downstream.status).toBe(200);
    const before = await status(sidecarA);

    idpHangs = true; // the token endpoint stops answering (A's exchange.timeoutMs is 500 ms)
    const [stuck, ...flowing] = await Promise.all([callChain(fresh), ...Array.from({ length: 10 }, () => callChain(cached))]);
    for (const r of flowing) expect(r.a?.downstream.status).toBe(200); // both exchanges cached: unaffected
    expect(stuck?.status).toBe(200); // A itself still verifies with its cached keys…
    expect(stuck?.a?.downstream).toMatchObject({ status: 503, reason: 'ERR_EXCHANGE_UNAVAILABLE' }); // …but cannot call out
    const unavailable = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'token endpoint unavailable');
    expect(unavailable).toMatchObject({ service: 'orders', destination: 'payments' });
    expect(unavailable?.['retryInMs']).toBeGreaterThanOrEqual(30_000); // retryInitialMs 60 s, equal jitter
    expect(String(unavailable?.['detail'])).toMatch(/timeout|abort/i);

    // in back-off: the next new subject fails at once; the IdP is not asked again
    await idp.close(); // and now it is gone altogether
    const r2 = await callChain(fresh2);
    expect(r2.a?.downstream).toMatchObject({ status: 503, reason: 'ERR_EXCHANGE_UNAVAILABLE' });
    expect((await callChain(cached)).a?.downstream.status).toBe(200);
    const after = await status(sidecarA);
    const d = (k: string): number => (after.outbound.exchange[k] ?? 0) - (before.outbound.exchange[k] ?? 0);
    expect(d('exchanges')).toBe(1);
    expect(d('unavailable')).toBe(1);
    expect(d('backoffRejections')).toBe(1);
    expect(d('cacheHits')).toBe(11);
  });
});
