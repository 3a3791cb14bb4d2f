import { isAscii } from 'node:buffer';
import { isJsonObject, parseStrictJsonObject } from './json.ts';
import type { JsonObject } from './json.ts';

/**
 * JWS compact serialization (RFC 7515 §7.1) parsed far enough to run every cheap check before a
 * key is looked up or a signature computed. Nothing here is trusted yet: the signature step
 * (jose `compactVerify`) runs over the original token string, not over these objects.
 */
export interface ParsedJwt {
  readonly header: JsonObject;
  readonly payload: JsonObject;
  readonly alg: string;
  readonly kid: string | undefined;
  readonly typ: string | undefined;
  /** The payload segment as received: base64url of the claims JSON exactly as signed. */
  readonly payloadSegment: string;
}

/**
 * Header members that would let the token choose its own verification key (RFC 7515 §4.1.2–6).
 * Trusting them is the classic "embedded jwk" forgery; ignoring them silently hides an attack,
 * so a token carrying one is refused outright.
 */
const KEY_CARRYING_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;

/**
 * Three segments of the base64url alphabet (RFC 4648 §5), the last possibly empty. One regexp
 * pass over the whole token: V8 compiles it to a scanner several times faster than a loop here.
 */
const COMPACT_B64URL = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Whether `token` should be treated as a JWT (exactly three segments) at all. */
export function isCompactJws(token: string): boolean {
  const a = token.indexOf('.');
  if (a === -1) return false;
  const b = token.indexOf('.', a + 1);
  return b !== -1 && token.indexOf('.', b + 1) === -1;
}

/**
 * Parses a three-segment token. Returns the parsed JWT or a log-only reason string
 * (ERR_TOKEN_MALFORMED). The signature segment may be empty here so that `alg: none` is reported
 * as the algorithm failure it is, by the next check.
 */
export function parseJwt(token: string): ParsedJwt | string {
  const a = token.indexOf('.');
  const b = token.indexOf('.', a + 1);
  if (a <= 0 || b <= a + 1 || token.indexOf('.', b + 1) !== -1) return 'not three non-empty base64url segments';
  if (!COMPACT_B64URL.test(token) || !canonical(token, 0, a) || !canonical(token, a + 1, b) || !canonical(token, b + 1, token.length)) {
    return 'segment is not unpadded base64url';
  }
  const header = decodeObject(token.slice(0, a), false);
  if (header === undefined) return 'header is not a strict JSON object';
  const payloadSegment = token.slice(a + 1, b);
  // The claims become the identity's, shared read-only through the cache: frozen as parsed.
  const payload = decodeObject(payloadSegment, true);
  if (payload === undefined) return 'payload is not a strict JSON object';

  const alg = header['alg'];
  if (typeof alg !== 'string' || alg === '') return 'header alg missing';
  // RFC 7515 §4.1.11: a recipient MUST reject a token whose `crit` names an extension it does not
  // implement. We implement none (not even RFC 7797 `b64`), so any `crit` is refused.
  if (header['crit'] !== undefined) return 'header crit not supported';
  if (header['b64'] !== undefined) return 'header b64 not supported';
  for (const name of KEY_CARRYING_HEADERS) {
    if (header[name] !== undefined) return `header ${name} is never trusted`;
  }
  const kid = header['kid'];
  if (kid !== undefined && typeof kid !== 'string') return 'header kid is not a string';
  const typ = header['typ'];
  if (typ !== undefined && typeof typ !== 'string') return 'header typ is not a string';
  return { header, payload, alg, kid, typ, payloadSegment };
}

/** Whether the base64url segment `s[from, to)` (alphabet already checked) is canonical. */
function canonical(s: string, from: number, to: number): boolean {
  // Length ≡ 1 (mod 4) cannot come from whole bytes (RFC 4648 §5 without padding).
  if ((to - from) % 4 === 1) return false;
  // Canonical encoding only (RFC 4648 §3.5): the bits of the last character beyond the last
  // whole byte must be zero. Otherwise up to 16 spellings decode to the same signature, and one
  // signed token has many accepted strings (a replay past any exact-string revocation or cache;
  // RFC 8725 §2.6).
  const rem = (to - from) % 4;
  if (rem !== 0) {
    const v = sextet(s.charCodeAt(to - 1));
    if ((v & (rem === 2 ? 0x0f : 0x03)) !== 0) return false;
  }
  return true;
}

function sextet(c: number): number {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26;
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52;
  return c === 0x2d ? 62 : 63; // - or _
}

function decodeObject(segment: string, freeze: boolean): JsonObject | undefined {
  const bytes = Buffer.from(segment, 'base64url');
  let text: string;
  if (isAscii(bytes)) text = bytes.toString('latin1'); // the usual case: no UTF-8 decoding to do
  else {
    try {
      text = utf8.decode(bytes);
    } catch {
      return undefined; // not UTF-8
    }
  }
  const v = parseStrictJsonObject(text, freeze);
  return isJsonObject(v) ? v : undefined;
}

/** RFC 9068 §4: `typ` must be `at+jwt`; media types compare case-insensitively (RFC 7515 §4.1.9). */
export function isAccessTokenType(typ: string | undefined): boolean {
  if (typ === undefined) return false;
  const t = typ.toLowerCase();
  return t === 'at+jwt' || t === 'application/at+jwt';
}
