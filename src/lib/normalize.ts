/**
 * Request-target normalization, done once per request. The path it returns is the one policy
 * matches AND the one forwarded to the app: every Envoy/Istio path CVE in research §2.4 is a
 * parser differential between the proxy and the app, so we never let the two diverge.
 *
 * Rules (in order):
 * - a fragment (`#`) never belongs in a request target (RFC 9112 §3.2) -> ERR_PATH_INVALID
 *   (CVE-2021-32779 / CVE-2021-39156: `/public#/../admin`);
 * - the query is split off at the first `?`, kept byte-for-byte and forwarded as-is (policy
 *   matches paths only); it may hold no control, space or non-ASCII character;
 * - the path must be origin-form, i.e. start with `/`: absolute-form, authority-form and `*`
 *   are refused (we are not a forward proxy) -> ERR_PATH_INVALID;
 * - control characters, space, non-ASCII bytes and malformed `%` escapes -> ERR_PATH_INVALID;
 *   `%00`..`%1F` and `%7F` too (CVE-2019-9900 class: NUL reaching a C matcher);
 * - a raw `\` or an escaped `%2F`/`%5C` (any case) -> ERR_PATH_AMBIGUOUS: some apps treat them
 *   as separators, some do not (CVE-2021-29492, CVE-2021-31920). With
 *   `paths.rejectEscapedSlashes: false` the escapes are kept encoded (upper-case hex) and are
 *   never treated as separators here;
 * - `;` -> ERR_PATH_AMBIGUOUS. Matrix/path parameters are stripped by some servers (Tomcat:
 *   `/admin;x=1` is `/admin`) and not by others (CVE-2026-73553 / CVE-2026-73511). Refusing is
 *   the only choice that cannot drift from the app; `%3B` (data, not a delimiter) is kept;
 * - `%XX` of an unreserved character (ALPHA DIGIT `-` `.` `_` `~`) is decoded, once
 *   (RFC 3986 §6.2.2.2); every other escape is kept with its hex upper-cased (§6.2.2.1), so
 *   `%2e%2E` becomes `..` before dot-segment removal and `%252F` stays `%252F`;
 * - printable characters RFC 3986 does not allow in a path (`"<>[]^`{|}`) are percent-encoded:
 *   the app decodes them back to the same bytes, and policy sees one canonical spelling;
 * - dot-segments are removed per RFC 3986 §5.2.4 (`/a/b/../c` -> `/a/c`, `/..` -> `/`);
 * - with `paths.mergeSlashes` (default) runs of `/` collapse to one (`//admin` -> `/admin`).
 */

/**
 * The methods a sidecar takes, inbound and on the egress path; any other is refused
 * (ERR_REQUEST_INVALID: no CONNECT tunnels, no TRACE). A policy names only these: a rule for
 * another could never match (a misspelt `DELTE` in a deny rule would deny nothing).
 */
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;

export interface PathOptions {
  readonly mergeSlashes: boolean;
  readonly rejectEscapedSlashes: boolean;
}

export type PathErrorCode = 'ERR_PATH_INVALID' | 'ERR_PATH_AMBIGUOUS';

export type NormalizedTarget =
  | { readonly ok: true; readonly path: string; readonly query: string }
  | { readonly ok: false; readonly code: PathErrorCode; readonly detail: string };

function fail(code: PathErrorCode, detail: string): NormalizedTarget {
  return Object.freeze({ ok: false, code, detail });
}
// Preallocated: a hostile request costs no allocation to refuse.
const FRAGMENT = fail('ERR_PATH_INVALID', 'fragment in request target');
const NOT_ORIGIN_FORM = fail('ERR_PATH_INVALID', 'request target does not start with /');
const BAD_CHAR = fail('ERR_PATH_INVALID', 'control, space or non-ASCII character in path');
const BAD_QUERY_CHAR = fail('ERR_PATH_INVALID', 'control, space or non-ASCII character in query');
const BAD_ESCAPE = fail('ERR_PATH_INVALID', 'malformed percent-escape in path');
const CONTROL_ESCAPE = fail('ERR_PATH_INVALID', 'percent-escaped control character in path');
const BACKSLASH = fail('ERR_PATH_AMBIGUOUS', 'backslash in path');
const ESCAPED_SLASH = fail('ERR_PATH_AMBIGUOUS', 'escaped / or \\ in path');
const MATRIX = fail('ERR_PATH_AMBIGUOUS', 'path parameter (;) in path');

// Character classes of a raw path byte.
const INVALID = 0;
const PLAIN = 1; // pchar or `/`: kept as-is
const ESCAPE = 2; // `%`
const ENCODE = 3; // printable but not allowed in a path: percent-encode
const BACKSLASH_C = 4;
const SEMICOLON = 5;

const CLASS = new Uint8Array(128); // default INVALID: CTLs, space, DEL
for (let c = 0x21; c < 0x7f; c++) CLASS[c] = ENCODE;
for (let c = 0x30; c <= 0x39; c++) CLASS[c] = PLAIN;
for (let c = 0x41; c <= 0x5a; c++) CLASS[c] = PLAIN;
for (let c = 0x61; c <= 0x7a; c++) CLASS[c] = PLAIN;
// unreserved, sub-delims except `;`, `:`, `@` (RFC 3986 §3.3 pchar), and `/`
for (const ch of "-._~!$&'()*+,=:@/") CLASS[ch.charCodeAt(0)] = PLAIN;
CLASS[0x25] = ESCAPE;
CLASS[0x5c] = BACKSLASH_C;
CLASS[0x3b] = SEMICOLON;
// `?` and `#` never reach the path loop (split off / refused first).

const UNRESERVED = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) UNRESERVED[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) UNRESERVED[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) UNRESERVED[c] = 1;
for (const ch of '-._~') UNRESERVED[ch.charCodeAt(0)] = 1;

const HEX = '0123456789ABCDEF';
/** `%XX` with upper-case hex for every byte value, built once. */
const PCT: readonly string[] = Array.from({ length: 256 }, (_, b) => `%${HEX[b >> 4]}${HEX[b & 15]}`);

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/**
 * Normalizes a request target (`:path` or the HTTP/1.1 request-target). Pure; allocates only
 * when the path actually changes.
 */
export function normalizeTarget(target: string, opts: PathOptions): NormalizedTarget {
  if (target.indexOf('#') !== -1) return FRAGMENT;
  if (target.charCodeAt(0) !== 0x2f) return NOT_ORIGIN_FORM;
  const q = target.indexOf('?');
  const end = q === -1 ? target.length : q;
  let query = '';
  if (q !== -1) {
    query = target.slice(q);
    for (let i = 1; i < query.length; i++) {
      const c = query.charCodeAt(i);
      if (c <= 0x20 || c >= 0x7f) return BAD_QUERY_CHAR;
    }
  }

  let out: string | null = null; // null while the path is unchanged
  let copied = 0; // target[0..copied) is already represented in `out`
  for (let i = 0; i < end; i++) {
    const c = target.charCodeAt(i);
    const cls = c < 128 ? (CLASS[c] as number) : INVALID;
    if (cls === PLAIN) continue;
    switch (cls) {
      case ESCAPE: {
        if (i + 2 >= end) return BAD_ESCAPE;
        const hi = hexVal(target.charCodeAt(i + 1));
        const lo = hexVal(target.charCodeAt(i + 2));
        if (hi < 0 || lo < 0) return BAD_ESCAPE;
        const b = (hi << 4) | lo;
        let rep: string;
        if (b < 128 && UNRESERVED[b] === 1) rep = String.fromCharCode(b);
        else if (b === 0x2f || b === 0x5c) {
          if (opts.rejectEscapedSlashes) return ESCAPED_SLASH;
          rep = PCT[b] as string;
        } else if (b < 0x20 || b === 0x7f) return CONTROL_ESCAPE;
        else rep = PCT[b] as string;
        // Already canonical (`%3B`, `%C3`): nothing to rewrite.
        if (rep.length === 3 && target.charCodeAt(i + 1) === rep.charCodeAt(1) && target.charCodeAt(i + 2) === rep.charCodeAt(2)) {
          i += 2;
          continue;
        }
        out = (out ?? '') + target.slice(copied, i) + rep;
        i += 2;
        copied = i + 1;
        continue;
      }
      case ENCODE:
        out = (out ?? '') + target.slice(copied, i) + (PCT[c] as string);
        copied = i + 1;
        continue;
      case BACKSLASH_C:
        return BACKSLASH;
      case SEMICOLON:
        return MATRIX;
      default:
        return BAD_CHAR;
    }
  }
  let path = out === null ? (q === -1 ? target : target.slice(0, end)) : out + target.slice(copied, end);
  if (path.indexOf('/.') !== -1 || (opts.mergeSlashes && path.indexOf('//') !== -1)) {
    path = removeDotSegments(path, opts.mergeSlashes);
  }
  return { ok: true, path, query };
}

/**
 * RFC 3986 §5.2.4 on an absolute path whose escapes are already resolved, then, optionally,
 * empty segments merged. In that order, as Envoy does (`normalize_path`, then `merge_slashes`),
 * and as an app resolving the path itself would: `..` removes the segment before it even when
 * that one is empty (`/a/b//..` -> `/a/b/`, not `/a`). A trailing `.`/`..`/empty segment leaves a
 * trailing `/` (`/a/.` -> `/a/`).
 */
export function removeDotSegments(path: string, mergeSlashes: boolean): string {
  const segs = path.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  const n = segs.length;
  for (let i = 1; i < n; i++) {
    const seg = segs[i] as string;
    const last = i === n - 1;
    if (seg === '.' || seg === '..') {
      if (seg === '..') out.pop();
      trailingSlash = last;
      continue;
    }
    if (seg === '') {
      if (last) trailingSlash = true;
      else out.push('');
      continue;
    }
    out.push(seg);
    trailingSlash = false;
  }
  const kept = mergeSlashes ? out.filter((x) => x !== '') : out;
  if (kept.length === 0) return '/';
  const joined = `/${kept.join('/')}`;
  return trailingSlash ? `${joined}/` : joined;
}

/**
 * The gRPC method of a normalized path: `/pkg.Service/Method`, exactly two non-empty segments.
 * Anything else is not a gRPC method; the call is then judged as plain HTTP (and no gRPC rule
 * can match it).
 */
export function grpcMethodOf(path: string): string | undefined {
  const slash = path.indexOf('/', 1);
  if (slash <= 1 || slash === path.length - 1) return undefined;
  if (path.indexOf('/', slash + 1) !== -1) return undefined;
  return path;
}

/**
 * True when the query carries an `access_token` parameter (RFC 6750 §2.3). Tokens in URLs end
 * up in access logs and Referer headers, so such a call is refused whatever else it holds.
 * The parameter name is compared after form-decoding (`access%5Ftoken`, `+` as space), and `;`
 * separates parameters as `&` does, as some app frameworks read it (found in review).
 */
export function queryHasAccessToken(query: string): boolean {
  if (query.indexOf('access') === -1 && query.indexOf('%') === -1) return false;
  let start = query.charCodeAt(0) === 0x3f ? 1 : 0;
  while (start <= query.length) {
    const end = nextSeparator(query, start);
    const eq = query.indexOf('=', start);
    const nameEnd = eq !== -1 && eq < end ? eq : end;
    let name = query.slice(start, nameEnd);
    if (name.indexOf('%') !== -1 || name.indexOf('+') !== -1) {
      try {
        name = decodeURIComponent(name.replaceAll('+', ' '));
      } catch {
        // a malformed name is not `access_token`; the app judges its own query
      }
    }
    if (name === 'access_token') return true;
    start = end + 1;
  }
  return false;
}

/** The next `&` or `;` at or after `from`, else the length. */
function nextSeparator(query: string, from: number): number {
  for (let i = from; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c === 0x26 || c === 0x3b) return i;
  }
  return query.length;
}

/**
 * An authority a server may take from `Host` or `:authority` (RFC 9112 §3.2 "invalid field
 * value", RFC 9113 §8.3.1): `host [":" port]` of RFC 3986 §3.2 without userinfo, the host a
 * reg-name or IPv4 address (unreserved, sub-delims, `%HH`) or an `[IP-literal]`, the port up to
 * five digits; not empty (an `http` URI's host is not, RFC 9110 §4.2.1). What it keeps out is
 * whatever ends an authority: an app that rebuilds its URL as `scheme://` + Host + path (the
 * Fetch-API adapters of several node frameworks do) would otherwise route `Host:
 * orders/admin?` + `/public/x` to `/admin`, a path the policy never judged.
 */
const AUTHORITY = /^(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::[0-9]{0,5})?$/;
/** The last authority that passed: a connection repeats its own on every request. */
let lastAuthority: string | null = null;

export function validAuthority(a: string): boolean {
  if (a === lastAuthority) return true;
  if (!AUTHORITY.test(a)) return false;
  lastAuthority = a;
  return true;
}
