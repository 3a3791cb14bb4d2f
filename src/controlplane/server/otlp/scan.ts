import { Reader, utf8At, WIRE_I64, WIRE_LEN, WIRE_VARINT, WireError } from '../../wire.ts';
import type { AnyValueWire, KeyValueWire, LogRecordWire } from './proto.ts';

/**
 * The log records of an `ExportLogsServiceRequest` that can be decision records, read straight
 * off the wire. The receiver needs only the records with `ward.*` attributes; decoding the whole
 * request first (protobufjs, with defaults) built a full object per record: an exporter's 1 MiB
 * of empty records took ~340 MB of heap and 0.7 s (found in review). Here a record allocates only
 * when it has an attribute a decision is made of; everything else is skipped in place.
 *
 * A truncated message, a string that is not UTF-8 or a known field of the wrong wire type throws
 * a WireError (the request is refused as malformed); unknown fields are skipped (proto3).
 */
export function scanLogsRequest(buf: Buffer, visit: (lr: LogRecordWire, instanceId: string) => void): void {
  eachLen(buf, 0, buf.length, 1, 'ExportLogsServiceRequest.resource_logs', (start, end) => resourceLogs(buf, start, end, visit));
}

/** Calls `visit` with the bytes of each occurrence of the length-delimited field `field` of the message at [start, end); other fields are skipped. */
function eachLen(buf: Buffer, start: number, end: number, field: number, what: string, visit: (start: number, end: number) => void): void {
  const r = new Reader(buf, start, end);
  while (!r.done()) {
    const [f, wire] = r.tag();
    if (f !== field) {
      r.skip(wire);
      continue;
    }
    expectLen(what, wire);
    const [s, e] = r.span();
    visit(s, e);
  }
}

/** A resource attribute a collector could read otherwise than the scan (repeated, in parts, not a string). */
export const AMBIGUOUS: unique symbol = Symbol('ambiguous');
/** A resource attribute read for the binding check: null when absent, AMBIGUOUS when a collector could read it otherwise. */
export type ResourceValue = string | null | typeof AMBIGUOUS;

/** The two resource attributes that name a resource's service: `service.name` and ward's own `ward.service`. */
export interface ResourceServices {
  readonly serviceName: ResourceValue;
  readonly wardService: ResourceValue;
}

/**
 * The service attributes of every resource of an OTLP Export, traces, metrics or logs alike:
 * each is `repeated Resource{Spans,Metrics,Logs} = 1` holding `Resource resource = 1`. A key
 * given twice (in one resource or across its parts), or a value that is not one plain string, is
 * AMBIGUOUS, as for decision attributes (receiver.ts `decisionOf`). Throws a WireError on a
 * malformed message, as `scanLogsRequest`.
 */
export function scanResourceServices(buf: Buffer, visit: (r: ResourceServices) => void): void {
  eachLen(buf, 0, buf.length, 1, 'Export request: resource entry', (start, end) => {
    const found: [ResourceValue, ResourceValue] = [null, null];
    eachLen(buf, start, end, 1, 'resource entry: resource', (rs, re) =>
      eachLen(buf, rs, re, 1, 'Resource.attributes', (ks, ke) => {
        const kv = keyValue(buf, ks, ke, SERVICE_KEYS, false);
        if (kv === null) return;
        const i = kv.key === SERVICE_KEYS[0] ? 0 : 1;
        found[i] = found[i] !== null || kv.ambiguous === true || kv.value?.value !== 'stringValue' ? AMBIGUOUS : (kv.value.stringValue ?? '');
      }),
    );
    visit({ serviceName: found[0], wardService: found[1] });
  });
}

const SERVICE_KEYS = ['service.name', 'ward.service'];

function expectLen(what: string, wire: number): void {
  if (wire !== WIRE_LEN) throw new WireError(`${what}: wire type ${wire}`);
}

/** ResourceLogs: the resource (for `service.instance.id`), then its scopes, in whatever order they came. */
function resourceLogs(buf: Buffer, start: number, end: number, visit: (lr: LogRecordWire, instanceId: string) => void): void {
  let instanceId = '';
  let scopes: number[] | null = null;
  const r = new Reader(buf, start, end);
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1) {
      expectLen('ResourceLogs.resource', wire);
      const [s, e] = r.span();
      instanceId = resourceInstanceId(buf, s, e) ?? instanceId;
    } else if (field === 2) {
      expectLen('ResourceLogs.scope_logs', wire);
      const [s, e] = r.span();
      (scopes ??= []).push(s, e);
    } else r.skip(wire);
  }
  if (scopes === null) return;
  for (let i = 0; i < scopes.length; i += 2) scopeLogs(buf, scopes[i] as number, scopes[i + 1] as number, instanceId, visit);
}

function resourceInstanceId(buf: Buffer, start: number, end: number): string | null {
  let found: string | null = null;
  eachLen(buf, start, end, 1, 'Resource.attributes', (s, e) => {
    const kv = keyValue(buf, s, e, INSTANCE_ID, false);
    if (kv !== null) found = stringOf(kv.value);
  });
  return found;
}

function scopeLogs(buf: Buffer, start: number, end: number, instanceId: string, visit: (lr: LogRecordWire, instanceId: string) => void): void {
  eachLen(buf, start, end, 2, 'ScopeLogs.log_records', (s, e) => {
    const lr = logRecord(buf, s, e);
    if (lr !== null) visit(lr, instanceId);
  });
}

const INSTANCE_ID = ['service.instance.id'];
/** The attribute keys a decision record is made of (receiver.ts `decisionOf`). */
const DECISION_KEYS = ['enduser.id', 'http.request.method'];
const WARD_PREFIX = Buffer.from('ward.', 'latin1');

/** A LogRecord with the attributes a decision needs, or null when it has none of them. */
function logRecord(buf: Buffer, start: number, end: number): LogRecordWire | null {
  let attributes: KeyValueWire[] | null = null;
  let time = -1;
  let observed = -1;
  let traceId: [number, number] | null = null;
  let spanId: [number, number] | null = null;
  let eventName = '';
  const r = new Reader(buf, start, end);
  while (!r.done()) {
    const [field, wire] = r.tag();
    switch (field) {
      case 1:
      case 11:
        if (wire !== WIRE_I64) throw new WireError(`LogRecord field ${field}: wire type ${wire}`);
        if (field === 1) time = r.fixed64();
        else observed = r.fixed64();
        break;
      case 6: {
        expectLen('LogRecord.attributes', wire);
        const [s, e] = r.span();
        const kv = keyValue(buf, s, e, DECISION_KEYS, true);
        if (kv !== null) (attributes ??= []).push(kv);
        break;
      }
      case 9:
      case 10:
        expectLen(`LogRecord field ${field}`, wire);
        if (field === 9) traceId = r.span();
        else spanId = r.span();
        break;
      case 12:
        expectLen('LogRecord.event_name', wire);
        eventName = r.string();
        break;
      default:
        r.skip(wire);
    }
  }
  if (attributes === null) return null;
  return {
    timeUnixNano: time < 0 ? '0' : buf.readBigUInt64LE(time).toString(),
    observedTimeUnixNano: observed < 0 ? '0' : buf.readBigUInt64LE(observed).toString(),
    eventName,
    body: null,
    attributes,
    traceId: traceId === null ? Buffer.alloc(0) : Buffer.from(buf.subarray(traceId[0], traceId[1])),
    spanId: spanId === null ? Buffer.alloc(0) : Buffer.from(buf.subarray(spanId[0], spanId[1])),
  };
}

/**
 * A KeyValue whose key is one of `keys` (or, with `ward`, starts with `ward.`), decoded; null
 * for any other, whose key is compared in place and never made a string.
 *
 * `value` is an embedded message: sent in several parts, a protobuf decoder merges them (a
 * collector reads `{string_value: payments}` + `{}` as "payments"), where this scan would keep
 * only the last part. Rather than reimplement merging, such a value is marked `ambiguous` and the
 * receiver refuses the record (receiver.ts `decisionOf`): a sidecar's exporter never sends one.
 */
function keyValue(buf: Buffer, start: number, end: number, keys: readonly string[], ward: boolean): KeyValueWire | null {
  let key: [number, number] | null = null;
  let value: [number, number] | null = null;
  let valueParts = 0;
  const r = new Reader(buf, start, end);
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1 || field === 2) {
      expectLen(`KeyValue field ${field}`, wire);
      if (field === 1) key = r.span();
      else {
        value = r.span();
        valueParts++;
      }
    } else r.skip(wire);
  }
  if (key === null || !wanted(buf, key[0], key[1], keys, ward)) return null;
  const kv: KeyValueWire = { key: utf8At(buf, key[0], key[1]), value: value === null ? null : anyValue(buf, value[0], value[1]) };
  if (valueParts > 1 || kv.value?.ambiguous === true) kv.ambiguous = true;
  return kv;
}

function wanted(buf: Buffer, start: number, end: number, keys: readonly string[], ward: boolean): boolean {
  const len = end - start;
  if (ward && len >= WARD_PREFIX.length && buf.compare(WARD_PREFIX, 0, WARD_PREFIX.length, start, start + WARD_PREFIX.length) === 0) return true;
  for (const k of keys) if (k.length === len && buf.toString('latin1', start, end) === k) return true;
  return false;
}

/** The wire type of each AnyValue field (`value` oneof, fields 1-7). */
const ANY_VALUE_WIRE = [-1, WIRE_LEN, WIRE_VARINT, WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_LEN, WIRE_LEN];
const ANY_VALUE_KIND = [undefined, 'stringValue', 'boolValue', 'intValue', 'doubleValue', 'arrayValue', 'kvlistValue', 'bytesValue'] as const;

/**
 * AnyValue: the scalar kinds a decision record uses, decoded; arrays, maps and bytes only named
 * (`value`), their content skipped. More than one field of the oneof, or one of the wrong wire
 * type, is `ambiguous`: decoders differ on it (last one wins, or the wrong type kept as an
 * unknown field), and a decision must read the same here as at the collector it is forwarded to.
 */
function anyValue(buf: Buffer, start: number, end: number): AnyValueWire {
  const out: AnyValueWire = {};
  let fields = 0;
  const r = new Reader(buf, start, end);
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1) expectLen('AnyValue.string_value', wire);
    const kind = ANY_VALUE_KIND[field];
    if (kind === undefined) {
      r.skip(wire);
      continue;
    }
    if (++fields > 1 || wire !== ANY_VALUE_WIRE[field]) out.ambiguous = true;
    if (wire !== ANY_VALUE_WIRE[field]) {
      r.skip(wire);
      continue;
    }
    out.value = kind;
    if (field === 1) out.stringValue = r.string();
    else if (field === 2) out.boolValue = r.varint() !== 0;
    else if (field === 3) out.intValue = String(r.varint());
    else if (field === 4) out.doubleValue = buf.readDoubleLE(r.fixed64());
    else r.skip(wire);
  }
  return out;
}

function stringOf(v: AnyValueWire | null): string {
  return v?.value === 'stringValue' ? (v.stringValue ?? '') : '';
}
