import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpackDecoder, HpackEncoder, markSensitive, sensitiveOf } from '../../src/h2/hpack.ts';
import { PythonPeer } from './support.ts';

/**
 * ward's HPACK (RFC 7541) against an independent implementation, Python's `hpack` (Debian
 * python3-hpack, the one python-h2 uses), on random connections. ward decodes every header block
 * its callers and apps send, so a decoder that reads a different field list than the peer
 * encoded, or whose dynamic table drifts from the peer's, would forward or judge fields nobody
 * sent. Python's encoder uses everything the decoder must follow: incremental indexing,
 * references into the dynamic table, eviction, table size updates, Huffman and never-indexed
 * literals. In the other direction Python decodes what ward's encoder writes.
 *
 * Names and values are arbitrary octets (HPACK strings are octets; ward holds them as Latin-1
 * strings), drawn from small pools so that fields repeat and get indexed, with long values
 * (Huffman-coded ones of 64 octets or more go through the decoder's memo) and near-repeats of
 * them.
 */

const PEER = fileURLToPath(new URL('python/hpack_peer.py', import.meta.url));
const LIMIT = { numRuns: 250, interruptAfterTimeLimit: 8000, markInterruptAsFailure: false } as const;

let peer: PythonPeer;
beforeAll(async () => {
  peer = new PythonPeer(PEER);
  await peer.request({ op: 'new' }); // fails here, once, if python3-hpack is missing
});
afterAll(() => peer.close());

const hex = (s: string): string => Buffer.from(s, 'latin1').toString('hex');
const unhex = (h: string): string => Buffer.from(h, 'hex').toString('latin1');

const octets = (min: number, max: number): fc.Arbitrary<string> =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a).toString('latin1'));

const LONG = 'Bearer eyJhbGciOiJSUzI1NiJ9.' + 'x'.repeat(90);
const NAMES = fc.oneof(
  fc.constantFrom(':method', ':path', ':authority', 'content-type', 'authorization', 'cookie', 'user-agent', 'te', 'grpc-timeout', 'x-request-id', 'x-custom'),
  octets(0, 12),
);
const VALUES = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('', 'GET', 'POST', '/', '/index.html', 'application/grpc', 'trailers', 'gzip, deflate', '100m', LONG) },
  // A long value once more, or with one octet changed: the decoder's long-string memo must not
  // hand back the value it remembers for a different one.
  { weight: 1, arbitrary: fc.nat(LONG.length - 1).map((i) => `${LONG.slice(0, i)}${String.fromCharCode(LONG.charCodeAt(i) ^ 1)}${LONG.slice(i + 1)}`) },
  { weight: 2, arbitrary: octets(0, 40) },
  { weight: 1, arbitrary: octets(60, 400) },
);
/** name, value, and whether it is sent never-indexed (one field in five). */
const FIELD = fc.tuple(NAMES, VALUES, fc.nat(4).map((x) => x === 0));
const BLOCK = fc.record({
  fields: fc.array(FIELD, { maxLength: 14 }),
  huffman: fc.boolean(),
  // At most ward's SETTINGS_HEADER_TABLE_SIZE (4096); small ones force eviction.
  tableSize: fc.option(fc.oneof(fc.constantFrom(0, 32, 64, 100, 256, 4096), fc.nat(4096)), { nil: null, freq: 4 }),
});

describe('HPACK against Python hpack (RFC 7541)', () => {
  it('ward decodes every block Python encodes to the same fields, and its dynamic table stays the same size', async () => {
    // What the runs exercised, so that a generator that stopped reaching a feature shows.
    const seen = { blocks: 0, sizeUpdates: 0, shrunk: 0, huffman: 0, neverIndexed: 0, longHuffman: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(BLOCK, { minLength: 1, maxLength: 12 }), async (blocks) => {
        await peer.request({ op: 'new' });
        const decoder = new HpackDecoder();
        let before = 0;
        for (const b of blocks) {
          const r = await peer.request<{ block: string; tableSize: number; decoded: [string, string, boolean][] | string }>({
            op: 'encode',
            fields: b.fields.map(([n, v, s]) => [hex(n), hex(v), s]),
            huffman: b.huffman,
            tableSize: b.tableSize,
          });
          const block = Buffer.from(r.block, 'hex');
          const out: string[] = [];
          const sensitive: string[] = [];
          decoder.decode(block, 0, block.length, out, sensitive);
          expect(out).toEqual(b.fields.flatMap(([n, v]) => [n, v]));
          if (typeof r.decoded === 'string') throw new Error(`Python could not read its own block: ${r.decoded}`);
          // Never-indexed as Python's own decoder reads the block (its encoder sends an exact
          // static-table match indexed even when asked for never-indexed).
          expect(sensitive).toEqual(r.decoded.filter(([, , s]) => s).map(([n]) => unhex(n)));
          expect(r.decoded.map(([n, v]) => [unhex(n), unhex(v)])).toEqual(b.fields.map(([n, v]) => [n, v]));
          expect(decoder.tableSize).toBe(r.tableSize);
          seen.blocks++;
          if (b.tableSize !== null) seen.sizeUpdates++;
          if (r.tableSize < before) seen.shrunk++;
          before = r.tableSize;
          if (b.huffman) {
            seen.huffman++;
            if (b.fields.some(([, v]) => v.length >= 64)) seen.longHuffman++;
          }
          seen.neverIndexed += sensitive.length;
        }
      }),
      LIMIT,
    );
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(5);
  });

  it('Python decodes every block ward encodes to the same fields, never-indexed where ward meant it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(FIELD, { maxLength: 14 }), { minLength: 1, maxLength: 6 }), async (lists) => {
        await peer.request({ op: 'new' });
        const encoder = new HpackEncoder();
        for (const list of lists) {
          const fields = list.flatMap(([n, v]) => [n, v]);
          const marked = [...new Set(list.filter(([, , s]) => s).map(([n]) => n))];
          markSensitive(fields, marked);
          const buf = Buffer.alloc(encoder.maxEncodedLength(fields) + 8, 0xee);
          // NUL, CR and LF cannot be carried (RFC 9113 §8.2.1): the encoder refuses the list.
          if (fields.some((f) => /[\0\r\n]/.test(f))) {
            expect(() => encoder.encode(fields, buf, 4)).toThrow(expect.objectContaining({ code: 'ERR_HPACK_FIELD_INVALID' }));
            continue;
          }
          const end = encoder.encode(fields, buf, 4);
          expect(buf.subarray(0, 4).every((x) => x === 0xee) && buf.subarray(end).every((x) => x === 0xee)).toBe(true);
          const r = await peer.request<{ fields?: [string, string, boolean][]; error?: string }>({ op: 'decode', block: buf.subarray(4, end).toString('hex') });
          expect(r.error).toBeUndefined();
          const got = r.fields ?? [];
          expect(got.map(([n, v]) => [unhex(n), unhex(v)])).toEqual(list.map(([n, v]) => [n, v]));
          // Never indexed: the names marked (fields decoded so), and the credentials by default
          // unless empty (then the static table's own entry is sent: it holds no secret).
          const markedNames = new Set(sensitiveOf(fields) ?? []);
          const credentials = new Set(['authorization', 'proxy-authorization', 'cookie']);
          for (const [n, v, s] of got) {
            const name = unhex(n);
            expect(s, name).toBe(markedNames.has(name) || (credentials.has(name) && v !== ''));
          }
        }
      }),
      LIMIT,
    );
  });

  it('a table size update above what ward allows is refused, not followed', async () => {
    await peer.request({ op: 'new' });
    const r = await peer.request<{ block: string }>({ op: 'encode', fields: [[hex('x-a'), hex('b'), false]], huffman: false, tableSize: 8192 });
    const block = Buffer.from(r.block, 'hex');
    expect(() => new HpackDecoder().decode(block, 0, block.length, [])).toThrow(/above our 4096/);
    // The same block is fine for a decoder that allowed 8192.
    const out: string[] = [];
    new HpackDecoder({ maxTableSize: 8192 }).decode(block, 0, block.length, out);
    expect(out).toEqual(['x-a', 'b']);
  });
});
