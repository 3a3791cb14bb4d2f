import http from 'node:http';
import type http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import type * as z from '../../src/lib/schema.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { startOrdersApp, type OrdersApp } from '../../src/demo/orders-app.ts';
import type { TokenOutcome } from '../../src/exchange/broker.ts';
import type { TokenTarget } from '../../src/exchange/token-client.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound, type Outbound, type OutboundDecisionRecord } from '../../src/outbound/server.ts';
import {
  h1Request,
  h2Connect,
  h2Request,
  ordersClient,
  rawExchange,
  type AppEvents,
  type RecordingApp,
  startH1App,
  startH2App,
  unary,
} from '../unit/inbound/harness.ts';
import { waitFor } from './harness.ts';

/**
 * The egress listener with real peers (HTTP/1.1 and h2c apps, the gRPC orders app, h1/h2c/grpc-js
 * clients on one port) and a scripted token source: routing by authority, what the destination
 * receives, and every refusal with its code.
 */

interface Asked {
  readonly target: string;
  readonly subject: string | null;
}

/** Tokens by subject: `refuse-*` is refused (invalid_target), `down-*` unavailable, `slow-*` answers after 300 ms. */
function scriptedTokens(asked: Asked[]) {
  return {
    token(t: TokenTarget, subject: string | null): TokenOutcome | Promise<TokenOutcome> {
      asked.push({ target: t.name, subject });
      if (subject === null) return { ok: true, token: `cc-for-${t.name}`, authorization: `Bearer cc-for-${t.name}`, via: 'client-credentials' };
      if (subject.startsWith('refuse')) return Promise.resolve({ ok: false, code: 'ERR_EXCHANGE_REFUSED', oauthError: 'invalid_target', detail: 'invalid_target' });
      if (subject.startsWith('down')) return Promise.resolve({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE', oauthError: null, detail: 'ECONNREFUSED' });
      const token = `exchanged-${subject}-for-${t.name}`;
      const outcome: TokenOutcome = { ok: true, token, authorization: `Bearer ${token}`, via: 'exchange' };
      if (subject.startsWith('slow')) return new Promise((r) => setTimeout(() => r(outcome), 300));
      if (subject.startsWith('sync')) return outcome;
      return Promise.resolve(outcome);
    },
  };
}

describe('outbound: the egress listener', () => {
  let h1app: RecordingApp;
  let h2app: RecordingApp & AppEvents;
  let orders: OrdersApp;
  let egress: Outbound;
  let passEgress: Outbound;
  let session: http2.ClientHttp2Session;
  const asked: Asked[] = [];
  const decisions: OutboundDecisionRecord[] = [];

  async function start(over: Partial<z.input<typeof outboundConfigSchema>>): Promise<Outbound> {
    const config = outboundConfigSchema.parse({
      listen: { host: '127.0.0.1', port: 0 },
      destinations: [
        { name: 'payments', url: `http://127.0.0.1:${h2app.port}`, protocol: 'h2c', resource: 'urn:ward:payments', scopes: ['payments.charge'] },
        { name: 'legacy.internal', url: `http://127.0.0.1:${h1app.port}`, protocol: 'http1', audience: 'legacy', noToken: 'client-credentials' },
        { name: 'orders', url: `http://127.0.0.1:${orders.port}`, protocol: 'h2c', resource: 'urn:ward:orders' },
      ],
      ...over,
    });
    return createOutbound({
      service: 'frontend',
      config,
      identityPrefix: 'x-ward-',
      maxTokenBytes: 8192,
      extractBearer,
      tokens: scriptedTokens(asked),
      log: silentLogger,
      clock: Date.now,
      onDecision: (r) => decisions.push(r),
    });
  }

  beforeAll(async () => {
    h1app = await startH1App();
    h2app = await startH2App();
    orders = await startOrdersApp();
    egress = await start({});
    passEgress = await start({ passthrough: true });
    session = await h2Connect(egress.port);
  });
  afterAll(async () => {
    session.close();
    await egress.close();
    await passEgress.close();
    await h1app.close();
    await h2app.close();
    await orders.close();
  });
  beforeEach(() => {
    asked.length = 0;
    decisions.length = 0;
    h1app.requests.length = 0;
    h2app.requests.length = 0;
  });

  const h2 = (headers: http2.OutgoingHttpHeaders, body?: string) => h2Request(session, { ':method': 'GET', ...headers }, body);

  it('h2c: exchanges the forwarded token; the destination gets it, the path, query, authority and traceparent as sent', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const r = await h2({
      ':authority': 'payments',
      ':path': '/api/charge/../x?amount=3&b=%2F',
      authorization: 'Bearer alice-token',
      traceparent,
      'x-ward-subject': 'spoofed',
      'x-custom': 'kept',
    });
    expect(r.headers[':status']).toBe(200);
    expect(asked).toEqual([{ target: 'payments', subject: 'alice-token' }]);
    const seen = h2app.requests[0];
    expect(seen?.path).toBe('/api/charge/../x?amount=3&b=%2F'); // verbatim: the destination's sidecar normalizes
    expect(seen?.headers['authorization']).toBe('Bearer exchanged-alice-token-for-payments');
    expect(seen?.headers[':authority']).toBe('payments');
    expect(seen?.headers['traceparent']).toBe(traceparent);
    expect(seen?.headers['x-custom']).toBe('kept');
    expect(seen?.headers['x-ward-subject']).toBeUndefined();
    expect(decisions.at(-1)).toMatchObject({ direction: 'outbound', destination: 'payments', decision: 'allow', code: null, token: 'exchange', cached: false });
  });

  it('a gRPC call\'s decision names its method without the query, which telemetry must not carry (regression: /pkg.S/M?api_key=… was the route)', async () => {
    const r = await h2({ ':method': 'POST', ':authority': 'payments', ':path': '/ward.demo.v1.Payments/Charge?api_key=SECRET123', 'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer alice-token' }, '');
    expect(r.headers[':status']).toBe(200);
    expect(decisions.at(-1)).toMatchObject({ direction: 'outbound', protocol: 'grpc', route: '/ward.demo.v1.Payments/Charge' });
    expect(JSON.stringify(decisions.at(-1))).not.toContain('SECRET123');
  });

  it('a synchronous (cached) token goes out without waiting and is recorded as cached', async () => {
    const r = await h2({ ':authority': 'payments', ':path': '/x', authorization: 'Bearer sync-bob' });
    expect(r.headers[':status']).toBe(200);
    expect(h2app.requests[0]?.headers['authorization']).toBe('Bearer exchanged-sync-bob-for-payments');
    expect(decisions.at(-1)).toMatchObject({ cached: true, token: 'exchange' });
  });

  it('HTTP/1.1: matches Host without port, case-insensitively, to an http1 destination', async () => {
    const r = await h1Request(egress.port, { path: '/v1/items?q=1', headers: { host: 'Legacy.Internal:8080', authorization: 'Bearer carol' } });
    expect(r.status).toBe(200);
    expect(r.body).toBe('ok /v1/items?q=1');
    expect(h1app.requests[0]?.headers['authorization']).toBe('Bearer exchanged-carol-for-legacy.internal');
    expect(h1app.requests[0]?.headers['host']).toBe('Legacy.Internal:8080');
  });

  it('HTTP/1.1 absolute-form (an http_proxy client): the URI names the destination', async () => {
    const out = await rawExchange(
      egress.port,
      'GET http://legacy.internal/proxied?x=1 HTTP/1.1\r\nHost: ignored.example\r\nAuthorization: Bearer dave\r\nConnection: close\r\n\r\n',
    );
    expect(out).toMatch(/^HTTP\/1\.1 200/);
    expect(h1app.requests[0]?.path).toBe('/proxied?x=1');
    expect(h1app.requests[0]?.headers['host']).toBe('legacy.internal');
    expect(asked).toEqual([{ target: 'legacy.internal', subject: 'dave' }]);
  });

  it('without a token: client credentials where the destination allows it, ERR_TOKEN_MISSING where not', async () => {
    const cc = await h1Request(egress.port, { path: '/batch', headers: { host: 'legacy.internal' } });
    expect(cc.status).toBe(200);
    expect(h1app.requests[0]?.headers['authorization']).toBe('Bearer cc-for-legacy.internal');
    expect(decisions.at(-1)).toMatchObject({ token: 'client-credentials' });

    const refused = await h2({ ':authority': 'payments', ':path': '/x' });
    expect(refused.headers[':status']).toBe(401);
    expect(refused.headers['x-ward-reason']).toBe('ERR_TOKEN_MISSING');
    expect(h2app.requests).toHaveLength(0);
  });

  it('an undeclared destination is refused: 403 ERR_DESTINATION_UNKNOWN, nothing sent, no token asked for', async () => {
    const r = await h2({ ':authority': 'ledger', ':path': '/x', authorization: 'Bearer alice' });
    expect(r.headers[':status']).toBe(403);
    expect(r.headers['x-ward-reason']).toBe('ERR_DESTINATION_UNKNOWN');
    expect(r.headers['x-ward-decision-id']).toMatch(/.+/);
    const h1 = await h1Request(egress.port, { path: '/x', headers: { host: '127.0.0.1:1', authorization: 'Bearer alice' } });
    expect(h1.status).toBe(403);
    expect(asked).toEqual([]);
    expect(decisions.map((d) => d.code)).toEqual(['ERR_DESTINATION_UNKNOWN', 'ERR_DESTINATION_UNKNOWN']);
  });

  it('an IdP refusal is 403 ERR_EXCHANGE_REFUSED with the OAuth code in the decision; an outage 503 ERR_EXCHANGE_UNAVAILABLE', async () => {
    const refused = await h2({ ':authority': 'payments', ':path': '/x', authorization: 'Bearer refuse-me' });
    expect(refused.headers[':status']).toBe(403);
    expect(refused.headers['x-ward-reason']).toBe('ERR_EXCHANGE_REFUSED');
    expect(decisions.at(-1)).toMatchObject({ decision: 'deny', code: 'ERR_EXCHANGE_REFUSED', oauthError: 'invalid_target' });
    const down = await h1Request(egress.port, { path: '/x', headers: { host: 'legacy.internal', authorization: 'Bearer down-1' } });
    expect(down.status).toBe(503);
    expect(down.headers['x-ward-reason']).toBe('ERR_EXCHANGE_UNAVAILABLE');
    expect(h2app.requests).toHaveLength(0);
    expect(h1app.requests).toHaveLength(0);
  });

  it('refuses what it cannot forward as-is', async () => {
    const two = await h2Request(session, [':method', 'GET', ':authority', 'payments', ':path', '/x', 'authorization', 'Bearer a', 'authorization', 'Bearer b']);
    expect(two.headers['x-ward-reason']).toBe('ERR_TOKEN_MULTIPLE');
    const basic = await h2({ ':authority': 'payments', ':path': '/x', authorization: 'Basic YTpi' });
    expect(basic.headers['x-ward-reason']).toBe('ERR_TOKEN_MALFORMED');
    // no tunnels: the app calls http://<destination>/…, never CONNECT
    const connect = await rawExchange(egress.port, 'CONNECT payments:443 HTTP/1.1\r\nHost: payments:443\r\n\r\n');
    expect(connect).not.toMatch(/^HTTP\/1\.1 2/);
    const https = await rawExchange(egress.port, 'GET https://payments/x HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n');
    expect(https).toMatch(/^HTTP\/1\.1 400/);
    const noHost = await rawExchange(egress.port, 'GET /x HTTP/1.0\r\nConnection: close\r\n\r\n');
    expect(noHost).toMatch(/^HTTP\/1\.1 400/);
    const grpcToH1 = await h2({ ':method': 'POST', ':authority': 'legacy.internal', ':path': '/a.B/C', 'content-type': 'application/grpc', authorization: 'Bearer x' });
    expect(grpcToH1.headers['grpc-status']).toBe('13');
    // The app's own token never leaves the pod, in the URL either (regression: the query went on as sent)
    const inQuery = await h2({ ':authority': 'payments', ':path': '/x?a=1&access_token=alice', authorization: 'Bearer alice' });
    expect(inQuery.headers['x-ward-reason']).toBe('ERR_TOKEN_IN_QUERY');
    const inQueryH1 = await h1Request(passEgress.port, { path: '/x?access%5Ftoken=alice', headers: { host: `127.0.0.1:${h1app.port}` } });
    expect(inQueryH1.status).toBe(400);
    expect(h1app.requests).toHaveLength(0);
    expect(asked).toEqual([]);
  });

  it('gRPC: a grpc-js client with default_authority reaches the orders app with the exchanged token', async () => {
    const client = ordersClient(egress.port, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'orders' });
    try {
      const md = new grpc.Metadata();
      md.set('authorization', 'Bearer erin');
      const r = await unary<{ id: string }>(client, 'GetOrder', { id: '5' }, md);
      expect(r.err).toBeNull();
      expect(r.res?.id).toBe('5');
      expect(orders.calls.at(-1)?.metadata['authorization']).toBe('Bearer exchanged-erin-for-orders');

      const md2 = new grpc.Metadata();
      md2.set('authorization', 'Bearer refuse-it');
      const denied = await unary(client, 'GetOrder', { id: '5' }, md2);
      expect(denied.err?.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(denied.err?.metadata.get('x-ward-reason')).toEqual(['ERR_EXCHANGE_REFUSED']);

      const other = ordersClient(egress.port, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'inventory' });
      const unknown = await unary(other, 'GetOrder', { id: '5' }, md);
      other.close();
      expect(unknown.err?.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(unknown.err?.metadata.get('x-ward-reason')).toEqual(['ERR_DESTINATION_UNKNOWN']);

      // the caller's deadline runs while the token is fetched: DEADLINE_EXCEEDED, nothing sent
      const before = orders.calls.length;
      const md3 = new grpc.Metadata();
      md3.set('authorization', 'Bearer slow-frank');
      const late = await unary(client, 'GetOrder', { id: '5' }, md3, { deadline: Date.now() + 100 });
      expect(late.err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      await new Promise((r) => setTimeout(r, 300));
      expect(orders.calls.length).toBe(before);
    } finally {
      client.close();
    }
  });

  it('pass-through (when enabled): to the authority itself, without the app\'s Authorization and without a token', async () => {
    const r = await h1Request(passEgress.port, { path: '/direct', headers: { host: `127.0.0.1:${h1app.port}`, authorization: 'Bearer alice' } });
    expect(r.status).toBe(200);
    expect(h1app.requests[0]?.path).toBe('/direct');
    expect(h1app.requests[0]?.headers['authorization']).toBeUndefined();
    expect(asked).toEqual([]);
    expect(decisions.at(-1)).toMatchObject({ destination: '(passthrough)', token: 'none' });
    // declared names still get their token
    await h1Request(passEgress.port, { path: '/y', headers: { host: 'legacy.internal', authorization: 'Bearer alice' } });
    expect(h1app.requests[1]?.headers['authorization']).toBe('Bearer exchanged-alice-for-legacy.internal');
    // never back into the egress listener itself
    const loop = await h1Request(passEgress.port, { path: '/y', headers: { host: `127.0.0.1:${passEgress.port}` } });
    expect(loop.status).toBe(400);
    expect(passEgress.counters.passthrough).toBe(1);
  });

  it('an unreachable destination is 503 ERR_UPSTREAM_UNAVAILABLE', async () => {
    const dead = await startH1App();
    const port = dead.port;
    await dead.close();
    const o = await start({ destinations: [{ name: 'gone', url: `http://127.0.0.1:${port}`, protocol: 'http1', resource: 'urn:x' }] });
    try {
      const r = await h1Request(o.port, { path: '/', headers: { host: 'gone', authorization: 'Bearer a' } });
      expect(r.status).toBe(503);
      expect(r.headers['x-ward-reason']).toBe('ERR_UPSTREAM_UNAVAILABLE');
      expect(o.counters.upstreamErrors).toBe(1);
    } finally {
      await o.close();
    }
  });

  it('a destination at its maxRequests: the next call is 503 ERR_UPSTREAM_OVERLOADED, never sent; the place comes back when a call ends', async () => {
    const o = await start({
      destinations: [{ name: 'payments', url: `http://127.0.0.1:${h2app.port}`, protocol: 'h2c', resource: 'urn:ward:payments', maxRequests: 1 }],
    });
    const s = await h2Connect(o.port);
    try {
      const held = s.request({ ':method': 'GET', ':authority': 'payments', ':path': '/slow/egress-1', authorization: 'Bearer hank' });
      held.on('error', () => {});
      const heldClosed = new Promise<void>((r) => held.on('close', () => r()));
      await waitFor(() => h2app.events.includes('slow /slow/egress-1'), 5000, 'the held call at the destination');
      const over = await h2Request(s, { ':method': 'GET', ':authority': 'payments', ':path': '/slow/egress-2', authorization: 'Bearer hank' });
      expect([over.headers[':status'], over.headers['x-ward-reason']]).toEqual([503, 'ERR_UPSTREAM_OVERLOADED']);
      await new Promise((r) => setTimeout(r, 100));
      expect(h2app.events).not.toContain('slow /slow/egress-2');
      held.close();
      await heldClosed;
      const ok = async () => (await h2Request(s, { ':method': 'GET', ':authority': 'payments', ':path': '/ok/egress-3', authorization: 'Bearer hank' })).headers[':status'];
      await waitFor(async () => Number(await ok()) === 200, 5000, 'the place back');
    } finally {
      s.close();
      await o.close();
    }
  });

  it('streams request bodies and relays trailers both ways', async () => {
    const big = 'x'.repeat(200_000);
    const r = await h2({ ':method': 'POST', ':authority': 'payments', ':path': '/echo', authorization: 'Bearer gina' }, big);
    expect(r.body.length).toBe(big.length);
    const t = await h2({ ':authority': 'payments', ':path': '/trailers', authorization: 'Bearer gina', te: 'trailers' });
    expect(t.trailers['x-app-trailer']).toBe('done');
  });

  it('drains: in-flight calls finish, new connections are refused', async () => {
    const o = await start({});
    const agent = new http.Agent({ keepAlive: false });
    const inflight = h1Request(o.port, { path: '/delay', headers: { host: 'legacy.internal', authorization: 'Bearer slow-h' }, agent });
    await new Promise((r) => setTimeout(r, 50));
    const drained = o.drain(2000);
    expect((await inflight).status).toBe(200);
    await drained;
    await expect(h1Request(o.port, { path: '/', headers: { host: 'legacy.internal' } })).rejects.toThrow();
  });
});
