import { describe, expect, it } from 'vitest';
import { grpcMethodOf, normalizeTarget, type PathOptions, queryHasAccessToken, removeDotSegments, validAuthority } from '../../../src/lib/normalize.ts';

const DEFAULTS: PathOptions = { mergeSlashes: true, rejectEscapedSlashes: true };
const KEEP_SLASHES: PathOptions = { mergeSlashes: false, rejectEscapedSlashes: true };
const ALLOW_ESCAPED: PathOptions = { mergeSlashes: true, rejectEscapedSlashes: false };

/** `expected` is the normalized path + query, or an error code (`ERR_PATH_INVALID`, `ERR_PATH_AMBIGUOUS`). */
type Row = readonly [target: string, expected: string, why: string];

/** Expected = normalized path + query, or the error code. Defaults: merge slashes, reject %2F. */
const DEFAULT_ROWS: readonly Row[] = [
  ['/', '/', 'root'],
  ['/orders/42', '/orders/42', 'plain path unchanged'],
  ['/orders/42?x=1&y=%2F', '/orders/42?x=1&y=%2F', 'query kept byte-for-byte'],
  ['/a?', '/a?', 'empty query kept'],
  ['/ward.demo.v1.Orders/GetOrder', '/ward.demo.v1.Orders/GetOrder', 'gRPC path'],
  // research §2.4 bypass table
  ['/info/../private', '/private', 'CVE-2019-9901 dot-dot'],
  ['/public/./../admin', '/admin', 'dot then dot-dot'],
  ['//admin', '/admin', 'CVE-2021-31920 double slash'],
  ['/public//..//admin', '/public/admin', 'slashes around dot-dot: .. removes the empty segment, then slashes merge (RFC 3986, Envoy, WHATWG)'],
  ['/api/internal//..', '/api/internal/', 'regression (fuzz): merging first made this /api, off the denied prefix the app would resolve'],
  ['/a/b//../c', '/a/b/c', '.. after an empty segment'],
  ['/x%2F..%2Fadmin', 'ERR_PATH_AMBIGUOUS', 'CVE-2021-29492 escaped slash'],
  ['/x%2f..%2fadmin', 'ERR_PATH_AMBIGUOUS', 'lower-case escaped slash'],
  ['/x%5C..%5Cadmin', 'ERR_PATH_AMBIGUOUS', 'escaped backslash'],
  ['/x%5c', 'ERR_PATH_AMBIGUOUS', 'lower-case escaped backslash'],
  ['/public#/../admin', 'ERR_PATH_INVALID', 'CVE-2021-32779 fragment'],
  ['/public?x=1#frag', 'ERR_PATH_INVALID', 'fragment after query'],
  ['/admin;jsessionid=1', 'ERR_PATH_AMBIGUOUS', 'CVE-2026-73553 matrix parameter'],
  ['/public/..;/admin', 'ERR_PATH_AMBIGUOUS', 'Tomcat ..; traversal'],
  ['/a%3Bb', '/a%3Bb', 'escaped ; is data, kept'],
  ['/a\\..\\admin', 'ERR_PATH_AMBIGUOUS', 'raw backslash'],
  // dot segments spelled with escapes
  ['/a/%2e%2e/admin', '/admin', '%2e%2e is ..'],
  ['/a/%2E%2e/admin', '/admin', 'mixed-case %2E'],
  ['/a/.%2e/admin', '/admin', 'half-escaped ..'],
  ['/a/%2e/b', '/a/b', '%2e is .'],
  ['/%2e%2e/%2e%2e/etc', '/etc', 'dot-dot above root stays at root'],
  ['/a/b/..', '/a/', 'trailing .. keeps a slash'],
  ['/a/.', '/a/', 'trailing . keeps a slash'],
  ['/..', '/', 'dot-dot at root'],
  ['/a/..b/c', '/a/..b/c', '..b is a name'],
  ['/.well-known/openid-configuration', '/.well-known/openid-configuration', 'dot-prefixed name'],
  // unreserved decoding, case canonicalization
  ['/%41%62%7e%2D%5f%30', '/Ab~-_0', 'unreserved escapes decoded'],
  ['/caf%c3%a9', '/caf%C3%A9', 'other escapes upper-cased, not decoded'],
  ['/a%20b', '/a%20b', 'escaped space kept'],
  ['/a%252F', '/a%252F', 'double-encoded slash stays encoded (decoded once only)'],
  ['/a%3f', '/a%3F', 'escaped ? kept'],
  ['/a%23', '/a%23', 'escaped # kept'],
  ['/a"b<c>{d}|e^f`g[h]', '/a%22b%3Cc%3E%7Bd%7D%7Ce%5Ef%60g%5Bh%5D', 'non-path printables encoded'],
  ["/a!$&'()*+,=:@b", "/a!$&'()*+,=:@b", 'pchar sub-delims kept'],
  // invalid
  ['/a%00b', 'ERR_PATH_INVALID', 'CVE-2019-9900 NUL'],
  ['/a%0d%0aX: y', 'ERR_PATH_INVALID', 'CRLF injection'],
  ['/a%7f', 'ERR_PATH_INVALID', 'escaped DEL'],
  ['/a%1', 'ERR_PATH_INVALID', 'truncated escape'],
  ['/a%', 'ERR_PATH_INVALID', 'lone %'],
  ['/a%zz', 'ERR_PATH_INVALID', 'non-hex escape'],
  ['/a%2', 'ERR_PATH_INVALID', 'escape cut by end'],
  ['/a%2?x', 'ERR_PATH_INVALID', 'escape cut by query'],
  ['/a b', 'ERR_PATH_INVALID', 'raw space'],
  ['/a\tb', 'ERR_PATH_INVALID', 'raw tab'],
  ['/a\u0000', 'ERR_PATH_INVALID', 'raw NUL'],
  ['/a\u007f', 'ERR_PATH_INVALID', 'raw DEL'],
  ['/caf\u00e9', 'ERR_PATH_INVALID', 'raw non-ASCII'],
  ['/a?x=\u0001', 'ERR_PATH_INVALID', 'control char in query'],
  ['/a?x= y', 'ERR_PATH_INVALID', 'space in query'],
  ['*', 'ERR_PATH_INVALID', 'asterisk-form'],
  ['http://evil/admin', 'ERR_PATH_INVALID', 'absolute-form'],
  ['evil:443', 'ERR_PATH_INVALID', 'authority-form'],
  ['', 'ERR_PATH_INVALID', 'empty target'],
  ['admin', 'ERR_PATH_INVALID', 'relative path'],
];

function outcome(target: string, opts: PathOptions): string {
  const r = normalizeTarget(target, opts);
  return r.ok ? r.path + r.query : r.code;
}

describe('normalizeTarget (defaults: merge slashes, reject escaped slashes)', () => {
  it.each(DEFAULT_ROWS)('%j → %j (%s)', (target, expected) => {
    expect(outcome(target, DEFAULTS)).toBe(expected);
  });

  it('splits the query from the path', () => {
    expect(normalizeTarget('/a/../b?q=1', DEFAULTS)).toEqual({ ok: true, path: '/b', query: '?q=1' });
  });

  it('returns the input string itself when nothing changes', () => {
    const t = '/orders/42';
    const r = normalizeTarget(t, DEFAULTS);
    expect(r.ok && r.path).toBe(t);
  });

  it('is idempotent: normalizing a normalized path changes nothing', () => {
    for (const [target] of DEFAULT_ROWS) {
      const once = normalizeTarget(target, DEFAULTS);
      if (!once.ok) continue;
      expect(outcome(once.path + once.query, DEFAULTS)).toBe(once.path + once.query);
    }
  });
});

describe('normalizeTarget options', () => {
  it.each([
    ['//admin', '//admin'],
    ['/a//b/', '/a//b/'],
    ['/a//../b', '/a/b'],
    ['/a/./b', '/a/b'],
  ] as const)('mergeSlashes=false keeps empty segments: %j → %j', (target, expected) => {
    expect(outcome(target, KEEP_SLASHES)).toBe(expected);
  });

  it.each([
    ['/x%2F..%2Fadmin', '/x%2F..%2Fadmin', 'kept encoded: ..%2F is not a dot-segment'],
    ['/x%2f', '/x%2F', 'upper-cased'],
    ['/x%5c', '/x%5C', 'upper-cased backslash'],
    ['/a/..%2Fb', '/a/..%2Fb', 'not a separator'],
  ] as const)('rejectEscapedSlashes=false: %j → %j (%s)', (target, expected, _why) => {
    expect(outcome(target, ALLOW_ESCAPED)).toBe(expected);
  });

  it('raw backslash is refused whatever the options', () => {
    expect(outcome('/a\\b', ALLOW_ESCAPED)).toBe('ERR_PATH_AMBIGUOUS');
  });
});

describe('removeDotSegments (RFC 3986 §5.2.4 examples)', () => {
  it.each([
    ['/a/b/c/./../../g', '/a/g'],
    ['/mid/content=5/../6', '/mid/6'],
    ['/a/b/../../..', '/'],
    ['/a/b/../c/', '/a/c/'],
  ] as const)('%j → %j', (input, expected) => {
    expect(removeDotSegments(input, true)).toBe(expected);
  });
});

describe('grpcMethodOf', () => {
  it.each([
    ['/ward.demo.v1.Orders/GetOrder', '/ward.demo.v1.Orders/GetOrder'],
    ['/pkg.Svc/Method/extra', undefined],
    ['/pkg.Svc/', undefined],
    ['//Method', undefined],
    ['/pkg.Svc', undefined],
    ['/', undefined],
  ] as const)('%j → %j', (path, expected) => {
    expect(grpcMethodOf(path)).toBe(expected);
  });
});

describe('queryHasAccessToken', () => {
  it.each([
    ['?access_token=abc', true],
    ['?a=1&access_token=abc', true],
    ['?access_token', true],
    ['?access%5Ftoken=abc', true],
    ['?%61ccess_token=x', true],
    ['?my_access_token=abc', false],
    ['?access_tokens=abc', false],
    ['?x=access_token', false],
    ['?x=1', false],
    ['?%zz=1', false],
    // `;` separates parameters for some frameworks (regression: only `&` was read)
    ['?a=1;access_token=abc', true],
    ['?a=1&b=2;access_token', true],
    ['?x=a;b', false],
  ] as const)('%j → %j', (q, expected) => {
    expect(queryHasAccessToken(q)).toBe(expected);
  });
});

describe('validAuthority (Host, :authority)', () => {
  it('takes host[:port] with a reg-name, IPv4 or IP-literal host', () => {
    for (const a of ['orders', 'orders:8080', 'Orders.NS.svc:1', '10.0.0.1', '[::1]', '[2001:db8::1]:443', '[v1.x:y]', 'a%2Db', "a!$&'()*+,;=b", 'host:']) {
      expect(validAuthority(a), a).toBe(true);
    }
  });

  it('refuses what would end an authority, userinfo, bad ports and escapes, and the empty string (regression)', () => {
    // An empty one right after a good one: the memo of the last good authority must not start out as ''.
    expect(validAuthority('orders')).toBe(true);
    for (const a of ['', 'orders/x', 'orders?x', 'orders#x', 'user@orders', 'a b', 'orders:123456', 'orders:8a', '[::1', '::1', '%zz', '%2', 'ördérs', 'a\\b', 'a"b']) {
      expect(validAuthority(a), JSON.stringify(a)).toBe(false);
    }
  });
});
