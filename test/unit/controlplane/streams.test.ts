import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { policy } from './fixtures.ts';
import { type Harness, startHarness, TOKENS } from './harness.ts';

/**
 * The xDS semantics of StreamPolicy, over a real grpc-js client and server on loopback. Where a
 * test needs "nothing was sent", it publishes a later version and checks that it is the next
 * message: anything sent in between would have come first.
 */

const V = (methods: string[]): string => validatePolicyForControlPlane(policy('orders', methods), 'x').version;
const v1 = V(['GetOrder']);
const v2 = V(['GetOrder', 'ListOrders']);
const v3 = V(['GetOrder', 'CreateOrder']);
const v4 = V(['CreateOrder']);

let h: Harness;
afterEach(async () => {
  await h.close();
});

describe('StreamPolicy: xDS ACK/NACK semantics', () => {
  it('pushes the current version on connect, then every new version after the ACK', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    await s.headers;
    const r1 = await s.next();
    expect(r1).toMatchObject({ versionInfo: v1, service: 'orders', controlPlaneId: 'cp-test', policy: { fileName: 'orders.yaml', text: policy('orders') } });
    expect(r1.nonce).not.toBe('');
    s.ack(r1);

    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    const r2 = await s.next();
    expect(r2.versionInfo).toBe(v2);
    expect(r2.nonce).not.toBe(r1.nonce);
    s.ack(r2);

    await h.write('orders.yaml', policy('orders', ['GetOrder', 'CreateOrder']));
    expect((await s.next()).versionInfo).toBe(v3);
    const st = await h.status();
    expect(st.sidecars).toMatchObject([{ service: 'orders', instanceId: 'pod-1', subject: 'orders-sidecar', ackedVersion: v2, pendingVersion: v3 }]);
  });

  it('sends nothing to a sidecar that reconnects with the current version', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1', v1);
    await s.headers;
    const st = await h.status();
    expect(st.sidecars[0]).toMatchObject({ ackedVersion: v1, pendingVersion: '' });
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    expect((await s.next()).versionInfo).toBe(v2); // first message: v1 was never resent
  });

  it('sends the current version to a sidecar that announces an older or unknown one', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1', 'some-old-version');
    expect((await s.next()).versionInfo).toBe(v1);
  });

  it('after a NACK keeps the sidecar\'s last good version, records the reason, and never resends the NACKed version', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    s.ack(await s.next());
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    const r2 = await s.next();
    s.nack(r2, v1, 'orders.yaml:5:7: issuers[0].hmacSecretEnv: environment variable X is not set');

    await expect.poll(async () => (await h.status()).sidecars[0]?.nackCount).toBe(1);
    const st = await h.status();
    expect(st.sidecars[0]).toMatchObject({ ackedVersion: v1, pendingVersion: '', lastNack: { version: v2, message: expect.stringContaining('hmacSecretEnv') } });

    // the same NACKed version published again (a touch, a revert-and-redo) is not resent …
    await h.write('orders.yaml', policy('orders'));
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    // … and v1 again is what the sidecar holds: nothing either. v3 is new: sent.
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'CreateOrder']));
    const r3 = await s.next();
    expect(r3.versionInfo).toBe(v3);
    expect(r3.nonce).not.toBe(r2.nonce);
  });

  it('ignores requests with a stale or unknown nonce', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    const r1 = await s.next();
    s.send({ versionInfo: 'x', responseNonce: 'not-a-nonce', errorDetail: { code: 3, message: 'stale' } });
    s.send({ versionInfo: r1.versionInfo, responseNonce: '' });
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders'])); // waits: r1 still unanswered
    let st = await h.status();
    expect(st.sidecars[0]).toMatchObject({ ackedVersion: '', pendingVersion: v1, nackCount: 0, lastNack: null });

    s.ack(r1);
    const r2 = await s.next(); // v2 follows the ACK
    expect(r2.versionInfo).toBe(v2);
    s.ack(r1); // an old nonce again: ignored, v2 stays pending
    st = await h.status();
    expect(st.sidecars[0]).toMatchObject({ ackedVersion: v1, pendingVersion: v2 });
    s.ack(r2);
    await expect.poll(async () => (await h.status()).sidecars[0]?.ackedVersion).toBe(v2);
  });

  it('collapses versions published while a response is unanswered into the latest', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    const r1 = await s.next();
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'CreateOrder']));
    s.ack(r1);
    expect((await s.next()).versionInfo).toBe(v3);
  });

  it('fans a change out to every stream of the service and to no other', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders'), 'payments.yaml': policy('payments') } });
    const orders = [h.stream(), h.stream(), h.stream()];
    orders.forEach((s, i) => s.hello('orders', `orders-${i}`, v1));
    const payments = h.stream(TOKENS.payments);
    payments.hello('payments', 'payments-0');
    const p1 = await payments.next();
    payments.ack(p1);
    await Promise.all(orders.map((s) => s.headers));

    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    const got = await Promise.all(orders.map((s) => s.next()));
    expect(got.map((r) => r.versionInfo)).toEqual([v2, v2, v2]);
    expect(new Set(got.map((r) => r.nonce)).size).toBeGreaterThanOrEqual(1);

    await h.write('payments.yaml', policy('payments', ['ListOrders']));
    const p2 = await payments.next(); // the orders change did not reach payments first
    expect(p2.service).toBe('payments');
    expect(p2.versionInfo).toBe(validatePolicyForControlPlane(policy('payments', ['ListOrders']), 'x').version);
    expect((await h.status()).sidecars.map((x) => x.instanceId)).toEqual(['orders-0', 'orders-1', 'orders-2', 'payments-0']);
  });

  it('says nothing about a service that has no policy (yet), then pushes when its file appears', async () => {
    h = await startHarness({ files: {} });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    await s.headers;
    await h.write('orders.yaml', policy('orders'));
    expect((await s.next()).versionInfo).toBe(v1);
  });

  it('sends nothing when a file is deleted; a re-created file with the held version sends nothing either', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    s.ack(await s.next());
    const { rmSync } = await import('node:fs');
    rmSync(`${h.dir}/orders.yaml`);
    await h.store.rescan();
    expect(h.store.get('orders')).toBeUndefined();
    await h.write('orders.yaml', policy('orders'));
    await h.write('orders.yaml', policy('orders', ['CreateOrder']));
    expect((await s.next()).versionInfo).toBe(v4);
  });

  it('ends a stream that changes its service with INVALID_ARGUMENT', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1');
    const r1 = await s.next();
    s.send({ service: 'payments', versionInfo: r1.versionInfo, responseNonce: r1.nonce });
    expect((await s.status).code).toBe(grpc.status.INVALID_ARGUMENT);
    await expect.poll(() => h.server.streams()).toBe(0);
  });
});

describe('StreamPolicy: admission', () => {
  it('refuses a stream without a token with UNAUTHENTICATED, before any headers', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream(null);
    s.hello('orders', 'pod-1');
    let headers = false;
    void s.headers.then(() => (headers = true));
    const st = await s.status;
    expect(st.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(headers).toBe(false);
  });

  it('refuses an invalid token with UNAUTHENTICATED', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream('forged');
    s.hello('orders', 'pod-1');
    expect((await s.status).code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('refuses a malformed authorization value with UNAUTHENTICATED', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const md = new grpc.Metadata();
    md.set('authorization', 'Basic b3JkZXJzOnNlY3JldA==');
    const s = h.stream(md);
    s.hello('orders', 'pod-1');
    const st = await s.status;
    expect(st.code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('refuses a subscription to a service the identity is not bound to with PERMISSION_DENIED', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders'), 'payments.yaml': policy('payments') } });
    const s = h.stream(TOKENS.orders);
    s.hello('payments', 'pod-1');
    const st = await s.status;
    expect(st.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(h.server.streams()).toBe(0);
  });

  it('binds by claim when configured', async () => {
    h = await startHarness({ files: { 'payments.yaml': policy('payments') }, bindings: [{ claim: 'sub' }] });
    const s = h.stream(TOKENS.payments); // sub: payments-sidecar
    s.hello('payments-sidecar', 'pod-1');
    await s.headers;
    const denied = h.stream(TOKENS.payments);
    denied.hello('payments', 'pod-2');
    expect((await denied.status).code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('refuses a first request without service or instance id with INVALID_ARGUMENT', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', '');
    expect((await s.status).code).toBe(grpc.status.INVALID_ARGUMENT);
    const s2 = h.stream();
    s2.hello('Not A Service', 'pod');
    expect((await s2.status).code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('ends the stream with UNAUTHENTICATED when the token expires', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream(TOKENS.expired); // the table authenticator accepts it; its exp is past
    s.hello('orders', 'pod-1');
    await s.headers;
    expect((await s.status).code).toBe(grpc.status.UNAUTHENTICATED);
    await expect.poll(() => h.server.streams()).toBe(0);
  });

  it('refuses streams beyond maxStreams with RESOURCE_EXHAUSTED', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') }, maxStreams: 2 });
    const a = h.stream();
    a.hello('orders', 'a', v1);
    const b = h.stream();
    b.hello('orders', 'b', v1);
    await Promise.all([a.headers, b.headers]);
    const c = h.stream();
    c.hello('orders', 'c', v1);
    expect((await c.status).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    a.call.cancel();
    await expect.poll(() => h.server.streams()).toBe(1);
    const d = h.stream();
    d.hello('orders', 'd', v1);
    await d.headers;
  });

  it('forgets a stream when the sidecar goes away', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1', v1);
    await s.headers;
    expect(h.server.streams()).toBe(1);
    s.call.end(); // half-close: the server ends its side too
    expect((await s.status).code).toBe(grpc.status.OK);
    await expect.poll(() => h.server.streams()).toBe(0);
    expect((await h.status()).sidecars).toEqual([]);
  });

  it('ends every stream with UNAVAILABLE on shutdown', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream();
    s.hello('orders', 'pod-1', v1);
    await s.headers;
    await h.server.close();
    expect((await s.status).code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('GetStatus and health', () => {
  it('reports services, refused files and sidecars', async () => {
    h = await startHarness({ files: { 'orders.yaml': policy('orders'), 'broken.yaml': 'service: [' } });
    await h.write('orders.yaml', policy('orders').replace('action: allow', 'action: nope'));
    const s = h.stream();
    s.hello('orders', 'pod-1');
    s.ack(await s.next());
    const st = await h.status();
    expect(st.controlPlaneId).toBe('cp-test');
    expect(st.policyDir).toBe(h.dir);
    expect(st.services).toMatchObject([{ service: 'orders', version: v1, sourceFile: 'orders.yaml', lastError: [{ file: 'orders.yaml', line: 9, path: 'rules[0].action' }] }]);
    expect(st.files.map((f) => [f.file, f.service])).toEqual([
      ['broken.yaml', ''],
      ['orders.yaml', 'orders'],
    ]);
    expect(st.sidecars).toMatchObject([{ instanceId: 'pod-1', ackedVersion: v1, peer: expect.stringContaining('127.0.0.1') }]);
    expect(st.sidecars[0]?.connectedSinceUnixMs).toBeGreaterThan(0);
  });

  it('needs no token from loopback by default; with the exemption off, needs an allowed subject', async () => {
    h = await startHarness({ files: {}, status: { allowLoopbackWithoutToken: false, subjects: ['ward-operator'] } });
    await expect(h.status()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    const md = (token: string): grpc.Metadata => {
      const m = new grpc.Metadata();
      m.set('authorization', `Bearer ${token}`);
      return m;
    };
    await expect(h.status(md(TOKENS.orders))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(h.status(md('forged'))).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect((await h.status(md(TOKENS.operator))).controlPlaneId).toBe('cp-test');
  });

  it('answers grpc.health.v1 Check and Watch', async () => {
    h = await startHarness({ files: {} });
    const health = h.health();
    const check = (service: string): Promise<{ status: string }> =>
      new Promise((resolve, reject) => health.Check?.({ service }, (err: Error | null, r: { status: string }) => (err ? reject(err) : resolve(r))));
    expect(await check('')).toEqual({ status: 'SERVING' });
    expect(await check('ward.v1.PolicyDiscovery')).toEqual({ status: 'SERVING' });
    await expect(check('nope')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });

    const watch = health.Watch?.({ service: '' }) as grpc.ClientReadableStream<{ status: string }>;
    const seen: string[] = [];
    watch.on('data', (r: { status: string }) => seen.push(r.status));
    watch.on('error', () => {});
    await expect.poll(() => seen).toEqual(['SERVING']);
    await h.server.close();
    await expect.poll(() => seen).toEqual(['SERVING', 'NOT_SERVING']);
  });
});
