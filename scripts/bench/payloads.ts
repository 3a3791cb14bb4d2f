/**
 * The bytes the load benchmark sends and answers with: one gRPC message of ~1 KiB (a protobuf
 * `bytes` field, length-prefixed per the gRPC wire format) and a 1 KiB JSON document.
 */

/** A gRPC length-prefixed message whose protobuf payload is field 1 (bytes) of `n` bytes. */
export function grpcFrame(n: number): Buffer {
  // field 1, wire type 2 (length-delimited): tag 0x0a, varint length, then the bytes
  const len: number[] = [];
  let v = n;
  while (v > 0x7f) {
    len.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  len.push(v);
  const msg = Buffer.concat([Buffer.from([0x0a, ...len]), Buffer.alloc(n, 0x78)]);
  const head = Buffer.alloc(5);
  head.writeUInt8(0, 0); // not compressed
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/** A JSON array of objects padded to exactly `n` bytes. */
export function jsonBody(n: number): Buffer {
  const items: string[] = [];
  let s = '';
  for (let i = 0; ; i++) {
    const next = `[${[...items, `{"id":${i},"name":"item-${i}"}`].join(',')}]`;
    if (next.length > n - 16) break;
    items.push(`{"id":${i},"name":"item-${i}"}`);
    s = next;
  }
  const pad = n - s.length - `,{"pad":""}`.length;
  return Buffer.from(`${s.slice(0, -1)},{"pad":"${'x'.repeat(Math.max(0, pad))}"}]`);
}
