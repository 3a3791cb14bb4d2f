import { describe, expect, it } from 'vitest';
import { categoryOf, parsePerfReport, renderPerfSummary, summarizePerf } from '../../../scripts/bench/perf-summary.ts';

/** What `perf report --sort dso,sym -g none -n -q --percent-limit 0` prints (rows from a real run). */
const REPORT = `
    14.68%          1732  node                 [.] bn_sqrx8x_internal
     4.29%           506  node                 [.] bn_mulx4x_mont
     1.93%           228  [JIT] tid 6771       [.] JS:*'writeString file:///work/main/src/h2/hpack.ts:375:21
     1.47%           173  [kernel.kallsyms]    [k] _raw_spin_unlock_irqrestore
     1.06%           125  node                 [.] v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>
     0.67%            79  node                 [.] ossl_fnv1a_hash
     0.66%            78  libc.so.6            [.] _int_malloc
     0.47%            55  node                 [.] Builtins_LoadIC
     0.40%            47  [JIT] tid 6772       [.] JS:*'isURL node:internal/url:840:15
     0.17%            20  node                 [.] node::crypto::SignTraits::AdditionalConfig
     0.17%            20  node                 [.] v8::internal::compiler::GraphReducer::ReduceTop
     0.10%            12  node                 [.] v8::internal::String::LastIndexOf
`;

describe('the native profile summary (scripts/bench/perf-summary.ts, `npm run bench -- --perf`)', () => {
  it('reads every row, with JIT code of any thread as one library', () => {
    const rows = parsePerfReport(REPORT);
    expect(rows).toHaveLength(12);
    expect(rows[2]).toEqual({ dso: '[JIT]', symbol: "JS:*'writeString file:///work/main/src/h2/hpack.ts:375:21", samples: 228 });
    expect(rows[8]?.dso).toBe('[JIT]');
  });

  it('puts each symbol in its category', () => {
    const cat = (dso: string, sym: string): string => categoryOf(dso, sym);
    expect(cat('node', 'bn_sqrx8x_internal')).toBe('OpenSSL big numbers (RSA)');
    expect(cat('node', 'ossl_fnv1a_hash')).toBe('OpenSSL, the rest');
    expect(cat('node', 'Builtins_LoadIC')).toBe('V8 builtins');
    expect(cat('node', 'v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>')).toBe('V8 garbage collection');
    expect(cat('node', 'v8::internal::compiler::GraphReducer::ReduceTop')).toBe('V8 compilers and parser');
    expect(cat('node', 'v8::internal::String::LastIndexOf')).toBe('V8 runtime');
    expect(cat('node', 'node::crypto::SignTraits::AdditionalConfig')).toBe('Node C++ and libuv');
    expect(cat('[JIT]', "JS:*'isURL node:internal/url:840:15")).toBe('JavaScript (Node internals)');
    expect(cat('[JIT]', "JS:*'writeString file:///work/main/src/h2/hpack.ts:375:21")).toBe('JavaScript');
    expect(cat('[kernel.kallsyms]', '_raw_spin_unlock_irqrestore')).toBe('kernel');
    expect(cat('libc.so.6', '_int_malloc')).toBe('libc (malloc, memcpy, syscalls)');
  });

  it('turns samples into µs per call: one sample is 1/hz s of one thread', () => {
    // 3075 samples at 1000 Hz over 1000 calls: 3.075 s of CPU, 3075 µs per call.
    const s = summarizePerf(parsePerfReport(REPORT), 1000, 1000, 3);
    expect(s.samples).toBe(3075);
    expect(s.usPerCall).toBeCloseTo(3075, 6);
    expect(s.categories[0]).toEqual({ category: 'OpenSSL big numbers (RSA)', usPerCall: 2238 });
    expect(s.categories.map((c) => c.category)).toContain('JavaScript (Node internals)');
    expect(s.top.map((t) => t.symbol)).toEqual(['bn_sqrx8x_internal', 'bn_mulx4x_mont', "JS:*'writeString file:///work/main/src/h2/hpack.ts:375:21"]);
    const text = renderPerfSummary(s);
    expect(text).toContain('3075 samples, 3075.0 µs of CPU per call');
    expect(text).toContain('2238.00  OpenSSL big numbers (RSA)');
  });
});
