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

/** What a JOSE header yields: the fields the verifier uses, or a log-only reason it is refused. */
interface Header {
  readonly header: JsonObject;
  readonly alg: string;
  readonly kid: string | undefined;
  readonly typ: string | undefined;
}

/**
 * Header members that would let the token choose its own verification key (RFC 7515 §4.1.2-6).
 * Trusting them is the classic "embedded jwk" forgery; ignoring them silently hides an attack,
 * so a token carrying one is refused outright.
 */
const KEY_CARRYING_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;

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
  const h = headerOf(token.slice(0, a));
  if (typeof h === 'string') return h;
  const payloadSegment = token.slice(a + 1, b);
  // The signature is decoded where it is checked (verify.ts), into a buffer of its own.
  if (!isCanonical(payloadSegment) || !isCanonical(token.slice(b + 1))) return 'segment is not unpadded base64url';
  // The claims become the identity's, shared read-only through the cache: frozen as parsed.
  const payload = decodeObject(payloadSegment, true);
  if (payload === undefined) return 'payload is not a strict JSON object';
  return { header: h.header, payload, alg: h.alg, kid: h.kid, typ: h.typ, payloadSegment };
}

/**
 * The last header segment parsed and what it gave. An issuer signs token after token with the
 * same header (`alg`, `kid`, `typ`), so a token that was not seen before usually still repeats
 * the header of the last one: it is compared instead of decoded and parsed again. The result is
 * a pure function of the segment, frozen, and shared read-only.
 */
let lastHeaderSegment = '';
let lastHeader: Header | string = 'no header yet';

function headerOf(segment: string): Header | string {
  if (segment === lastHeaderSegment) return lastHeader;
  const h = parseHeader(segment);
  lastHeaderSegment = segment;
  lastHeader = h;
  return h;
}

function parseHeader(segment: string): Header | string {
  if (!isCanonical(segment)) return 'segment is not unpadded base64url';
  const header = decodeObject(segment, true);
  if (header === undefined) return 'header is not a strict JSON object';
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
  return Object.freeze({ header, alg, kid, typ });
}

/** The base64url alphabet (RFC 4648 §5), nothing else: no `+`, `/` or `=` padding. */
const B64URL = /^[A-Za-z0-9_-]*$/;

/**
 * Whether `segment` is unpadded base64url (RFC 4648 §5) and the one canonical spelling of its
 * bytes: the alphabet alone, a length whole bytes can give, and zero bits past the last whole
 * byte (§3.5). Node's decoder would take `+`, `/` and `=`, skip other characters and ignore
 * trailing bits, so one signed token would have many accepted spellings: a replay past any
 * exact-string revocation or cache (RFC 8725 §2.6). Checked on the string, so nothing is
 * allocated for it (an encode-and-compare round trip costs ~0.7 KiB of garbage per token, which
 * matters when every call brings a new one).
 */
export function isCanonical(segment: string): boolean {
  const rem = segment.length % 4;
  if (rem === 1 || !B64URL.test(segment)) return false;
  return rem === 0 || (sextet(segment.charCodeAt(segment.length - 1)) & (rem === 2 ? 0x0f : 0x03)) === 0;
}

function sextet(c: number): number {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26;
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52;
  return c === 0x2d ? 62 : 63; // - or _
}

/** Scratch for a decoded header or payload; grows to the longest seen. */
let segmentBytes = Buffer.allocUnsafeSlow(2048);

/**
 * The JSON object a canonical segment encodes, or undefined. Decoded into `segmentBytes` (no
 * Buffer per token) and read as UTF-8 leniently, which for valid UTF-8 is the text itself and
 * otherwise holds U+FFFD; only then is it decoded again strictly, which refuses what is not
 * UTF-8 and keeps a U+FFFD the claims really hold.
 */
function decodeObject(segment: string, freeze: boolean): JsonObject | undefined {
  const most = (segment.length * 3) >> 2;
  if (segmentBytes.length < most) segmentBytes = Buffer.allocUnsafeSlow(Math.max(most, 2 * segmentBytes.length));
  const n = segmentBytes.write(segment, 0, 'base64url');
  let text = segmentBytes.toString('utf8', 0, n);
  if (text.includes('\uFFFD')) {
    try {
      text = utf8.decode(segmentBytes.subarray(0, n));
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
