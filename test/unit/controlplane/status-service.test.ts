import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { policyDiscoveryClient, type StatusResponseWire } from '../../../src/controlplane/proto.ts';
import { invalidPolicy, policy } from './fixtures.ts';
import { type Harness, perTest } from './harness.ts';

/**
 * Regression (review, sixteenth session): a file refused because its service is already served
 * from another file was reported with no service (the store took the service of the file's last
 * *served* content only), so `ward status --service orders` hid the very file that conflicts with
 * orders. It is now reported under the service its valid content names.
 */

const { cleanups, harness } = perTest();

async function statusOf(h: Harness, service: string): Promise<StatusResponseWire> {
  const Client = policyDiscoveryClient();
  const c = new Client(h.address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    GetStatus(req: { service: string }, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, r?: StatusResponseWire) => void): void;
  };
  cleanups.push(() => c.close());
  return new Promise((resolve, reject) => c.GetStatus({ service }, new grpc.Metadata(), (err, r) => (err !== null || r === undefined ? reject(err ?? new Error('empty response')) : resolve(r))));
}

describe('GetStatus --service: refused files', () => {
  it('lists a second file refused because its service is taken, under that service', async () => {
    const h = await harness({ files: { 'a.yaml': policy('orders'), 'b.yaml': policy('orders', ['ListOrders']) } });
    expect(h.store.problems()).toMatchObject([{ file: 'b.yaml', service: 'orders' }]);
    const only = await statusOf(h, 'orders');
    expect(only.files.map((f) => [f.file, f.service])).toEqual([['b.yaml', 'orders']]);
    expect(only.files[0]?.issues[0]?.message).toBe("service 'orders' is already served from a.yaml");
    expect((await statusOf(h, 'payments')).files).toEqual([]);
  });

  it('a file that never was valid stays without a service; an invalid edit keeps the service it served', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders'), 'broken.yaml': invalidPolicy('payments') } });
    await h.write('orders.yaml', invalidPolicy('orders'));
    expect(h.store.problems().map((p) => [p.file, p.service])).toEqual([
      ['broken.yaml', null],
      ['orders.yaml', 'orders'],
    ]);
    expect((await statusOf(h, 'orders')).files.map((f) => f.file)).toEqual(['orders.yaml']);
  });
});
