import type * as FsPromises from 'node:fs/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createPolicyStore, type PolicyParser, type PolicyStore } from '../../../src/controlplane/server/store.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { configMap, policy, tempDir } from './fixtures.ts';

/**
 * Regression (review, sixteenth session): docs/control-plane.md promises that of a ConfigMap
 * update "either all files are seen or none; never a mix", but each visible name resolved
 * `..data` when it was read, so a kubelet swap between two reads served one service from the old
 * generation and another from the new. A scan now keeps a read only if `..data` named the same
 * generation before and after it.
 *
 * The swap is made to land at an exact point of the scan: `readFile` (node:fs/promises) is wrapped
 * so that a test can run the kubelet's swap just before a given read.
 */

const fsHooks = vi.hoisted(() => ({ beforeRead: null as null | ((path: unknown) => void) }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof FsPromises>();
  const readFile = ((path: Parameters<typeof real.readFile>[0], ...rest: unknown[]) => {
    fsHooks.beforeRead?.(path);
    return (real.readFile as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
  }) as typeof real.readFile;
  return { ...real, readFile, default: { ...real, readFile } };
});

const cleanups: (() => void)[] = [];
afterEach(() => {
  fsHooks.beforeRead = null;
  for (const c of cleanups.splice(0).reverse()) c();
});

function dir(): string {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return t.dir;
}

async function store(d: string, parse: PolicyParser = validatePolicyForControlPlane): Promise<PolicyStore> {
  const s = await createPolicyStore({ dir: d, parse, log: silentLogger, watch: false });
  cleanups.push(() => s.close());
  return s;
}

const ver = (t: string): string => validatePolicyForControlPlane(t, 'x').version;
const generation = (methods: string[]): Record<string, string> => ({ 'a.yaml': policy('orders', methods), 'b.yaml': policy('payments', methods) });
const versions = (g: Record<string, string>): [string, string] => [ver(g['a.yaml'] ?? ''), ver(g['b.yaml'] ?? '')];

/** Records [orders, payments] versions at every change the store announces, and after the scan. */
function snapshots(s: PolicyStore): { seen: [string | undefined, string | undefined][]; now: () => [string | undefined, string | undefined] } {
  const now = (): [string | undefined, string | undefined] => [s.get('orders')?.version, s.get('payments')?.version];
  const seen: [string | undefined, string | undefined][] = [];
  s.subscribe(() => seen.push(now()));
  return { seen, now };
}

describe('policy store: ConfigMap generations', () => {
  it('a swap of ..data between two file reads is read again: the new generation whole, never a mix', async () => {
    const d = dir();
    const g1 = generation(['G1']);
    const g2 = generation(['G2']);
    configMap(d, '..2026_01_01_00_00_00.1', g1);
    const s = await store(d);
    expect([s.get('orders')?.version, s.get('payments')?.version]).toEqual(versions(g1));

    const { seen, now } = snapshots(s);
    let swapped = false;
    fsHooks.beforeRead = (path) => {
      // the kubelet swaps ..data after a.yaml was read and before b.yaml is
      if (!swapped && String(path).endsWith('b.yaml')) {
        swapped = true;
        configMap(d, '..2026_01_01_00_05_00.2', g2);
      }
    };
    await s.rescan();
    expect(swapped).toBe(true);
    expect(now()).toEqual(versions(g2));
    expect(seen).toEqual([versions(g2)]);
  });

  it('a swap while the read files are validated changes nothing of that scan', async () => {
    const d = dir();
    const g1 = generation(['G1']);
    const g2 = generation(['G2']);
    configMap(d, '..2026_01_01_00_00_00.1', g1);
    let swapOnNextParse = false;
    const parse: PolicyParser = (text, file) => {
      if (swapOnNextParse) {
        swapOnNextParse = false;
        configMap(d, '..2026_01_01_00_05_00.2', g2);
      }
      return validatePolicyForControlPlane(text, file);
    };
    const s = await store(d, parse);
    // a comment-only generation (same versions) makes the next scan validate every file again
    configMap(d, '..2026_01_01_00_02_00.1c', { 'a.yaml': `${g1['a.yaml']}# touch\n`, 'b.yaml': `${g1['b.yaml']}# touch\n` });
    swapOnNextParse = true;
    const { seen, now } = snapshots(s);
    await s.rescan();
    expect(now()).toEqual(versions(g1)); // the generation that was read, both files
    expect(seen).toEqual([]);
    await s.rescan();
    expect(now()).toEqual(versions(g2));
    expect(seen).toEqual([versions(g2)]);
  });

  it('swaps crossing every read leave the served policies as they were until a scan reads one generation', async () => {
    const d = dir();
    const g1 = generation(['G1']);
    configMap(d, '..2026_01_01_00_00_00.1', g1);
    const s = await store(d);
    const { seen, now } = snapshots(s);
    let n = 0;
    fsHooks.beforeRead = (path) => {
      if (String(path).endsWith('b.yaml')) {
        n++;
        configMap(d, `..2026_01_01_00_10_00.${n}`, generation([`G${n + 1}`]));
      }
    };
    await s.rescan();
    expect(n).toBeGreaterThan(1); // read again after the first swap…
    expect(now()).toEqual(versions(g1)); // …and given up on: nothing changed, nothing mixed
    expect(seen).toEqual([]);

    fsHooks.beforeRead = null;
    await s.rescan();
    expect(now()).toEqual(versions(generation([`G${n + 1}`])));
    expect(seen).toEqual([versions(generation([`G${n + 1}`]))]);
  });
});
