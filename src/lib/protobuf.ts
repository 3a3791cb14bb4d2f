/**
 * A small protobuf writer for the messages ward writes itself: the OTLP spans, decision records
 * and metrics (src/telemetry) and the control-plane policy stream's requests
 * (src/controlplane/wire.ts). Append-only
 * into one growable, reused `Buffer`, no object per field. Length-delimited fields are written
 * body first with a one-byte length slot that is widened afterwards only when the body reached
 * 128 bytes (one `copyWithin`), so nothing is measured twice.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const TWO_32 = 4_294_967_296;

/** Hex digit values by character code (0 for anything else). */
const HEX = new Uint8Array(128);
for (let i = 0; i < 10; i++) HEX[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[0x61 + i] = 10 + i;
  HEX[0x41 + i] = 10 + i;
}

/** Bytes of `n` (0 <= n < 2^53) as a varint. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

export class PbWriter {
  buf: Buffer;
  pos = 0;

  constructor(initialSize = 4096) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  reset(): void {
    this.pos = 0;
  }

  /** Room for `n` more bytes. */
  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** An unsigned varint, 0 <= n < 2^53. */
  varint(n: number): void {
    this.ensure(10);
    const b = this.buf;
    let p = this.pos;
    while (n >= 0x80) {
      b[p++] = (n & 0x7f) | 0x80;
      n = n >= TWO_32 ? Math.floor(n / 128) : n >>> 7;
    }
    b[p++] = n;
    this.pos = p;
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  uint(field: number, n: number): void {
    this.tag(field, WIRE_VARINT);
    this.varint(n);
  }

  /** A signed int64 field from a JS number (two's complement varint for negatives). */
  int64(field: number, n: number): void {
    this.tag(field, WIRE_VARINT);
    if (n >= 0) {
      this.varint(n);
      return;
    }
    // negative: 10 bytes, two's complement of a 64-bit value
    const big = BigInt.asUintN(64, BigInt(Math.trunc(n)));
    this.ensure(10);
    let v = big;
    for (let i = 0; i < 9; i++) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  bool(field: number, v: boolean): void {
    this.tag(field, WIRE_VARINT);
    this.ensure(1);
    this.buf[this.pos++] = v ? 1 : 0;
  }

  double(field: number, v: number): void {
    this.tag(field, WIRE_I64);
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  fixed32(field: number, v: number): void {
    this.tag(field, WIRE_I32);
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
  }

  /** 8 little-endian bytes from two 32-bit halves (each taken mod 2^32). */
  #u64(lo: number, hi: number): void {
    this.ensure(8);
    this.buf.writeUInt32LE(lo >>> 0, this.pos);
    this.buf.writeUInt32LE(hi >>> 0, this.pos + 4);
    this.pos += 8;
  }

  /**
   * A `fixed64` field from a whole number 0 <= n < 2^64 (exact beyond 2^53: each 32-bit half is
   * taken separately). A fraction is dropped. Each half is `ToUint32` of its part, the operations
   * of @opentelemetry/otlp-transformer's `writeFixed64(n >>> 0, n / 2^32 >>> 0)`, so that even a
   * meaningless input (a negative count) gives the same bytes as the SDK's exporter.
   */
  fixed64(field: number, n: number): void {
    this.tag(field, WIRE_I64);
    this.#u64(n >>> 0, n / TWO_32);
  }

  /**
   * An `sfixed64` field: trunc(n) as a 64-bit two's complement integer, modulo 2^64 (so 2^63
   * reads back as -2^63); NaN and ±Infinity are written as 0. Exact for every double, as the
   * 32-bit halves of |n| are taken separately.
   */
  sfixed64(field: number, n: number): void {
    this.tag(field, WIRE_I64);
    const abs = Math.abs(n);
    let lo = abs >>> 0;
    let hi = (abs / TWO_32) >>> 0;
    if (n < 0) {
      // -x = ~x + 1, the carry out of the low half going into the high one
      lo = (~lo + 1) >>> 0;
      hi = ~hi + (lo === 0 ? 1 : 0);
    }
    this.#u64(lo, hi);
  }

  /**
   * A `fixed64` nanosecond timestamp from an OTel `HrTime` (`[seconds, nanoseconds]`), exact
   * (modulo 2^64, as the field is) without BigInt for whole seconds below 2^39 and whole
   * nanoseconds: seconds·10^9 is split as (seconds mod 2^16)·10^9 + floor(seconds / 2^16)·10^9·2^16,
   * each product below 2^53, and the carry between the 32-bit halves is done by hand. These are
   * the operations of @opentelemetry/otlp-transformer's `writeHrTimeAsFixed64`, in its order, so
   * that input no clock gives (negative, fractional) still yields the same bytes as the SDK's
   * exporter.
   */
  hrTimeNanos(field: number, seconds: number, nanos: number): void {
    this.tag(field, WIRE_I64);
    const low = (seconds & 0xffff) * 1e9; // < 2^46
    const high = ((seconds / 65536) >>> 0) * 1e9; // to be multiplied by 2^16
    const lo = (low >>> 0) + (((high & 0xffff) * 65536) >>> 0) + nanos;
    const hi = Math.floor(low / TWO_32) + ((high / 65536) >>> 0) + Math.floor(lo / TWO_32);
    this.#u64(lo, hi);
  }

  /** A packed `repeated fixed64` field (each value as `fixed64` writes it); nothing when empty. */
  packedFixed64(field: number, values: readonly number[]): void {
    if (values.length === 0) return;
    this.tag(field, WIRE_LEN);
    this.varint(values.length * 8);
    for (const n of values) this.#u64(n >>> 0, n / TWO_32);
  }

  /** A packed `repeated double` field; nothing when empty. */
  packedDouble(field: number, values: readonly number[]): void {
    if (values.length === 0) return;
    this.tag(field, WIRE_LEN);
    this.varint(values.length * 8);
    this.ensure(values.length * 8);
    for (const v of values) {
      this.buf.writeDoubleLE(v, this.pos);
      this.pos += 8;
    }
  }

  /**
   * A `fixed64` nanosecond timestamp from milliseconds since the epoch (fractional), exact to the
   * nanosecond without BigInt: seconds × 10^9 is split into 32-bit halves by hand.
   */
  timeNanos(field: number, ms: number): void {
    this.tag(field, WIRE_I64);
    this.ensure(8);
    if (!(ms > 0)) {
      this.buf.writeUInt32LE(0, this.pos);
      this.buf.writeUInt32LE(0, this.pos + 4);
      this.pos += 8;
      return;
    }
    const secs = Math.floor(ms / 1000);
    const ns = Math.min(999_999_999, Math.round((ms - secs * 1000) * 1e6));
    // total = secs·1e9 + ns = (sHi·1e9)·2^16 + sLo·1e9 + ns
    const a = Math.floor(secs / 65536) * 1e9; // < 2^46
    const aHi = Math.floor(a / 65536);
    const low = (a % 65536) * 65536 + (secs % 65536) * 1e9 + ns; // < 2^48
    const lo32 = low % TWO_32;
    const hi32 = aHi + Math.floor(low / TWO_32);
    this.buf.writeUInt32LE(lo32, this.pos);
    this.buf.writeUInt32LE(hi32 >>> 0, this.pos + 4);
    this.pos += 8;
  }

  /** A string field (UTF-8). Short ASCII strings are copied in JS: cheaper than a call into C++. */
  string(field: number, s: string): void {
    this.tag(field, WIRE_LEN);
    const n = s.length;
    if (n < 128) {
      this.ensure(1 + n * 3);
      const b = this.buf;
      const at = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[at + 1 + i] = c;
      }
      if (i === n) {
        b[at] = n;
        this.pos = at + 1 + n;
        return;
      }
    }
    const len = Buffer.byteLength(s, 'utf8');
    this.varint(len);
    this.ensure(len);
    this.pos += this.buf.write(s, this.pos, len, 'utf8');
  }

  /** A bytes field from lower-case hex (trace and span ids; the caller checked the digits). */
  hexBytes(field: number, hex: string): void {
    this.tag(field, WIRE_LEN);
    const len = hex.length >>> 1;
    this.varint(len);
    this.ensure(len);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < hex.length; i += 2) b[p++] = (HEX[hex.charCodeAt(i)] as number) * 16 + (HEX[hex.charCodeAt(i + 1)] as number);
    this.pos = p;
  }

  /** Raw bytes, already encoded (a prebuilt message part). */
  raw(bytes: Uint8Array): void {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** Starts a length-delimited field; returns the mark to pass to `end`. */
  begin(field: number): number {
    this.tag(field, WIRE_LEN);
    this.ensure(1);
    return this.pos++;
  }

  /** Ends the field started at `mark`: writes its length, widening the slot if needed. */
  end(mark: number): void {
    const len = this.pos - mark - 1;
    if (len < 0x80) {
      this.buf[mark] = len;
      return;
    }
    const extra = varintSize(len) - 1;
    this.ensure(extra);
    this.buf.copyWithin(mark + 1 + extra, mark + 1, this.pos);
    this.pos += extra;
    let p = mark;
    let n = len;
    while (n >= 0x80) {
      this.buf[p++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    this.buf[p] = n;
  }

  /** A copy of what was written. */
  bytes(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}

export { WIRE_LEN };
