import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { type PersistedPolicy, statePath } from '../../../src/controlplane/client/state.ts';
import { createPolicyWatch, type PolicyWatch, type PolicyWatchOptions } from '../../../src/controlplane/client/watch.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import { eventually, policy, tempDir } from './fixtures.ts';
import { type Harness, startHarness, watchOptions } from './harness.ts';

/**
 * Regression (review, sixteenth session): a restored state file was enforced and its version_info
 * announced without checking that the text is that version. A state file whose text was not its
 * version's (edited, or corrupted into another valid policy) was then enforced for ever: the
 * control plane saw the current version announced and never pushed. The state file now keeps
 * the version the sidecar computed (`localVersion`); on a mismatch the text stays in force but
 * "" is announced, so the control plane pushes its version.
 */

const SERVED = policy('orders');
const TAMPERED = policy('orders', ['GetOrder', 'DeleteAllOrders']); // valid, more permissive
const local = (text: string): string => parsePolicyText(text, 'orders.yaml', { service: 'orders', env: {} }).version;
const v1 = validatePolicyForControlPlane(SERVED, 'orders.yaml').version;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function harness(): Promise<Harness> {
  const h = await startHarness({ files: { 'orders.yaml': SERVED } });
  cleanups.push(() => h.close());
  return h;
}

function stateWith(saved: Record<string, unknown>): string {
  const t = tempDir('ward-state-');
  cleanups.push(t.cleanup);
  writeFileSync(statePath(t.dir, 'orders'), JSON.stringify({ service: 'orders', fileName: 'orders.yaml', acceptedAt: 1, ...saved }));
  return t.dir;
}

function watch(address: string, stateDir: string, over: Partial<PolicyWatchOptions> = {}): PolicyWatch {
  const w = createPolicyWatch(watchOptions(address, stateDir, over));
  cleanups.push(() => w.close());
  return w;
}

/** No control plane: the watch only restores (its reconnect timer never fires). */
const offline = { timers: { setTimeout: (): unknown => 0, clearTimeout: (): void => {} } };

describe('policy watch: restoring the state directory', () => {
  it.each([
    ['with localVersion (its text edited afterwards)', { localVersion: local(SERVED) }],
    ['from before localVersion', {}],
  ])('a state file whose text is not its version %s is corrected by the control plane', async (_what, extra) => {
    const h = await harness();
    const dir = stateWith({ versionInfo: v1, text: TAMPERED, ...extra });
    const w = watch(h.address, dir);
    // enforced meanwhile (it compiles; a restart with the control plane down keeps a policy)…
    expect(w.current()?.version).toBe(local(TAMPERED));
    // …but not announced as the version it is not
    expect(w.versionInfo()).toBe('');
    await eventually(() => w.current()?.version === local(SERVED), 10_000, 'the served version');
    expect(w.versionInfo()).toBe(v1);
    await eventually(() => (JSON.parse(readFileSync(statePath(dir, 'orders'), 'utf8')) as PersistedPolicy).text === SERVED, 10_000, 'the state file rewritten');
    expect(JSON.parse(readFileSync(statePath(dir, 'orders'), 'utf8'))).toMatchObject({ versionInfo: v1, text: SERVED, localVersion: local(SERVED) });
  });

  it('a state file from before localVersion whose text is its version is announced: no push', async () => {
    const h = await harness();
    const dir = stateWith({ versionInfo: v1, text: SERVED });
    const w = watch(h.address, dir);
    expect(w.versionInfo()).toBe(v1);
    await eventually(() => w.connected(), 10_000, 'connected');
    await expect.poll(async () => (await h.status()).sidecars.map((s) => [s.ackedVersion, s.pendingVersion])).toEqual([[v1, '']]);
  });

  it('a control plane on another ward build (another name for the version) is still trusted when the text matches localVersion', () => {
    const dir = stateWith({ versionInfo: 'named-by-another-build', text: SERVED, localVersion: local(SERVED) });
    const w = watch('127.0.0.1:1', dir, offline);
    expect(w.current()?.version).toBe(local(SERVED));
    expect(w.versionInfo()).toBe('named-by-another-build');
  });

  it('a state file whose localVersion is not a string is ignored as malformed', () => {
    const dir = stateWith({ versionInfo: v1, text: SERVED, localVersion: 42 });
    const w = watch('127.0.0.1:1', dir, offline);
    expect(w.current()).toBeNull();
  });

  it('a saved policy whose secret is not there yet at start is enforced once it is, with the control plane down (regression: only a push brought it)', async () => {
    const dir = stateWith({ versionInfo: v1, text: SERVED, localVersion: local(SERVED) });
    let mounted = false;
    // Stands for an hmacSecretFile that appears after start: compiling fails until then.
    const compile = (t: string, file: string): ReturnType<typeof parsePolicyText> => {
      if (!mounted) throw new Error('hmacSecretFile /var/run/secrets/orders/hmac: ENOENT');
      return parsePolicyText(t, file, { service: 'orders', env: {} });
    };
    const fired: (() => void)[] = [];
    const timers = { setTimeout: (f: () => void): unknown => fired.push(f), clearTimeout: (): void => {} };
    const applied: string[] = [];
    const w = watch('127.0.0.1:1', dir, { compile, timers, onPolicy: (p) => applied.push(p.version), pollMs: 50 });
    expect(w.current()).toBeNull();
    // the control plane's reconnect and the restore retry are scheduled; run what is due while not mounted
    const runAll = (): void => {
      for (const f of fired.splice(0)) f();
    };
    runAll();
    expect(w.current()).toBeNull();
    mounted = true;
    await eventually(() => {
      runAll();
      return w.current() !== null;
    }, 5000, 'the saved policy enforced');
    expect(applied).toEqual([local(SERVED)]);
    expect(w.versionInfo()).toBe(v1);
  });
});

