import http from 'node:http';
import type http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  h1Request,
  h2Connect,
  h2Request,
  type RecordingApp,
  type AppEvents,
  startH1App,
  startH2App,
  startProxy,
  testConfig,
  type TestProxy,
} from '../unit/inbound/harness.ts';
import { waitFor } from './harness.ts';

/**
 * `upstream.maxRequests`: at most that many allowed calls at the app at once. One more is refused
 * at once (ERR_UPSTREAM_OVERLOADED, 503 / gRPC UNAVAILABLE) and never reaches the app, and every
 * call gives its place back when it ends, however it ends: a place that leaked would, one by one,
 * turn the sidecar into one that refuses every call.
 */

const AUTH = { authorization: 'Bearer good-alice' };

/** An HTTP/2 request left open: resolves with its outcome when it closes; `cancel` resets it. */
function openH2(session: http2.ClientHttp2Session, path: string): { done: Promise<{ status: unknown; rstCode: number }>; cancel(): void } {
  const s = session.request({ ':method': 'GET', ':path': path, ':authority': 'orders.test', ...AUTH });
  let status: unknown;
  s.on('response', (h) => (status = h[':status']));
  s.on('data', () => {});
  s.on('error', () => {});
  const done = new Promise<{ status: unknown; rstCode: number }>((resolve) => s.on('close', () => resolve({ status, rstCode: s.rstCode ?? 0 })));
  return { done, cancel: () => s.close() };
}

/** An HTTP/1.1 request left open; `abort` drops its connection. */
function openH1(port: number, path: string): { done: Promise<void>; abort(): void } {
  const req = http.request({ host: '127.0.0.1', port, path, headers: AUTH, agent: false });
  req.on('error', () => {});
  req.on('response', (res) => res.resume());
  const done = new Promise<void>((resolve) => req.on('close', () => resolve()));
  req.end();
  return { done, abort: () => req.destroy() };
}

const seen = (app: RecordingApp & AppEvents, prefix: string): number => app.events.filter((e) => e.startsWith(`slow ${prefix}`)).length;

describe('upstream.maxRequests, h2c app', () => {
  let app: RecordingApp & AppEvents;
  let proxy: TestProxy;
  let client: http2.ClientHttp2Session;

  beforeAll(async () => {
    app = await startH2App();
    proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'h2c', maxRequests: 2 }));
    client = await h2Connect(proxy.port);
    client.setMaxListeners(0);
  });
  afterAll(async () => {
    client.close();
    await proxy.close();
    await app.close();
  });

  const slots = () => proxy.inbound.counters.upstreamRequests;
  const get = (path: string, extra: Record<string, string> = AUTH) => h2Request(client, { ':method': 'GET', ':path': path, ':authority': 'orders.test', ...extra });

  it('refuses the call beyond the limit at once, without sending it to the app; a denial still comes first', async () => {
    const a = openH2(client, '/slow/a1');
    const b = openH2(client, '/slow/a2');
    await waitFor(() => seen(app, '/slow/a') === 2, 5000, 'both held calls at the app');
    expect(slots().active).toBe(2);

    const over = await get('/slow/a3');
    expect(over.headers[':status']).toBe(503);
    expect(over.headers['x-ward-reason']).toBe('ERR_UPSTREAM_OVERLOADED');
    expect(over.headers['x-ward-decision-id']).toBeTruthy();

    const grpc = await h2Request(client, {
      ':method': 'POST', ':path': '/ward.demo.v1.Orders/GetOrder', ':authority': 'orders.test', 'content-type': 'application/grpc', te: 'trailers', ...AUTH,
    }, Buffer.alloc(5));
    expect(grpc.headers[':status']).toBe(200);
    expect(grpc.headers['grpc-status']).toBe('14');
    expect(grpc.headers['x-ward-reason']).toBe('ERR_UPSTREAM_OVERLOADED');

    // no token: the policy's refusal, not the overload's
    const denied = await get('/slow/a4', {});
    expect([denied.headers[':status'], denied.headers['x-ward-reason']]).toEqual([401, 'ERR_TOKEN_MISSING']);

    // the refused calls never reached the app, and the decision records still say what policy said
    await new Promise((r) => setTimeout(r, 100));
    expect(seen(app, '/slow/a')).toBe(2);
    expect(app.requests.some((r) => r.path.includes('GetOrder'))).toBe(false);
    expect(slots().overflowed).toBe(2);
    expect(slots().active).toBe(2);

    // a held call the client cancels gives its place back
    a.cancel();
    await a.done;
    await waitFor(() => slots().active === 1, 5000, 'the cancelled call to give its place back');
    const ok = await get('/ok/a5');
    expect([ok.headers[':status'], ok.body]).toEqual([200, 'ok /ok/a5']);
    b.cancel();
    await b.done;
    await waitFor(() => slots().active === 0, 5000, 'every place back');
  });

  it('every way a call ends gives its place back: answered, app reset, app slow, client cancel, a burst over the limit', async () => {
    const before = slots().overflowed;
    for (let round = 0; round < 5; round++) {
      const held = [openH2(client, `/slow/r${round}-1`)];
      const results = await Promise.all([
        get(`/ok/r${round}`),
        get(`/reset/r${round}`),
        get(`/delay/r${round}`),
        get(`/echo/r${round}`),
      ]);
      // with one place held, at most one of the four could pass at a time: some were refused
      for (const r of results) expect([200, 503]).toContain(r.headers[':status']);
      held[0]?.cancel();
      await Promise.all(held.map((h) => h.done));
      await waitFor(() => slots().active === 0, 5000, `round ${round}: every place back`);
    }
    expect(slots().overflowed).toBeGreaterThan(before);
    // and the full limit is still there: two held calls both reach the app
    const x = openH2(client, '/slow/z1');
    const y = openH2(client, '/slow/z2');
    await waitFor(() => seen(app, '/slow/z') === 2, 5000, 'two held calls at the app');
    x.cancel();
    y.cancel();
    await Promise.all([x.done, y.done]);
    await waitFor(() => slots().active === 0, 5000, 'every place back');
  });

  it('a caller connection that goes away with calls at the app gives their places back, and the app sees them cancelled', async () => {
    const other = await h2Connect(proxy.port);
    const a = openH2(other, '/slow/g1');
    const b = openH2(other, '/slow/g2');
    await waitFor(() => seen(app, '/slow/g') === 2, 5000, 'both at the app');
    expect(slots().active).toBe(2);
    other.destroy();
    await Promise.all([a.done, b.done]);
    await waitFor(() => slots().active === 0, 5000, 'both places back');
    // and the app saw both calls cancelled (RST_STREAM CANCEL), not left waiting for ever
    await waitFor(() => app.events.includes('reset /slow/g1 8') && app.events.includes('reset /slow/g2 8'), 5000, 'the app to see both cancelled');
    const ok = await get('/ok/g3');
    expect(ok.headers[':status']).toBe(200);
  });
});

describe('upstream.maxRequests, HTTP/1.1 app and callers', () => {
  let app: RecordingApp & AppEvents;
  let proxy: TestProxy;

  beforeAll(async () => {
    app = await startH1App();
    proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1', maxRequests: 1 }));
  });
  afterAll(async () => {
    await proxy.close();
    await app.close();
  });

  it('one call held, the next refused with 503 and never sent; the place comes back when the caller aborts', async () => {
    const slots = proxy.inbound.counters.upstreamRequests;
    const held = openH1(proxy.port, '/slow/h1');
    await waitFor(() => seen(app, '/slow/h') === 1, 5000, 'the held call at the app');
    const over = await h1Request(proxy.port, { path: '/slow/h2', headers: AUTH });
    expect([over.status, over.headers['x-ward-reason']]).toEqual([503, 'ERR_UPSTREAM_OVERLOADED']);
    await new Promise((r) => setTimeout(r, 100));
    expect(seen(app, '/slow/h')).toBe(1);
    held.abort();
    await held.done;
    await waitFor(() => slots.active === 0, 5000, 'the aborted call to give its place back');
    const ok = await h1Request(proxy.port, { path: '/ok/h3', headers: AUTH });
    expect([ok.status, ok.body]).toEqual([200, 'ok /ok/h3']);
    expect(slots.active).toBe(0);
  });
});

describe('upstream.maxRequests absent (the default): no limit', () => {
  it('forty calls held at once all reach the app, and the count still goes back to 0', async () => {
    const app = await startH2App();
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'h2c' }));
    const client = await h2Connect(proxy.port);
    client.setMaxListeners(0);
    try {
      const held = Array.from({ length: 40 }, (_, i) => openH2(client, `/slow/n${i}`));
      await waitFor(() => seen(app, '/slow/n') === 40, 5000, 'forty held calls at the app');
      expect(proxy.inbound.counters.upstreamRequests.max).toBe(0);
      expect(proxy.inbound.counters.upstreamRequests.active).toBe(40);
      for (const h of held) h.cancel();
      await Promise.all(held.map((h) => h.done));
      await waitFor(() => proxy.inbound.counters.upstreamRequests.active === 0, 5000, 'every place back');
      expect(proxy.inbound.counters.upstreamRequests.overflowed).toBe(0);
    } finally {
      client.close();
      await proxy.close();
      await app.close();
    }
  });
});

describe('upstream.maxRequests with an app that is not there', () => {
  it('calls that fail at the app (ERR_UPSTREAM_UNAVAILABLE) give their places back', async () => {
    const gone = await startH2App();
    const port = gone.port;
    await gone.close();
    const proxy = await startProxy(testConfig({ upstreamPort: port, protocol: 'h2c', maxRequests: 1, connectTimeoutMs: 500 }));
    const client = await h2Connect(proxy.port);
    try {
      for (let i = 0; i < 5; i++) {
        const r = await h2Request(client, { ':method': 'GET', ':path': `/ok/u${i}`, ':authority': 'orders.test', ...AUTH });
        expect([r.headers[':status'], r.headers['x-ward-reason']]).toEqual([503, 'ERR_UPSTREAM_UNAVAILABLE']);
        await waitFor(() => proxy.inbound.counters.upstreamRequests.active === 0, 5000, 'the place back');
      }
      expect(proxy.inbound.counters.upstreamRequests.overflowed).toBe(0);
    } finally {
      client.close();
      await proxy.close();
    }
  });
});
