import type * as Fs from 'node:fs';
import { writeFileSync } from 'node:fs';
import type * as FsPromises from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createPolicyStore, DEBOUNCE_MAX_WAIT, type PolicyStore } from '../../../src/controlplane/server/store.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { policy, tempDir } from './fixtures.ts';

/**
 * Regression (review, sixteenth session): the directory debounce ran from the *first* event, so a
 * file still being written was read half-way; docs/control-plane.md says `watch.debounceMs` after
 * the *last* event. Now every event starts the wait again, and a burst that never ends is read
 * DEBOUNCE_MAX_WAIT debounces after its first event.
 *
 * fs.watch is replaced by one the test drives (`event()`), and timers are fake, so "when does the
 * store read the directory" is decided by the test's clock alone. A scan's first step is reading
 * where a ConfigMap's `..data` points (store.ts scanOnce), which it does synchronously when the
 * debounce fires: that call counts the scans.
 */

const fsHooks = vi.hoisted(() => ({ listener: null as null | (() => void), readlinks: 0 }));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof Fs>();
  const watch = (_dir: unknown, _opts: unknown, listener: () => void): object => {
    fsHooks.listener = listener;
    return { on: () => {}, close: () => {} };
  };
  return { ...real, watch, default: { ...real, watch } };
});
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof FsPromises>();
  const readlink = (...args: Parameters<typeof real.readlink>): ReturnType<typeof real.readlink> => {
    fsHooks.readlinks++;
    return real.readlink(...args);
  };
  return { ...real, readlink, default: { ...real, readlink } };
});

const DEBOUNCE = 1000;
const cleanups: (() => void)[] = [];

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0).reverse()) c();
});

async function watchedStore(): Promise<{ store: PolicyStore; file: string; event: () => void; scans: () => number }> {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const file = join(t.dir, 'orders.yaml');
  writeFileSync(file, policy('orders'));
  const store = await createPolicyStore({ dir: t.dir, parse: validatePolicyForControlPlane, log: silentLogger, debounceMs: DEBOUNCE, pollIntervalMs: 600_000 });
  cleanups.push(() => store.close());
  const start = fsHooks.readlinks;
  return {
    store,
    file,
    event: () => {
      if (fsHooks.listener === null) throw new Error('the store does not watch the directory');
      fsHooks.listener();
    },
    scans: () => fsHooks.readlinks - start,
  };
}

describe('policy store: directory debounce', () => {
  it('reads the directory debounceMs after the last event, so a file written in pieces is read once, whole', async () => {
    const { store, file, event, scans } = await watchedStore();
    const methods = Array.from({ length: 10 }, (_, i) => `M${i}`);
    // A non-atomic writer: the file grows by one method every 900 ms (each piece a valid policy).
    for (let i = 1; i <= methods.length; i++) {
      writeFileSync(file, policy('orders', methods.slice(0, i)));
      event();
      vi.advanceTimersByTime(DEBOUNCE - 100);
      expect(scans(), `after piece ${i}`).toBe(0);
    }
    vi.advanceTimersByTime(100); // quiet for debounceMs since the last event
    expect(scans()).toBe(1);
    const whole = validatePolicyForControlPlane(policy('orders', methods), 'x').version;
    await vi.waitFor(() => expect(store.get('orders')?.version).toBe(whole), { timeout: 10_000 });
  });

  it(`a burst that never ends is still read ${DEBOUNCE_MAX_WAIT} debounces after its first event`, async () => {
    const { store, event, scans } = await watchedStore();
    const step = DEBOUNCE / 2;
    event(); // t = 0
    for (let t = step; t < DEBOUNCE_MAX_WAIT * DEBOUNCE; t += step) {
      vi.advanceTimersByTime(step);
      expect(scans(), `at ${t} ms`).toBe(0);
      event();
    }
    vi.advanceTimersByTime(step); // t = DEBOUNCE_MAX_WAIT * DEBOUNCE
    expect(scans()).toBe(1);
    // the next burst waits from its own first event
    await store.rescan(); // (the scan above is over)
    const before = scans();
    event();
    vi.advanceTimersByTime(DEBOUNCE - 1);
    expect(scans()).toBe(before);
    vi.advanceTimersByTime(1);
    expect(scans()).toBe(before + 1);
  });
});
