/**
 * HTTP/2 wire constants (RFC 9113 §6, §7, §11) for ward's own client connection (`conn.ts`).
 * Plain `const`s, not an enum: the code runs as erasable TypeScript.
 */

export const FRAME_HEADER = 9;

// Frame types (§6).
export const DATA = 0x0;
export const HEADERS = 0x1;
export const PRIORITY = 0x2;
export const RST_STREAM = 0x3;
export const SETTINGS = 0x4;
export const PUSH_PROMISE = 0x5;
export const PING = 0x6;
export const GOAWAY = 0x7;
export const WINDOW_UPDATE = 0x8;
export const CONTINUATION = 0x9;

// Flags.
export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

// Error codes (§7).
export const NO_ERROR = 0x0;
export const PROTOCOL_ERROR = 0x1;
export const INTERNAL_ERROR = 0x2;
export const FLOW_CONTROL_ERROR = 0x3;
export const STREAM_CLOSED = 0x5;
export const FRAME_SIZE_ERROR = 0x6;
export const REFUSED_STREAM = 0x7;
export const CANCEL = 0x8;
export const COMPRESSION_ERROR = 0x9;
export const ENHANCE_YOUR_CALM = 0xb;

// Settings (§6.5.2).
export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

export const DEFAULT_WINDOW = 65_535;
export const DEFAULT_MAX_FRAME = 16_384;
export const MAX_WINDOW = 0x7fff_ffff;
export const MAX_FRAME_LIMIT = 0xff_ffff;

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Writes a frame header at `off` in `buf`. */
export function writeFrameHeader(buf: Buffer, off: number, length: number, type: number, flags: number, streamId: number): void {
  buf[off] = length >>> 16;
  buf[off + 1] = (length >>> 8) & 0xff;
  buf[off + 2] = length & 0xff;
  buf[off + 3] = type;
  buf[off + 4] = flags;
  buf.writeUInt32BE(streamId, off + 5);
}

/** A frame with a small fixed payload (settings, ping, window update, reset, goaway). */
export function frame(type: number, flags: number, streamId: number, payload: Buffer | null): Buffer {
  const n = payload === null ? 0 : payload.length;
  const out = Buffer.allocUnsafe(FRAME_HEADER + n);
  writeFrameHeader(out, 0, n, type, flags, streamId);
  if (payload !== null) payload.copy(out, FRAME_HEADER);
  return out;
}

export function u32Frame(type: number, streamId: number, value: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4);
  writeFrameHeader(out, 0, 4, type, 0, streamId);
  out.writeUInt32BE(value, FRAME_HEADER);
  return out;
}

export function settingsFrame(pairs: readonly (readonly [number, number])[]): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 6 * pairs.length);
  writeFrameHeader(out, 0, 6 * pairs.length, SETTINGS, 0, 0);
  let off = FRAME_HEADER;
  for (const [id, value] of pairs) {
    out.writeUInt16BE(id, off);
    out.writeUInt32BE(value, off + 2);
    off += 6;
  }
  return out;
}

export function goawayFrame(lastStreamId: number, code: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 8);
  writeFrameHeader(out, 0, 8, GOAWAY, 0, 0);
  out.writeUInt32BE(lastStreamId, FRAME_HEADER);
  out.writeUInt32BE(code, FRAME_HEADER + 4);
  return out;
}

/**
 * Received bytes that do not yet make a whole frame, kept as the chunks they came in and copied
 * once, when the frame is complete: a peer that drips a 16 KiB frame a byte per packet costs
 * O(n), where concatenating on every read would cost O(n²).
 */
export class FrameAssembler {
  #parts: Buffer[] = [];
  #len = 0;
  /** Octets the first pending frame needs in all (0: its header is not complete yet). */
  #need = 0;
  readonly #maxFrame: number;

  constructor(maxFrame: number) {
    this.#maxFrame = maxFrame;
  }

  /**
   * Adds a chunk. Returns bytes that start at a frame boundary - the chunk itself when nothing
   * was pending; otherwise at least one whole frame, or a header announcing a frame over the
   * limit for the caller to refuse - or null while the pending frame is still incomplete.
   * Whatever the caller cannot parse goes back through `keep`.
   */
  push(chunk: Buffer): Buffer | null {
    if (this.#len === 0) return chunk;
    this.#parts.push(chunk);
    this.#len += chunk.length;
    if (this.#need === 0) {
      if (this.#len < FRAME_HEADER) return null;
      const n = this.#byte(0) * 65536 + this.#byte(1) * 256 + this.#byte(2);
      if (n > this.#maxFrame) return this.#take();
      this.#need = FRAME_HEADER + n;
    }
    return this.#len < this.#need ? null : this.#take();
  }

  /** The unparsed tail of what `push` returned (a partial frame). */
  keep(rest: Buffer): void {
    this.#parts = [rest];
    this.#len = rest.length;
    this.#need = 0;
    if (rest.length >= FRAME_HEADER) this.#need = FRAME_HEADER + (rest[0] as number) * 65536 + (rest[1] as number) * 256 + (rest[2] as number);
  }

  #take(): Buffer {
    const buf = this.#parts.length === 1 ? (this.#parts[0] as Buffer) : Buffer.concat(this.#parts, this.#len);
    this.#parts = [];
    this.#len = 0;
    this.#need = 0;
    return buf;
  }

  #byte(i: number): number {
    for (const p of this.#parts) {
      if (i < p.length) return p[i] as number;
      i -= p.length;
    }
    return 0;
  }
}
