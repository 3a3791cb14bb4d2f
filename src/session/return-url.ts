import { normalizeTarget, type PathOptions } from '../lib/normalize.ts';

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
 * - not under the sidecar's own `/.ward/` prefix (no loops through the callback or logout), judged
 *   on the path as the sidecar routes it (below);
 * - at most 2048 characters.
 */

export const MAX_RETURN_CHARS = 2048;
const BASE = 'http://return.ward.invalid';
export const RESERVED_PREFIX = '/.ward/';
const RESERVED = RESERVED_PREFIX.slice(0, -1);

/**
 * The sidecar routes the normalized path (lib/normalize.ts), which decodes escaped unreserved
 * characters: `/%2Eward/logout` and `/.%77ard/logout` are its logout endpoint, though a URL
 * parser leaves them as they are (found in review: they passed as return paths). The reserved
 * prefix is checked on that path, with merged slashes and escaped slashes kept (not refused):
 * whatever the sidecar's `paths` options, a path routed to its endpoints is routed there under
 * these too (merging only makes more paths start with the prefix; `rejectEscapedSlashes` only
 * refuses paths, and refused paths reach no endpoint).
 */
const ROUTING: PathOptions = Object.freeze({ mergeSlashes: true, rejectEscapedSlashes: false });

/** True when the sidecar would serve `value` (a path and query) itself, or refuse it (no app page to return to). */
function notAppPath(value: string): boolean {
  const n = normalizeTarget(value, ROUTING);
  return !n.ok || n.path === RESERVED || n.path.startsWith(RESERVED_PREFIX);
}

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
  if (notAppPath(value)) return null;
  return value;
}
