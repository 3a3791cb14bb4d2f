/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) on the raw header list: the caller's
 * `traceparent`/`tracestate` in, ours out. A malformed `traceparent` is ignored (a new trace
 * starts), as §3.2.2 says; it never fails a call.
 */

export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';

/** A caller's span context, as received. */
export interface RemoteContext {
  readonly traceId: string;
  readonly spanId: string;
  /** Bit 0: sampled. */
  readonly traceFlags: number;
  /** The `tracestate` list as received (fields joined with `,`), or null when absent or too long. */
  readonly traceState: string | null;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const HEX2 = /^[0-9a-f]{2}$/;
const ZERO32 = '00000000000000000000000000000000';
const ZERO16 = '0000000000000000';
/** Longest tracestate kept (the spec allows 512 characters to be dropped beyond). */
const MAX_TRACESTATE = 512;

/** `version-traceid-parentid-flags`; versions above 00 may append fields (§3.2.4). */
export function parseTraceparent(value: string, tracestate: string | undefined): RemoteContext | null {
  const v = value.trim();
  if (v.length < 55) return null;
  const version = v.slice(0, 2);
  if (version === 'ff' || !HEX2.test(version)) return null;
  if (v.charCodeAt(2) !== 0x2d || v.charCodeAt(35) !== 0x2d || v.charCodeAt(52) !== 0x2d) return null;
  if (version === '00' && v.length !== 55) return null;
  if (v.length > 55 && v.charCodeAt(55) !== 0x2d) return null;
  const traceId = v.slice(3, 35);
  const spanId = v.slice(36, 52);
  const flags = v.slice(53, 55);
  if (!HEX32.test(traceId) || traceId === ZERO32 || !HEX16.test(spanId) || spanId === ZERO16 || !HEX2.test(flags)) return null;
  const state = tracestate === undefined ? null : tracestate.trim();
  return {
    traceId,
    spanId,
    traceFlags: parseInt(flags, 16) & 1,
    traceState: state !== null && state !== '' && state.length <= MAX_TRACESTATE ? state : null,
  };
}

/** Our `traceparent` for the next hop (version 00). */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

/**
 * The caller's span context from a flat `[name, value, ...]` list (HTTP/1.1 names in any case).
 * Several `traceparent` fields make the context invalid (§3.2.1); several `tracestate` fields
 * are one list (§3.3.1).
 */
export function remoteContext(raw: readonly string[]): RemoteContext | null {
  let parent: string | undefined;
  let parents = 0;
  let state: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    // Cheap first-character filter before the case-insensitive compare.
    const c = name.charCodeAt(0) | 0x20;
    if (c !== 0x74 || name.length !== 11 && name.length !== 10) continue;
    const lower = name.toLowerCase();
    if (lower === TRACEPARENT) {
      parents++;
      parent = raw[i + 1];
    } else if (lower === TRACESTATE) {
      const v = raw[i + 1] as string;
      state = state === undefined ? v : `${state},${v}`;
    }
  }
  if (parents !== 1 || parent === undefined) return null;
  return parseTraceparent(parent, state);
}
