import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClientCredentialsTokenSource } from '../../src/controlplane/client/token.ts';
import { createTokenBroker } from '../../src/exchange/broker.ts';
import { createTokenClient, type TokenTarget } from '../../src/exchange/token-client.ts';
import { silentLogger } from '../../src/lib/log.ts';

/**
 * Fault injection on the IdP's token endpoint (the egress path's RFC 8693 exchange): failing,
 * hanging, garbage, huge and endless responses. Documented behaviour (docs/outbound.md): every
 * such answer is ERR_EXCHANGE_UNAVAILABLE for the calls that need a new token, the broker backs
 * off, and nothing the IdP sends grows the sidecar's memory without bound.
 */

type Mode = 'ok' | 'error500' | 'hang' | 'garbage' | 'huge' | 'endless' | 'crlf' | 'space' | 'long';
let mode: Mode = 'ok';
let server: http.Server;
let endpoint: string;
const sockets = new Set<Socket>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    res.on('error', () => {});
    if (req.url === '/.well-known/openid-configuration' && mode !== 'endless') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: endpoint, token_endpoint: `${endpoint}/token` }));
      return;
    }
    switch (mode) {
      case 'ok':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"access_token":"t","token_type":"Bearer","expires_in":60,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}');
        return;
      case 'error500':
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"server_error"}');
        return;
      case 'hang':
        return;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' }).end('<html>');
        return;
      // access_token values that cannot go out as `Authorization: Bearer` (RFC 6750 b64token).
      case 'crlf':
      case 'space':
      case 'long': {
        const token = { crlf: 'abc\r\nx-injected: 1', space: 'two words', long: 'a'.repeat(20_000) }[mode];
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: 300, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' }));
        return;
      }
      case 'huge': {
        const body = `{"access_token":"${'a'.repeat(4 * 1024 * 1024)}","token_type":"Bearer"}`;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
        return;
      }
      case 'endless': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        res.write('{"access_token":"');
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        pump();
      }
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

const TARGET: TokenTarget = { name: 'payments', resource: 'urn:ward:payments', audience: undefined, scope: '' };

describe('token endpoint misbehaving', () => {
  it.each(['error500', 'hang', 'garbage', 'huge', 'endless'] as const)('%s: unavailable (never refused, never a token), memory bounded', async (m) => {
    mode = m;
    const client = createTokenClient({ issuer: endpoint, clientId: 'orders-sidecar', clientSecret: 's', tokenEndpoint: `${endpoint}/token`, clientAuth: 'client_secret_basic', timeoutMs: 1000 });
    const rss0 = process.memoryUsage().rss;
    const r = await client.exchange('subject-token', TARGET);
    expect(r).toMatchObject({ ok: false, kind: 'unavailable' });
    // Before the fix one second of an endless response held ~550 MB.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(128 * 1024 * 1024);
  });

  it.each(['crlf', 'space', 'long'] as const)('%s: an access_token that cannot go out as Bearer is no token: refused for that destination, never an outage (regression: cached, then blamed on the app)', async (m) => {
    mode = m;
    const client = createTokenClient({ issuer: endpoint, clientId: 'orders-sidecar', clientSecret: 's', tokenEndpoint: `${endpoint}/token`, clientAuth: 'client_secret_basic', timeoutMs: 1000 });
    expect(await client.exchange('subject-token', TARGET)).toMatchObject({ ok: false, kind: 'refused', oauthError: 'invalid_token' });
    // The broker's back-off holds every destination: one audience's bad token must not start it.
    const broker = createTokenBroker({ client, cacheEntries: 10, renewBeforeMs: 0, refusalCacheMs: 0, retry: { initialMs: 1000, maxMs: 1000 }, clock: () => 0, log: silentLogger, random: () => 1 });
    expect(await broker.token(TARGET, 'subject-token')).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_REFUSED' });
    expect(broker.stats().backoffMs).toBe(0);
    mode = 'ok';
    expect(await broker.token({ ...TARGET, name: 'ledger', resource: 'urn:ward:ledger' }, 'subject-token')).toMatchObject({ ok: true });
  });

  it('the broker answers ERR_EXCHANGE_UNAVAILABLE, backs off, and recovers when the endpoint does', async () => {
    mode = 'endless';
    let now = 0;
    const broker = createTokenBroker({
      client: createTokenClient({ issuer: endpoint, clientId: 'orders-sidecar', clientSecret: 's', tokenEndpoint: `${endpoint}/token`, clientAuth: 'client_secret_basic', timeoutMs: 1000 }),
      cacheEntries: 10,
      renewBeforeMs: 0,
      refusalCacheMs: 0,
      retry: { initialMs: 1000, maxMs: 1000 },
      clock: () => now,
      log: silentLogger,
      random: () => 1,
    });
    expect(await broker.token(TARGET, 'subject-token')).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE' });
    // in back-off: refused at once, the endpoint is not asked
    expect(await broker.token(TARGET, 'another-subject')).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE' });
    expect(broker.counters.backoffRejections).toBe(1);
    mode = 'ok';
    now += 1001;
    expect(await broker.token(TARGET, 'subject-token')).toMatchObject({ ok: true, via: 'exchange' });
  });
});

describe('the control-plane token source (client credentials) against the same faults', () => {
  it.each(['error500', 'garbage', 'huge', 'endless', 'crlf', 'space', 'long'] as const)('%s: rejects (the watch retries with back-off), memory bounded', async (m) => {
    mode = m;
    const source = createClientCredentialsTokenSource({ issuer: endpoint, clientId: 'orders-sidecar', clientSecret: 's', resource: 'urn:ward:control-plane', timeoutMs: 1000, log: silentLogger });
    const rss0 = process.memoryUsage().rss;
    await expect(source()).rejects.toThrow();
    expect(process.memoryUsage().rss - rss0).toBeLessThan(128 * 1024 * 1024);
  });
});
