import { randomFillSync } from 'node:crypto';
import type { Envelope } from './export.ts';
import { PbWriter, WIRE_LEN } from '../lib/protobuf.ts';

/**
 * OTLP protobuf for ward's spans and decision log records, written field by field straight into
 * the export batch (export.ts `EncodedQueue`): no SDK `Span`/`LogRecord` object, no attribute map
 * and no second serialization pass per call. Only what ward emits is supported: string, integer
 * and boolean attributes, one status, no events or links.
 *
 * Field numbers: opentelemetry/proto/{common,resource,trace,logs}/v1/*.proto (vendored in
 * proto/opentelemetry); the tests decode what is written here with those files.
 */

/** Longest attribute value kept (characters), as the SDK's `attributeValueLengthLimit` was set. */
export const MAX_ATTRIBUTE_LENGTH = 1024;

/** OTLP `SpanKind`. */
export const KIND_SERVER = 2;
export const KIND_CLIENT = 3;
/** OTLP `Status.StatusCode.STATUS_CODE_ERROR`. */
const STATUS_ERROR = 2;
/** OTLP `SpanFlags`: the context's is-remote bit is known, and is set. */
const FLAG_HAS_IS_REMOTE = 0x100;
const FLAG_IS_REMOTE = 0x200;

// ---- common.proto

/** `KeyValue { 1: key, 2: AnyValue { 1: string_value } }` as field `field`. */
export function attrString(w: PbWriter, field: number, key: string, value: string): void {
  const m = w.begin(field);
  w.string(1, key);
  const v = w.begin(2);
  w.string(1, value.length <= MAX_ATTRIBUTE_LENGTH ? value : value.slice(0, MAX_ATTRIBUTE_LENGTH));
  w.end(v);
  w.end(m);
}

/** `KeyValue { 1: key, 2: AnyValue { 3: int_value } }`. */
export function attrInt(w: PbWriter, field: number, key: string, value: number): void {
  const m = w.begin(field);
  w.string(1, key);
  const v = w.begin(2);
  w.int64(3, value);
  w.end(v);
  w.end(m);
}

/** Largest number of values one `KeyValueCache` holds before it starts over. */
const CACHE_VALUES = 512;
const scratch = new PbWriter(2048);

/**
 * Encoded `KeyValue`s of one attribute key whose values repeat from call to call (service,
 * decision, rule, policy version, issuer, gRPC method...): each value is encoded once and then
 * copied, instead of being written byte by byte on every call. Bounded: a cache that reaches
 * 512 values starts over, so values that do not repeat (an attacker's paths) cost nothing more
 * than encoding them directly.
 */
export class KeyValueCache {
  readonly #key: string;
  readonly #values = new Map<string, Uint8Array>();

  constructor(key: string) {
    this.#key = key;
  }

  /** Writes `key = value` as field `field` (string value, cut to the attribute length limit). */
  write(w: PbWriter, field: number, value: string): void {
    let enc = this.#values.get(value);
    if (enc === undefined) {
      scratch.reset();
      attrString(scratch, 1, this.#key, value);
      // without the field tag (one byte for field 1): `length, KeyValue`
      enc = new Uint8Array(scratch.buf.subarray(1, scratch.pos)); // a copy: scratch is reused
      if (this.#values.size >= CACHE_VALUES) this.#values.clear();
      this.#values.set(value, enc);
    }
    w.tag(field, WIRE_LEN);
    w.raw(enc);
  }
}

function attrAny(w: PbWriter, field: number, key: string, value: unknown): void {
  if (typeof value === 'string') return attrString(w, field, key, value);
  if (typeof value === 'number' && Number.isSafeInteger(value)) return attrInt(w, field, key, value);
  const m = w.begin(field);
  w.string(1, key);
  const v = w.begin(2);
  if (typeof value === 'boolean') w.bool(2, value);
  else if (typeof value === 'number') w.double(4, value);
  else w.string(1, String(value));
  w.end(v);
  w.end(m);
}

/** The envelope of every batch: `Resource { 1: attributes... }` and `InstrumentationScope { 1: name }`, encoded once. */
export function buildEnvelope(resourceAttributes: Readonly<Record<string, unknown>>, scopeName: string): Envelope {
  const r = new PbWriter(1024);
  const m = r.begin(1);
  for (const [k, v] of Object.entries(resourceAttributes)) {
    if (v !== undefined && v !== null) attrAny(r, 1, k, v);
  }
  r.end(m);
  const s = new PbWriter(64);
  const n = s.begin(1);
  s.string(1, scopeName);
  s.end(n);
  return { resource: r.bytes(), scope: s.bytes() };
}

// ---- ids

const ZERO16 = '0000000000000000';
const ZERO32 = '00000000000000000000000000000000';
const pool = Buffer.allocUnsafe(4096);
let poolAt = pool.length;

function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const s = pool.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}

/** A new random trace id (32 hex digits, never all zero). */
export function newTraceId(): string {
  let id = randomHex(16);
  while (id === ZERO32) id = randomHex(16);
  return id;
}

/** A new random span id (16 hex digits, never all zero). */
export function newSpanId(): string {
  let id = randomHex(8);
  while (id === ZERO16) id = randomHex(8);
  return id;
}

// ---- trace.proto

/** What a span needs at its end, besides its attributes (written by the caller in `attrs`). */
export interface SpanHead {
  readonly traceId: string;
  readonly spanId: string;
  /** The remote caller's span id, or null for a root span. */
  readonly parentSpanId: string | null;
  readonly traceState: string | null;
  readonly name: string;
  readonly kind: number;
  readonly startMs: number;
}

/**
 * Starts `ScopeSpans.spans` (field 2): ids, name, kind, times, flags. The caller writes the
 * attributes (field 9, `attrString`/`attrInt`), then calls `endSpan`.
 */
export function beginSpan(w: PbWriter, h: SpanHead, endMs: number): number {
  const m = w.begin(2);
  w.hexBytes(1, h.traceId);
  w.hexBytes(2, h.spanId);
  if (h.traceState !== null && h.traceState !== '') w.string(3, h.traceState);
  if (h.parentSpanId !== null) w.hexBytes(4, h.parentSpanId);
  w.string(5, h.name);
  w.uint(6, h.kind);
  w.timeNanos(7, h.startMs);
  w.timeNanos(8, endMs);
  return m;
}

/** Ends the span begun at `mark`: status (error or unset) and flags (sampled, remote parent). */
export function endSpan(w: PbWriter, mark: number, error: boolean, remoteParent: boolean): void {
  if (error) {
    const s = w.begin(15);
    w.uint(3, STATUS_ERROR);
    w.end(s);
  }
  w.fixed32(16, 0x01 | FLAG_HAS_IS_REMOTE | (remoteParent ? FLAG_IS_REMOTE : 0));
  w.end(mark);
}

// ---- logs.proto

/**
 * Starts `ScopeLogs.log_records` (field 2). `traceId`/`spanId`: the span the record belongs to
 * (ours, or the caller's), or null. The caller writes attributes (field 6), then `endLog`.
 */
export function beginLog(
  w: PbWriter,
  timeMs: number,
  observedMs: number,
  severityNumber: number,
  severityText: string,
  body: string,
  eventName: string,
  traceId: string | null,
  spanId: string | null,
  traceFlags: number,
): number {
  const m = w.begin(2);
  w.timeNanos(1, timeMs);
  w.uint(2, severityNumber);
  w.string(3, severityText);
  const b = w.begin(5);
  w.string(1, body);
  w.end(b);
  if (traceId !== null && spanId !== null) {
    w.fixed32(8, traceFlags & 0xff);
    w.hexBytes(9, traceId);
    w.hexBytes(10, spanId);
  }
  w.timeNanos(11, observedMs);
  w.string(12, eventName);
  return m;
}

export function endLog(w: PbWriter, mark: number): void {
  w.end(mark);
}
