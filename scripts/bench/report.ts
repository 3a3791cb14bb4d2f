/**
 * Turning the load benchmark's samples into medians, ratios and the BENCHMARKS.md table.
 * Ratios and added latency are computed per round (against the direct run of the same round),
 * then the median over rounds is reported: the machine is shared and noisy, so only figures
 * taken side by side mean anything.
 */

export interface FixedRate {
  readonly rps: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly cpuUsPerReq: number | null;
  readonly n: number;
}

export interface Sample {
  readonly scenario: string;
  readonly workload: string;
  readonly round: number;
  readonly saturationRps: number;
  readonly saturationCpuUsPerReq: number | null;
  readonly fixed: Record<string, FixedRate>;
  readonly peakRssMb: number | null;
  /** The peak of the proxy's own pages (RssAnon + RssShmem, polled every 25 ms at saturation);
   *  absent from results written before it was measured. */
  readonly peakPrivateMb?: number | null;
}

export interface ScenarioSummary {
  readonly saturationRps: number;
  readonly saturationVsDirect: number | null;
  readonly saturationVsHaproxy: number | null;
  readonly saturationCpuUsPerReq: number | null;
  readonly cpuVsHaproxy: number | null;
  readonly fixed: Record<
    string,
    {
      readonly p50Us: number;
      readonly p99Us: number;
      readonly addedP50Us: number | null;
      readonly addedP99Us: number | null;
      readonly cpuUsPerReq: number | null;
      readonly cpuVsHaproxy: number | null;
    }
  >;
  readonly peakRssMb: number | null;
  readonly peakRssMaxMb: number | null;
  readonly peakPrivateMb: number | null;
}

export interface Results {
  readonly generatedAt: string;
  readonly machine: {
    readonly cpu: string;
    readonly cores: number;
    readonly kernel: string;
    readonly node: string;
    readonly h2load: string;
    readonly haproxy: string;
    readonly app: string;
    readonly commit: string;
  };
  readonly method: {
    readonly rounds: number;
    /** Seconds of unmeasured saturation per workload before its first measured phase (absent in older files: none). */
    readonly primeSeconds?: number;
    readonly saturation: { readonly clients: number; readonly streamsPerClient: number; readonly seconds: number; readonly warmupSeconds: number };
    readonly fixedRate: { readonly rates: readonly number[]; readonly clients: number; readonly seconds: number; readonly warmupSeconds: number };
    readonly pinning: { readonly proxy: string; readonly loadGeneratorAndApp: string };
    readonly wardNodeFlags: readonly string[];
    readonly token: { readonly alg: string; readonly bytes: number };
    readonly grpcRequestBytes: number;
    readonly otlpSink: { readonly calls: number; readonly bytes: number };
    readonly extras: Record<string, unknown>;
  };
  readonly scenarios: readonly { readonly id: string; readonly label: string }[];
  readonly samples: readonly Sample[];
  /** workload → scenario → summary */
  readonly summary: Record<string, Record<string, ScenarioSummary>>;
}

export function median(xs: readonly number[]): number | null {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 === 1 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2;
}

function perRound(samples: readonly Sample[], scenario: string, workload: string): Map<number, Sample> {
  const m = new Map<number, Sample>();
  for (const s of samples) if (s.scenario === scenario && s.workload === workload) m.set(s.round, s);
  return m;
}

/** Median over rounds of f(sample, reference sample of the same round). */
function paired(a: Map<number, Sample>, b: Map<number, Sample>, f: (x: Sample, y: Sample) => number | null): number | null {
  const xs: number[] = [];
  for (const [round, x] of a) {
    const y = b.get(round);
    if (y === undefined) continue;
    const v = f(x, y);
    if (v !== null) xs.push(v);
  }
  return median(xs);
}

export function summarize(samples: readonly Sample[], workloads: readonly string[], rates: readonly number[]): Results['summary'] {
  const out: Results['summary'] = {};
  const scenarios = [...new Set(samples.map((s) => s.scenario))];
  for (const w of workloads) {
    const direct = perRound(samples, 'direct', w);
    const haproxy = perRound(samples, 'haproxy', w);
    const byScenario: Record<string, ScenarioSummary> = {};
    for (const sc of scenarios) {
      const mine = perRound(samples, sc, w);
      if (mine.size === 0) continue;
      const list = [...mine.values()];
      const fixed: ScenarioSummary['fixed'] = {};
      for (const r of rates) {
        const k = String(r);
        fixed[k] = {
          p50Us: median(list.map((s) => s.fixed[k]?.p50Us ?? Number.NaN)) ?? Number.NaN,
          p99Us: median(list.map((s) => s.fixed[k]?.p99Us ?? Number.NaN)) ?? Number.NaN,
          addedP50Us: sc === 'direct' ? null : paired(mine, direct, (x, y) => (x.fixed[k]?.p50Us ?? Number.NaN) - (y.fixed[k]?.p50Us ?? Number.NaN)),
          addedP99Us: sc === 'direct' ? null : paired(mine, direct, (x, y) => (x.fixed[k]?.p99Us ?? Number.NaN) - (y.fixed[k]?.p99Us ?? Number.NaN)),
          cpuUsPerReq: median(list.map((s) => s.fixed[k]?.cpuUsPerReq ?? Number.NaN)),
          cpuVsHaproxy: paired(mine, haproxy, (x, y) => ratio(x.fixed[k]?.cpuUsPerReq, y.fixed[k]?.cpuUsPerReq)),
        };
      }
      const rss = list.map((s) => s.peakRssMb ?? Number.NaN);
      byScenario[sc] = {
        saturationRps: median(list.map((s) => s.saturationRps)) ?? Number.NaN,
        saturationVsDirect: paired(mine, direct, (x, y) => x.saturationRps / y.saturationRps),
        saturationVsHaproxy: paired(mine, haproxy, (x, y) => x.saturationRps / y.saturationRps),
        saturationCpuUsPerReq: median(list.map((s) => s.saturationCpuUsPerReq ?? Number.NaN)),
        cpuVsHaproxy: paired(mine, haproxy, (x, y) => ratio(x.saturationCpuUsPerReq, y.saturationCpuUsPerReq)),
        fixed,
        peakRssMb: median(rss),
        peakRssMaxMb: rss.some(Number.isFinite) ? Math.max(...rss.filter(Number.isFinite)) : null,
        peakPrivateMb: median(list.map((s) => s.peakPrivateMb ?? Number.NaN)),
      };
    }
    out[w] = byScenario;
  }
  return out;
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined || b === 0) return null;
  return a / b;
}

const f0 = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : Math.round(v).toLocaleString('en-US'));
const f1 = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(1));
const f2 = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(2));
const ms = (us: number | null | undefined): string => (us === null || us === undefined || !Number.isFinite(us) ? '–' : (us / 1000).toFixed(2));

export function renderMarkdown(r: Results): string {
  const m = r.method;
  const rates = m.fixedRate.rates;
  const lines: string[] = [];
  lines.push(`Run ${r.generatedAt} at commit \`${r.machine.commit}\`: ${r.machine.cpu}, Linux ${r.machine.kernel}, Node ${r.machine.node}, ${r.machine.h2load}, ${r.machine.haproxy.replace(/ - https.*$/, '')}, app ${r.machine.app}.`);
  lines.push(
    `${m.rounds} interleaved round(s); ` +
      (m.primeSeconds !== undefined && m.primeSeconds > 0 ? `each proxy process first primed with ${m.primeSeconds} s of saturation per workload (not measured); ` : '') +
      `saturation: ${m.saturation.clients} connections × ${m.saturation.streamsPerClient} streams for ${m.saturation.seconds} s (after ${m.saturation.warmupSeconds} s warm-up); ` +
      (rates.length === 0
        ? 'no fixed rates; '
        : `fixed rates ${rates.join(' and ')} req/s over ${m.fixedRate.clients} connections for ${m.fixedRate.seconds} s (after ${m.fixedRate.warmupSeconds} s warm-up each); `) +
      `proxy pinned to CPU ${m.pinning.proxy}, h2load + app + issuer + OTLP sink to CPU ${m.pinning.loadGeneratorAndApp}; ward runs with \`${m.wardNodeFlags.join(' ')}\` and \`MALLOC_ARENA_MAX=2\` (as injected); token ${m.token.alg}, ${m.token.bytes} bytes; gRPC request ${m.grpcRequestBytes} bytes. ` +
      'Peak RSS is the process tree\'s `VmHWM`; "private" is the part that is its own (`RssAnon` + `RssShmem`, polled every 25 ms at saturation), without the binary\'s and libraries\' file pages, which every process of the same image shares.',
  );
  lines.push('');
  const label = new Map(r.scenarios.map((s) => [s.id, s.label]));
  for (const [w, byScenario] of Object.entries(r.summary)) {
    lines.push(`**${w === 'grpc' ? 'gRPC unary, 1 KiB request and response' : 'HTTP/2 GET, 1 KiB response'}** (medians; "+" = latency added over direct in the same round)`);
    lines.push('');
    // Without fixed rates (`--rates saturation`) their columns are left out.
    const top = rates.length === 0 ? null : rates[rates.length - 1];
    const head = ['scenario', 'saturation req/s', '× direct', '× HAProxy', 'CPU µs/req (sat)'];
    if (top !== null) head.push(`CPU µs/req @${top}/s`, ...rates.map((x) => `@${x}/s p50 / p99 ms (+added)`));
    head.push('peak RSS MB', 'of it private MB');
    lines.push(`| ${head.join(' | ')} |`);
    lines.push(`|---|${head.slice(1).map(() => '---:').join('|')}|`);
    for (const [sc, s] of Object.entries(byScenario)) {
      const cells = rates.map((x) => {
        const fr = s.fixed[String(x)];
        if (fr === undefined) return '–';
        const added = fr.addedP50Us === null ? '' : ` (+${ms(fr.addedP50Us)} / +${ms(fr.addedP99Us)})`;
        return `${ms(fr.p50Us)} / ${ms(fr.p99Us)}${added}`;
      });
      const row = [label.get(sc) ?? sc, f0(s.saturationRps), f2(s.saturationVsDirect), sc === 'haproxy' ? '1.00' : f2(s.saturationVsHaproxy), f1(s.saturationCpuUsPerReq)];
      if (top !== null) row.push(f1(s.fixed[String(top)]?.cpuUsPerReq), ...cells);
      row.push(f1(s.peakRssMb), f1(s.peakPrivateMb));
      lines.push(`| ${row.join(' | ')} |`);
    }
    lines.push('');
  }
  lines.push(...targets(r));
  return lines.join('\n');
}

/** Cache-off over cached saturation throughput, gRPC, per round in round order. */
function cacheOffRounds(r: Results): number[] {
  const ward = perRound(r.samples, 'ward', 'grpc');
  const off = perRound(r.samples, 'ward-nocache', 'grpc');
  const out: number[] = [];
  for (const round of [...off.keys()].sort((a, b) => a - b)) {
    const w = ward.get(round);
    const x = off.get(round);
    if (w !== undefined && x !== undefined && w.saturationRps > 0) out.push(x.saturationRps / w.saturationRps);
  }
  return out;
}

/** The targets, measured on the gRPC workload. */
function targets(r: Results): string[] {
  const g = r.summary['grpc'];
  const ward = g?.['ward'];
  const nocache = g?.['ward-nocache'];
  const rates = r.method.fixedRate.rates;
  const top = rates.length === 0 ? null : String(rates[rates.length - 1]);
  if (ward === undefined) return [];
  const at = top === null ? undefined : ward.fixed[top];
  const yes = (ok: boolean | null): string => (ok === null ? '–' : ok ? 'met' : '**missed**');
  const le = (v: number | null | undefined, t: number): boolean | null => (v === null || v === undefined || !Number.isFinite(v) ? null : v <= t);
  const ge = (v: number | null | undefined, t: number): boolean | null => (v === null || v === undefined || !Number.isFinite(v) ? null : v >= t);
  // Within each round, as every other ratio here (the rounds share the machine's state); until the
  // seventeenth session this one was the ratio of the two medians, which the row still shows.
  const cacheRounds = cacheOffRounds(r);
  const cacheRatio = median(cacheRounds);
  const ofMedians = nocache === undefined ? null : nocache.saturationRps / ward.saturationRps;
  const cacheText =
    cacheRatio === null ? '– ×' : `${f2(cacheRatio)} × (rounds ${cacheRounds.map(f2).join(', ')}; ratio of the medians ${f2(ofMedians)})`;
  const rows = [
    ['CPU per request, every feature on ≤ 1.5 × HAProxy (saturation)', `${f2(ward.cpuVsHaproxy)} ×`, yes(le(ward.cpuVsHaproxy, 1.5))],
    ...(top === null
      ? []
      : [
          [`CPU per request, every feature on ≤ 1.5 × HAProxy (@${top}/s)`, `${f2(at?.cpuVsHaproxy)} ×`, yes(le(at?.cpuVsHaproxy, 1.5))],
          [`Added p50 @${top}/s ≤ 0.3 ms`, `${ms(at?.addedP50Us)} ms`, yes(le(at?.addedP50Us, 300))],
          [`Added p99 @${top}/s ≤ 1 ms`, `${ms(at?.addedP99Us)} ms`, yes(le(at?.addedP99Us, 1000))],
        ]),
    ['Saturation through one sidecar core ≥ HAProxy', `${f2(ward.saturationVsHaproxy)} ×`, yes(ge(ward.saturationVsHaproxy, 1))],
    ['Peak RSS under saturation ≤ 80 MB', `${f1(ward.peakRssMaxMb)} MB (max over rounds)`, yes(le(ward.peakRssMaxMb, 80))],
    ['Token cache off ≥ 0.5 × cached throughput', cacheText, yes(ge(cacheRatio, 0.5))],
  ];
  return ['**Targets** (issue 8; gRPC workload, this run)', '', '| target | measured | |', '|---|---:|---|', ...rows.map((x) => `| ${x.join(' | ')} |`), ''];
}
