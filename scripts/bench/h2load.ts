/**
 * Running h2load (Debian `nghttp2-client`) and reading what it reports: the summary lines for
 * throughput and failures, and `--log-file` (one line per request: start µs, status, µs to the
 * end of the response) for percentiles, which h2load's own summary does not give.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

export interface H2loadResult {
  /** Requests per second over the measured period (h2load's own figure). */
  readonly rps: number;
  readonly done: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly errored: number;
  readonly status2xx: number;
  readonly status4xx: number;
  readonly status5xx: number;
  /** Per-request latency in µs, sorted (only with a log file). */
  readonly latencies: Float64Array | null;
  readonly raw: string;
}

export interface H2loadRun {
  readonly url: string;
  /** CPU list for taskset (the load generator's cores). */
  readonly cpus: string;
  readonly clients: number;
  readonly streams: number;
  readonly durationS: number;
  readonly warmupS: number;
  /** Requests per second per client (h2load --rps); absent: as fast as possible. */
  readonly rpsPerClient?: number;
  readonly headers: readonly string[];
  readonly dataFile?: string;
  readonly logFile?: string;
}

export function h2loadArgs(r: H2loadRun): string[] {
  const a = ['-c', r.cpus, 'h2load', '-t', '1', '-c', String(r.clients), '-m', String(r.streams), '-D', String(r.durationS)];
  if (r.warmupS > 0) a.push(`--warm-up-time=${r.warmupS}`);
  if (r.rpsPerClient !== undefined) a.push(`--rps=${r.rpsPerClient}`);
  for (const h of r.headers) a.push('-H', h);
  if (r.dataFile !== undefined) a.push('-d', r.dataFile);
  if (r.logFile !== undefined) a.push(`--log-file=${r.logFile}`);
  a.push(r.url);
  return a;
}

export function runH2load(r: H2loadRun): Promise<H2loadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', h2loadArgs(r), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`h2load exited ${code}:\n${out}`));
      try {
        resolve(parse(out, r.logFile));
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

function num(re: RegExp, s: string, what: string): number {
  const m = re.exec(s);
  if (m === null || m[1] === undefined) throw new Error(`h2load output without ${what}:\n${s}`);
  return Number(m[1]);
}

function parse(out: string, logFile: string | undefined): H2loadResult {
  const rps = num(/finished in [\d.]+m?s, ([\d.]+) req\/s/, out, 'req/s');
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  if (m === null) throw new Error(`h2load output without a requests line:\n${out}`);
  const s = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  let latencies: Float64Array | null = null;
  if (logFile !== undefined) {
    latencies = readLatencies(logFile);
    rmSync(logFile, { force: true });
  }
  return {
    rps,
    done: Number(m[3]),
    succeeded: Number(m[4]),
    failed: Number(m[5]),
    errored: Number(m[6]),
    status2xx: Number(s?.[1] ?? 0),
    status4xx: Number(s?.[3] ?? 0),
    status5xx: Number(s?.[4] ?? 0),
    latencies,
    raw: out,
  };
}

function readLatencies(file: string): Float64Array {
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const v = new Float64Array(lines.length);
  let n = 0;
  for (const line of lines) {
    if (line === '') continue;
    const cols = line.split('\t');
    const us = Number(cols[2]);
    if (Number.isFinite(us)) v[n++] = us;
  }
  return v.subarray(0, n).sort();
}

/** Nearest-rank percentile of a sorted array (µs). */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}
