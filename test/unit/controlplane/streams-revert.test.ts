import { describe, expect, it } from 'vitest';
import { createPolicyWatch } from '../../../src/controlplane/client/watch.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import { eventually, needsSecretPolicy, policy, tempDir } from './fixtures.ts';
import { type Harness, perTest, type RawStream, watchOptions } from './harness.ts';

/**
 * Regression (review, sixteenth session): a version a stream NACKed was never offered to it again,
 * even after the sidecar ACKed a later one and the file was reverted to it. Versions are content
 * hashes, so the revert is the same version; the sidecar stayed on a version no file held. Now an
 * ACK forgets the NACKed versions: a bad version is refused once each time it becomes current.
 */

const V = (methods: string[]): string => validatePolicyForControlPlane(policy('orders', methods), 'x').version;
const v1 = V(['GetOrder']);
const v2 = V(['GetOrder', 'ListOrders']);
const v3 = V(['GetOrder', 'CreateOrder']);
const v4 = V(['CreateOrder']);

/** Valid for the control plane; the sidecar compiles it only once WARD_TEST_REVERT_SECRET is in its env. */
const NEEDS_SECRET = needsSecretPolicy('WARD_TEST_REVERT_SECRET');

const { cleanups, harness } = perTest();

/** A raw stream that ACKed v1, NACKed v2 ('secret missing') and was then pushed v3 (`r3`, not answered yet). */
async function nackedV2ThenV3(): Promise<{ h: Harness; s: RawStream; r3: Awaited<ReturnType<RawStream['next']>> }> {
  const h = await harness({ files: { 'orders.yaml': policy('orders') } });
  const s = h.stream();
  s.hello('orders', 'pod-1');
  s.ack(await s.next()); // v1
  await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
  const r2 = await s.next();
  expect(r2.versionInfo).toBe(v2);
  s.nack(r2, v1, 'secret missing');
  await h.write('orders.yaml', policy('orders', ['GetOrder', 'CreateOrder']));
  return { h, s, r3: await s.next() };
}

describe('StreamPolicy: a NACKed version after a later ACK', () => {
  it('is offered again when the file is reverted to it, and refused at most once each time it is current', async () => {
    const { h, s, r3 } = await nackedV2ThenV3();
    expect(r3.versionInfo).toBe(v3);
    s.ack(r3);

    // reverted to v2 (then v4 is published): v2 is offered again first
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    await h.write('orders.yaml', policy('orders', ['CreateOrder']));
    const again = await s.next();
    expect(again.versionInfo).toBe(v2);
    s.nack(again, v3, 'secret still missing');
    const r4 = await s.next(); // v4 follows the NACK
    expect(r4.versionInfo).toBe(v4);
    s.nack(r4, v3, 'refused too');

    // no loop: with no ACK since, neither v2 nor v4 is resent when current again; v1 is next
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    await h.write('orders.yaml', policy('orders', ['CreateOrder']));
    await h.write('orders.yaml', policy('orders'));
    expect((await s.next()).versionInfo).toBe(v1);
  });

  it('a NACKed version that became current during a push is offered right after the ACK', async () => {
    const { h, s, r3 } = await nackedV2ThenV3();
    // while v3 is outstanding, the file goes back to v2
    await h.write('orders.yaml', policy('orders', ['GetOrder', 'ListOrders']));
    s.ack(r3);
    await h.write('orders.yaml', policy('orders', ['CreateOrder'])); // sent after v2, if v2 is sent
    expect((await s.next()).versionInfo).toBe(v2);
  });

  it('a sidecar that NACKed V2 (secret missing), then applied V3, applies V2 when the file is reverted and the secret is there', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const state = tempDir('ward-state-');
    cleanups.push(state.cleanup);
    const env: Record<string, string> = {};
    const w = createPolicyWatch(watchOptions(h.address, state.dir, { compile: (t, file) => parsePolicyText(t, file, { service: 'orders', env }) }));
    cleanups.push(() => w.close());
    await eventually(() => w.versionInfo() === v1, 10_000, 'v1');

    await h.write('orders.yaml', NEEDS_SECRET);
    await eventually(() => (w.lastError() ?? '').includes('WARD_TEST_REVERT_SECRET'), 10_000, 'the NACK of the secret-needing version');
    expect(w.versionInfo()).toBe(v1);

    await h.write('orders.yaml', policy('orders', ['GetOrder', 'CreateOrder']));
    await eventually(() => w.versionInfo() === v3, 10_000, 'v3');

    env.WARD_TEST_REVERT_SECRET = 'x'.repeat(48);
    await h.write('orders.yaml', NEEDS_SECRET);
    const reverted = validatePolicyForControlPlane(NEEDS_SECRET, 'orders.yaml').version;
    await eventually(() => w.versionInfo() === reverted, 10_000, 'the reverted version');
    expect(w.lastError()).toBeNull();
    expect((await h.status()).sidecars[0]).toMatchObject({ ackedVersion: reverted, pendingVersion: '' });
  });
});
