import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createPolicyStore, type PolicyStore } from '../../../src/controlplane/server/store.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import { configMap, eventually, invalidPolicy, memoryLogger, policy, tempDir } from './fixtures.ts';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function store(dir: string, opts: { watch?: boolean; log?: typeof silentLogger } = {}): Promise<PolicyStore> {
  const s = await createPolicyStore({
    dir,
    parse: validatePolicyForControlPlane,
    log: opts.log ?? silentLogger,
    watch: opts.watch ?? false,
    debounceMs: 10,
    pollIntervalMs: 60_000,
    clock: () => 1_000,
  });
  cleanups.push(() => s.close());
  return s;
}

function dir(): string {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return t.dir;
}

describe('policy store', () => {
  it('serves each valid file under its service, with the validator\'s content version', async () => {
    const d = dir();
    writeFileSync(join(d, 'orders.yaml'), policy('orders'));
    writeFileSync(join(d, 'payments.yml'), policy('payments'));
    writeFileSync(join(d, 'README.md'), 'not a policy');
    const s = await store(d);
    expect(s.services().map((p) => [p.service, p.file])).toEqual([
      ['orders', 'orders.yaml'],
      ['payments', 'payments.yml'],
    ]);
    // the sidecar compiles with parsePolicyText: both sides compute the same version
    expect(s.get('orders')?.version).toBe(parsePolicyText(policy('orders'), 'x.yaml').version);
    expect(s.get('orders')?.text).toBe(policy('orders'));
    expect(s.problems()).toEqual([]);
  });

  it('keeps the previous valid version when a file turns invalid, and reports file:line', async () => {
    const d = dir();
    const { log, records } = memoryLogger();
    writeFileSync(join(d, 'orders.yaml'), policy('orders'));
    const s = await store(d, { log });
    const v1 = s.get('orders')?.version;
    const changes: string[][] = [];
    s.subscribe((c) => changes.push([...c]));

    writeFileSync(join(d, 'orders.yaml'), invalidPolicy('orders'));
    await s.rescan();
    expect(s.get('orders')?.version).toBe(v1);
    expect(s.get('orders')?.text).toBe(policy('orders'));
    expect(changes).toEqual([]); // nothing new to push
    const [problem] = s.problems();
    expect(problem).toMatchObject({ file: 'orders.yaml', service: 'orders' });
    expect(problem?.issues[0]).toMatchObject({ file: 'orders.yaml', line: 9, path: 'rules[0].action' });
    const warn = records.find((r) => r.msg === 'policy file refused; the previous valid version stays in force');
    expect(warn).toMatchObject({ file: 'orders.yaml', servedVersion: v1 });
    expect(String((warn?.errors as string[])[0])).toMatch(/^orders\.yaml:9:\d+: rules\[0\]\.action/);

    // a later poll of the same bad content does not log again
    const count = records.length;
    await s.rescan();
    expect(records.length).toBe(count);

    writeFileSync(join(d, 'orders.yaml'), policy('orders', ['GetOrder', 'ListOrders']));
    await s.rescan();
    expect(s.get('orders')?.version).not.toBe(v1);
    expect(s.problems()).toEqual([]);
    expect(changes).toEqual([['orders']]);
  });

  it('a file that was never valid serves nothing and is listed with its errors', async () => {
    const d = dir();
    writeFileSync(join(d, 'orders.yaml'), invalidPolicy('orders'));
    const s = await store(d);
    expect(s.services()).toEqual([]);
    expect(s.problems()).toMatchObject([{ file: 'orders.yaml', service: null }]);
  });

  it('gives equal content the same version in two stores, whatever the comments and key order', async () => {
    const a = dir();
    const b = dir();
    writeFileSync(join(a, 'orders.yaml'), policy('orders'));
    // same policy: a comment, reordered keys, a spelled-out default
    const reordered = `# the orders policy
kind: Policy
apiVersion: ward.dev/v1
service: orders
rules:
  - action: allow
    name: readers
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
issuers:
  - audiences: [urn:ward:orders]
    issuer: http://127.0.0.1:4400
`;
    writeFileSync(join(b, 'other-name.yaml'), reordered);
    const [s1, s2] = [await store(a), await store(b)];
    expect(s1.get('orders')?.version).toBeDefined();
    expect(s2.get('orders')?.version).toBe(s1.get('orders')?.version);
    writeFileSync(join(b, 'other-name.yaml'), policy('orders', ['ListOrders']));
    await s2.rescan();
    expect(s2.get('orders')?.version).not.toBe(s1.get('orders')?.version);
  });

  it('refuses a second file for the same service, and hands the service over when the first goes', async () => {
    const d = dir();
    writeFileSync(join(d, 'b-orders.yaml'), policy('orders'));
    const s = await store(d);
    writeFileSync(join(d, 'a-orders.yaml'), policy('orders', ['ListOrders'])); // sorts first, arrives later
    await s.rescan();
    expect(s.get('orders')?.file).toBe('b-orders.yaml');
    // at the file's `service:` value (line 3 of policy()), not 1:1
    expect(s.problems()).toMatchObject([{ file: 'a-orders.yaml', issues: [{ line: 3, column: 10, path: 'service', message: "service 'orders' is already served from b-orders.yaml" }] }]);

    rmSync(join(d, 'b-orders.yaml'));
    await s.rescan();
    expect(s.get('orders')?.file).toBe('a-orders.yaml');
    expect(s.get('orders')?.version).toBe(validatePolicyForControlPlane(policy('orders', ['ListOrders']), 'x').version);
    expect(s.problems()).toEqual([]);
  });

  it('a file switching to a taken service keeps serving its previous service', async () => {
    const d = dir();
    writeFileSync(join(d, 'orders.yaml'), policy('orders'));
    writeFileSync(join(d, 'payments.yaml'), policy('payments'));
    const s = await store(d);
    const payments = s.get('payments')?.version;
    writeFileSync(join(d, 'payments.yaml'), policy('orders', ['ListOrders']));
    await s.rescan();
    expect(s.get('orders')?.file).toBe('orders.yaml');
    expect(s.get('payments')?.version).toBe(payments);
    expect(s.problems()).toMatchObject([{ file: 'payments.yaml', service: 'payments' }]);
  });

  it('drops the service of a deleted file and tells subscribers', async () => {
    const d = dir();
    writeFileSync(join(d, 'orders.yaml'), policy('orders'));
    const s = await store(d);
    const changes: string[][] = [];
    s.subscribe((c) => changes.push([...c]));
    rmSync(join(d, 'orders.yaml'));
    await s.rescan();
    expect(s.get('orders')).toBeUndefined();
    expect(changes).toEqual([['orders']]);
  });

  it('refuses an oversized file', async () => {
    const d = dir();
    writeFileSync(join(d, 'orders.yaml'), `${policy('orders')}#${'x'.repeat(2048)}\n`);
    const s = await createPolicyStore({ dir: d, parse: validatePolicyForControlPlane, log: silentLogger, watch: false, maxFileBytes: 1024 });
    cleanups.push(() => s.close());
    expect(s.services()).toEqual([]);
    expect(s.problems()[0]?.issues[0]?.message).toMatch(/more than the 1024 allowed/);
  });

  it('fails at start-up on a missing directory', async () => {
    await expect(store(join(dir(), 'nope'))).rejects.toMatchObject({ name: 'ConfigError' });
  });
});

describe('policy store: Kubernetes ConfigMap layout', () => {
  it('follows an atomic ..data swap and never reads dot-entries as policies', async () => {
    const d = dir();
    configMap(d, '..2026_11_26_10_00_00.1', { 'orders.yaml': policy('orders') });
    const s = await store(d);
    expect(s.services().map((p) => p.file)).toEqual(['orders.yaml']);
    const v1 = s.get('orders')?.version;

    configMap(d, '..2026_11_26_10_05_00.2', { 'orders.yaml': policy('orders', ['GetOrder', 'CreateOrder']) });
    await s.rescan();
    expect(s.get('orders')?.version).not.toBe(v1);
    expect(s.get('orders')?.file).toBe('orders.yaml');
    expect(s.problems()).toEqual([]);

    // an invalid generation keeps the served version
    const v2 = s.get('orders')?.version;
    configMap(d, '..2026_11_26_10_10_00.3', { 'orders.yaml': invalidPolicy('orders') });
    await s.rescan();
    expect(s.get('orders')?.version).toBe(v2);
    expect(s.problems()).toMatchObject([{ file: 'orders.yaml' }]);
  });

  it('notices the swap through the directory watch, without an explicit rescan', async () => {
    const d = dir();
    configMap(d, '..2026_11_26_10_00_00.1', { 'orders.yaml': policy('orders') });
    const s = await store(d, { watch: true });
    const v1 = s.get('orders')?.version;
    const changed: string[] = [];
    s.subscribe((c) => changed.push(...c));
    configMap(d, '..2026_11_26_10_05_00.2', { 'orders.yaml': policy('orders', ['ListOrders']) });
    await eventually(() => changed.includes('orders'), 10_000, 'the watch to pick up the swap');
    expect(s.get('orders')?.version).not.toBe(v1);
  });

  it('notices a plain file edit through the watch', async () => {
    const d = dir();
    writeFileSync(join(d, 'orders.yaml'), policy('orders'));
    const s = await store(d, { watch: true });
    const changed: string[] = [];
    s.subscribe((c) => changed.push(...c));
    writeFileSync(join(d, 'orders.yaml'), policy('orders', ['ListOrders']));
    await eventually(() => changed.includes('orders'), 10_000, 'the watch to pick up the edit');
  });
});
