/**
 * Where a browser goes after signing in: only back to this origin, as a path (no open redirect,
 * CWE-601). The value is the `Location` of a redirect, so anything a browser might resolve to
 * another origin is refused rather than repaired:
 *
 * - it must start with exactly one `/` (`//host` and `/\host` are protocol-relative to browsers:
 *   WHATWG URL treats `\` as `/` in special schemes);
 * - visible ASCII only (tabs and newlines are stripped by URL parsers, so `/\t/evil` is `//evil`;
 *   CR/LF would split the header), no `\`, no fragment;
 * - it must already be in the form a URL parser leaves it (no dot segments that collapse into
 *   `//host`, no percent-encoding that a parser would rewrite);
 * - not under the sidecar's own `/.ward/` prefix (no loops through the callback or logout);
 * - at most 2048 characters.
 */

export const MAX_RETURN_CHARS = 2048;
const BASE = 'http://return.ward.invalid';
export const RESERVED_PREFIX = '/.ward/';

export function safeReturnPath(value: string): string | null {
  if (value.length === 0 || value.length > MAX_RETURN_CHARS) return null;
  if (value.charCodeAt(0) !== 0x2f) return null;
  const second = value.charCodeAt(1);
  if (second === 0x2f || second === 0x5c) return null;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x5c || c === 0x23) return null;
  }
  let u: URL;
  try {
    u = new URL(value, BASE);
  } catch {
    return null;
  }
  if (u.origin !== BASE || `${u.pathname}${u.search}` !== value) return null;
  if (u.pathname === RESERVED_PREFIX.slice(0, -1) || u.pathname.startsWith(RESERVED_PREFIX)) return null;
  return value;
}
