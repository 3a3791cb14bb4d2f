import http from 'node:http';
import http2 from 'node:http2';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/lib/log.ts';
import {
  type AppEvents,
  defaultRule,
  h1Request,
  h2Connect,
  h2Request,
  identity,
  rawExchange,
  type RecordingApp,
  type Rule,
  startH1App,
  startH2App,
  startProxy,
  testConfig,
  TEST_POLICY,
  testAuthenticate,
  type TestProxy,
} from '../unit/inbound/harness.ts';
import type { AuthResult } from '../../src/authn/authenticator.ts';

/**
 * Plain HTTP through the sidecar, for every pairing of client (HTTP/1.1, h2c — on the same
 * cleartext port) and app (HTTP/1.1, h2c): identity headers, stripped spoofs and hop-by-hop
 * fields, the normalized path forwarded, bodies and trailers streamed, denials and failures.
 */

/** `/public…` is open to anonymous callers; the rest follows the default test rule. */
const rule: Rule = (f) => (f.identity === null && f.request.path.startsWith('/public') ? { allow: true, rule: 'public' } : defaultRule(f));

const AUTH = { authorization: 'Bearer good-alice' };

describe.each([
  ['http1', startH1App],
  ['h2c', startH2App],
] as const)('app speaks %s', (protocol, startApp) => {
  let app: RecordingApp & AppEvents;
  let proxy: TestProxy;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    app = await startApp();
    proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol }), { rule });
    session = await h2Connect(proxy.port);
  });
  afterAll(async () => {
    session.close();
    await proxy.close();
    await app.close();
  });
  beforeEach(() => {
    app.requests.length = 0;
    app.events.length = 0;
    proxy.decisions.length = 0;
  });

  function h2(headers: http2.OutgoingHttpHeaders, body?: string): ReturnType<typeof h2Request> {
    return h2Request(session, { ':method': 'GET', ':authority': 'orders.test', ...headers }, body);
  }

  describe('allowed', () => {
    it('HTTP/1.1 client: normalized path, query as-is, identity headers, Host kept', async () => {
      const r = await h1Request(proxy.port, { path: '/public/../orders//42/./items?b=2&a=%2F', headers: { ...AUTH, host: 'orders.test' } });
      expect(r.status).toBe(200);
      expect(r.body).toBe('ok /orders/42/items?b=2&a=%2F');
      const seen = app.requests[0];
      expect(seen?.path).toBe('/orders/42/items?b=2&a=%2F');
      expect(seen?.headers['x-ward-subject']).toBe('alice');
      expect(seen?.headers['x-ward-issuer']).toBe('https://idp.test');
      expect(JSON.parse(Buffer.from(String(seen?.headers['x-ward-claims']), 'base64url').toString())).toEqual(identity('alice').claims);
      expect(seen?.headers['x-ward-decision-id']).toBe(proxy.decisions[0]?.decisionId);
      expect(seen?.headers[protocol === 'h2c' ? ':authority' : 'host']).toBe('orders.test');
      expect(proxy.decisions[0]).toMatchObject({ protocol: 'http', method: 'GET', route: '/orders/42/items', decision: 'allow' });
    });

    it('h2c client on the same port', async () => {
      const r = await h2({ ':path': '/orders/%7e42', ...AUTH });
      expect(r.headers[':status']).toBe(200);
      expect(r.body).toBe('ok /orders/~42');
      expect(app.requests[0]?.headers['x-ward-subject']).toBe('alice');
      // the app's connection-specific response fields never reach an HTTP/2 client
      expect(r.headers.connection).toBeUndefined();
      expect(r.headers['keep-alive']).toBeUndefined();
    });

    it('spoofed identity, hop-by-hop and Connection-named fields are stripped', async () => {
      await h1Request(proxy.port, {
        path: '/orders/1',
        headers: {
          ...AUTH,
          'X-Ward-Subject': 'admin',
          'X-Ward-Role': 'admin',
          Connection: 'keep-alive, X-Hop',
          'X-Hop': 'secret',
          'Keep-Alive': 'timeout=5',
          'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
          'X-Kept': 'yes',
        },
      });
      const h = app.requests[0]?.headers ?? {};
      expect(h['x-ward-subject']).toBe('alice');
      expect(h['x-ward-role']).toBeUndefined();
      expect(h['x-hop']).toBeUndefined();
      expect(h['keep-alive']).toBeUndefined();
      expect(h['proxy-authorization']).toBeUndefined();
      expect(h['x-kept']).toBe('yes');
      expect(h.authorization).toBe('Bearer good-alice');
    });

    it('an anonymous allowed call cannot smuggle an identity in', async () => {
      const r = await h2({ ':path': '/public/info', 'x-ward-subject': 'admin', 'x-ward-issuer': 'https://evil' });
      expect(r.headers[':status']).toBe(200);
      const h = app.requests[0]?.headers ?? {};
      expect(h['x-ward-subject']).toBeUndefined();
      expect(h['x-ward-issuer']).toBeUndefined();
      expect(h['x-ward-decision-id']).toBe(proxy.decisions[0]?.decisionId);
    });

    it.each(['h1', 'h2'] as const)('a 1 MiB body streams through (%s client)', async (client) => {
      const body = 'x'.repeat(1024 * 1024);
      if (client === 'h1') {
        const r = await h1Request(proxy.port, { method: 'POST', path: '/echo', headers: AUTH, body });
        expect(r.status).toBe(200);
        expect(r.body.length).toBe(body.length);
      } else {
        const r = await h2({ ':method': 'POST', ':path': '/echo', ...AUTH }, body);
        expect(r.headers[':status']).toBe(200);
        expect(r.body.length).toBe(body.length);
      }
      expect(app.requests[0]?.body.length).toBe(body.length);
    });

    it('an HTTP/2 body that arrived whole while the token was being checked reaches the app whole, and the call ends (regression: an HTTP/1.1 app waited for its end forever)', async () => {
      // The token is judged 100 ms later, as a JWKS fetch, an introspection or the signature
      // queue may take: by then the whole body and END_STREAM are held in the sidecar.
      const later = (token: string): Promise<AuthResult> => new Promise((resolve) => setTimeout(() => resolve(testAuthenticate()(token) as AuthResult), 100));
      const slow = await startProxy(testConfig({ upstreamPort: app.port, protocol }), { rule, authenticate: later });
      const s = await h2Connect(slow.port);
      try {
        const r = await h2Request(s, { ':method': 'POST', ':authority': 'orders.test', ':path': '/echo', ...AUTH }, 'held body');
        expect(r.headers[':status']).toBe(200);
        expect(r.body).toBe('held body');
        expect(app.requests[0]?.body).toBe('held body');
      } finally {
        s.close();
        await slow.close();
      }
    });

    it('trailers reach an HTTP/2 client', async () => {
      const r = await h2({ ':path': '/trailers', ...AUTH });
      expect(r.body).toBe('part1 part2');
      expect(r.trailers['x-app-trailer']).toBe('done');
    });

    it('trailers reach an HTTP/1.1 client that sent TE: trailers, and only then', async () => {
      const withTe = await h1Request(proxy.port, { path: '/trailers', headers: { ...AUTH, te: 'trailers', connection: 'te' } });
      expect(withTe.body).toBe('part1 part2');
      expect(withTe.trailers['x-app-trailer']).toBe('done');
      const without = await h1Request(proxy.port, { path: '/trailers', headers: AUTH });
      expect(without.body).toBe('part1 part2');
      expect(without.trailers['x-app-trailer']).toBeUndefined();
    });

    it('connections to the app are pooled, not opened per call', async () => {
      const before = app.connections();
      const agent = new http.Agent({ keepAlive: true });
      for (let i = 0; i < 20; i++) await h1Request(proxy.port, { path: `/orders/${i}`, headers: AUTH, agent });
      for (let i = 0; i < 20; i++) await h2({ ':path': `/orders/${i}`, ...AUTH });
      agent.destroy();
      expect(app.requests).toHaveLength(40);
      expect(app.connections() - before).toBeLessThanOrEqual(4);
    });

    it('Expect: 100-continue is answered only for an allowed call', async () => {
      const allowed = await rawExchange(
        proxy.port,
        'POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n',
      );
      expect(allowed).toMatch(/^HTTP\/1\.1 100 Continue/);
      const denied = await rawExchange(proxy.port, 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n');
      expect(denied).toMatch(/^HTTP\/1\.1 401 /);
      expect(denied).not.toContain('100 Continue');
      expect(app.requests).toEqual([]);
    });
  });

  describe('denied: the app sees nothing', () => {
    it('policy denial → 403 with reason and decision id (both clients)', async () => {
      const a = await h1Request(proxy.port, { path: '/admin/users', headers: AUTH });
      expect(a.status).toBe(403);
      expect(a.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
      expect(a.headers['x-ward-decision-id']).toBe(proxy.decisions[0]?.decisionId);
      expect(a.headers['www-authenticate']).toBeUndefined();
      const b = await h2({ ':path': '/admin/users', ...AUTH });
      expect(b.headers[':status']).toBe(403);
      expect(b.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
      expect(app.requests).toEqual([]);
    });

    it('no token → 401 with the Bearer challenge', async () => {
      const r = await h1Request(proxy.port, { path: '/orders/1' });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="orders"');
      expect(r.headers['x-ward-reason']).toBe('ERR_TOKEN_MISSING');
      expect(app.requests).toEqual([]);
    });

    it('a token in the query string → 400 ERR_TOKEN_IN_QUERY, even with a valid header', async () => {
      const r = await h1Request(proxy.port, { path: '/orders/1?access_token=good-alice', headers: AUTH });
      expect(r.status).toBe(400);
      expect(r.headers['x-ward-reason']).toBe('ERR_TOKEN_IN_QUERY');
      expect(r.headers['www-authenticate']).toBe('Bearer realm="orders", error="invalid_request"');
      expect(app.requests).toEqual([]);
    });

    it('a denied upload is not forwarded', async () => {
      const r = await h1Request(proxy.port, { method: 'POST', path: '/echo', body: 'y'.repeat(300_000) });
      expect(r.status).toBe(401);
      const s = await h2({ ':method': 'POST', ':path': '/echo' }, 'y'.repeat(300_000));
      expect(s.headers[':status']).toBe(401);
      expect(app.requests).toEqual([]);
    });

    it.each([
      ['POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'CL + TE'],
      ['POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 'TE other than chunked'],
      ['GET /orders HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'two Host fields'],
      ['POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 'two Content-Length'],
      ['get /orders HTTP/1.1\r\nHost: x\r\n\r\n', 'lower-case method'],
      ['TRACE /orders HTTP/1.1\r\nHost: x\r\n\r\n', 'TRACE'],
      ['GET http://evil/admin HTTP/1.1\r\nHost: x\r\n\r\n', 'absolute-form'],
      ['GET /orders HTTP/1.1\r\n\r\n', 'no Host'],
      ['POST /ward.demo.v1.Orders/GetOrder HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\n\r\n', 'gRPC over HTTP/1.1'],
    ])('HTTP/1.1 smuggling/shape %#: %j (%s) → 400', async (text) => {
      const reply = await rawExchange(proxy.port, text.replace(/\r\n\r\n/, `\r\nAuthorization: Bearer good-alice\r\nConnection: close\r\n\r\n`));
      expect(reply).toMatch(/^HTTP\/1\.1 400 /);
      expect(reply.toLowerCase()).toContain('x-ward-reason: err_');
      expect(app.requests).toEqual([]);
    });

    it('HTTP/2: lower-case method and Host ≠ :authority → 400', async () => {
      const a = await h2Request(session, { ':method': 'get', ':path': '/orders/1', ...AUTH });
      expect(a.headers[':status']).toBe(400);
      expect(a.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
      const b = await h2({ ':path': '/orders/1', host: 'other.test', ...AUTH });
      expect(b.headers[':status']).toBe(400);
      expect(app.requests).toEqual([]);
    });
  });

  describe('app failures and cancellation', () => {
    it('the app resets mid-body: HTTP/2 client gets RST_STREAM, HTTP/1.1 client loses the connection', async () => {
      const r = await h2({ ':path': '/reset', ...AUTH });
      expect(r.headers[':status']).toBe(200);
      expect(r.rstCode).not.toBe(0);
      await expect(h1Request(proxy.port, { path: '/reset', headers: AUTH })).rejects.toThrow();
      expect(proxy.inbound.counters.upstreamErrors).toBeGreaterThanOrEqual(2);
    });

    it('an HTTP/2 client reset cancels the app request', async () => {
      const s = session.request({ ':method': 'GET', ':path': '/slow/h2', ...AUTH });
      s.on('error', () => {});
      await vi.waitFor(() => expect(app.events).toContain('slow /slow/h2'));
      s.close(8); // RST_STREAM CANCEL
      await vi.waitFor(() => expect(app.events.some((e) => e === 'aborted /slow/h2' || e.startsWith('reset /slow/h2'))).toBe(true));
    });

    it('an HTTP/1.1 client that disconnects cancels the app request', async () => {
      const req = http.request({ host: '127.0.0.1', port: proxy.port, path: '/slow/h1', headers: AUTH, agent: false });
      req.on('error', () => {});
      req.end();
      await vi.waitFor(() => expect(app.events).toContain('slow /slow/h1'));
      req.destroy();
      await vi.waitFor(() => expect(app.events.some((e) => e === 'aborted /slow/h1' || e.startsWith('reset /slow/h1'))).toBe(true));
    });
  });
});

describe('configuration variants', () => {
  let app: RecordingApp & AppEvents;
  beforeAll(async () => {
    app = await startH1App();
  });
  afterAll(() => app.close());
  beforeEach(() => {
    app.requests.length = 0;
  });

  it('identityHeaders.stripAuthorization removes Authorization', async () => {
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1', stripAuthorization: true }));
    try {
      const r = await h1Request(proxy.port, { path: '/orders/1', headers: AUTH });
      expect(r.status).toBe(200);
      expect(app.requests[0]?.headers.authorization).toBeUndefined();
      expect(app.requests[0]?.headers['x-ward-subject']).toBe('alice');
    } finally {
      await proxy.close();
    }
  });

  it('a stage that throws after an asynchronous authentication fails its call with 500 ERR_INTERNAL; the sidecar stays up (regression: an unhandled rejection would end it)', async () => {
    let reads = 0;
    // Read once in the shape stage, once in the decision: the second read throws.
    const policy = (): typeof TEST_POLICY => {
      if (reads++ % 2 === 1) throw new Error('policy snapshot broke');
      return TEST_POLICY;
    };
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }), { policy });
    try {
      const r = await h1Request(proxy.port, { path: '/orders/1', headers: { authorization: 'Bearer async-alice' } });
      expect(r.status).toBe(500);
      expect(r.headers['x-ward-reason']).toBe('ERR_INTERNAL');
      expect(app.requests).toHaveLength(0);
      const again = await h1Request(proxy.port, { path: '/orders/1', headers: { authorization: 'Bearer async-alice' } });
      expect(again.status).toBe(500);
    } finally {
      await proxy.close();
    }
  });

  it('a refused call\'s decision id is in the log at info, a flood of them at most 10 lines a second (regression: only at debug)', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', sink: { write: (l) => lines.push(l) } });
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }), { log });
    try {
      const r = await h1Request(proxy.port, { path: '/orders/1' });
      expect(r.status).toBe(401);
      const id = r.headers['x-ward-decision-id'];
      const denied = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'denied');
      expect(denied).toEqual([expect.objectContaining({ level: 'info', decisionId: id, code: 'ERR_TOKEN_MISSING' })]);
      for (let i = 0; i < 30; i++) await h1Request(proxy.port, { path: '/orders/1' });
      const after = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'denied');
      expect(after.length).toBeLessThan(31);
      expect(after.length).toBeGreaterThanOrEqual(10);
    } finally {
      await proxy.close();
    }
  });

  it('upstream.requestTimeoutMs → 504 ERR_UPSTREAM_TIMEOUT, app request aborted', async () => {
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1', requestTimeoutMs: 150 }));
    try {
      const r = await h1Request(proxy.port, { path: '/slow/timeout', headers: AUTH });
      expect(r.status).toBe(504);
      expect(r.headers['x-ward-reason']).toBe('ERR_UPSTREAM_TIMEOUT');
      await vi.waitFor(() => expect(app.events).toContain('aborted /slow/timeout'));
    } finally {
      await proxy.close();
    }
  });

  it.each(['http1', 'h2c'] as const)('app down (%s) → 503 ERR_UPSTREAM_UNAVAILABLE', async (protocol) => {
    const gone = await startH1App();
    const port = gone.port;
    await gone.close();
    const proxy = await startProxy(testConfig({ upstreamPort: port, protocol }));
    try {
      const r = await h1Request(proxy.port, { path: '/orders/1', headers: AUTH });
      expect(r.status).toBe(503);
      expect(r.headers['x-ward-reason']).toBe('ERR_UPSTREAM_UNAVAILABLE');
      const s = await h2Connect(proxy.port);
      const r2 = await h2Request(s, { ':path': '/orders/1', ...AUTH });
      s.close();
      expect(r2.headers[':status']).toBe(503);
    } finally {
      await proxy.close();
    }
  });

  it('a stage that throws costs that call a 500 (ERR_INTERNAL), not the process', async () => {
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }), {
      extractBearer: () => {
        throw new Error('bug');
      },
    });
    try {
      const r = await h1Request(proxy.port, { path: '/orders/1', headers: AUTH });
      expect(r.status).toBe(500);
      expect(r.headers['x-ward-reason']).toBe('ERR_INTERNAL');
      const again = await h1Request(proxy.port, { path: '/orders/2', headers: AUTH });
      expect(again.status).toBe(500);
      expect(app.requests).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('an authenticator that rejects is a 500 (ERR_INTERNAL), fail closed', async () => {
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }), {
      authenticate: () => Promise.reject(new Error('bug')),
    });
    try {
      const r = await h1Request(proxy.port, { path: '/orders/1', headers: AUTH });
      expect(r.status).toBe(500);
      expect(r.headers['x-ward-reason']).toBe('ERR_INTERNAL');
      expect(app.requests).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('a gRPC call is refused when the app is configured as HTTP/1.1', async () => {
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }));
    const s = await h2Connect(proxy.port);
    try {
      const r = await h2Request(s, { ':method': 'POST', ':path': '/pkg.Svc/Method', 'content-type': 'application/grpc', ...AUTH });
      expect(r.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
      expect(app.requests).toEqual([]);
    } finally {
      s.close();
      await proxy.close();
    }
  });
});

describe('HTTP/2 app specifics', () => {
  let app: RecordingApp & AppEvents;
  let proxy: TestProxy;
  let session: http2.ClientHttp2Session;
  beforeAll(async () => {
    app = await startH2App();
    proxy = await startProxy(testConfig({ upstreamPort: app.port }));
    session = await h2Connect(proxy.port);
  });
  afterAll(async () => {
    session.close();
    await proxy.close();
    await app.close();
  });
  beforeEach(() => {
    app.requests.length = 0;
  });

  it('request trailers from an HTTP/2 client reach the app', async () => {
    const s = session.request({ ':method': 'POST', ':path': '/echo', ...AUTH }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'x-client-trailer': 'sum=3' }));
    s.resume();
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.end('abc');
    await closed;
    expect(app.requests[0]?.body).toBe('abc');
    expect(app.requests[0]?.trailers['x-client-trailer']).toBe('sum=3');
  });

  it('chunked request trailers from an HTTP/1.1 client reach the app', async () => {
    const reply = await rawExchange(
      proxy.port,
      'POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nTrailer: x-client-trailer\r\n\r\n3\r\nabc\r\n0\r\nx-client-trailer: sum=3\r\n\r\n',
    );
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(app.requests[0]?.body).toBe('abc');
    expect(app.requests[0]?.trailers['x-client-trailer']).toBe('sum=3');
  });

  describe('to an HTTP/1.1 app (regression: its request trailers were dropped)', () => {
    let h1: RecordingApp & AppEvents;
    let h1proxy: TestProxy;
    let h1session: http2.ClientHttp2Session;
    beforeAll(async () => {
      h1 = await startH1App();
      h1proxy = await startProxy(testConfig({ upstreamPort: h1.port, protocol: 'http1' }));
      h1session = await h2Connect(h1proxy.port);
    });
    afterAll(async () => {
      h1session.close();
      await h1proxy.close();
      await h1.close();
    });

    it('request trailers from an HTTP/2 client reach the app in the last chunk, without credentials or identity fields', async () => {
      const s = h1session.request({ ':method': 'POST', ':path': '/echo', ...AUTH }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'x-client-trailer': 'sum=3', authorization: 'Bearer other', 'x-ward-subject': 'mallory' }));
      s.resume();
      const closed = new Promise<void>((r) => s.on('close', () => r()));
      s.end('abc');
      await closed;
      expect(h1.requests[0]?.body).toBe('abc');
      expect(h1.requests[0]?.trailers).toEqual({ 'x-client-trailer': 'sum=3' });
    });

    it('chunked request trailers from an HTTP/1.1 client reach the app; a body with Content-Length carries none (dropped, the call goes on)', async () => {
      const reply = await rawExchange(
        h1proxy.port,
        'POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nTrailer: x-client-trailer\r\n\r\n3\r\nabc\r\n0\r\nx-client-trailer: sum=3\r\n\r\n',
      );
      expect(reply).toMatch(/^HTTP\/1\.1 200 /);
      expect(h1.requests.at(-1)?.body).toBe('abc');
      expect(h1.requests.at(-1)?.trailers['x-client-trailer']).toBe('sum=3');
      const s = h1session.request({ ':method': 'POST', ':path': '/echo', 'content-length': '3', ...AUTH }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'x-client-trailer': 'sum=3' }));
      s.resume();
      const closed = new Promise<void>((r) => s.on('close', () => r()));
      s.end('abc');
      await closed;
      expect(h1.requests.at(-1)?.body).toBe('abc');
      expect(h1.requests.at(-1)?.trailers).toEqual({});
    });
  });

  it('a client that disconnects mid-upload: the app gets RST_STREAM(CANCEL), never END_STREAM', async () => {
    app.events.length = 0;
    // Content-Length 10, 3 bytes sent: had the sidecar ended the stream before resetting it,
    // the app's HTTP/2 stack would flag the length mismatch (PROTOCOL_ERROR) instead.
    await rawExchange(proxy.port, 'POST /echo/cut HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\nContent-Length: 10\r\n\r\nabc');
    await vi.waitFor(() => expect(app.events).toContain('reset /echo/cut 8'));
    expect(app.requests).toEqual([]);
  });

  it('an HTTP/2 client that resets mid-upload: the app gets RST_STREAM(CANCEL), never END_STREAM', async () => {
    app.events.length = 0;
    const s = session.request({ ':method': 'POST', ':path': '/echo/rst', 'content-length': '10', ...AUTH }, { endStream: false });
    s.on('error', () => {});
    s.write('abc');
    await vi.waitFor(() => expect(proxy.inbound.counters.allowed).toBeGreaterThan(0));
    await new Promise<void>((r) => setImmediate(r));
    s.close(8);
    await vi.waitFor(() => expect(app.events.filter((e) => e.startsWith('reset /echo/rst'))).toEqual(['reset /echo/rst 8']));
    expect(app.requests).toEqual([]);
  });

  it('an app reset in the middle of a gRPC response becomes grpc-status 14 in trailers', async () => {
    const r = await h2Request(session, { ':method': 'POST', ':path': '/reset', 'content-type': 'application/grpc', te: 'trailers', ...AUTH });
    expect(r.headers[':status']).toBe(200);
    expect(r.body).toBe('partial');
    expect(r.trailers['grpc-status']).toBe('14');
    expect(r.trailers['x-ward-reason']).toBe('ERR_UPSTREAM_RESET');
  });

  it('garbage pipelined behind a call in flight closes the connection; no 400 is spliced into the response', async () => {
    const reply = await rawExchange(proxy.port, 'GET /delay/p HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\nNOT HTTP\r\n\r\n');
    expect(reply).not.toContain('400 Bad Request');
  });

  it('the configured HTTP/2 limits are advertised to clients', () => {
    expect(session.remoteSettings.maxConcurrentStreams).toBe(1000);
    expect(session.remoteSettings.maxHeaderListSize).toBe(65536);
  });

  it('an HTTP/1.1 header block over maxHeaderListBytes is refused: 431', async () => {
    const reply = await rawExchange(proxy.port, `GET /orders HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 431 /);
    expect(reply).toContain('x-ward-reason: ERR_REQUEST_HEADERS_TOO_LARGE');
    expect(app.requests).toEqual([]);
  });

  describe('never-indexed fields (RFC 7541 §6.2.3) stay never-indexed through the sidecar', () => {

    it("the caller's never-indexed request field reaches the app never-indexed, the app's response field reaches the caller so", async () => {
      const r = await h2Request(session, {
        ':method': 'GET',
        ':authority': 'orders.test',
        ':path': '/never-indexed',
        ...AUTH,
        'x-secret': 'caller-s3cret',
        'x-plain': 'p',
        [http2.sensitiveHeaders]: ['x-secret'],
      });
      expect(r.headers[':status']).toBe(200);
      expect(r.headers['x-app-secret']).toBe('app-s3cret');
      const sensitiveOf = (h: object | undefined): string[] | undefined => (h as Record<symbol, string[] | undefined> | undefined)?.[http2.sensitiveHeaders];
      const toCaller = sensitiveOf(r.headers);
      expect(toCaller).toContain('x-app-secret');
      expect(toCaller).not.toContain('x-app-plain');
      const seen = app.requests[0]?.headers;
      expect(seen?.['x-secret']).toBe('caller-s3cret');
      const toApp = sensitiveOf(seen);
      expect(toApp).toContain('x-secret');
      expect(toApp).not.toContain('x-plain');
    });
  });

  describe('grpc-timeout: the app gets what is left of the caller\'s deadline', () => {
    async function forwarded(timeout: string): Promise<string | undefined> {
      const r = await h2Request(
        session,
        { ':method': 'POST', ':authority': 'orders.test', ':path': '/echo.v1.Svc/Call', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': timeout, ...AUTH },
        Buffer.from([0, 0, 0, 0, 0]),
      );
      expect(r.headers[':status']).toBe(200);
      return app.requests[0]?.headers['grpc-timeout'] as string | undefined;
    }

    it('10S arrives as at most 10000m, less the time the call spent in the sidecar', async () => {
      const v = await forwarded('10S');
      expect(v).toMatch(/^\d{1,5}m$/);
      const ms = Number(v?.slice(0, -1));
      expect(ms).toBeLessThanOrEqual(10_000);
      expect(ms).toBeGreaterThan(9_000);
    });

    it('a deadline too long for milliseconds in 8 digits arrives in seconds (capped at what the sidecar itself enforces)', async () => {
      const v = await forwarded('99999999H');
      expect(v).toMatch(/^\d+S$/);
      expect(Number(v?.slice(0, -1))).toBeLessThanOrEqual(2_147_484);
      expect(Number(v?.slice(0, -1))).toBeGreaterThan(2_147_000);
    });
  });
});
