/**
 * `grpc-timeout` (gRPC over HTTP/2 spec): `TimeoutValue TimeoutUnit`, 1 to 8 ASCII digits then
 * one of H M S m u n. Parsed without a regular expression.
 */

/** Node's timers cap at 2^31-1 ms; a longer deadline is effectively none. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * `grpc-timeout` for `ms` left of a call's deadline, as a proxy passes the deadline on (less the
 * time the call spent in it): at least 1 ms, in milliseconds while that fits the 8 digits the
 * format allows, else in seconds (rounded up).
 */
export function formatGrpcTimeout(ms: number): string {
  const m = Math.max(1, Math.ceil(ms));
  return m <= 99_999_999 ? `${m}m` : `${Math.ceil(m / 1000)}S`;
}

/** Milliseconds (rounded up, so a 1ns deadline still expires), or -1 when malformed. */
export function parseGrpcTimeout(value: string): number {
  const n = value.length;
  if (n < 2 || n > 9) return -1;
  let v = 0;
  for (let i = 0; i < n - 1; i++) {
    const d = value.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  let ms: number;
  switch (value.charCodeAt(n - 1)) {
    case 0x48: // H
      ms = v * 3_600_000;
      break;
    case 0x4d: // M
      ms = v * 60_000;
      break;
    case 0x53: // S
      ms = v * 1000;
      break;
    case 0x6d: // m
      ms = v;
      break;
    case 0x75: // u
      ms = Math.ceil(v / 1000);
      break;
    case 0x6e: // n
      ms = Math.ceil(v / 1_000_000);
      break;
    default:
      return -1;
  }
  return ms > MAX_TIMER_MS ? MAX_TIMER_MS : ms;
}
