/**
 * HPACK decode and encode cost per header block, for the blocks a gRPC call puts on ward's own
 * HTTP/2 client connection: the response headers and trailers as nghttp2 (nghttpd, grpc-c) and
 * grpc-js send them — Huffman-coded, indexed into the dynamic table — and the request ward sends.
 *
 *   node scripts/bench/micro-hpack.ts [iterations per case, default 1000000]
 *
 * Prints ops/s and ns/op per case, plus heap growth per op (allocation watch). Bounded
 * iterations; no assertions: numbers are for humans and for comparing commits.
 */
import { HpackDecoder, HpackEncoder } from '../../src/h2/hpack.ts';
import { huffmanEncode, huffmanEncodedLength } from '../../src/h2/huffman.ts';

/** A Huffman-coded string literal (§5.2), as nghttp2 writes a value when that is shorter. */
function huffString(s: string): Buffer {
  const len = huffmanEncodedLength(s); // all < 127 here: the length fits the 7-bit prefix
  const out = Buffer.alloc(1 + len);
  out[0] = 0x80 | len;
  huffmanEncode(s, out, 1);
  return out;
}

const b = (...bytes: number[]): Buffer => Buffer.from(bytes);

// The first response on a connection: `:status 200` indexed (static 8), `content-type:
// application/grpc` a literal with incremental indexing on static name 31 (0x40 | 31 = 0x5f).
const responseFirst = Buffer.concat([b(0x88), b(0x5f), huffString('application/grpc')]);
// Every later response: the same fields, the second now indexed from the dynamic table (62).
const responseIndexed = b(0x88, 0xbe);
// Trailers: `grpc-status: 0`, a new name with incremental indexing, both strings Huffman-coded.
const trailersFirst = Buffer.concat([b(0x40), huffString('grpc-status'), huffString('0')]);
const trailersIndexed = b(0xbe);

const request = [
  ':method', 'POST',
  ':scheme', 'http',
  ':authority', '127.0.0.1:8080',
  ':path', '/pkg.Svc/Method',
  'content-type', 'application/grpc',
  'te', 'trailers',
  'user-agent', 'grpc-node-js/1.12',
  'x-ward-subject', 'alice',
];

const iterations = Number(process.argv[2] ?? 1_000_000);
if (!Number.isInteger(iterations) || iterations <= 0 || iterations > 50_000_000) throw new Error('iterations: a positive integer up to 50M');

const out: string[] = [];
const decodeCase = (block: Buffer, primed: readonly Buffer[]): (() => number) => {
  // One decoder per case, primed as a connection would be, so indexed blocks find their entries.
  // A literal-with-indexing block inserts on every run: that measures insert + eviction too.
  const d = new HpackDecoder();
  for (const p of primed) d.decode(p, 0, p.length, []);
  return () => {
    out.length = 0;
    d.decode(block, 0, block.length, out);
    return out.length;
  };
};
const encoder = new HpackEncoder();
const encodeBuf = Buffer.allocUnsafe(encoder.maxEncodedLength(request));

const cases: { name: string; run: () => number }[] = [
  { name: 'decode response, first (Huffman)', run: decodeCase(responseFirst, []) },
  { name: 'decode response, indexed', run: decodeCase(responseIndexed, [responseFirst]) },
  { name: 'decode trailers, first (Huffman)', run: decodeCase(trailersFirst, []) },
  { name: 'decode trailers, indexed', run: decodeCase(trailersIndexed, [trailersFirst]) },
  { name: 'encode gRPC request (8 fields)', run: () => encoder.encode(request, encodeBuf, 0) },
  { name: 'maxEncodedLength + encode', run: () => encoder.maxEncodedLength(request) + encoder.encode(request, encodeBuf, 0) },
];

console.log(`HPACK, ${iterations} iterations per case (node ${process.version})`);
console.log(
  `blocks: response ${responseFirst.length} B / ${responseIndexed.length} B, trailers ${trailersFirst.length} B / ${trailersIndexed.length} B, request ${encoder.encode(request, encodeBuf, 0)} B`,
);
let sink = 0;
for (const c of cases) {
  // warm up, then measure
  for (let i = 0; i < Math.min(iterations, 50_000); i++) sink += c.run();
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) sink += c.run();
  const ns = Number(process.hrtime.bigint() - t0);
  const heap = process.memoryUsage().heapUsed - heap0;
  console.log(
    `${c.name.padEnd(34)} ${Math.round((iterations * 1e9) / ns).toLocaleString('en-US').padStart(12)} ops/s  ${(ns / iterations).toFixed(1).padStart(7)} ns/op  heap ${heap >= 0 ? '+' : ''}${(heap / iterations).toFixed(1)} B/op`,
  );
}
if (sink === 42) console.log('');
