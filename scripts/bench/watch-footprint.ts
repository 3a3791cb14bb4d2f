/**
 * What the control-plane policy watch costs a sidecar in memory: a process imports the watch of
 * the checkout at ROOT (default: this one), opens it against an address that refuses connections
 * (the client exists and keeps reconnecting), and after 1.5 s and a full collection prints how
 * much RSS and heap that added. How docs/performance.md compared grpc-js with ward's own HTTP/2:
 *
 *   git worktree add --detach /tmp/old 1566ea4 && ln -s "$PWD/node_modules" /tmp/old/node_modules
 *   node --expose-gc --max-semi-space-size=1 scripts/bench/watch-footprint.ts /tmp/old
 *   node --expose-gc --max-semi-space-size=1 scripts/bench/watch-footprint.ts
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Watch from '../../src/controlplane/client/watch.ts';
import type * as Log from '../../src/lib/log.ts';
import type * as Load from '../../src/policy/load.ts';

const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '../..'));
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error('run with node --expose-gc');
  process.exit(2);
}

function snapshot(): { rssMb: number; heapMb: number } {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return { rssMb: m.rss / 1048576, heapMb: m.heapUsed / 1048576 };
}

const { silentLogger } = (await import(join(root, 'src/lib/log.ts'))) as typeof Log;
const { parsePolicyText } = (await import(join(root, 'src/policy/load.ts'))) as typeof Load;
const before = snapshot();
const { createPolicyWatch } = (await import(join(root, 'src/controlplane/client/watch.ts'))) as typeof Watch;
const watch = createPolicyWatch({
  address: '127.0.0.1:1',
  service: 'orders',
  instanceId: 'footprint',
  token: () => Promise.resolve('not-a-token'),
  stateDir: mkdtempSync(join(tmpdir(), 'ward-watch-footprint-')),
  compile: (text, file) => parsePolicyText(text, file),
  onPolicy: () => {},
  log: silentLogger,
  backoff: { initialMs: 50, maxMs: 100 },
});
await new Promise((r) => setTimeout(r, 1500));
const after = snapshot();
console.log(
  `${root}: the watch added ${(after.rssMb - before.rssMb).toFixed(1)} MB of RSS and ${(after.heapMb - before.heapMb).toFixed(2)} MB of heap (process RSS ${after.rssMb.toFixed(1)} MB)`,
);
await watch.close();
