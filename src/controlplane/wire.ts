import { PbWriter } from '../lib/protobuf.ts';

/**
 * The control-plane protocol's message shapes and constants (proto/ward/v1/control_plane.proto),
 * and the binary codec of the two messages the sidecar's policy watch exchanges: it speaks the
 * protocol over ward's own HTTP/2 client (src/h2/grpc-stream.ts) and so loads neither grpc-js
 * nor protobufjs (loading and opening the watch: 5.5 -> 1.4 MB of heap, docs/performance.md "Memory"). The server and
 * the CLI use grpc-js with proto-loader (proto.ts), which decodes to these same shapes; the tests
 * check the codec against protobufjs both ways.
 */

// ---- wire shapes (as proto-loader decodes them with proto.ts's options) ----

export interface ErrorDetailWire {
  code: number;
  message: string;
}

export interface PolicyRequestWire {
  service: string;
  instanceId: string;
  versionInfo: string;
  responseNonce: string;
  /** null when absent: its presence is what makes a request a NACK. */
  errorDetail: ErrorDetailWire | null;
}

export interface PolicyResponseWire {
  versionInfo: string;
  nonce: string;
  service: string;
  policy: { fileName: string; text: string } | null;
  controlPlaneId: string;
}

export interface StatusRequestWire {
  service: string;
}

export interface FileIssueWire {
  file: string;
  line: number;
  column: number;
  path: string;
  message: string;
}

export interface ServiceStatusWire {
  service: string;
  version: string;
  sourceFile: string;
  updatedAtUnixMs: number;
  lastError: FileIssueWire[];
}

export interface FileStatusWire {
  file: string;
  service: string;
  issues: FileIssueWire[];
  sinceUnixMs: number;
}

export interface NackStatusWire {
  version: string;
  message: string;
  atUnixMs: number;
}

export interface SidecarStatusWire {
  service: string;
  instanceId: string;
  subject: string;
  issuer: string;
  peer: string;
  ackedVersion: string;
  pendingVersion: string;
  lastNack: NackStatusWire | null;
  nackCount: number;
  connectedSinceUnixMs: number;
}

export interface StatusResponseWire {
  controlPlaneId: string;
  policyDir: string;
  startedAtUnixMs: number;
  services: ServiceStatusWire[];
  files: FileStatusWire[];
  sidecars: SidecarStatusWire[];
}

export type HealthStatusWire = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

/** google.rpc.Code values the protocol uses in ErrorDetail. */
export const RpcCode = {
  INVALID_ARGUMENT: 3,
  FAILED_PRECONDITION: 9,
} as const;

/** Longest error_detail message the server records (bounded per-stream state). */
export const MAX_NACK_MESSAGE = 1024;
/** Longest accepted instance_id. */
export const MAX_INSTANCE_ID = 128;
/**
 * Longest accepted version_info (a version is 64 hex characters, the sha256 of the canonical
 * policy; the margin leaves room for a control plane that names versions otherwise). Longer
 * ones are refused with INVALID_ARGUMENT rather than kept per stream, logged and reported.
 */
export const MAX_VERSION_INFO = 128;
/** instance_id is printed by `ward status` and logged: printable ASCII only, no control characters. */
export const INSTANCE_ID = /^[\x20-\x7e]+$/;

/** The largest policy file a control plane may serve (`watch.maxFileBytes` is at most this). */
export const MAX_POLICY_FILE_BYTES = 16 * 1024 * 1024;
/**
 * The largest policy response a sidecar takes: the largest file plus room for the rest of the
 * message. Below it, a valid policy the control plane serves never reached a sidecar: it ended
 * every stream with RESOURCE_EXHAUSTED and reconnected for ever (found in review).
 */
export const MAX_POLICY_RESPONSE_BYTES = MAX_POLICY_FILE_BYTES + 64 * 1024;

/** The policy stream's method (`PolicyDiscovery.StreamPolicy`), as an HTTP/2 `:path`. */
export const POLICY_STREAM_PATH = '/ward.v1.PolicyDiscovery/StreamPolicy';

// ---- the policy stream's codec (proto3 binary; field numbers from control_plane.proto)

export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_I32 = 5;

/** `PolicyRequest`, as a proto3 encoder writes it: fields at their defaults are left out. */
export function encodePolicyRequest(req: PolicyRequestWire): Buffer {
  const w = new PbWriter(256);
  str(w, 1, req.service);
  str(w, 2, req.instanceId);
  str(w, 3, req.versionInfo);
  str(w, 4, req.responseNonce);
  if (req.errorDetail !== null) {
    const m = w.begin(5);
    // int32: a negative code is sign-extended to 64 bits, as int64 writes it
    if (req.errorDetail.code !== 0) w.int64(1, req.errorDetail.code);
    str(w, 2, req.errorDetail.message);
    w.end(m);
  }
  return w.bytes();
}

function str(w: PbWriter, field: number, s: string): void {
  if (s !== '') w.string(field, s);
}

/** A message that is not a well-formed `PolicyResponse` (the stream is then given up, as grpc-js does). */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * `PolicyResponse` from its bytes, in proto-loader's shape (absent strings are "", an absent
 * `policy` is null). Unknown fields are skipped, as proto3 requires; a truncated or malformed
 * message, a group, a string that is not UTF-8, or a known field of the wrong wire type is a
 * WireError.
 */
export function decodePolicyResponse(buf: Buffer): PolicyResponseWire {
  const out: PolicyResponseWire = { versionInfo: '', nonce: '', service: '', policy: null, controlPlaneId: '' };
  const r = new Reader(buf, 0, buf.length);
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field > 5) {
      r.skip(wire);
      continue;
    }
    // every known field is length-delimited: four strings and the `policy` message (4)
    if (wire !== WIRE_LEN) throw new WireError(`PolicyResponse field ${field}: wire type ${wire}`);
    if (field === 4) {
      const [start, end] = r.span();
      out.policy = decodePolicySource(buf, start, end);
      continue;
    }
    const s = r.string();
    if (field === 1) out.versionInfo = s;
    else if (field === 2) out.nonce = s;
    else if (field === 3) out.service = s;
    else out.controlPlaneId = s;
  }
  return out;
}

function decodePolicySource(buf: Buffer, start: number, end: number): { fileName: string; text: string } {
  const src = { fileName: '', text: '' };
  const r = new Reader(buf, start, end);
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1 || field === 2) {
      if (wire !== WIRE_LEN) throw new WireError(`PolicySource field ${field}: wire type ${wire}`);
      if (field === 1) src.fileName = r.string();
      else src.text = r.string();
    } else {
      r.skip(wire);
    }
  }
  return src;
}

/** `buf[start, end)` as a string; a WireError when it is not UTF-8. */
export function utf8At(buf: Buffer, start: number, end: number): string {
  try {
    return utf8.decode(buf.subarray(start, end));
  } catch {
    throw new WireError('string field is not UTF-8');
  }
}

/** A protobuf reader over `buf[start, end)`: every read is bounds-checked, nothing is copied. */
export class Reader {
  readonly #buf: Buffer;
  #pos: number;
  readonly #end: number;

  constructor(buf: Buffer, start: number, end: number) {
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
  }

  done(): boolean {
    return this.#pos >= this.#end;
  }

  /** A varint of up to 10 bytes; its value exact below 2^53 (larger only ever skipped). */
  varint(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.#pos >= this.#end) throw new WireError('truncated varint');
      const b = this.#buf[this.#pos++] as number;
      n += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return n;
      mul *= 0x80;
    }
    throw new WireError('varint longer than 10 bytes');
  }

  tag(): [number, number] {
    const t = this.varint();
    const field = Math.floor(t / 8);
    if (field === 0) throw new WireError('field number 0');
    // Protobuf field numbers end at 2^29 - 1. A decoder that keeps 32 bits of a larger tag reads
    // another field (2^32 + 1 as 1): what this reader skipped, a collector would read (found in
    // review: an unbound service's resource forwarded under such a tag).
    if (field > 536_870_911) throw new WireError(`field number ${field} above 2^29 - 1`);
    return [field, t % 8];
  }

  /** Where the next read starts. */
  get pos(): number {
    return this.#pos;
  }

  /** A fixed64 field's 8 bytes start at `pos`: skipped here, read by the caller. */
  fixed64(): number {
    const at = this.#pos;
    if (8 > this.#end - at) throw new WireError('truncated field');
    this.#pos = at + 8;
    return at;
  }

  /** A length-delimited field's bounds. */
  span(): [number, number] {
    const len = this.varint();
    const start = this.#pos;
    if (len > this.#end - start) throw new WireError('truncated field');
    this.#pos = start + len;
    return [start, start + len];
  }

  string(): string {
    const [start, end] = this.span();
    return utf8At(this.#buf, start, end);
  }

  skip(wire: number): void {
    if (wire === WIRE_VARINT) this.varint();
    else if (wire === WIRE_LEN) this.span();
    else if (wire === WIRE_I64 || wire === WIRE_I32) {
      const n = wire === WIRE_I64 ? 8 : 4;
      if (n > this.#end - this.#pos) throw new WireError('truncated field');
      this.#pos += n;
    } else throw new WireError(`wire type ${wire} not supported`);
  }
}
