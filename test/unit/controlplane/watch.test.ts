import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF } from '../../../src/lib/backoff.ts';
import { statePath } from '../../../src/controlplane/client/state.ts';
import { createPolicyWatch, type PolicyWatch, type PolicyWatchOptions } from '../../../src/controlplane/client/watch.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { MAX_POLICY_FILE_BYTES } from '../../../src/controlplane/wire.ts';
import { createLogger } from '../../../src/lib/log.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import { eventually, needsSecretPolicy, policy, tempDir } from './fixtures.ts';
import { perTest, startHarness, TOKENS, watchOptions } from './harness.ts';

const protoRoot = new protobuf.Root();
protoRoot.resolvePath = (_origin, target) => fileURLToPath(new URL(`../../../proto/${target}`, import.meta.url));
protoRoot.loadSync('ward/v1/control_plane.proto');
const PolicyResponse = protoRoot.lookupType('ward.v1.PolicyResponse');

const v1 = validatePolicyForControlPlane(policy('orders'), 'x').version;
const v2 = validatePolicyForControlPlane(policy('orders', ['ListOrders']), 'x').version;

/** Valid for the control plane; the sidecar cannot compile it without the HMAC secret in its env. */
const NEEDS_SECRET = needsSecretPolicy('WARD_TEST_UNSET_SECRET');

const { cleanups, harness } = perTest();

function stateDir(): string {
  const t = tempDir('ward-state-');
  cleanups.push(t.cleanup);
  return t.dir;
}

interface Watched {
  readonly watch: PolicyWatch;
  readonly applied: CompiledPolicy[];
}

function watch(address: string, dir: string, over: Partial<PolicyWatchOptions> = {}): Watched {
  const applied: CompiledPolicy[] = [];
  const w = createPolicyWatch(
    watchOptions(address, dir, { compile: (text, file) => parsePolicyText(text, file, { env: {} }), onPolicy: (p) => applied.push(p), ...over }),
  );
  cleanups.push(() => w.close());
  return { watch: w, applied };
}

/** Records timers instead of running them; `fire(ms)` runs (and removes) the first one with that delay. */
function fakeTimers(): { timers: NonNullable<PolicyWatchOptions['timers']>; delays: number[]; pending: () => number[]; fire(pred: (ms: number) => boolean): void } {
  let next = 1;
  const live = new Map<number, { fn: () => void; ms: number }>();
  const delays: number[] = [];
  return {
    timers: {
      setTimeout(fn, ms) {
        const id = next++;
        live.set(id, { fn, ms });
        delays.push(ms);
        return id;
      },
      clearTimeout(id) {
        live.delete(id as number);
      },
    },
    delays,
    pending: () => [...live.values()].map((t) => t.ms),
    fire(pred) {
      for (const [id, t] of live) {
        if (pred(t.ms)) {
          live.delete(id);
          t.fn();
          return;
        }
      }
      throw new Error('no such timer');
    },
  };
}

/** One gRPC length-prefixed message (uncompressed). */
function grpcMessage(m: Uint8Array): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(m.length, 1);
  return Buffer.concat([prefix, m]);
}

/**
 * A bare HTTP/2 server standing in for the control plane: each stream is answered 200
 * `application/grpc`, then handed to `onStream` with its number (1 for the first). Closed, with
 * its sessions, after the test.
 */
async function rawControlPlane(
  onStream: (s: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, n: number) => void,
): Promise<{ readonly address: string; readonly streams: http2.ServerHttp2Stream[] }> {
  const streams: http2.ServerHttp2Stream[] = [];
  const server = http2.createServer();
  server.on('stream', (s, headers) => {
    streams.push(s);
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    onStream(s, headers, streams.length);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  cleanups.push(() => {
    for (const st of streams) st.session?.destroy();
  });
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, streams };
}

describe('createPolicyWatch', () => {
  it('applies the pushed version, persists it atomically, and ACKs', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const dir = stateDir();
    const { watch: w, applied } = watch(h.address, dir);
    expect(w.current()).toBeNull(); // fail closed until a version is accepted
    await eventually(() => applied.length === 1, 10_000, 'the first policy');
    expect(w.current()?.version).toBe(v1);
    expect(w.versionInfo()).toBe(v1);
    expect(w.connected()).toBe(true);
    await expect.poll(async () => (await h.status()).sidecars[0]?.ackedVersion).toBe(v1);
    await eventually(() => existsSync(statePath(dir, 'orders')));
    expect(JSON.parse(readFileSync(statePath(dir, 'orders'), 'utf8'))).toMatchObject({ service: 'orders', versionInfo: v1, fileName: 'orders.yaml', text: policy('orders') });

    await h.write('orders.yaml', policy('orders', ['ListOrders']));
    await eventually(() => applied.length === 2, 10_000, 'the second policy');
    expect(w.current()?.version).toBe(v2);
    await expect.poll(() => JSON.parse(readFileSync(statePath(dir, 'orders'), 'utf8')).versionInfo).toBe(v2);
  });

  it('takes a policy as large as the control plane may serve (regression: over 4 MiB it ended every stream with RESOURCE_EXHAUSTED and reconnected for ever)', async () => {
    // 5 MiB of comment lines after a valid policy: a file the control plane serves with watch.maxFileBytes at its maximum.
    const big = `${policy('orders')}${'# padding to make the file large\n'.repeat(Math.ceil((5 * 1024 * 1024) / 33))}`;
    const h = await harness({ files: { 'orders.yaml': big }, maxFileBytes: MAX_POLICY_FILE_BYTES });
    const { watch: w, applied } = watch(h.address, stateDir());
    await eventually(() => applied.length === 1, 20_000, 'the large policy');
    expect(w.current()?.version).toBe(v1);
    await expect.poll(async () => (await h.status()).sidecars[0]?.ackedVersion).toBe(v1);
  });

  it('NACKs a version it cannot compile, keeps the last good one, and the control plane shows why', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const dir = stateDir();
    const { watch: w, applied } = watch(h.address, dir);
    await eventually(() => applied.length === 1);
    await h.write('orders.yaml', NEEDS_SECRET);
    await expect.poll(async () => (await h.status()).sidecars[0]?.lastNack?.message ?? '').toContain('WARD_TEST_UNSET_SECRET');
    const st = await h.status();
    expect(st.sidecars[0]).toMatchObject({ ackedVersion: v1, nackCount: 1, lastNack: { version: validatePolicyForControlPlane(NEEDS_SECRET, 'x').version } });
    expect(st.sidecars[0]?.lastNack?.message).toMatch(/^orders\.yaml:8:\d+: issuers\[0\]\.hmacSecretEnv/);
    expect(applied).toHaveLength(1);
    expect(w.current()?.version).toBe(v1);
    expect(w.lastError()).toContain('WARD_TEST_UNSET_SECRET');
    expect(JSON.parse(readFileSync(statePath(dir, 'orders'), 'utf8')).versionInfo).toBe(v1);

    // the next valid version is applied as usual
    await h.write('orders.yaml', policy('orders', ['ListOrders']));
    await eventually(() => applied.length === 2);
    expect(w.current()?.version).toBe(v2);
    expect(w.lastError()).toBeNull();
  });

  it('NACKs a policy that compiles but names another service', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const { watch: w, applied } = watch(h.address, stateDir(), {
      compile: (text, file) => ({ ...parsePolicyText(text, file), service: 'payments' }),
    });
    await expect.poll(async () => (await h.status()).sidecars[0]?.lastNack?.message ?? '').toContain("policy is for service 'payments'");
    expect(applied).toEqual([]);
    expect(w.current()).toBeNull();
  });

  it('after a restart with the control plane down, enforces the persisted version at once', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const dir = stateDir();
    const first = watch(h.address, dir);
    await eventually(() => first.applied.length === 1);
    await first.watch.close();
    const address = h.address;
    await h.close();

    const timers = fakeTimers();
    const second = watch(address, dir, { timers: timers.timers });
    expect(second.watch.current()?.version).toBe(v1);
    expect(second.applied.map((p) => p.version)).toEqual([v1]);
    expect(second.watch.versionInfo()).toBe(v1);
    expect(second.watch.connected()).toBe(false);
    await eventually(() => timers.pending().length === 1, 10_000, 'a reconnect to be scheduled');
    expect(second.watch.lastError()).toMatch(/UNAVAILABLE/);
    expect(second.watch.current()?.version).toBe(v1);
  });

  it('after a restart with the control plane up on the same version, gets no push', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    const dir = stateDir();
    const first = watch(h.address, dir);
    await eventually(() => first.applied.length === 1);
    await first.watch.close();

    const second = watch(h.address, dir);
    await eventually(() => second.watch.connected());
    await expect.poll(async () => (await h.status()).sidecars.map((s) => [s.ackedVersion, s.pendingVersion])).toEqual([[v1, '']]);
    await h.write('orders.yaml', policy('orders', ['ListOrders']));
    await eventually(() => second.applied.length === 2);
    expect(second.applied.map((p) => p.version)).toEqual([v1, v2]); // restored, then the one new version
  });

  it('ignores a corrupt or foreign state file', async () => {
    const dir = stateDir();
    writeFileSync(statePath(dir, 'orders'), '{"service": "orders", "versionInfo": ');
    const a = watch('127.0.0.1:1', dir, { timers: fakeTimers().timers });
    expect(a.watch.current()).toBeNull();
    writeFileSync(statePath(dir, 'orders'), JSON.stringify({ service: 'orders', versionInfo: 'v', fileName: 'p.yaml', text: policy('payments'), acceptedAt: 1 }));
    const b = watch('127.0.0.1:1', dir, { timers: fakeTimers().timers });
    expect(b.watch.current()).toBeNull();
    expect(b.applied).toEqual([]);
  });

  it('reconnects with jittered exponential backoff, capped, and starts over after a healthy connection', async () => {
    const h0 = await harness({ files: {} });
    const port = h0.server.port;
    await h0.close(); // nothing listens on `port` now
    const t = fakeTimers();
    const dir = stateDir();
    const { watch: w, applied } = watch(`127.0.0.1:${port}`, dir, {
      timers: t.timers,
      random: () => 1,
      backoff: { initialMs: 100, maxMs: 1000 },
      healthyAfterMs: 5000,
    });
    const expected = [100, 200, 400, 800, 1000, 1000];
    for (let i = 0; i < expected.length; i++) {
      await eventually(() => t.pending().length === 1, 10_000, `reconnect ${i}`);
      expect(t.pending()).toEqual([expected[i]]);
      t.fire(() => true);
    }
    await eventually(() => t.pending().length === 1);

    // the control plane comes back on the same port; the next attempt connects
    const h = await harness({ files: { 'orders.yaml': policy('orders') }, port });
    t.fire((ms) => ms === 1000);
    await eventually(() => applied.length === 1, 10_000, 'the policy after reconnect');
    expect(w.connected()).toBe(true);
    expect(t.pending()).toEqual([5000]); // the healthy timer
    t.fire((ms) => ms === 5000);

    await h.server.close(); // stream ends: backoff starts from its first step again
    await eventually(() => t.pending().length === 1);
    expect(t.pending()).toEqual([100]);
    expect(w.connected()).toBe(false);
    expect(w.current()?.version).toBe(v1);
  });

  it('keeps its policy across a control-plane restart and does not re-apply the same version', async () => {
    const dir = stateDir();
    const policyDir = tempDir('ward-policies-');
    cleanups.push(policyDir.cleanup);
    writeFileSync(join(policyDir.dir, 'orders.yaml'), policy('orders'));
    const h1 = await startHarness({ dir: policyDir.dir });
    const { watch: w, applied } = watch(h1.address, dir);
    await eventually(() => applied.length === 1 && w.connected());
    await h1.server.close();
    h1.store.close();
    await eventually(() => !w.connected(), 10_000, 'the disconnect');
    expect(w.current()?.version).toBe(v1);

    const h2 = await harness({ dir: policyDir.dir, port: h1.server.port });
    await eventually(() => w.connected(), 10_000, 'the reconnect');
    await expect.poll(async () => (await h2.status()).sidecars.map((s) => [s.ackedVersion, s.pendingVersion])).toEqual([[v1, '']]);
    expect(applied).toHaveLength(1);
  });

  it('retries when it cannot get a token', async () => {
    const h = await harness({ files: { 'orders.yaml': policy('orders') } });
    let calls = 0;
    const { watch: w, applied } = watch(h.address, stateDir(), {
      token: async () => {
        if (++calls < 3) throw new Error('idp down');
        return TOKENS.orders;
      },
    });
    await eventually(() => applied.length === 1);
    expect(calls).toBe(3);
    expect(w.lastError()).toBeNull();
  });

  it('a response it cannot parse ends the stream (INTERNAL) and keeps the policy in force; the next stream is opened', async () => {
    // A server speaking the protocol's framing, but whose second message is not a PolicyResponse.
    const cp = await rawControlPlane((s, headers, n) => {
      expect(headers['authorization']).toBe(`Bearer ${TOKENS.orders}`);
      const good = PolicyResponse.encode(PolicyResponse.fromObject({ versionInfo: v1, nonce: '1', service: 'orders', policy: { fileName: 'orders.yaml', text: policy('orders') } })).finish();
      const bad = Buffer.from([0x0a, 0x05, 0x61]); // a string field longer than the message
      for (const m of n === 1 ? [good, bad] : []) s.write(grpcMessage(m));
    });
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', sink: { write: (l) => lines.push(l) } });
    const { watch: w, applied } = watch(cp.address, stateDir(), { log });
    await eventually(() => cp.streams.length >= 2 && w.connected());
    expect(applied.map((p) => p.version)).toEqual([v1]);
    expect(w.current()?.version).toBe(v1);
    expect(cp.streams[0]?.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    const ended = lines.filter((l) => l.includes('control plane stream ended'));
    expect(ended).toHaveLength(1);
    expect(ended[0]).toContain('INTERNAL');
    expect(ended[0]).toContain('unparsable response: truncated field');
  });

  it('NACKs a text for another service with FAILED_PRECONDITION, as documented, where the validator refuses it (regression: INVALID_ARGUMENT)', async () => {
    const PolicyRequest = protoRoot.lookupType('ward.v1.PolicyRequest');
    const nacks: { code: number; message: string }[] = [];
    const cp = await rawControlPlane((s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
          const n = buf.readUInt32BE(1);
          const req = PolicyRequest.toObject(PolicyRequest.decode(buf.subarray(5, 5 + n))) as { errorDetail?: { code: number; message: string } };
          if (req.errorDetail !== undefined) nacks.push(req.errorDetail);
          buf = buf.subarray(5 + n);
        }
      });
      // the response names this sidecar's service; the text inside names another
      s.write(grpcMessage(PolicyResponse.encode(PolicyResponse.fromObject({ versionInfo: 'v-other', nonce: '1', service: 'orders', policy: { fileName: 'orders.yaml', text: policy('payments') } })).finish()));
    });
    const { watch: w, applied } = watch(cp.address, stateDir(), {
      compile: (text, file) => parsePolicyText(text, file, { env: {}, service: 'orders' }),
    });
    await eventually(() => nacks.length === 1);
    expect(nacks[0]?.code).toBe(9);
    expect(nacks[0]?.message).toContain('policy is for service "payments" but this sidecar guards "orders"');
    expect(applied).toEqual([]);
    expect(w.current()).toBeNull();
  });

  it('stops reconnecting once closed', async () => {
    const t = fakeTimers();
    const { watch: w } = watch('127.0.0.1:1', stateDir(), { timers: t.timers });
    await eventually(() => t.pending().length === 1);
    await w.close();
    expect(t.pending()).toEqual([]);
  });
});

describe('backoffDelay', () => {
  it('doubles from initialMs up to maxMs, with equal jitter in [cap/2, cap]', () => {
    const p = { initialMs: 500, maxMs: 30_000 };
    expect([0, 1, 2, 3, 6, 7, 50].map((a) => backoffDelay(a, p, () => 1))).toEqual([500, 1000, 2000, 4000, 30_000, 30_000, 30_000]);
    expect([0, 1, 7].map((a) => backoffDelay(a, p, () => 0))).toEqual([250, 500, 15_000]);
    expect(DEFAULT_BACKOFF).toEqual({ initialMs: 500, maxMs: 30_000 });
  });
});
