import { describe, expect, it, vi } from 'vitest';
import { HpackDecoder, HpackEncoder, HpackError, markSensitive, sensitiveOf } from '../../../src/h2/hpack.ts';
import { EOS, HUFFMAN_BITS, HUFFMAN_CODES, huffmanDecode, huffmanEncode, huffmanEncodedLength, HuffmanError } from '../../../src/h2/huffman.ts';
import { prng } from '../../support/prng.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function decode(d: HpackDecoder, block: Buffer, sensitive?: string[]): string[] {
  const out: string[] = [];
  d.decode(block, 0, block.length, out, sensitive);
  return out;
}

/** The dynamic table, newest first, read back through indexed fields (which change nothing). */
function table(d: HpackDecoder, entries: number): string[] {
  return decode(d, Buffer.concat(Array.from({ length: entries }, (_, i) => encodeInt(62 + i, 7, 0x80))));
}

function huff(s: string): Buffer {
  const buf = Buffer.alloc(huffmanEncodedLength(s));
  expect(huffmanEncode(s, buf, 0)).toBe(buf.length);
  return buf;
}


// RFC 7541 Appendix C: the blocks, the lists and the table after each block.
const REQUEST_1 = [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com'];
const REQUEST_2 = [...REQUEST_1, 'cache-control', 'no-cache'];
const REQUEST_3 = [':method', 'GET', ':scheme', 'https', ':path', '/index.html', ':authority', 'www.example.com', 'custom-key', 'custom-value'];
const REQUEST_TABLES = [
  { size: 57, entries: [':authority', 'www.example.com'] },
  { size: 110, entries: ['cache-control', 'no-cache', ':authority', 'www.example.com'] },
  { size: 164, entries: ['custom-key', 'custom-value', 'cache-control', 'no-cache', ':authority', 'www.example.com'] },
];
const DATE_1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const DATE_2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const URL = 'https://www.example.com';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RESPONSE_1 = [':status', '302', 'cache-control', 'private', 'date', DATE_1, 'location', URL];
const RESPONSE_2 = [':status', '307', 'cache-control', 'private', 'date', DATE_1, 'location', URL];
const RESPONSE_3 = [':status', '200', 'cache-control', 'private', 'date', DATE_2, 'location', URL, 'content-encoding', 'gzip', 'set-cookie', COOKIE];
const RESPONSE_TABLES = [
  { size: 222, entries: ['location', URL, 'date', DATE_1, 'cache-control', 'private', ':status', '302'] },
  { size: 222, entries: [':status', '307', 'location', URL, 'date', DATE_1, 'cache-control', 'private'] },
  { size: 215, entries: ['set-cookie', COOKIE, 'content-encoding', 'gzip', 'date', DATE_2] },
];

const CHAINS = {
  'C.3 requests without Huffman': {
    maxTableSize: 4096,
    blocks: [
      '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
      '8286 84be 5808 6e6f 2d63 6163 6865',
      '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
    ],
    lists: [REQUEST_1, REQUEST_2, REQUEST_3],
    tables: REQUEST_TABLES,
  },
  'C.4 requests with Huffman': {
    maxTableSize: 4096,
    blocks: [
      '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
      '8286 84be 5886 a8eb 1064 9cbf',
      '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
    ],
    lists: [REQUEST_1, REQUEST_2, REQUEST_3],
    tables: REQUEST_TABLES,
  },
  'C.5 responses without Huffman, 256-octet table': {
    maxTableSize: 256,
    blocks: [
      '4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32' +
        '3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
      '4803 3330 37c1 c0bf',
      '88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970' +
        '7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61' +
        '6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31',
    ],
    lists: [RESPONSE_1, RESPONSE_2, RESPONSE_3],
    tables: RESPONSE_TABLES,
  },
  'C.6 responses with Huffman, 256-octet table': {
    maxTableSize: 256,
    blocks: [
      '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad' +
        '1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
      '4883 640e ffc1 c0bf',
      '88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2' +
        'e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
    ],
    lists: [RESPONSE_1, RESPONSE_2, RESPONSE_3],
    tables: RESPONSE_TABLES,
  },
};

const GRPC_REQUEST = [
  ':method', 'POST',
  ':scheme', 'http',
  ':authority', '127.0.0.1:8080',
  ':path', '/pkg.Svc/Method',
  'content-type', 'application/grpc',
  'te', 'trailers',
  'user-agent', 'grpc-node-js/1.12',
  'x-ward-subject', 'alice',
];

function encode(fields: readonly string[], enc = new HpackEncoder()): Buffer {
  const buf = Buffer.alloc(enc.maxEncodedLength(fields));
  const end = enc.encode(fields, buf, 0);
  expect(end).toBeLessThanOrEqual(buf.length);
  return buf.subarray(0, end);
}

function expectHpackError(fn: () => void, code = 'ERR_HPACK_COMPRESSION'): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(HpackError);
  expect((caught as HpackError).code).toBe(code);
}

describe('HpackDecoder: RFC 7541 Appendix C', () => {
  it.each([
    ['C.2.1 literal with indexing', '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572', ['custom-key', 'custom-header'], 55, []],
    ['C.2.2 literal without indexing', '040c 2f73 616d 706c 652f 7061 7468', [':path', '/sample/path'], 0, []],
    ['C.2.3 literal never indexed', '1008 7061 7373 776f 7264 0673 6563 7265 74', ['password', 'secret'], 0, ['password']],
    ['C.2.4 indexed field', '82', [':method', 'GET'], 0, []],
  ])('%s', (_label, block, fields, size, sensitiveNames) => {
    const d = new HpackDecoder();
    const sensitive: string[] = [];
    expect(decode(d, hex(block), sensitive)).toEqual(fields);
    expect(sensitive).toEqual(sensitiveNames);
    expect(d.tableSize).toBe(size);
  });

  for (const [label, chain] of Object.entries(CHAINS)) {
    it(`${label}: one decoder across the three blocks`, () => {
      const d = new HpackDecoder({ maxTableSize: chain.maxTableSize });
      chain.blocks.forEach((block, i) => {
        expect(decode(d, hex(block))).toEqual(chain.lists[i]);
        expect(d.tableSize).toBe(chain.tables[i]!.size);
        const entries = chain.tables[i]!.entries;
        expect(table(d, entries.length / 2)).toEqual(entries);
        // one past the newest-to-oldest entries is out of range
        expectHpackError(() => decode(d, encodeInt(62 + entries.length / 2, 7, 0x80)));
      });
    });
  }

  it('decodes a block in the middle of a larger buffer', () => {
    const block = hex(CHAINS['C.4 requests with Huffman'].blocks[0]!);
    const framed = Buffer.concat([Buffer.from([1, 2, 3]), block, Buffer.from([0xff, 0xff])]);
    const out: string[] = [];
    new HpackDecoder().decode(framed, 3, 3 + block.length, out);
    expect(out).toEqual(REQUEST_1);
  });

  it('has the 61 static entries of Appendix A', () => {
    const out = decode(new HpackDecoder(), Buffer.from(Array.from({ length: 61 }, (_, i) => 0x81 + i)));
    expect(out.length).toBe(122);
    expect(out.slice(0, 28)).toEqual([
      ':authority', '', ':method', 'GET', ':method', 'POST', ':path', '/', ':path', '/index.html', ':scheme', 'http', ':scheme', 'https',
      ':status', '200', ':status', '204', ':status', '206', ':status', '304', ':status', '400', ':status', '404', ':status', '500',
    ]);
    expect(out.slice(28, 32)).toEqual(['accept-charset', '', 'accept-encoding', 'gzip, deflate']);
    expect(out.slice(32).filter((_, i) => i % 2 === 1).every((v) => v === '')).toBe(true);
    expect([out[44], out[46], out[60], out[64], out[90], out[108], out[114], out[120]]).toEqual([
      'authorization', 'cache-control', 'content-type', 'date', 'location', 'set-cookie', 'user-agent', 'www-authenticate',
    ]);
  });
});

describe('huffman', () => {
  it('is the canonical, complete prefix code of Appendix B', () => {
    expect(HUFFMAN_CODES.length).toBe(257);
    expect(HUFFMAN_BITS.length).toBe(257);
    const order = Array.from({ length: 257 }, (_, s) => s).sort((a, b) => HUFFMAN_BITS[a]! - HUFFMAN_BITS[b]! || a - b);
    let code = 0;
    let kraft = 0;
    order.forEach((sym, i) => {
      if (i > 0) code = (code + 1) * 2 ** (HUFFMAN_BITS[sym]! - HUFFMAN_BITS[order[i - 1]!]!);
      expect(HUFFMAN_CODES[sym], `symbol ${sym}`).toBe(code);
      kraft += 2 ** (30 - HUFFMAN_BITS[sym]!);
    });
    expect(kraft).toBe(2 ** 30);
    // spot checks against the spec's listing
    expect([HUFFMAN_CODES[0x30], HUFFMAN_BITS[0x30]]).toEqual([0x0, 5]);
    expect([HUFFMAN_CODES[0x61], HUFFMAN_BITS[0x61]]).toEqual([0x3, 5]);
    expect([HUFFMAN_CODES[0], HUFFMAN_BITS[0]]).toEqual([0x1ff8, 13]);
    expect([HUFFMAN_CODES[EOS], HUFFMAN_BITS[EOS]]).toEqual([0x3fffffff, 30]);
  });

  it('encodes as Appendix C.4 does', () => {
    expect(huff('www.example.com').toString('hex')).toBe('f1e3c2e5f23a6ba0ab90f4ff');
    expect(huff('no-cache').toString('hex')).toBe('a8eb10649cbf');
    expect(huff('custom-key').toString('hex')).toBe('25a849e95ba97d7f');
    expect(huff('custom-value').toString('hex')).toBe('25a849e95bb8e8b4bf');
    expect(huff('').length).toBe(0);
  });

  it('round-trips every byte value, alone and all together', () => {
    for (let b = 0; b < 256; b++) {
      const s = String.fromCharCode(b);
      const enc = huff(s);
      expect(huffmanDecode(enc, 0, enc.length)).toBe(s);
      const thrice = huff(s + s + s);
      expect(huffmanDecode(thrice, 0, thrice.length)).toBe(s + s + s);
    }
    const all = Array.from({ length: 256 }, (_, b) => String.fromCharCode(b)).join('');
    const s = all + [...all].reverse().join('');
    const enc = huff(s);
    expect(huffmanDecode(enc, 0, enc.length)).toBe(s);
  });

  it('round-trips random strings, decoding within a larger buffer', () => {
    const rand = prng(7);
    for (let i = 0; i < 2000; i++) {
      const s = Array.from({ length: Math.floor(rand() * 40) }, () => String.fromCharCode(Math.floor(rand() * 256))).join('');
      const enc = huff(s);
      const framed = Buffer.concat([Buffer.from([0xaa]), enc, Buffer.from([0x55])]);
      expect(huffmanDecode(framed, 1, 1 + enc.length)).toBe(s);
    }
  });

  it('accepts up to 7 bits of all-ones padding', () => {
    expect(huffmanDecode(Buffer.from([0x07]), 0, 1)).toBe('0'); // 00000 + 111
    // symbol 199 is 25 bits: 0x1ffffec, then 7 padding bits
    const sym199 = huff('\xc7');
    expect(sym199.length).toBe(4);
    expect(sym199[3]! & 0x7f).toBe(0x7f);
    expect(huffmanDecode(sym199, 0, 4)).toBe('\xc7');
  });

  it.each([
    ['padding of 8 ones after a symbol', '1f ff'], // 'a' 00011 + 111, then a whole byte of ones
    ['padding of 8 ones alone', 'ff'],
    ['padding that is not all ones', '18'], // 'a' 00011 + 000
    ['padding that is partly zero', '1e'], // 'a' 00011 + 110
    ['a code cut short', 'fe'], // 1111111 0 is a prefix of a longer code, not of EOS
    ['the EOS symbol', 'ff ff ff ff'], // 30 ones + 2
    ['the EOS symbol after a symbol', '1f ff ff ff fe'], // 'a' + 30 ones + 2 (not padding)
  ])('rejects %s', (_label, bytes) => {
    const buf = hex(bytes);
    expect(() => huffmanDecode(buf, 0, buf.length)).toThrow(HuffmanError);
  });

  it('surfaces a bad Huffman string as an HpackError', () => {
    expectHpackError(() => decode(new HpackDecoder(), hex('04 81 18'))); // :path with value 'a' + 000 padding
    expectHpackError(() => decode(new HpackDecoder(), hex('04 84 ff ff ff ff'))); // :path with EOS
  });
});

describe('HpackEncoder', () => {
  it('round-trips a gRPC request through the decoder', () => {
    const block = encode(GRPC_REQUEST);
    const d = new HpackDecoder();
    expect(decode(d, block)).toEqual(GRPC_REQUEST);
    expect(d.tableSize).toBe(0); // nothing is indexed
    expect(block[0]).toBe(0x83); // :method POST
    expect(block[1]).toBe(0x86); // :scheme http
  });

  it('writes the exact octets of a small block', () => {
    const block = encode([':method', 'POST', ':path', '/', ':scheme', 'https', ':status', '200', ':authority', '', 'content-type', 'application/grpc', 'x-a', 'b', ':path', '/x']);
    expect(block.toString('hex')).toBe(
      [
        '83', // indexed 3 :method POST
        '84', // indexed 4 :path /
        '87', // indexed 7 :scheme https
        '88', // indexed 8 :status 200
        '81', // indexed 1 :authority ''
        '0f10', // literal without indexing, name index 31 = 15 + 16
        '10' + Buffer.from('application/grpc').toString('hex'),
        '00', // literal without indexing, new name
        '03' + Buffer.from('x-a').toString('hex'),
        '01' + Buffer.from('b').toString('hex'),
        '04', // :path with another value: name index 4
        '02' + Buffer.from('/x').toString('hex'),
      ].join(''),
    );
  });

  it('a field list marked with never-indexed names (as decoded from a peer) is encoded so, static names and exact static matches included', () => {
    const fields = [':status', '200', 'x-secret', 's', 'accept-encoding', 'gzip, deflate', 'x-plain', 'p', 'age', '1'];
    markSensitive(fields, ['x-secret', 'accept-encoding', ':status']);
    const sensitive: string[] = [];
    expect(decode(new HpackDecoder(), encode(fields, new HpackEncoder()), sensitive)).toEqual([...fields]);
    expect(sensitive).toEqual([':status', 'x-secret', 'accept-encoding']);
    // and what a decoder reports can be forwarded as is
    const again: string[] = [];
    const decoded = decode(new HpackDecoder(), encode(fields, new HpackEncoder()));
    markSensitive(decoded, sensitive);
    expect(sensitiveOf(decoded)).toEqual(sensitive);
    decode(new HpackDecoder(), encode(decoded, new HpackEncoder()), again);
    expect(again).toEqual(sensitive);
  });

  it('sends never-indexed names as §6.2.3 and the decoder reports them', () => {
    const enc = new HpackEncoder({ neverIndex: ['authorization', 'x-secret'] });
    const fields = ['authorization', 'Bearer x', 'x-secret', 's', 'cookie', 'c=1'];
    const block = encode(fields, enc);
    expect(block.subarray(0, 11).toString('hex')).toBe('1f08' + '08' + Buffer.from('Bearer x').toString('hex')); // 23 = 15 + 8
    expect(block[11]).toBe(0x10);
    const sensitive: string[] = [];
    expect(decode(new HpackDecoder(), block, sensitive)).toEqual(fields);
    expect(sensitive).toEqual(['authorization', 'x-secret']);
    // the default set
    const def: string[] = [];
    decode(new HpackDecoder(), encode(['authorization', 'a', 'cookie', 'b', 'proxy-authorization', 'c', 'x', 'd']), def);
    expect(def).toEqual(['authorization', 'cookie', 'proxy-authorization']);
  });

  it('round-trips empty names and values, latin1 octets and a 10 KiB value', () => {
    const latin1 = '\x01\t\x7f\x80\xe9\xff caf\xe9';
    const big = 'v'.repeat(10 * 1024);
    // every octet a field may hold (RFC 9113 §8.2.1: not NUL, CR or LF)
    const sendable = Array.from({ length: 256 }, (_, i) => i).filter((c) => c !== 0 && c !== 0x0a && c !== 0x0d);
    const bigLatin1 = Array.from({ length: 10 * 1024 }, (_, i) => String.fromCharCode(sendable[i % sendable.length] as number)).join('');
    const fields = ['x-empty', '', '', '', 'accept', '', 'x-latin1', latin1, 'x-big', big, 'x-big-latin1', bigLatin1, 'x-long-name-'.repeat(20), 'y'];
    const block = encode(fields);
    expect(decode(new HpackDecoder(), block)).toEqual(fields);
    expect(block.includes(Buffer.from(latin1, 'latin1'))).toBe(true);
  });

  it.each([
    ['NUL', 'a\x00b'],
    ['CR', 'a\rb'],
    ['LF', 'a\nb'],
    ['a char above U+00FF', 'caf\u0117'],
    ['U+010A (LF in its low byte)', 'a\u010Ab'],
  ])('refuses a field holding %s, short or long, instead of cutting it to its low byte', (_what, bad) => {
    for (const v of [bad, bad + 'x'.repeat(40)]) {
      const enc = new HpackEncoder();
      const buf = Buffer.alloc(enc.maxEncodedLength(['x-v', v]));
      expect(() => enc.encode(['x-v', v], buf, 0)).toThrow(expect.objectContaining({ code: 'ERR_HPACK_FIELD_INVALID' }));
      expect(() => enc.encode([v, 'ok'], Buffer.alloc(enc.maxEncodedLength([v, 'ok'])), 0)).toThrow(HpackError);
    }
  });

  it('a long value found sendable does not let the next long value through unscanned', () => {
    const enc = new HpackEncoder();
    const good = 'x'.repeat(700);
    for (const bad of ['x'.repeat(350) + '\n' + 'x'.repeat(349), 'x'.repeat(699) + '\0', '\r' + 'x'.repeat(699)]) {
      const buf = Buffer.alloc(enc.maxEncodedLength(['authorization', good]));
      enc.encode(['authorization', good], buf, 0);
      enc.encode(['authorization', good], buf, 0);
      expect(() => enc.encode(['authorization', bad], buf, 0)).toThrow(expect.objectContaining({ code: 'ERR_HPACK_FIELD_INVALID' }));
    }
  });

  it('the token and the claims of every call are both remembered; a value of the same length as one of them is still scanned', () => {
    const enc = new HpackEncoder();
    const goods = ['t'.repeat(700), 'c'.repeat(400), 'p'.repeat(55), 'q'.repeat(90), 'r'.repeat(64)];
    const fields = goods.flatMap((v, i) => [`x-long-${i}`, v]);
    const buf = Buffer.alloc(enc.maxEncodedLength(fields));
    for (let round = 0; round < 3; round++) {
      const end = enc.encode(fields, buf, 0);
      const out: string[] = [];
      new HpackDecoder().decode(buf, 0, end, out);
      expect(out).toEqual(fields);
    }
    for (const good of goods) {
      const bad = good.slice(0, -1) + '\n';
      expect(() => enc.encode(['x-v', bad], Buffer.alloc(enc.maxEncodedLength(['x-v', bad])), 0)).toThrow(expect.objectContaining({ code: 'ERR_HPACK_FIELD_INVALID' }));
    }
  });

  it('the remembered values survive values new on every call: only those are scanned', () => {
    const enc = new HpackEncoder();
    const token = `Bearer ${'t'.repeat(700)}`;
    const claims = 'c'.repeat(400);
    const scans = vi.spyOn(RegExp.prototype, 'test');
    try {
      for (let call = 0; call < 12; call++) {
        if (call === 4) scans.mockClear(); // after warming up
        const traceparent = `00-${String(call).padStart(32, '0')}-${'b'.repeat(16)}-01`;
        const requestId = `${String(call).padStart(8, '0')}-aaaa-bbbb-cccc-dddddddddddd`;
        const fields = ['authorization', token, 'x-ward-claims', claims, 'traceparent', traceparent, 'x-request-id', requestId];
        enc.encode(fields, Buffer.alloc(enc.maxEncodedLength(fields)), 0);
      }
      // Two new long values per call are scanned; the token and the claims never again.
      expect(scans.mock.calls.map(([v]) => String(v).length).sort()).toEqual(Array.from({ length: 8 }, () => [36, 55]).flat().sort());
    } finally {
      scans.mockRestore();
    }
  });

  it('encodes at an offset, leaving the octets around it alone', () => {
    const enc = new HpackEncoder();
    const buf = Buffer.alloc(9 + enc.maxEncodedLength(GRPC_REQUEST) + 4, 0xee);
    const end = enc.encode(GRPC_REQUEST, buf, 9);
    expect(buf.subarray(0, 9).every((b) => b === 0xee)).toBe(true);
    expect(buf.subarray(end).every((b) => b === 0xee)).toBe(true);
    const out: string[] = [];
    new HpackDecoder().decode(buf, 9, end, out);
    expect(out).toEqual(GRPC_REQUEST);
  });

  it('bounds its output by maxEncodedLength and refuses a buffer that is too small', () => {
    const enc = new HpackEncoder();
    const rand = prng(3);
    for (let i = 0; i < 500; i++) {
      const fields: string[] = [];
      for (let f = Math.floor(rand() * 6); f > 0; f--) {
        const len = rand() < 0.1 ? 100 + Math.floor(rand() * 20_000) : Math.floor(rand() * 130);
        fields.push(rand() < 0.5 ? ':status' : 'x', 'z'.repeat(len));
      }
      const exact = Buffer.alloc(enc.maxEncodedLength(fields));
      const end = enc.encode(fields, exact, 0);
      expect(end).toBeLessThanOrEqual(exact.length);
      expect(decode(new HpackDecoder({ maxHeaderListSize: 1 << 20 }), exact.subarray(0, end))).toEqual(fields);
    }
    expect(() => enc.encode(GRPC_REQUEST, Buffer.alloc(20), 0)).toThrow(RangeError);
    expect(() => enc.encode(['odd'], Buffer.alloc(16), 0)).toThrow(RangeError);
  });
});

describe('HpackDecoder: limits and malformed blocks', () => {
  it('refuses a header list over maxHeaderListSize, and stays in step with the peer', () => {
    const d = new HpackDecoder({ maxHeaderListSize: 100 });
    // 42 + 50 fits; the next field goes over; the indexed-literal after that must still be inserted
    const block = encode([':status', '500', 'x', 'y'.repeat(17)]);
    expect(decode(d, block)).toEqual([':status', '500', 'x', 'y'.repeat(17)]);
    const over = Buffer.concat([block, encode(['x-over', 'z']), hex('40 01 6b 01 76')]); // + k: v with incremental indexing
    const out: string[] = [];
    expectHpackError(() => d.decode(over, 0, over.length, out), 'ERR_HPACK_HEADER_LIST_TOO_LARGE');
    expect(d.tableSize).toBe(1 + 1 + 32);
    expect(table(d, 1)).toEqual(['k', 'v']);
  });

  it('applies a size update at the start of a block, and several in a row', () => {
    const d = new HpackDecoder();
    decode(d, hex(CHAINS['C.3 requests without Huffman'].blocks[0]!));
    expect(d.tableSize).toBe(57);
    expect(decode(d, hex('20 3f e1 1f 82'))).toEqual([':method', 'GET']); // 0, then 4096
    expect(d.tableSize).toBe(0);
    expect(d.tableLimit).toBe(4096);
    expect(decode(d, hex('3f 11 82'))).toEqual([':method', 'GET']); // 48: the next entry (57) does not fit
    decode(d, hex('41 0f 7777 772e 6578 616d 706c 652e 636f 6d'));
    expect(d.tableSize).toBe(0);
    expectHpackError(() => decode(d, hex('be')));
  });

  it('refuses a size update above maxTableSize', () => {
    expectHpackError(() => decode(new HpackDecoder(), hex('3f e2 1f'))); // 4097
    expectHpackError(() => decode(new HpackDecoder({ maxTableSize: 256 }), hex('3f e2 01'))); // 257
    expect(decode(new HpackDecoder({ maxTableSize: 256 }), hex('3f e1 01 82'))).toEqual([':method', 'GET']); // 256
  });

  it('refuses a size update after the first field', () => {
    expectHpackError(() => decode(new HpackDecoder(), hex('82 20')));
    expectHpackError(() => decode(new HpackDecoder(), hex('20 82 3f e1 1f')));
  });

  it.each([
    ['index 0', '80'],
    ['a static index past the table', 'be'],
    ['a literal name index past the table', '7e 01 61'],
    ['an integer above 2^31-1', 'ff 80 80 80 80 08'],
    ['an integer with six continuation octets', 'ff 80 80 80 80 80 00'],
    ['a truncated integer', 'ff 80'],
    ['a truncated string length', '40'],
    ['a truncated string', '40 0a 63 75 73 74'],
    ['a missing value', '40 01 61'],
    ['a string length above 2^31-1', '04 ff ff ff ff ff 0f'],
  ])('refuses %s', (_label, block) => {
    expectHpackError(() => decode(new HpackDecoder(), hex(block)));
  });

  it('accepts integers up to 2^31-1 and a string of 0 octets', () => {
    const max = hex('ff 80 ff ff ff 07'); // 127 + 0x7fffff80 = 2^31 - 1 + 0: index past the table, but parsed
    let caught: unknown;
    try {
      decode(new HpackDecoder(), max);
    } catch (err) {
      caught = err;
    }
    expect((caught as Error).message).toMatch(/past the table/);
    expect(decode(new HpackDecoder(), hex('00 00 00'))).toEqual(['', '']);
  });

  it('refuses every proper prefix of a valid block that cuts a field', () => {
    for (const chain of Object.values(CHAINS)) {
      const d = new HpackDecoder({ maxTableSize: chain.maxTableSize });
      const block = hex(chain.blocks[0]!);
      const whole = decode(new HpackDecoder({ maxTableSize: chain.maxTableSize }), block);
      for (let n = 0; n < block.length; n++) {
        try {
          const out = decode(d, block.subarray(0, n));
          expect(whole.slice(0, out.length)).toEqual(out);
        } catch (err) {
          expect(err).toBeInstanceOf(HpackError);
        }
      }
    }
  });

  it('survives 20 000 random blocks: each decodes or throws HpackError', () => {
    const rand = prng(0x5eed);
    const failures: string[] = [];
    const shared = new HpackDecoder({ maxTableSize: 256, maxHeaderListSize: 4096 });
    for (let i = 0; i < 20_000; i++) {
      const block = Buffer.alloc(Math.floor(rand() * 48));
      for (let j = 0; j < block.length; j++) block[j] = Math.floor(rand() * 256);
      for (const d of [shared, new HpackDecoder()]) {
        try {
          decode(d, block);
        } catch (err) {
          if (!(err instanceof HpackError)) failures.push(`${block.toString('hex')}: ${String(err)}`);
        }
      }
    }
    expect(failures).toEqual([]);
  });

  it('survives 20 000 mutations of valid blocks: each decodes or throws HpackError', () => {
    const rand = prng(0xc0ffee);
    const valid: { maxTableSize: number; prefix: Buffer[]; block: Buffer }[] = [];
    for (const chain of Object.values(CHAINS)) {
      chain.blocks.forEach((b, i) => valid.push({ maxTableSize: chain.maxTableSize, prefix: chain.blocks.slice(0, i).map(hex), block: hex(b) }));
    }
    valid.push({ maxTableSize: 4096, prefix: [], block: encode(GRPC_REQUEST) });
    valid.push({ maxTableSize: 4096, prefix: [], block: encode(['x-latin1', '\xe9\xff', 'authorization', 'Bearer t']) });
    const failures: string[] = [];
    let decoded = 0;
    for (let i = 0; i < 20_000; i++) {
      const v = valid[Math.floor(rand() * valid.length)]!;
      const block = Buffer.from(v.block);
      let mutated: Buffer = block;
      switch (Math.floor(rand() * 4)) {
        case 0: // flip bits in 1-3 octets
          for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) {
            const at = Math.floor(rand() * block.length);
            block[at] = block[at]! ^ (1 << Math.floor(rand() * 8));
          }
          break;
        case 1: // overwrite an octet
          block[Math.floor(rand() * block.length)] = Math.floor(rand() * 256);
          break;
        case 2: // truncate
          mutated = block.subarray(0, Math.floor(rand() * block.length));
          break;
        default: {
          // insert random octets
          const at = Math.floor(rand() * block.length);
          const junk = Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 6) }, () => Math.floor(rand() * 256)));
          mutated = Buffer.concat([block.subarray(0, at), junk, block.subarray(at)]);
        }
      }
      const d = new HpackDecoder({ maxTableSize: v.maxTableSize });
      for (const p of v.prefix) decode(d, p);
      try {
        decode(d, mutated);
        decoded++;
      } catch (err) {
        if (!(err instanceof HpackError)) failures.push(`${mutated.toString('hex')}: ${String(err)}`);
      }
    }
    expect(failures).toEqual([]);
    expect(decoded).toBeGreaterThan(100); // the mutations are not all trivially fatal
  });

  it('keeps the dynamic table through eviction and growth over many blocks', () => {
    // A model of the table alongside the decoder, with entries of random sizes.
    const rand = prng(11);
    const d = new HpackDecoder({ maxTableSize: 4096 });
    let model: [string, string][] = [];
    let limit = 4096;
    for (let i = 0; i < 3000; i++) {
      const parts: Buffer[] = [];
      if (rand() < 0.05) {
        limit = Math.floor(rand() * 4097);
        parts.push(encodeInt(limit, 5, 0x20));
        while (model.reduce((n, [a, b]) => n + a.length + b.length + 32, 0) > limit) model.pop();
      }
      const name = `n${i}`;
      const value = 'v'.repeat(Math.floor(rand() * 300));
      parts.push(Buffer.from([0x40]), encodeInt(name.length, 7, 0), Buffer.from(name), encodeInt(value.length, 7, 0), Buffer.from(value));
      decode(d, Buffer.concat(parts));
      model.unshift([name, value]);
      let size = model.reduce((n, [a, b]) => n + a.length + b.length + 32, 0);
      while (size > limit) {
        const [a, b] = model.pop()!;
        size -= a.length + b.length + 32;
      }
      if (name.length + value.length + 32 > limit) model = [];
      expect(d.tableSize).toBe(model.reduce((n, [a, b]) => n + a.length + b.length + 32, 0));
      expect(table(d, model.length)).toEqual(model.flat());
    }
  });
});

function encodeInt(v: number, n: number, first: number): Buffer {
  const out: number[] = [];
  const max = (1 << n) - 1;
  if (v < max) return Buffer.from([first | v]);
  out.push(first | max);
  for (v -= max; v >= 0x80; v >>>= 7) out.push((v & 0x7f) | 0x80);
  out.push(v);
  return Buffer.from(out);
}

describe('HpackDecoder: the long-Huffman-string memo', () => {
  /** A literal without indexing, new name, Huffman value (how nghttp2 clients send `authorization`). */
  function literalHuffman(name: string, value: string): Buffer {
    const v = huff(value);
    return Buffer.concat([Buffer.from([0x00]), encodeInt(name.length, 7, 0), Buffer.from(name, 'latin1'), encodeInt(v.length, 7, 0x80), v]);
  }

  it('a repeated value decodes to the same text; a different one of the same length, or one byte changed, is decoded anew', () => {
    const d = new HpackDecoder();
    const a = `Bearer ${'a'.repeat(200)}`;
    const b = `Bearer ${'c'.repeat(200)}`; // 'a' and 'c' are both 5-bit codes: same encoded length
    expect(huff(a).length).toBe(huff(b).length);
    expect(decode(d, literalHuffman('authorization', a))).toEqual(['authorization', a]);
    expect(decode(d, literalHuffman('authorization', a))).toEqual(['authorization', a]);
    expect(decode(d, literalHuffman('authorization', b))).toEqual(['authorization', b]);
    expect(decode(d, literalHuffman('x-other', a))).toEqual(['x-other', a]);
    const near = `Bearer ${'a'.repeat(199)}e`;
    expect(decode(d, literalHuffman('authorization', near))).toEqual(['authorization', near]);
    // the memo keeps a copy: changing the block it came from changes nothing
    const block = literalHuffman('authorization', a);
    expect(decode(d, block)).toEqual(['authorization', a]);
    block.fill(0xff, block.length - 10);
    expect(decode(d, literalHuffman('authorization', a))).toEqual(['authorization', a]);
  });

  it('a bad Huffman string is still refused after a good one of the same length', () => {
    const d = new HpackDecoder();
    const a = 'x'.repeat(100);
    decode(d, literalHuffman('x-v', a));
    const bad = literalHuffman('x-v', a);
    bad.fill(0xff, bad.length - 5); // ends in EOS-length ones: padding over 7 bits
    expect(() => decode(d, bad)).toThrow(HpackError);
  });
});
