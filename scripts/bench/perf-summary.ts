/**
 * Reads `perf report --sort dso,sym -n` text (Linux `perf record -e cpu-clock` of a sidecar run
 * with `--perf-basic-prof`) and says where a call's CPU goes, native code included: OpenSSL's
 * big-number code, the rest of OpenSSL, V8's garbage collector and runtime, its builtins,
 * JIT-compiled JavaScript, libc, the kernel. V8's own `--cpu-prof` charges native work to the
 * JavaScript function that called it; this does not. Used by `npm run bench -- --perf`;
 * standalone: `npx node scripts/bench/perf-summary.ts REPORT.txt HZ CALLS [N]`.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface PerfSymbol {
  readonly dso: string;
  readonly symbol: string;
  readonly samples: number;
}

export interface PerfSummary {
  readonly samples: number;
  /** CPU µs per call over every sampled thread of the process. */
  readonly usPerCall: number;
  /** µs per call by category, largest first. */
  readonly categories: readonly { readonly category: string; readonly usPerCall: number }[];
  /** The most expensive symbols, µs per call. */
  readonly top: readonly { readonly category: string; readonly symbol: string; readonly usPerCall: number }[];
}

/** One row of `perf report -n -q --sort dso,sym -g none`: `  12.34%  567  node  [.] symbol`. */
const ROW = /^\s*[\d.]+%\s+(\d+)\s+(.+?)\s+\[(.)\]\s+(.*)$/;

export function parsePerfReport(text: string): PerfSymbol[] {
  const out: PerfSymbol[] = [];
  for (const line of text.split('\n')) {
    const m = ROW.exec(line);
    if (m === null) continue;
    const [, n, dso, , sym] = m as unknown as [string, string, string, string, string];
    // JIT code is reported per thread (`[JIT] tid 1234`): one category whatever the thread.
    out.push({ dso: dso.replace(/ tid \d+$/, ''), symbol: sym.trim(), samples: Number(n) });
  }
  return out;
}

const GC = /Scaveng|Marking|Marker|Sweep|Evacuat|Compactor|MarkCompact|Remembered|SlotSet|MinorMS|GCTracer|Heap::|IterateObjectCache|RootVisitor|PointersUpdating|ObjectVisitor/;
const COMPILER = /v8::internal::(compiler|maglev|baseline|wasm)::|Zone|LiveRange|RegisterAllocat|Compiler::|Parser|Scanner|Bytecode/;
const OPENSSL = /^(EVP_|evp_|ossl_|OSSL_|OPENSSL_|ERR_|err_|CRYPTO_|RSA_|rsa_|sha\d|SHA\d|ASN1_|asn1_|X509|OBJ_|int_ctx_new|bin2bn|bn2binpad|getrn|lookup_translation|do_sigver_init|legacy_|pkey_|keymgmt|ec_|EC_|digest_)/;

/** The category of one sampled symbol. */
export function categoryOf(dso: string, symbol: string): string {
  if (dso === '[kernel.kallsyms]') return 'kernel';
  if (dso === '[JIT]') return symbol.includes(' node:') ? 'JavaScript (Node internals)' : 'JavaScript';
  if (dso.startsWith('libc.so')) return 'libc (malloc, memcpy, syscalls)';
  if (dso !== 'node') return 'other libraries';
  if (/^(bn_|BN_)/.test(symbol)) return 'OpenSSL big numbers (RSA)';
  if (OPENSSL.test(symbol)) return 'OpenSSL, the rest';
  if (symbol.startsWith('Builtins_')) return 'V8 builtins';
  if (GC.test(symbol)) return 'V8 garbage collection';
  if (COMPILER.test(symbol)) return 'V8 compilers and parser';
  if (symbol.startsWith('v8::') || symbol.startsWith('Runtime_')) return 'V8 runtime';
  if (symbol.startsWith('node::') || symbol.startsWith('uv_') || symbol.startsWith('nghttp2_')) return 'Node C++ and libuv';
  return 'node binary, other';
}

/**
 * `hz`: the sampling frequency given to `perf record -F`; `calls`: the calls served while it
 * recorded. Each sample stands for 1/hz s of one thread's CPU.
 */
export function summarizePerf(symbols: readonly PerfSymbol[], hz: number, calls: number, top = 30): PerfSummary {
  const us = (samples: number): number => (samples * 1e6) / hz / calls;
  const byCat = new Map<string, number>();
  let total = 0;
  for (const s of symbols) {
    const c = categoryOf(s.dso, s.symbol);
    byCat.set(c, (byCat.get(c) ?? 0) + s.samples);
    total += s.samples;
  }
  return {
    samples: total,
    usPerCall: us(total),
    categories: [...byCat.entries()].sort((a, b) => b[1] - a[1]).map(([category, n]) => ({ category, usPerCall: us(n) })),
    top: [...symbols]
      .sort((a, b) => b.samples - a.samples)
      .slice(0, top)
      .map((s) => ({ category: categoryOf(s.dso, s.symbol), symbol: s.symbol, usPerCall: us(s.samples) })),
  };
}

export function renderPerfSummary(s: PerfSummary): string {
  const f = (x: number): string => x.toFixed(2).padStart(7);
  const lines = [`${s.samples} samples, ${s.usPerCall.toFixed(1)} µs of CPU per call`, '', 'µs/call  category'];
  for (const c of s.categories) lines.push(`${f(c.usPerCall)}  ${c.category}`);
  lines.push('', 'µs/call  symbol');
  for (const t of s.top) lines.push(`${f(t.usPerCall)}  ${t.symbol.slice(0, 110)}  (${t.category})`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, hz, calls, n] = process.argv.slice(2);
  if (file === undefined || hz === undefined || calls === undefined) {
    console.error('usage: perf-summary.ts REPORT.txt HZ CALLS [N]');
    process.exit(2);
  }
  console.log(renderPerfSummary(summarizePerf(parsePerfReport(readFileSync(file, 'utf8')), Number(hz), Number(calls), n === undefined ? 30 : Number(n))));
}
