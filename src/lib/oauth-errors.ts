/**
 * OAuth error codes that mean "not now" rather than "no": RFC 6749 `temporarily_unavailable`
 * and `server_error` (an authorization server's 503 and 500, §4.1.2.1, which some also send from
 * the token endpoint with a 4xx status, §5.2) and RFC 8628 §3.5 `slow_down`. A caller retries
 * later, and remembers no refusal.
 */
const OUTAGE_ERRORS: ReadonlySet<string> = new Set(['temporarily_unavailable', 'server_error', 'slow_down']);

/** True for an OAuth error code that reports an outage of the server, not a refusal. */
export function isOutageError(error: string): boolean {
  return OUTAGE_ERRORS.has(error);
}
