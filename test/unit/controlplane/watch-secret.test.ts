import { afterEach, describe, expect, it } from 'vitest';
import { createPolicyWatch, type PolicyWatch } from '../../../src/controlplane/client/watch.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import { hmacPolicy, kubeletSecretDir, plainSecretDir, type SecretDir, SECRET_A, SECRET_B, SECRET_C } from '../policy/secret-files.ts';
import { eventually, memoryLogger, tempDir } from './fixtures.ts';
import { type Harness, startHarness, watchOptions } from './harness.ts';

/**
 * A policy distributed by the control plane names `hmacSecretFile`: the control plane never
 * reads it (it holds no secrets), the sidecar reads it when it compiles the pushed text. So the
 * sidecar watches that file too: a rotated secret takes effect without a new version from the
 * control plane (regression: the secret was read once per pushed version).
 */

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Rig {
  readonly secret: SecretDir;
  readonly h: Harness;
  readonly w: PolicyWatch;
  readonly applied: CompiledPolicy[];
  readonly records: Record<string, unknown>[];
  readonly version: string;
}

/** `firstPolicy` false: the first pushed version is not waited for (it may be refused). */
async function rig(secret: SecretDir, o: { firstPolicy?: boolean; pollMs?: number } = {}): Promise<Rig> {
  cleanups.push(() => secret.cleanup());
  // An absolute path: what the sidecar resolves a relative one against is its own business (cli/sidecar.ts).
  const text = hmacPolicy(secret.file);
  const h = await startHarness({ files: { 'orders.yaml': text } });
  cleanups.push(() => h.close());
  const state = tempDir('ward-state-');
  cleanups.push(state.cleanup);
  const { log, records } = memoryLogger();
  const applied: CompiledPolicy[] = [];
  const w = createPolicyWatch(watchOptions(h.address, state.dir, { onPolicy: (p) => applied.push(p), log, pollMs: o.pollMs ?? 20, debounceMs: 10 }));
  cleanups.push(() => w.close());
  if (o.firstPolicy !== false) await eventually(() => applied.length === 1, 10_000, 'the first policy');
  return { secret, h, w, applied, records, version: validatePolicyForControlPlane(text, 'orders.yaml').version };
}

const secretOf = (p: CompiledPolicy | null | undefined): string => Buffer.from(p?.issuers[0]?.hmacSecret ?? []).toString();

describe('createPolicyWatch: files the policy in force references', () => {
  for (const [layout, make] of [['plain file', plainSecretDir], ['Kubernetes Secret volume', kubeletSecretDir]] as const) {
    it(`${layout}: a rotated secret is compiled in with the same version, nothing sent to the control plane`, async () => {
      const r = await rig(make(SECRET_A));
      expect(secretOf(r.w.current())).toBe(SECRET_A);
      const before = r.w.current();
      r.secret.replace(SECRET_B);
      await eventually(() => r.applied.length === 2, 5000, 'the policy with B');
      expect(secretOf(r.w.current())).toBe(SECRET_B);
      expect(r.w.current()).not.toBe(before);
      expect(r.w.current()?.version).toBe(before?.version);
      expect(r.w.versionInfo()).toBe(r.version);
      expect(r.w.lastError()).toBeNull();
      expect(r.records).toContainEqual(expect.objectContaining({ msg: 'policy updated', reason: 'referenced file changed', version: r.version }));
      expect((await r.h.status()).sidecars[0]).toMatchObject({ ackedVersion: r.version, nackCount: 0 });
      for (const s of [SECRET_A, SECRET_B]) expect(JSON.stringify(r.records)).not.toContain(s);
    });
  }

  it('a secret that cannot be used is refused: the previous one stays, lastError says why, a good one recovers', async () => {
    const r = await rig(plainSecretDir(SECRET_A));
    r.secret.replace('');
    await eventually(() => r.w.lastError() !== null, 5000, 'the empty secret to be refused');
    expect(r.w.lastError()).toMatch(/issuers\[0\]\.hmacSecretFile: HMAC secret is 0 bytes; HS256 needs at least 32/);
    expect(secretOf(r.w.current())).toBe(SECRET_A);
    expect(r.applied).toHaveLength(1);
    expect(r.records).toContainEqual(expect.objectContaining({ msg: 'policy update refused; keeping the last good version', version: r.version }));

    r.secret.replace(SECRET_C);
    await eventually(() => r.applied.length === 2, 5000, 'the good secret');
    expect(secretOf(r.w.current())).toBe(SECRET_C);
    expect(r.w.lastError()).toBeNull();
  });

  it('a version refused for a secret not there yet is asked for again once it is (regression: kept refused until the next version or reconnect)', async () => {
    const secret = plainSecretDir(SECRET_A);
    secret.remove();
    const { h, w, applied, records, version } = await rig(secret, { firstPolicy: false, pollMs: 50 });
    await eventually(() => w.lastError() !== null, 10_000, 'the NACK');
    expect(w.lastError()).toMatch(/hmacSecretFile: cannot read/);
    expect(w.current()).toBeNull(); // fail closed meanwhile
    expect((await h.status()).sidecars[0]?.nackCount).toBe(1);

    secret.replace(SECRET_A); // the Secret is mounted
    await eventually(() => applied.length === 1, 10_000, 'the version, asked for again');
    expect(secretOf(w.current())).toBe(SECRET_A);
    expect(w.versionInfo()).toBe(version);
    let acked = '';
    for (let i = 0; i < 100 && acked !== version; i++) {
      acked = (await h.status()).sidecars.find((x) => x.ackedVersion === version)?.ackedVersion ?? '';
      if (acked !== version) await new Promise((r) => setTimeout(r, 20));
    }
    expect(acked).toBe(version);
    expect(records).toContainEqual(expect.objectContaining({ msg: 'a refused policy version compiles now; asking the control plane for it again', version }));
  });
});
