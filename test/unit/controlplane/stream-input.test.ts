import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { MAX_VERSION_INFO } from '../../../src/controlplane/wire.ts';
import { memoryLogger, policy } from './fixtures.ts';
import { perTest, type RawStream, TOKENS } from './harness.ts';

/**
 * Regressions (review, sixteenth session): what a sidecar sends and the control plane keeps,
 * logs and reports is bounded and printable. An instance_id with a newline or an ANSI escape
 * forged rows of `ward status`; a version_info of any length was kept per stream, logged and
 * returned by GetStatus. Both end the stream with INVALID_ARGUMENT.
 */

const { harness } = perTest();

/**
 * How the stream ended, or 'went on' once `wentOn()` says the control plane took the request
 * (polled): a failing test then fails at once instead of waiting for an end that never comes.
 */
async function verdict(s: RawStream, wentOn: () => Promise<boolean>): Promise<grpc.StatusObject | 'went on'> {
  let settled = false;
  const poll = async (): Promise<'went on'> => {
    while (!settled && !(await wentOn())) await new Promise((r) => setTimeout(r, 10));
    return 'went on';
  };
  try {
    return await Promise.race([s.status, poll()]);
  } finally {
    settled = true;
  }
}

const FORGED_ROW = 'pod-1\npayments  pod-7  payments-sidecar  0123456789ab  -  2026-01-01T00:00:00Z  -';

describe('StreamPolicy: instance_id', () => {
  it.each([
    ['a newline (a forged status row)', FORGED_ROW],
    ['an ANSI escape', 'pod-1\x1b[2J'],
    ['a carriage return', 'pod-1\rpod-2'],
    ['a tab', 'pod\t1'],
    ['DEL', 'pod-1\x7f'],
    ['a C1 control (CSI)', 'pod-1\u009b2J'],
    ['a bidi override', 'pod-\u202e1'],
  ])('with %s is refused with INVALID_ARGUMENT', async (_what, instanceId) => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream(TOKENS.orders);
    s.hello('orders', instanceId);
    const st = await verdict(s, async () => (await h.status()).sidecars.length > 0);
    expect(st).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('printable ASCII') });
    expect((await h.status()).sidecars).toEqual([]);
  });

  it('printable ASCII (pod names, host:pid, spaces) is accepted', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream(TOKENS.orders);
    s.hello('orders', 'orders-7f9c4d (node-a:4242) ~!@#$%^&*');
    s.ack(await s.next());
    await expect.poll(async () => (await h.status()).sidecars[0]?.instanceId).toBe('orders-7f9c4d (node-a:4242) ~!@#$%^&*');
  });
});

describe('StreamPolicy: version_info', () => {
  it('longer than MAX_VERSION_INFO on the first request is refused, and not logged', async () => {
    const { log, records } = memoryLogger();
    const h = await harness({ files: { 'orders.yaml': policy('orders') }, log });
    const s = h.stream(TOKENS.orders);
    s.hello('orders', 'pod-1', 'v'.repeat(60_000));
    const st = await verdict(s, async () => (await h.status()).sidecars.length > 0);
    expect(st).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining(`longer than ${MAX_VERSION_INFO}`) });
    expect(records.some((r) => JSON.stringify(r).includes('v'.repeat(MAX_VERSION_INFO + 1)))).toBe(false);
  });

  it('of MAX_VERSION_INFO characters is accepted', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const s = h.stream(TOKENS.orders);
    s.hello('orders', 'pod-1', 'v'.repeat(MAX_VERSION_INFO));
    await s.next(); // differs from the current version: pushed
    expect((await h.status()).sidecars[0]?.ackedVersion).toBe('v'.repeat(MAX_VERSION_INFO));
  });

  it.each([
    ['an ACK', (r: { versionInfo: string; nonce: string }) => ({ versionInfo: 'v'.repeat(MAX_VERSION_INFO + 1), responseNonce: r.nonce })],
    ['a NACK', (r: { versionInfo: string; nonce: string }) => ({ versionInfo: 'v'.repeat(60_000), responseNonce: r.nonce, errorDetail: { code: 3, message: 'no' } })],
    ['a stale request', () => ({ versionInfo: 'v'.repeat(60_000), responseNonce: 'not-a-nonce' })],
  ])('longer than MAX_VERSION_INFO in %s ends the stream with INVALID_ARGUMENT, not stored', async (_what, request) => {
    const { log, records } = memoryLogger();
    const h = await harness({ files: { 'orders.yaml': policy('orders') }, log });
    const s = h.stream(TOKENS.orders);
    s.hello('orders', 'pod-1');
    const r = await s.next();
    s.send(request(r));
    s.ack(r); // answered properly next: a stream still open ends up holding r
    const st = await verdict(s, async () => (await h.status()).sidecars[0]?.ackedVersion !== '');
    expect(st).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect((await h.status()).sidecars).toEqual([]);
    expect(records.some((x) => JSON.stringify(x).includes('v'.repeat(MAX_VERSION_INFO + 1)))).toBe(false);
  });
});
