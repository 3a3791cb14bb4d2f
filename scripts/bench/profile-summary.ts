/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and lists the functions with the most self
 * time, plus the share of time spent in GC and idle. Used by `npm run bench -- --profile`;
 * standalone: `npx node scripts/bench/profile-summary.ts FILE.cpuprofile [N]`.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export function summarizeProfile(json: string, top = 30): string {
  const p = JSON.parse(json) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const self = new Map<string, number>();
  const groups = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i] as number);
    const dt = p.timeDeltas[i] ?? 0;
    if (n === undefined) continue;
    total += dt;
    const f = n.callFrame;
    const where = f.url === '' ? '' : ` ${f.url.replace(/^.*\/(node_modules\/|src\/)/, '$1').replace(/^node:/, 'node:')}:${f.lineNumber + 1}`;
    const key = `${f.functionName === '' ? '(anonymous)' : f.functionName}${where}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    const g = groupOf(f.functionName, f.url);
    groups.set(g, (groups.get(g) ?? 0) + dt);
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  const busy = total - (groups.get('idle') ?? 0);
  const lines = [`total sampled ${(total / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s; self time by area (% of busy):`];
  for (const [g, v] of [...groups.entries()].sort((a, b) => b[1] - a[1])) {
    if (g !== 'idle') lines.push(`${((100 * v) / busy).toFixed(1).padStart(5)}%  ${g}`);
  }
  lines.push('top functions by self time (% of busy):');
  for (const [k, v] of rows) if (k !== '(idle)') lines.push(`${((100 * v) / busy).toFixed(1).padStart(5)}%  ${k}`);
  return lines.join('\n');
}

function groupOf(fn: string, url: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'gc';
  if (fn === '(program)') return 'native (program)';
  if (url.includes('@opentelemetry') || url.includes('/src/telemetry/')) return 'telemetry';
  if (url.includes('/node_modules/jose/')) return 'jose';
  if (url.includes('/src/')) return 'ward';
  if (url.includes('node:internal/http2')) return 'node http2';
  if (url.includes('node:internal/streams') || url.includes('node:stream')) return 'node streams';
  if (url.includes('node:internal/crypto')) return 'node crypto';
  if (url.startsWith('node:')) return 'node other';
  if (url === '') return 'native (builtins)';
  return 'other';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (file === undefined) {
    console.error('usage: profile-summary.ts FILE.cpuprofile [N]');
    process.exit(2);
  }
  console.log(summarizeProfile(readFileSync(file, 'utf8'), Number(process.argv[3] ?? 40)));
}
