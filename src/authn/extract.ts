import type { ErrorCode } from '../errors/codes.ts';

/**
 * RFC 6750 §2.1 bearer extraction from the `Authorization` field: the first stage of the request
 * path, so it is a single forward scan (one linear sticky regex for the token run, see below)
 * and allocates nothing but the token slice and its result; every failure is a preallocated constant.
 */
export type Extracted =
  | { readonly kind: 'none' }
  | { readonly kind: 'token'; readonly token: string }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly detail: string };

const NONE: Extracted = Object.freeze({ kind: 'none' });

function fail(code: ErrorCode, detail: string): Extracted {
  return Object.freeze({ kind: 'error', code, detail });
}
const MULTIPLE_FIELDS = fail('ERR_TOKEN_MULTIPLE', 'more than one Authorization field');
const MULTIPLE_LIST = fail('ERR_TOKEN_MULTIPLE', 'comma-separated credentials in Authorization');
const TOO_LARGE = fail('ERR_TOKEN_TOO_LARGE', 'bearer token longer than maxTokenBytes');
const EMPTY = fail('ERR_TOKEN_MALFORMED', 'empty Authorization field');
const NOT_BEARER = fail('ERR_TOKEN_MALFORMED', 'Authorization scheme is not Bearer');
const NO_TOKEN = fail('ERR_TOKEN_MALFORMED', 'Bearer credentials without a token');
const BAD_TOKEN = fail('ERR_TOKEN_MALFORMED', 'bearer token is not a single b64token');

/** `Bearer` plus the one mandatory SP: the header may exceed the token limit by this much. */
const SCHEME_LEN = 6;
const PREFIX_LEN = SCHEME_LEN + 1;
const SCHEME = 'bearer';
const SP = 0x20;
const HTAB = 0x09;
const EQUALS = 0x3d;

/**
 * RFC 6750 §2.1 b64token body: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ), then
 * *"=" (checked by hand). Sticky and a single character class under one quantifier: it matches
 * one greedy run from `lastIndex` and stops, with no alternation or nested quantifier to
 * backtrack into, so it is linear. It measured ~1.7x faster than a charCodeAt loop over a 600-byte
 * token (scripts/bench/micro-authn.ts), which is why it is a regex at all.
 */
const B64TOKEN_RUN = /[A-Za-z0-9\-._~+/]+/y;

/**
 * The last field value that held a token, and its result: a client repeats its Authorization
 * value on call after call, and the scan of a ~700-byte token is then skipped (one string
 * comparison instead, BENCHMARKS.md). One value at a time, replaced by the next token seen.
 */
let lastValue = '';
let lastMax = -1;
let lastResult: Extracted = NONE;

/**
 * Extracts the bearer token from an `Authorization` value (a string, or the array an HTTP/2
 * peer produces when it repeats the field).
 *
 * - absent field -> `none`; several fields or a comma-joined list -> ERR_TOKEN_MULTIPLE (a good
 *   and a bad credential side by side must not let either through, cf. Envoy authenticator.cc);
 * - longer than maxTokenBytes (+ `Bearer `) -> ERR_TOKEN_TOO_LARGE, before any scanning;
 * - scheme `Bearer` matched case-insensitively (RFC 9110 §11.1); any other scheme, an empty
 *   field, or anything but exactly one b64token -> ERR_TOKEN_MALFORMED.
 *
 * Leading/trailing OWS is ignored (RFC 9110 §5.5 excludes it from the field value). Between
 * scheme and token RFC 6750's grammar is `1*SP`, so several spaces are accepted; a tab is not.
 */
export function extractBearer(value: string | readonly string[] | undefined, maxTokenBytes: number): Extracted {
  if (value === undefined) return NONE;
  let v: string;
  if (typeof value === 'string') v = value;
  else {
    if (value.length === 0) return NONE;
    if (value.length > 1) return MULTIPLE_FIELDS;
    v = value[0] as string;
  }
  if (v === lastValue && maxTokenBytes === lastMax) return lastResult;
  if (v.length > maxTokenBytes + PREFIX_LEN) return TOO_LARGE;

  let start = 0;
  let end = v.length;
  while (start < end && isOws(v.charCodeAt(start))) start++;
  while (end > start && isOws(v.charCodeAt(end - 1))) end--;
  if (start === end) return EMPTY;
  // A comma is in neither the scheme nor a b64token, so one means a credential list (a proxy
  // folding repeated fields, RFC 9110 §5.3), not a typo we could repair.
  const comma = v.indexOf(',', start);
  if (comma !== -1 && comma < end) return MULTIPLE_LIST;

  if (end - start < SCHEME_LEN) return NOT_BEARER;
  for (let k = 0; k < SCHEME_LEN; k++) {
    // ASCII letters only: OR-ing 0x20 folds A-Z onto a-z and leaves no other byte equal to them.
    if ((v.charCodeAt(start + k) | 0x20) !== SCHEME.charCodeAt(k)) return NOT_BEARER;
  }
  let i = start + SCHEME_LEN;
  if (i === end) return NO_TOKEN;
  if (v.charCodeAt(i) !== SP) return NOT_BEARER; // `Bearerx...`, `Bearer\t...`
  while (i < end && v.charCodeAt(i) === SP) i++;
  const tokenStart = i;
  B64TOKEN_RUN.lastIndex = i;
  if (!B64TOKEN_RUN.test(v)) return BAD_TOKEN; // `Bearer =`, `Bearer ä...`
  i = B64TOKEN_RUN.lastIndex; // the run cannot pass `end`: OWS is not in the class
  while (i < end && v.charCodeAt(i) === EQUALS) i++;
  if (i !== end) return BAD_TOKEN; // a second word, or a character outside the b64token set
  if (end - tokenStart > maxTokenBytes) return TOO_LARGE;
  const result: Extracted = Object.freeze({ kind: 'token', token: v.slice(tokenStart, end) });
  lastValue = v;
  lastMax = maxTokenBytes;
  lastResult = result;
  return result;
}

function isOws(c: number): boolean {
  return c === SP || c === HTAB;
}
