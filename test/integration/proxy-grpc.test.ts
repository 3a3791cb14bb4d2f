import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Order, type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import {
  bearer,
  h2Connect,
  h2Request,
  identity,
  type OrdersClient,
  ordersClient,
  startProxy,
  testConfig,
  type TestProxy,
  unary,
} from '../unit/inbound/harness.ts';

/**
 * gRPC through the sidecar: the real Orders app (grpc-js server) behind it, real grpc-js
 * clients in front, every call shape, statuses and trailers relayed, denials that never reach
 * the app, cancellation, deadlines, and an app that is down.
 */

let app: OrdersApp;
let proxy: TestProxy;
let client: OrdersClient;

beforeAll(async () => {
  app = await startOrdersApp();
  proxy = await startProxy(testConfig({ upstreamPort: app.port }));
  client = ordersClient(proxy.port);
});

afterAll(async () => {
  client.close();
  await proxy.close();
  await app.close();
});

beforeEach(() => {
  app.calls.length = 0;
  app.cancelled.length = 0;
  proxy.decisions.length = 0;
  proxy.facts.length = 0;
});

function reason(md: grpc.Metadata | undefined): unknown {
  return md?.get('x-ward-reason')[0];
}

describe('allowed calls', () => {
  it('unary: identity headers reach the app, spoofed ones do not', async () => {
    const md = bearer('good-alice');
    md.set('x-ward-subject', 'admin');
    md.set('x-ward-claims', Buffer.from('{"scope":"orders.admin"}').toString('base64url'));
    md.set('x-ward-role', 'admin'); // a prefixed name the sidecar never sets: still stripped
    const r = await unary<Order>(client, 'GetOrder', { id: 'o-1' }, md);
    expect(r.err).toBeNull();
    expect(r.res?.id).toBe('o-1');
    expect(r.res?.seenSubject).toBe('alice');

    expect(app.calls).toHaveLength(1);
    const seen = app.calls[0]?.metadata ?? {};
    expect(seen['x-ward-subject']).toBe('alice');
    expect(seen['x-ward-role']).toBeUndefined();
    expect(seen['x-ward-issuer']).toBe('https://idp.test');
    expect(JSON.parse(Buffer.from(seen['x-ward-claims'] ?? '', 'base64url').toString())).toEqual(identity('alice').claims);
    expect(seen['x-ward-decision-id']).toBe(proxy.decisions[0]?.decisionId);
    expect(seen.authorization).toBe('Bearer good-alice'); // stripAuthorization defaults to false

    expect(proxy.facts[0]?.request).toEqual({
      protocol: 'grpc',
      method: 'POST',
      path: '/ward.demo.v1.Orders/GetOrder',
      grpcMethod: '/ward.demo.v1.Orders/GetOrder',
    });
  });

  it('the decision record names the call, never the token', async () => {
    await unary(client, 'GetOrder', { id: 'o-2' }, bearer('good-alice'));
    const d = proxy.decisions[0];
    expect(d).toMatchObject({
      service: 'orders',
      protocol: 'grpc',
      method: 'POST',
      route: '/ward.demo.v1.Orders/GetOrder',
      decision: 'allow',
      code: null,
      rule: 'allow-all',
      policyVersion: 'v-test',
      issuer: 'https://idp.test',
      subject: 'alice',
      time: 1_700_000_000_000,
    });
    expect(JSON.stringify(d)).not.toContain('good-alice');
  });

  it('a token that authenticates asynchronously (cache miss) works the same', async () => {
    const r = await unary<Order>(client, 'GetOrder', { id: 'o-3' }, bearer('async-alice'));
    expect(r.err).toBeNull();
    expect(r.res?.seenSubject).toBe('alice');
  });

  it('an error status from the app is relayed (NOT_FOUND with its message)', async () => {
    const r = await unary(client, 'GetOrder', { id: 'missing' }, bearer('good-alice'));
    expect(r.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.err?.details).toBe('no such order');
    expect(reason(r.err?.metadata)).toBeUndefined(); // the app's answer, not ward's
    expect(app.calls).toHaveLength(1);
  });

  it("the app's custom trailer is relayed", async () => {
    const r = await unary<Order>(client, 'CreateOrder', { id: 'o-4', item: 'widget', quantity: 2 }, bearer('good-alice'));
    expect(r.err).toBeNull();
    expect(r.res?.quantity).toBe(2);
    expect(r.trailers?.get('x-order-trailer')).toEqual(['created']);
  });

  it('server streaming', async () => {
    const call = client.ListOrders?.({ count: 5, intervalMs: 1 }, bearer('good-alice')) as grpc.ClientReadableStream<Order>;
    const got: Order[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      call.on('data', (o: Order) => got.push(o));
      call.on('error', () => {});
      call.on('status', resolve);
    });
    expect(status.code).toBe(grpc.status.OK);
    expect(got.map((o) => o.id)).toEqual(['0', '1', '2', '3', '4']);
    expect(got.every((o) => o.seenSubject === 'alice')).toBe(true);
  });

  it('client streaming, 256 KiB through the proxy', async () => {
    const summary = await new Promise<{ count: number; bytes: number }>((resolve, reject) => {
      const call = client.UploadOrders?.(bearer('good-alice'), (err: grpc.ServiceError | null, res: { count: number; bytes: number }) =>
        err ? reject(err) : resolve(res),
      ) as grpc.ClientWritableStream<Partial<Order>>;
      for (let i = 0; i < 64; i++) call.write({ id: String(i), payload: Buffer.alloc(4096, i) });
      call.end();
    });
    expect(summary).toEqual({ count: 64, bytes: 64 * 4096 });
  });

  it('bidirectional streaming', async () => {
    const call = client.Chat?.(bearer('good-alice')) as grpc.ClientDuplexStream<Partial<Order>, Order>;
    const got: Order[] = [];
    const done = new Promise<grpc.StatusObject>((resolve) => {
      call.on('data', (o: Order) => {
        got.push(o);
        if (got.length < 3) call.write({ id: `m${got.length}` });
        else call.end();
      });
      call.on('error', () => {});
      call.on('status', resolve);
    });
    call.write({ id: 'm0' });
    expect((await done).code).toBe(grpc.status.OK);
    expect(got.map((o) => [o.id, o.seenSubject])).toEqual([
      ['m0', 'alice'],
      ['m1', 'alice'],
      ['m2', 'alice'],
    ]);
  });
});

describe('denied calls never reach the app', () => {
  it.each([
    ['DeleteOrder', bearer('good-alice'), grpc.status.PERMISSION_DENIED, 'ERR_POLICY_DENIED'],
    ['GetOrder', new grpc.Metadata(), grpc.status.UNAUTHENTICATED, 'ERR_TOKEN_MISSING'],
    ['GetOrder', bearer('expired'), grpc.status.UNAUTHENTICATED, 'ERR_TOKEN_EXPIRED'],
    ['GetOrder', bearer('forged'), grpc.status.UNAUTHENTICATED, 'ERR_TOKEN_SIGNATURE'],
    ['GetOrder', bearer('async-unknown'), grpc.status.UNAUTHENTICATED, 'ERR_TOKEN_SIGNATURE'],
    ['GetOrder', bearer('newline-sub'), grpc.status.UNAUTHENTICATED, 'ERR_TOKEN_CLAIMS'],
  ] as const)('%s with %o → status %i, %s', async (method, md, status, code) => {
    const r = await unary(client, method, { id: 'o-9' }, md);
    expect(r.err?.code).toBe(status);
    expect(reason(r.err?.metadata)).toBe(code);
    expect(r.err?.metadata.get('x-ward-decision-id')[0]).toBe(proxy.decisions[0]?.decisionId);
    expect(proxy.decisions[0]).toMatchObject({ decision: 'deny', code });
    expect(app.calls).toEqual([]);
  });

  it('a missing token gets the bare Bearer challenge', async () => {
    const r = await unary(client, 'GetOrder', { id: 'o-9' }, new grpc.Metadata());
    expect(r.err?.metadata.get('www-authenticate')).toEqual(['Bearer realm="orders"']);
  });

  it('a denied streaming upload never opens an upstream stream', async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      const call = client.UploadOrders?.(new grpc.Metadata(), (e: grpc.ServiceError | null) => resolve(e as grpc.ServiceError)) as grpc.ClientWritableStream<
        Partial<Order>
      >;
      for (let i = 0; i < 16; i++) call.write({ id: String(i), payload: Buffer.alloc(65536) });
      call.end();
    });
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(app.calls).toEqual([]);
  });

  it('no policy loaded → UNAVAILABLE, ERR_POLICY_UNAVAILABLE', async () => {
    const p = await startProxy(testConfig({ upstreamPort: app.port }), { policy: () => null });
    const c = ordersClient(p.port);
    try {
      const r = await unary(c, 'GetOrder', { id: 'o-1' }, bearer('good-alice'));
      expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(reason(r.err?.metadata)).toBe('ERR_POLICY_UNAVAILABLE');
      expect(app.calls).toEqual([]);
    } finally {
      c.close();
      await p.close();
    }
  });
});

describe('cancellation and deadlines', () => {
  it('a client cancel reaches the app', async () => {
    const call = client.Sleep?.({ ms: 30_000 }, bearer('good-alice'), () => {}) as grpc.ClientUnaryCall;
    await vi.waitFor(() => expect(app.calls.map((c) => c.method)).toContain('Sleep'));
    call.cancel();
    await vi.waitFor(() => expect(app.cancelled).toEqual(['Sleep']));
  });

  it('a client deadline shorter than the call: DEADLINE_EXCEEDED, and the app is cancelled', async () => {
    const r = await unary(client, 'Sleep', { ms: 30_000 }, bearer('good-alice'), { deadline: Date.now() + 300 });
    expect(r.err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await vi.waitFor(() => expect(app.cancelled).toEqual(['Sleep']));
  });

  it('the sidecar enforces grpc-timeout itself when the client does not', async () => {
    // A raw HTTP/2 client that sends grpc-timeout but never cancels.
    const session = await h2Connect(proxy.port);
    try {
      const sleep = Buffer.from([0x08, 0xb0, 0xea, 0x01]); // SleepRequest{ms: 30000}
      const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, sleep.length]), sleep]);
      const r = await h2Request(
        session,
        {
          ':method': 'POST',
          ':path': '/ward.demo.v1.Orders/Sleep',
          'content-type': 'application/grpc',
          te: 'trailers',
          'grpc-timeout': '200m',
          authorization: 'Bearer good-alice',
        },
        frame,
      );
      const status = r.trailers['grpc-status'] ?? r.headers['grpc-status'];
      const why = r.trailers['x-ward-reason'] ?? r.headers['x-ward-reason'];
      expect(status).toBe(String(grpc.status.DEADLINE_EXCEEDED));
      expect(why).toBe('ERR_UPSTREAM_TIMEOUT');
      await vi.waitFor(() => expect(app.cancelled).toEqual(['Sleep']));
    } finally {
      session.close();
    }
  });

  it('a malformed grpc-timeout is refused before the app', async () => {
    const session = await h2Connect(proxy.port);
    try {
      const r = await h2Request(session, {
        ':method': 'POST',
        ':path': '/ward.demo.v1.Orders/GetOrder',
        'content-type': 'application/grpc',
        'grpc-timeout': '1.5S',
        authorization: 'Bearer good-alice',
      });
      expect(r.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
      expect(app.calls).toEqual([]);
    } finally {
      session.close();
    }
  });
});

describe('the app is down', () => {
  it('UNAVAILABLE with ERR_UPSTREAM_UNAVAILABLE', async () => {
    const gone = await startOrdersApp();
    const port = gone.port;
    await gone.close();
    const p = await startProxy(testConfig({ upstreamPort: port }));
    const c = ordersClient(p.port);
    try {
      const r = await unary(c, 'GetOrder', { id: 'o-1' }, bearer('good-alice'));
      expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(reason(r.err?.metadata)).toBe('ERR_UPSTREAM_UNAVAILABLE');
      expect(p.inbound.counters.upstreamErrors).toBe(1);
    } finally {
      c.close();
      await p.close();
    }
  });
});

describe('gRPC framing edge cases', () => {
  it('a gRPC call whose path is not /Service/Method is judged as HTTP', async () => {
    const session = await h2Connect(proxy.port);
    try {
      await h2Request(session, {
        ':method': 'POST',
        ':path': '/ward.demo.v1.Orders/GetOrder/extra',
        'content-type': 'application/grpc',
        authorization: 'Bearer good-alice',
      });
      expect(proxy.facts[0]?.request).toMatchObject({ protocol: 'http', grpcMethod: undefined, path: '/ward.demo.v1.Orders/GetOrder/extra' });
    } finally {
      session.close();
    }
  });

  it('a gRPC call that is not a POST is refused', async () => {
    const session = await h2Connect(proxy.port);
    try {
      const r = await h2Request(session, {
        ':method': 'GET',
        ':path': '/ward.demo.v1.Orders/GetOrder',
        'content-type': 'application/grpc',
        authorization: 'Bearer good-alice',
      });
      expect(r.headers[':status']).toBe(200);
      expect(r.headers['grpc-status']).toBe(String(grpc.status.INTERNAL));
      expect(r.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
      expect(app.calls).toEqual([]);
    } finally {
      session.close();
    }
  });

  it('repeated Authorization fields are refused (ERR_TOKEN_MULTIPLE), not resolved to the first', async () => {
    const session = await h2Connect(proxy.port);
    try {
      const r = await h2Request(session, [
        ':method', 'POST',
        ':path', '/ward.demo.v1.Orders/GetOrder',
        ':scheme', 'http',
        ':authority', 'orders',
        'content-type', 'application/grpc',
        'authorization', 'Bearer good-alice',
        'authorization', 'Bearer forged',
      ]);
      expect(r.headers['x-ward-reason']).toBe('ERR_TOKEN_MULTIPLE');
      expect(app.calls).toEqual([]);
    } finally {
      session.close();
    }
  });

  it('counters track requests and decisions', () => {
    const c = proxy.inbound.counters;
    expect(c.requests).toBeGreaterThan(0);
    expect(c.allowed + c.denied).toBe(c.requests);
    expect(c.activeStreams).toBeGreaterThanOrEqual(0);
  });
});
