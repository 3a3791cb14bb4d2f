import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { inheritsNothing, parseStrictJson } from '../../src/authn/json.ts';
import { isCompactJws, parseJwt } from '../../src/authn/jwt.ts';
import { hasToken, scanRequestHeaders } from '../../src/inbound/headers.ts';
import { grpcMethodOf, normalizeTarget, queryHasAccessToken, removeDotSegments } from '../../src/lib/normalize.ts';

/**
 * Property-based fuzzing of the request-path parsers (fast-check). Each property is bounded by
 * `numRuns` and a time limit, so the suite is CI-sized; a failure prints the seed and the
 * shrunk counterexample to replay it (`fc.assert(…, { seed, path })`).
 */

const LIMIT = { numRuns: 2000, interruptAfterTimeLimit: 3000, markInterruptAsFailure: false } as const;

// ---- Authorization → bearer token (RFC 6750 §2.1)

const B64TOKEN_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/';
const b64tokenChar = fc.constantFrom(...B64TOKEN_CHARS.split(''));
const noisyChar = fc.constantFrom(...`${B64TOKEN_CHARS}= \t,;"'\\:\u0000\r\n\u00e9\u200b`.split(''));

/** A reference implementation straight from the grammar, with nothing optimised. */
function referenceExtract(v: string, max: number): { kind: string; token?: string; code?: string } {
  if (v.length > max + 7) return { kind: 'error', code: 'ERR_TOKEN_TOO_LARGE' };
  const t = v.replace(/^[ \t]+|[ \t]+$/g, '');
  if (t === '') return { kind: 'error', code: 'ERR_TOKEN_MALFORMED' };
  if (t.includes(',')) return { kind: 'error', code: 'ERR_TOKEN_MULTIPLE' };
  const m = /^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)$/.exec(t);
  if (m === null) return { kind: 'error', code: 'ERR_TOKEN_MALFORMED' };
  const token = m[1] as string;
  if (token.length > max) return { kind: 'error', code: 'ERR_TOKEN_TOO_LARGE' };
  return { kind: 'token', token };
}

const authorizationValue = fc.oneof(
  // shaped like a credential, with noise in every part
  fc
    .tuple(
      fc.constantFrom('', ' ', '\t', '  '),
      fc.constantFrom('Bearer', 'bearer', 'BEARER', 'BeArEr', 'Basic', 'Bearer\t', 'Bearerx', 'DPoP', ''),
      fc.constantFrom(' ', '  ', '', '\t', ' \t'),
      fc.string({ unit: b64tokenChar, minLength: 0, maxLength: 40 }),
      fc.constantFrom('', '=', '==', '=a', ' x', ','),
      fc.constantFrom('', ' ', '\t'),
    )
    .map((p) => p.join('')),
  fc.string({ unit: noisyChar, maxLength: 60 }),
  fc.string({ maxLength: 60 }),
);

describe('extractBearer', () => {
  it('agrees with the RFC 6750 grammar on every value, and never throws', () => {
    fc.assert(
      fc.property(authorizationValue, fc.integer({ min: 1, max: 64 }), (v, max) => {
        const got = extractBearer(v, max);
        const want = referenceExtract(v, max);
        expect(got.kind).toBe(want.kind);
        if (got.kind === 'token') expect(got.token).toBe(want.token);
        if (got.kind === 'error') expect(got.code).toBe(want.code);
      }),
      LIMIT,
    );
  });

  it('a repeated field is never resolved to one of its values', () => {
    fc.assert(
      fc.property(fc.array(authorizationValue, { minLength: 2, maxLength: 4 }), (vs) => {
        expect(extractBearer(vs, 8192)).toMatchObject({ kind: 'error', code: 'ERR_TOKEN_MULTIPLE' });
      }),
      LIMIT,
    );
  });

  it('an extracted token is always a b64token substring of the value', () => {
    fc.assert(
      fc.property(authorizationValue, (v) => {
        const got = extractBearer(v, 8192);
        if (got.kind !== 'token') return;
        expect(v.includes(got.token)).toBe(true);
        expect(/^[A-Za-z0-9\-._~+/]+=*$/.test(got.token)).toBe(true);
      }),
      LIMIT,
    );
  });
});

// ---- request-target normalization (RFC 3986 §5.2.4, §6.2.2)

/** Characters that make path tricks: separators, dots, escapes of both, the odd ones out. */
const pathPiece = fc.constantFrom(
  '/', '//', '.', '..', '/./', '/../', 'a', 'b', 'api', 'internal', '%2e', '%2E', '%2f', '%2F', '%5c', '%5C', '%41', '%7e',
  '%25', '%252e', '%c0%af', '%00', '%', '%g1', ';', '\\', '?', '#', '&', '=', '~', ' ', '\t', '\u00e9', '"', '<', '|', '^', '`', '{', '@', ':', '!', '*',
);
const target = fc.oneof(
  fc.array(pathPiece, { maxLength: 16 }).map((xs) => `/${xs.join('')}`),
  fc.array(pathPiece, { maxLength: 16 }).map((xs) => xs.join('')),
  fc.string({ maxLength: 40 }).map((s) => `/${s}`),
);

const OPTIONS = [
  { mergeSlashes: true, rejectEscapedSlashes: true },
  { mergeSlashes: false, rejectEscapedSlashes: true },
  { mergeSlashes: true, rejectEscapedSlashes: false },
] as const;

describe('normalizeTarget', () => {
  it('never throws; an accepted path is canonical: origin-form, no dot segments, no merged-away slashes, only path characters', () => {
    fc.assert(
      fc.property(target, fc.constantFrom(...OPTIONS), (t, o) => {
        const n = normalizeTarget(t, o);
        if (!n.ok) {
          expect(['ERR_PATH_INVALID', 'ERR_PATH_AMBIGUOUS']).toContain(n.code);
          return;
        }
        const p = n.path;
        expect(p.startsWith('/')).toBe(true);
        expect(/^[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$/.test(p)).toBe(true);
        for (const seg of p.split('/').slice(1)) expect(seg === '.' || seg === '..').toBe(false);
        if (o.mergeSlashes) expect(p.includes('//')).toBe(false);
        // every escape is well-formed, upper-case, and not of an unreserved character
        for (const m of p.matchAll(/%(..)/g)) {
          const hex = m[1] as string;
          expect(/^[0-9A-F]{2}$/.test(hex)).toBe(true);
          expect(/[A-Za-z0-9\-._~]/.test(String.fromCharCode(parseInt(hex, 16)))).toBe(false);
        }
        if (o.rejectEscapedSlashes) expect(/%2F|%5C/.test(p)).toBe(false);
        expect(p.includes('\\') || p.includes(';') || p.includes('#') || p.includes('?')).toBe(false);
      }),
      LIMIT,
    );
  });

  it('is idempotent: the forwarded path normalizes to itself (the app and policy see one spelling)', () => {
    fc.assert(
      fc.property(target, fc.constantFrom(...OPTIONS), (t, o) => {
        const n = normalizeTarget(t, o);
        if (!n.ok) return;
        const again = normalizeTarget(n.path + n.query, o);
        expect(again).toEqual({ ok: true, path: n.path, query: n.query });
      }),
      LIMIT,
    );
  });

  it('resolves dot segments exactly as a WHATWG URL parser does (differential, on the safe alphabet)', () => {
    const safe = fc.constantFrom('/', '.', '..', 'a', 'b', '%2e', '%2E', '%2e%2e', '.%2e');
    fc.assert(
      fc.property(fc.array(safe, { maxLength: 14 }), (xs) => {
        const t = `/${xs.join('')}`;
        const n = normalizeTarget(t, { mergeSlashes: false, rejectEscapedSlashes: true });
        expect(n.ok).toBe(true);
        if (!n.ok) return;
        // WHATWG keeps `%2e` spelled out inside ordinary segments; ward decodes unreserved escapes.
        expect(n.path).toBe(new URL(`http://x${t}`).pathname.replace(/%2e/gi, '.'));
      }),
      LIMIT,
    );
  });

  it('removeDotSegments never climbs above the root and never produces a dot segment', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('', '.', '..', 'a', 'b'), { maxLength: 20 }), fc.boolean(), (segs, merge) => {
        const out = removeDotSegments(`/${segs.join('/')}`, merge);
        expect(out.startsWith('/')).toBe(true);
        expect(out.split('/').some((s) => s === '.' || s === '..')).toBe(false);
      }),
      LIMIT,
    );
  });

  it('grpcMethodOf accepts only /x/y with two non-empty segments', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('/', 'a', '.', 'S'), maxLength: 12 }), (s) => {
        const p = `/${s}`;
        const m = grpcMethodOf(p);
        if (m !== undefined) {
          const parts = p.split('/');
          expect(parts).toHaveLength(3);
          expect(parts[1] !== '' && parts[2] !== '').toBe(true);
        }
      }),
      LIMIT,
    );
  });

  it('queryHasAccessToken finds access_token under any form-encoding of its name', () => {
    const encodings = fc.constantFrom('access_token', 'access%5Ftoken', 'access%5ftoken', '%61ccess_token', 'acc%65ss%5Ftok%65n');
    fc.assert(
      fc.property(fc.array(fc.string({ unit: fc.constantFrom('a', 'b', '=', '%', '+'), maxLength: 6 }), { maxLength: 4 }), encodings, fc.nat(4), (params, name, at) => {
        const list = [...params];
        list.splice(Math.min(at, list.length), 0, `${name}=x`);
        expect(queryHasAccessToken(`?${list.join('&')}`)).toBe(true);
      }),
      LIMIT,
    );
  });
});

// ---- header scan

describe('scanRequestHeaders', () => {
  const names = fc.constantFrom(
    'authorization', 'Authorization', 'host', 'Host', 'content-length', 'transfer-encoding', 'te', 'connection', 'upgrade', 'keep-alive',
    'x-ward-subject', 'X-Ward-Claims', 'x-ward-', 'cookie', 'content-type', '__proto__', 'constructor', 'x-other', ':path',
  );
  const values = fc.constantFrom('', '0', '5', 'chunked', 'Chunked ', 'chunked, identity', 'trailers', 'close, x-other', 'x-ward-subject', 'v');

  it('never throws; nothing with the identity prefix, no pseudo-header and no hop-by-hop field is ever forwarded; prototypes untouched', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(names, values), { maxLength: 12 }), fc.boolean(), (pairs, h2) => {
        const raw = pairs.flat();
        const r = scanRequestHeaders(raw, h2, { prefix: 'x-ward-', stripAuthorization: false });
        if ('error' in r) return;
        for (const name of Object.keys(r.fwd)) {
          expect(name.startsWith('x-ward-')).toBe(false);
          expect(name.startsWith(':')).toBe(false);
          expect(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'host', 'proxy-connection']).not.toContain(name);
        }
        expect(Object.getPrototypeOf(r.fwd)).toBeNull();
        expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
        // Framing is never ambiguous for an accepted message
        const lengths = pairs.filter(([n]) => n.toLowerCase() === 'content-length').length;
        const codings = pairs.filter(([n]) => n.toLowerCase() === 'transfer-encoding').length;
        expect(lengths <= 1 && codings <= 1 && !(lengths === 1 && codings === 1)).toBe(true);
      }),
      LIMIT,
    );
  });

  it('hasToken matches whole list elements only', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('trailers', 'xtrailers', 'trailersx', 'gzip', ' ', ''), { maxLength: 5 }), (items) => {
        const v = items.join(',');
        expect(hasToken(v, 'trailers')).toBe(items.some((i) => i.trim() === 'trailers'));
      }),
      LIMIT,
    );
  });
});

// ---- strict JSON and the JWS parser

describe('strict JSON (JOSE headers, JWT payloads, JWKS)', () => {
  it('agrees with JSON.parse on JSON without duplicate or __proto__ members, and returns null-prototype objects', () => {
    fc.assert(
      fc.property(fc.json({ depthSize: 'small' }), (text) => {
        const mine = parseStrictJson(text);
        const theirs: unknown = JSON.parse(text);
        if (text.includes('"__proto__"')) return;
        // Numbers like 1e999 are JSON but not finite: the strict parser refuses them by design.
        if (mine === undefined) {
          expect(JSON.stringify(theirs)).toMatch(/null/);
          return;
        }
        expect(JSON.stringify(mine)).toBe(JSON.stringify(theirs));
      }),
      LIMIT,
    );
  });

  it('reads every integer and decimal spelling as JSON.parse does (the integer fast path included)', () => {
    const digits = fc.string({ unit: fc.constantFrom(...'0123456789'.split('')), minLength: 1, maxLength: 20 });
    const spelling = fc.tuple(fc.boolean(), digits, fc.option(digits), fc.option(fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), digits)));
    fc.assert(
      fc.property(spelling, ([neg, int, frac, exp]) => {
        const text = `${neg ? '-' : ''}${int}${frac === null ? '' : `.${frac}`}${exp === null ? '' : exp.join('')}`;
        let theirs: unknown;
        try {
          theirs = JSON.parse(text);
        } catch {
          expect(parseStrictJson(text)).toBeUndefined(); // leading zeros and the like
          return;
        }
        const mine = parseStrictJson(`[${text}]`);
        if (!Number.isFinite(theirs)) expect(mine).toBeUndefined();
        else expect(Object.is((mine as number[])[0], theirs), text).toBe(true);
      }),
      LIMIT,
    );
  });

  it('reads member names right while issuers repeat them at the same positions (the name memo)', () => {
    // Few distinct names, prefixes of each other, some spelled with escapes: every document
    // parsed after another tests the memo of the names at each position.
    const name = fc.constantFrom('iss', 'is', 'issx', 'sub', '\\u0069ss', 'i\\"s', 'a', '');
    const doc = fc.uniqueArray(fc.tuple(name, fc.oneof(fc.integer(), fc.constantFrom('"v"', 'true', '{"iss":1}'))), { selector: ([n]) => JSON.parse(`"${n}"`) as string, maxLength: 6 });
    fc.assert(
      fc.property(fc.array(doc, { minLength: 1, maxLength: 8 }), (docs) => {
        for (const members of docs) {
          const text = `{${members.map(([n, v]) => `"${n}":${String(v)}`).join(',')}}`;
          expect(JSON.stringify(parseStrictJson(text)), text).toBe(JSON.stringify(JSON.parse(text)));
        }
      }),
      LIMIT,
    );
  });

  it('never throws on arbitrary text, and never yields an object with a prototype', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '1', 'e', '-', '\\', 'u', ' ', 'a'), maxLength: 80 })), (text) => {
        const v = parseStrictJson(text);
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) expect(inheritsNothing(v)).toBe(true);
      }),
      LIMIT,
    );
  });

  it('refuses any duplicate member name, at any depth', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 3 }), fc.nat(3), (name, depth) => {
        const dup = `{"${name}":1,"${name}":2}`;
        const wrapped = `${'{"x":'.repeat(depth)}${dup}${'}'.repeat(depth)}`;
        expect(parseStrictJson(wrapped)).toBeUndefined();
      }),
      LIMIT,
    );
  });

  it('parseJwt never throws and rejects every non-canonical or non-three-segment input', () => {
    const seg = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.'.split('')), maxLength: 24 });
    fc.assert(
      fc.property(fc.array(seg, { maxLength: 5 }), (segs) => {
        const t = segs.join('.');
        const r = parseJwt(t);
        if (typeof r !== 'string') {
          expect(isCompactJws(t)).toBe(true);
          expect(inheritsNothing(r.header)).toBe(true);
          // An independent statement of "canonical unpadded base64url": the alphabet, a length
          // that whole bytes can give, and zero bits past the last whole byte.
          for (const s of t.split('.')) {
            expect(s).toMatch(/^[A-Za-z0-9_-]*$/);
            expect(s.length % 4).not.toBe(1);
            const last = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.indexOf(s.at(-1) ?? 'A');
            if (s.length % 4 === 2) expect(last & 0x0f).toBe(0);
            if (s.length % 4 === 3) expect(last & 0x03).toBe(0);
          }
        }
      }),
      LIMIT,
    );
  });
});
