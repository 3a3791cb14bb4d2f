/**
 * HPACK (RFC 7541) for ward's own HTTP/2 client connection.
 *
 * The decoder is complete (static and dynamic tables, Huffman, size updates) because the peer
 * chooses how to encode. The encoder is deliberately minimal: static-table references and
 * literals without indexing, never Huffman, never the dynamic table. That costs a few bytes per
 * request but keeps it stateless, and no header value can leak through the compression context
 * (the CRIME/HPACK class of attacks needs indexing). The peer's decoder still assumes a table
 * until told otherwise, so a connection's first block announces a size of 0
 * (`H2Endpoint.writeHeaders`); after that the peer's SETTINGS_HEADER_TABLE_SIZE does not matter.
 *
 * Field lists are flat `[name, value, name, value, ...]` arrays of byte (latin1) strings: one
 * char per octet, as Node's http2 module hands them out.
 */
import { HuffmanError, huffmanDecode } from './huffman.ts';

/**
 * `ERR_HPACK_COMPRESSION`: the block is malformed; the decoder's table can no longer be trusted,
 * so the connection must end with COMPRESSION_ERROR (RFC 9113 §4.3).
 * `ERR_HPACK_HEADER_LIST_TOO_LARGE`: the whole block was decoded and the table is in step with
 * the peer's, but the list is over maxHeaderListSize; only the stream need be refused.
 */
export type HpackErrorCode = 'ERR_HPACK_COMPRESSION' | 'ERR_HPACK_HEADER_LIST_TOO_LARGE' | 'ERR_HPACK_FIELD_INVALID';

export class HpackError extends Error {
  readonly code: HpackErrorCode;

  constructor(code: HpackErrorCode, message: string) {
    super(message);
    this.name = 'HpackError';
    this.code = code;
  }
}

function malformed(message: string): HpackError {
  return new HpackError('ERR_HPACK_COMPRESSION', message);
}

// Appendix A; index 0 is not an entry (§6.1 makes it an error).
const STATIC_NAMES: readonly string[] = [
  '', ':authority', ':method', ':method', ':path', ':path', ':scheme', ':scheme', ':status', ':status', ':status',
  ':status', ':status', ':status', ':status', 'accept-charset', 'accept-encoding', 'accept-language', 'accept-ranges',
  'accept', 'access-control-allow-origin', 'age', 'allow', 'authorization', 'cache-control', 'content-disposition',
  'content-encoding', 'content-language', 'content-length', 'content-location', 'content-range', 'content-type',
  'cookie', 'date', 'etag', 'expect', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match',
  'if-range', 'if-unmodified-since', 'last-modified', 'link', 'location', 'max-forwards', 'proxy-authenticate',
  'proxy-authorization', 'range', 'referer', 'refresh', 'retry-after', 'server', 'set-cookie',
  'strict-transport-security', 'transfer-encoding', 'user-agent', 'vary', 'via', 'www-authenticate',
];
const STATIC_VALUES: readonly string[] = [
  '', '', 'GET', 'POST', '/', '/index.html', 'http', 'https', '200', '204', '206', '304', '400', '404', '500', '',
  'gzip, deflate',
];
const STATIC_COUNT = 61;

// Name -> lowest static index with that name. Entries sharing a name are adjacent, so the encoder
// finds an exact (name, value) match by scanning forward from here - at most 7 string compares
// (`:status`) and, unlike a `name + '\0' + value` key, no string built per field.
const STATIC_NAME_INDEX = new Map<string, number>();
for (let i = STATIC_COUNT; i >= 1; i--) STATIC_NAME_INDEX.set(STATIC_NAMES[i]!, i);

const ENTRY_OVERHEAD = 32;
/** Huffman strings this long or longer (and up to MEMO_MAX) are remembered by the decoder. */
const MEMO_MIN = 64;
const MEMO_MAX = 16_384; // §4.1, also RFC 9113 §6.5.2 for the header list size
const MAX_INT = 0x7fff_ffff;

/**
 * On a field list: the names sent as never-indexed literals (RFC 7541 §6.2.3). The decoders put
 * it on what they decode when any name was; the encoders honour it on what they encode, so a
 * field a peer marked never-indexed is forwarded never-indexed, as §6.2.3 requires of an
 * intermediary.
 */
export const kSensitive: unique symbol = Symbol('ward.h2.sensitive');

/** The never-indexed names carried by a field list (`kSensitive`), if any. */
export function sensitiveOf(fields: readonly string[]): readonly string[] | undefined {
  return (fields as { [kSensitive]?: readonly string[] })[kSensitive];
}

/** Marks `names` as never-indexed on `fields` (none: nothing is set). */
export function markSensitive(fields: readonly string[], names: readonly string[] | undefined): void {
  if (names !== undefined && names.length > 0) (fields as { [kSensitive]?: readonly string[] })[kSensitive] = names;
}

export interface HpackDecoderOptions {
  /** Our SETTINGS_HEADER_TABLE_SIZE: the most the peer may size the dynamic table to. Default 4096. */
  readonly maxTableSize?: number;
  /** Our SETTINGS_MAX_HEADER_LIST_SIZE (sum of name + value + 32 per field). Default 65536. */
  readonly maxHeaderListSize?: number;
}

function checkLimit(what: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > MAX_INT) throw new RangeError(`${what}: an integer from 0 to 2^31-1, got ${v}`);
  return v;
}

/**
 * One connection's decoding context. The dynamic table lives as long as the decoder, so use one
 * per connection and feed it every header block in the order the frames arrived.
 */
export class HpackDecoder {
  readonly #maxTableSize: number;
  readonly #maxListSize: number;
  /** The dynamic table's current maximum, as last set by the peer (§4.2); at most #maxTableSize. */
  #limit: number;
  #size = 0;
  // The dynamic table: a ring of `#count` entries, newest at `#head`; capacity is a power of two
  // and only grows (an entry takes at least 32 octets, so it stays under limit / 32 + 1).
  #names: string[] = new Array<string>(16).fill('');
  #values: string[] = new Array<string>(16).fill('');
  #mask = 15;
  #head = 0;
  #count = 0;
  /** Read position within the block being decoded. */
  #pos = 0;
  /** The last long Huffman string: its encoded octets (a copy) and its text. */
  #memo: Buffer | null = null;
  #memoText = '';

  constructor(opts: HpackDecoderOptions = {}) {
    this.#maxTableSize = checkLimit('maxTableSize', opts.maxTableSize ?? 4096);
    this.#maxListSize = checkLimit('maxHeaderListSize', opts.maxHeaderListSize ?? 65_536);
    this.#limit = this.#maxTableSize;
  }

  /** Octets the dynamic table holds now (§4.1). */
  get tableSize(): number {
    return this.#size;
  }

  /** The dynamic table's maximum size as last set by the peer (§6.3). */
  get tableLimit(): number {
    return this.#limit;
  }

  /**
   * Decodes the complete header block `block[start, end)` (HEADERS plus any CONTINUATIONs),
   * pushing `name, value` pairs onto `out` in order, and the names of never-indexed fields
   * (§6.2.3; a proxy must keep them never-indexed when it forwards them) onto `sensitive`.
   * Throws `HpackError` on any malformed block; `out` then holds a partial list to discard.
   */
  decode(block: Buffer, start: number, end: number, out: string[], sensitive?: string[]): void {
    if (!(start >= 0 && start <= end && end <= block.length)) throw new RangeError(`decode: bad range [${start}, ${end})`);
    this.#pos = start;
    let listSize = 0;
    let fields = false;
    let tooLarge = false;
    while (this.#pos < end) {
      const b = block[this.#pos]!;
      let name: string;
      let value: string;
      if (b >= 0x80) {
        // §6.1 Indexed Header Field
        const index = this.#int(block, end, 7);
        if (index === 0) throw malformed('indexed field with index 0');
        if (index <= STATIC_COUNT) {
          name = STATIC_NAMES[index]!;
          value = STATIC_VALUES[index] ?? '';
        } else {
          const slot = this.#slot(index);
          name = this.#names[slot]!;
          value = this.#values[slot]!;
        }
      } else if (b >= 0x40) {
        // §6.2.1 Literal Header Field with Incremental Indexing
        const index = this.#int(block, end, 6);
        name = index === 0 ? this.#string(block, end) : this.#name(index);
        value = this.#string(block, end);
        this.#insert(name, value);
      } else if (b >= 0x20) {
        // §6.3 Dynamic Table Size Update: §4.2 allows it only at the start of a block.
        if (fields) throw malformed('dynamic table size update after a header field');
        const size = this.#int(block, end, 5);
        if (size > this.#maxTableSize) throw malformed(`dynamic table size update to ${size}, above our ${this.#maxTableSize}`);
        this.#limit = size;
        this.#evict(0);
        continue;
      } else {
        // §6.2.2 Literal without Indexing (0000) and §6.2.3 Never Indexed (0001)
        const index = this.#int(block, end, 4);
        name = index === 0 ? this.#string(block, end) : this.#name(index);
        value = this.#string(block, end);
        if (b >= 0x10 && sensitive !== undefined && !tooLarge) sensitive.push(name);
      }
      fields = true;
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      // Past the limit, keep decoding (not keeping) the rest: the peer's later blocks index
      // into what this one inserts, so stopping here would desynchronise the connection.
      if (listSize > this.#maxListSize) tooLarge = true;
      if (!tooLarge) out.push(name, value);
    }
    if (tooLarge) {
      throw new HpackError('ERR_HPACK_HEADER_LIST_TOO_LARGE', `header list of ${listSize} octets is over ${this.#maxListSize}`);
    }
  }

  /** §5.1: an integer with an `n`-bit prefix at #pos. Bounded to 2^31-1 and 5 continuation octets. */
  #int(block: Buffer, end: number, n: number): number {
    let p = this.#pos;
    if (p >= end) throw malformed('truncated integer');
    const max = (1 << n) - 1;
    let v = block[p++]! & max;
    if (v === max) {
      for (let shift = 0; ; shift += 7) {
        // 5 continuation octets carry 35 bits: enough for 2^31-1; more is only zero padding.
        if (shift > 28) throw malformed('integer encoding too long');
        if (p >= end) throw malformed('truncated integer');
        const c = block[p++]!;
        v += (c & 0x7f) * 2 ** shift;
        if (v > MAX_INT) throw malformed('integer above 2^31-1');
        if (c < 0x80) break;
      }
    }
    this.#pos = p;
    return v;
  }

  /** §5.2: a string literal at #pos, raw octets as latin1 or Huffman-decoded. */
  #string(block: Buffer, end: number): string {
    if (this.#pos >= end) throw malformed('truncated string');
    const huffman = block[this.#pos]! >= 0x80;
    const len = this.#int(block, end, 7);
    const s = this.#pos;
    if (len > end - s) throw malformed('truncated string');
    this.#pos = s + len;
    if (!huffman) return block.toString('latin1', s, s + len);
    // A client that sends the same long value in every request without indexing it (h2load,
    // curl and other nghttp2 clients do so for a ~700-byte `authorization`) would have it
    // Huffman-decoded every time (~3 µs): the last long one is remembered and compared instead.
    const memo = len >= MEMO_MIN ? this.#memo : null;
    if (memo !== null && memo.length === len && block.compare(memo, 0, len, s, s + len) === 0) return this.#memoText;
    try {
      const text = huffmanDecode(block, s, s + len);
      if (len >= MEMO_MIN && len <= MEMO_MAX) {
        this.#memo = Buffer.from(block.subarray(s, s + len));
        this.#memoText = text;
      }
      return text;
    } catch (err) {
      if (err instanceof HuffmanError) throw malformed(err.message);
      throw err;
    }
  }

  #name(index: number): string {
    return index <= STATIC_COUNT ? STATIC_NAMES[index]! : this.#names[this.#slot(index)]!;
  }

  /** Ring slot of dynamic-table entry `index` (§2.3.3: 62 is the newest). */
  #slot(index: number): number {
    const d = index - STATIC_COUNT;
    if (d > this.#count) throw malformed(`index ${index} is past the table (${STATIC_COUNT + this.#count} entries)`);
    return (this.#head - d + 1) & this.#mask;
  }

  /** §4.4: evict until the entry fits; an entry larger than the table empties it and is not added. */
  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    if (size > this.#limit) {
      this.#evict(this.#limit + 1);
      return;
    }
    this.#evict(size);
    if (this.#count > this.#mask) this.#grow();
    this.#head = (this.#head + 1) & this.#mask;
    this.#names[this.#head] = name;
    this.#values[this.#head] = value;
    this.#count++;
    this.#size += size;
  }

  /** Drops the oldest entries until `room` more octets fit under the limit. */
  #evict(room: number): void {
    while (this.#count > 0 && this.#size + room > this.#limit) {
      const tail = (this.#head - this.#count + 1) & this.#mask;
      this.#size -= this.#names[tail]!.length + this.#values[tail]!.length + ENTRY_OVERHEAD;
      this.#names[tail] = '';
      this.#values[tail] = '';
      this.#count--;
    }
  }

  #grow(): void {
    const cap = (this.#mask + 1) * 2;
    const names = new Array<string>(cap).fill('');
    const values = new Array<string>(cap).fill('');
    // Oldest first, so the newest lands at count - 1.
    for (let i = 0; i < this.#count; i++) {
      const slot = (this.#head - this.#count + 1 + i) & this.#mask;
      names[i] = this.#names[slot]!;
      values[i] = this.#values[slot]!;
    }
    this.#names = names;
    this.#values = values;
    this.#mask = cap - 1;
    this.#head = this.#count - 1;
  }
}

export interface HpackEncoderOptions {
  /**
   * Names sent as Never Indexed (§6.2.3), so intermediaries that re-encode keep them out of
   * their dynamic tables (§7.1.3). Default: authorization, proxy-authorization, cookie.
   */
  readonly neverIndex?: Iterable<string>;
}

const DEFAULT_NEVER_INDEX = ['authorization', 'proxy-authorization', 'cookie'];

/** Octets of a §5.1 integer with an `n`-bit prefix. */
function intLength(v: number, n: number): number {
  const max = (1 << n) - 1;
  if (v < max) return 1;
  let len = 2;
  for (v -= max; v >= 0x80; v >>>= 7) len++;
  return len;
}

/** Writes a §5.1 integer with an `n`-bit prefix, `first` holding the pattern bits above it. */
function writeInt(buf: Buffer, p: number, n: number, first: number, v: number): number {
  const max = (1 << n) - 1;
  if (v < max) {
    buf[p++] = first | v;
    return p;
  }
  buf[p++] = first | max;
  for (v -= max; v >= 0x80; v >>>= 7) buf[p++] = (v & 0x7f) | 0x80;
  buf[p++] = v;
  return p;
}

/** What a field may not carry (RFC 9113 §8.2.1: NUL, CR, LF) or cannot be one octet per char. */
// eslint-disable-next-line no-control-regex -- the control chars are the point: which ones a field may hold
const UNSENDABLE = /[^\x01-\x09\x0b\x0c\x0e-\xff]/;

/**
 * Long strings found sendable, four of them. A proxy forwards the same long values call after
 * call - the caller's token, which the decoder hands back as the same string (its memo and
 * dynamic table), and the identity claims of a verified token - so a compare replaces a scan of
 * hundreds of chars. Replacement is CLOCK (second chance): a slot hit since the hand last passed
 * is kept, so values new on every call (a `traceparent`) take the other slots instead of evicting
 * the token and the claims. With one slot, those two evicted each other and both were scanned
 * on every call; with four replaced in turn, the per-call values pushed them out.
 */
const sendable: string[] = ['', '', '', ''];
/** Bit i: slot i was hit since the hand last passed it. */
let sendableHit = 0;
let sendableHand = 0;

function knownSendable(s: string): boolean {
  for (let i = 0; i < 4; i++) {
    if (s === sendable[i]) {
      sendableHit |= 1 << i;
      return true;
    }
  }
  return false;
}

function rememberSendable(s: string): void {
  while ((sendableHit & (1 << sendableHand)) !== 0) {
    sendableHit &= ~(1 << sendableHand);
    sendableHand = (sendableHand + 1) & 3;
  }
  sendable[sendableHand] = s;
  sendableHand = (sendableHand + 1) & 3;
}

/**
 * A raw (non-Huffman) string literal: length, then one octet per char. A char that is not one
 * octet, or NUL/CR/LF, throws an HpackError (`ERR_HPACK_FIELD_INVALID`) instead of being
 * silently cut to its low byte: the caller refuses the request.
 */
function writeString(buf: Buffer, p: number, s: string): number {
  const len = s.length;
  p = writeInt(buf, p, 7, 0x00, len);
  // Short strings (most header names and values) are cheaper as a loop than as a call into
  // the native latin1 writer.
  if (len < 32) {
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c > 0xff || c === 0 || c === 0x0a || c === 0x0d) throw new HpackError('ERR_HPACK_FIELD_INVALID', 'a header field holds a char HTTP/2 cannot carry');
      buf[p + i] = c;
    }
  } else {
    if (!knownSendable(s)) {
      if (UNSENDABLE.test(s)) throw new HpackError('ERR_HPACK_FIELD_INVALID', 'a header field holds a char HTTP/2 cannot carry');
      rememberSendable(s);
    }
    buf.write(s, p, len, 'latin1');
  }
  return p + len;
}

/**
 * A stateless request encoder: static-table matches are indexed (§6.1), static names are
 * referenced (§6.2.2), everything else is a literal with a new name; nothing is Huffman-coded
 * or added to the dynamic table. Names must already be lowercase (RFC 9113 §8.2.1) and every
 * char of a name or value is written as one octet (its low 8 bits).
 */
export class HpackEncoder {
  readonly #neverIndex: ReadonlySet<string>;
  /** The never-indexed pattern (0x10 or 0) per static name index: spares static names the set lookup. */
  readonly #staticPattern = new Uint8Array(STATIC_COUNT + 1);

  constructor(opts: HpackEncoderOptions = {}) {
    this.#neverIndex = new Set(opts.neverIndex ?? DEFAULT_NEVER_INDEX);
    for (let i = 1; i <= STATIC_COUNT; i++) this.#staticPattern[i] = this.#neverIndex.has(STATIC_NAMES[i]!) ? 0x10 : 0x00;
  }

  /** An upper bound on the octets `encode(fields, ...)` writes. */
  maxEncodedLength(fields: readonly string[]): number {
    let n = 0;
    for (let i = 0; i < fields.length; i++) {
      const len = fields[i]!.length;
      // The pattern octet (per field), then each string's length prefix and octets; a static
      // name reference (at most 2 octets) is never longer than a literal name (at least 1 + 1).
      n += (i & 1) === 0 ? 1 : 0;
      n += intLength(len, 7) + len;
    }
    return n;
  }

  /**
   * Writes the header block for flat `fields` into `buf` at `offset`; returns the end offset.
   * `buf` needs `maxEncodedLength(fields)` octets from `offset` (a RangeError otherwise).
   */
  encode(fields: readonly string[], buf: Buffer, offset: number): number {
    if ((fields.length & 1) !== 0) throw new RangeError('encode: fields must be name, value pairs');
    const sensitive = sensitiveOf(fields);
    let p = offset;
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i]!;
      const value = fields[i + 1]!;
      // The same per-field bound as maxEncodedLength, so a buffer sized by it always suffices.
      const need = 1 + intLength(name.length, 7) + name.length + intLength(value.length, 7) + value.length;
      if (p + need > buf.length) throw new RangeError('encode: buffer too small');
      const index = STATIC_NAME_INDEX.get(name);
      if (sensitive !== undefined && sensitive.includes(name)) {
        // Never indexed because the field came so: a literal, the name by reference if static.
        if (index === undefined) {
          buf[p++] = 0x10;
          p = writeString(buf, p, name);
        } else p = writeInt(buf, p, 4, 0x10, index);
        p = writeString(buf, p, value);
        continue;
      }
      if (index === undefined) {
        buf[p++] = this.#neverIndex.has(name) ? 0x10 : 0x00;
        p = writeString(buf, p, name);
        p = writeString(buf, p, value);
        continue;
      }
      let exact = 0;
      for (let j = index; j <= STATIC_COUNT && STATIC_NAMES[j] === name; j++) {
        if ((STATIC_VALUES[j] ?? '') === value) {
          exact = j;
          break;
        }
      }
      if (exact !== 0) {
        p = writeInt(buf, p, 7, 0x80, exact);
      } else {
        p = writeInt(buf, p, 4, this.#staticPattern[index]!, index);
        p = writeString(buf, p, value);
      }
    }
    return p;
  }
}

/** A flat field list `[name, value, ...]` from `from` on, as a header object (repeated names become arrays). */
export function fieldRecord(fields: readonly string[], from: number): Record<string, string | string[]> {
  const out = Object.create(null) as Record<string, string | string[]>;
  for (let i = from; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const v = fields[i + 1] as string;
    const prev = out[name];
    if (prev === undefined) out[name] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[name] = [prev, v];
  }
  return out;
}

/** Name octets a field name may hold (RFC 9110 tchar), lower case only (RFC 9113 §8.2.1). */
const NAME_OK = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_OK[c.charCodeAt(0)] = 1;

/** Whether `name` from octet `from` on is a valid HTTP/2 field name: non-empty, lower-case tchar. */
export function validName(name: string, from: number): boolean {
  const n = name.length;
  if (n === from) return false;
  for (let i = from; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_OK[c] !== 1) return false;
  }
  return true;
}

const BAD_VALUE_CHAR = /[\0\r\n]/;

/**
 * A check of field values per RFC 9113 §8.2.1: no NUL, CR or LF; no leading or trailing
 * whitespace. Each checker remembers the last long value it passed: a peer repeats its long
 * values (a client its token) on every message, and each direction keeps its own.
 */
export function valueChecker(): (v: string) => boolean {
  let lastValidLong = '';
  return (v: string): boolean => {
    const n = v.length;
    if (n === 0) return true;
    const first = v.charCodeAt(0);
    const last = v.charCodeAt(n - 1);
    if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return false;
    // Long values (a token) are scanned by the regexp engine: several times faster than a loop.
    if (n > 32) {
      if (v === lastValidLong) return true;
      if (BAD_VALUE_CHAR.test(v)) return false;
      lastValidLong = v;
      return true;
    }
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c === 0 || c === 0x0a || c === 0x0d) return false;
    }
    return true;
  };
}
