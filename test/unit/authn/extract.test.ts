import { describe, expect, it } from 'vitest';
import { extractBearer } from '../../../src/authn/extract.ts';
import type { Extracted } from '../../../src/authn/extract.ts';

const MAX = 64;
const TOKEN = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln';

function outcome(e: Extracted): string {
  return e.kind === 'error' ? e.code : e.kind === 'token' ? `token:${e.token}` : 'none';
}
const x = (v: string | string[] | undefined, max = MAX): string => outcome(extractBearer(v, max));

describe('extractBearer', () => {
  it('absent header or empty header list is "none"', () => {
    expect(x(undefined)).toBe('none');
    expect(x([])).toBe('none');
  });

  it('accepts Bearer with any case of the scheme', () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) expect(x(`${scheme} ${TOKEN}`)).toBe(`token:${TOKEN}`);
  });

  it('accepts the whole RFC 6750 b64token alphabet and trailing "="', () => {
    const t = 'AZaz09-._~+/==';
    expect(x(`Bearer ${t}`)).toBe(`token:${t}`);
    expect(x('Bearer abc=')).toBe('token:abc=');
  });

  it('ignores surrounding OWS and accepts 1*SP between scheme and token', () => {
    expect(x(`  Bearer ${TOKEN}\t `)).toBe(`token:${TOKEN}`);
    expect(x(`Bearer    ${TOKEN}`)).toBe(`token:${TOKEN}`);
  });

  it('a single-element header array is the header', () => {
    expect(x([`Bearer ${TOKEN}`])).toBe(`token:${TOKEN}`);
  });

  it('several Authorization fields are ERR_TOKEN_MULTIPLE, even if one is fine', () => {
    expect(x([`Bearer ${TOKEN}`, `Bearer ${TOKEN}`])).toBe('ERR_TOKEN_MULTIPLE');
    expect(x([`Bearer ${TOKEN}`, ''])).toBe('ERR_TOKEN_MULTIPLE');
    expect(x(['Basic Zm9vOmJhcg==', `Bearer ${TOKEN}`])).toBe('ERR_TOKEN_MULTIPLE');
  });

  it('a comma-joined credential list is ERR_TOKEN_MULTIPLE', () => {
    expect(x(`Bearer ${TOKEN}, Bearer abc`)).toBe('ERR_TOKEN_MULTIPLE');
    expect(x(`Bearer abc,Bearer def`)).toBe('ERR_TOKEN_MULTIPLE');
    expect(x(`Basic Zm9v, Bearer ${TOKEN}`)).toBe('ERR_TOKEN_MULTIPLE');
    expect(x(`Bearer ${TOKEN},`)).toBe('ERR_TOKEN_MULTIPLE');
    expect(x(',')).toBe('ERR_TOKEN_MULTIPLE');
  });

  it('other schemes are ERR_TOKEN_MALFORMED: only Bearer is accepted', () => {
    for (const v of ['Basic Zm9vOmJhcg==', 'Digest username=x', 'DPoP abc', 'Token abc', 'Bearerabc', 'Bear abc', 'Bearer\tabc', 'B']) {
      expect(x(v), v).toBe('ERR_TOKEN_MALFORMED');
    }
  });

  it('empty or whitespace-only header, or Bearer without a token, is ERR_TOKEN_MALFORMED', () => {
    for (const v of ['', ' ', '\t \t', 'Bearer', 'Bearer ', 'Bearer    ', ['']]) expect(x(v), JSON.stringify(v)).toBe('ERR_TOKEN_MALFORMED');
  });

  it('anything but exactly one b64token is ERR_TOKEN_MALFORMED', () => {
    const bad = [
      'Bearer abc def', // two words
      'Bearer abc\tdef',
      'Bearer =abc', // padding first
      'Bearer ab=c', // padding in the middle
      'Bearer abc==x',
      'Bearer "abc"', // quoted
      'Bearer a;b',
      'Bearer a*b',
      'Bearer ä',
      'Bearer abc\u0000',
      'Bearer a\r\nX-Injected: 1',
      'Bearer token=abc', // auth-param form
    ];
    for (const v of bad) expect(x(v), JSON.stringify(v)).toBe('ERR_TOKEN_MALFORMED');
  });

  it('size is checked before parsing and bounds the token exactly', () => {
    const exact = 'a'.repeat(MAX);
    expect(x(`Bearer ${exact}`)).toBe(`token:${exact}`);
    expect(x(`Bearer ${exact}b`)).toBe('ERR_TOKEN_TOO_LARGE');
    // garbage longer than the limit never reaches the scanner: size wins over scheme and commas
    expect(x(`Basic ${'x'.repeat(MAX * 2)}`)).toBe('ERR_TOKEN_TOO_LARGE');
    expect(x(`Bearer a, ${'x'.repeat(MAX * 2)}`)).toBe('ERR_TOKEN_TOO_LARGE');
    // extra spaces eat into the header allowance: the whole field is bounded
    expect(x(`Bearer  ${exact}`)).toBe('ERR_TOKEN_TOO_LARGE');
  });

  it('returns the token as an exact slice (no trimming of token characters)', () => {
    const e = extractBearer('Bearer a.b.c~', MAX);
    expect(e).toEqual({ kind: 'token', token: 'a.b.c~' });
  });

  it('errors are stable constants that callers cannot mutate', () => {
    const a = extractBearer('Basic x', MAX);
    const b = extractBearer('Digest x', MAX);
    expect(a).toBe(b);
    expect(Object.isFrozen(a)).toBe(true);
    expect(a.kind === 'error' && a.detail).toBeTruthy();
  });

  it('stays linear on adversarial input (no regex backtracking)', () => {
    // a long run of token characters followed by a bad one: one pass, still a plain rejection
    const v = `Bearer ${'a'.repeat(60_000)}!`;
    expect(x(v, 100_000)).toBe('ERR_TOKEN_MALFORMED');
    expect(x(`Bearer ${'='.repeat(60_000)}`, 100_000)).toBe('ERR_TOKEN_MALFORMED');
  });
});
