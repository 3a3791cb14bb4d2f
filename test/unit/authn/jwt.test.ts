import { describe, expect, it } from 'vitest';
import { identityParts, isFailure } from '../../../src/authn/claims.ts';
import { parseJwt } from '../../../src/authn/jwt.ts';

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const H = b64({ alg: 'RS256', kid: 'k1', typ: 'at+jwt' });
const SIG = Buffer.alloc(256, 0xa5).toString('base64url');

describe('parseJwt', () => {
  it('parses header, payload and signature', () => {
    const r = parseJwt(`${H}.${b64({ sub: 'alice' })}.${SIG}`);
    if (typeof r === 'string') throw new Error(r);
    expect(r.alg).toBe('RS256');
    expect(r.kid).toBe('k1');
    expect(r.typ).toBe('at+jwt');
    expect(r.payload['sub']).toBe('alice');
    expect(Object.isFrozen(r.header) && Object.isFrozen(r.payload)).toBe(true);
  });

  // '~~~' encodes to base64 digits 62 and 63, so the segment holds '-' and '_'.
  const WITH_62_63 = b64('{"s":"~~~?"}');
  it.each([
    ['standard alphabet', (s: string) => s.replace(/-/g, '+').replace(/_/g, '/'), WITH_62_63],
    ['padding', (s: string) => `${s}==`, b64('{"sub":"al"}')],
    ['a stray character', (s: string) => `${s.slice(0, 4)}!${s.slice(4)}`, b64({ sub: 'alice' })],
    ['a length no bytes give', (s: string) => `${s}A`, b64({ sub: 'alice' })],
    ['trailing bits set', (s: string) => `${s.slice(0, -1)}${String.fromCharCode(s.charCodeAt(s.length - 1) + 1)}`, b64({ sub: 'al' })],
  ])('refuses a header or payload segment with %s', (_what, spoil, segment) => {
    expect(parseJwt(`${H}.${segment}.${SIG}`)).not.toBeTypeOf('string');
    const spoilt = spoil(segment);
    expect(spoilt).not.toBe(segment);
    // the lenient decoder would still read something from it
    expect(Buffer.from(spoilt, 'base64url').length).toBeGreaterThan(0);
    expect(parseJwt(`${H}.${spoilt}.${SIG}`)).toBe('segment is not unpadded base64url');
    expect(parseJwt(`${spoilt}.${b64({ sub: 'a' })}.${SIG}`)).toBe('segment is not unpadded base64url');
  });

  it.each([
    ['standard alphabet', `+${SIG.slice(1)}`],
    ['padding', `${SIG}==`],
    ['a stray character', `${SIG.slice(0, 10)}!${SIG.slice(10)}`],
    ['a length no bytes give', `${SIG}AAA`],
    ['trailing bits set', `${SIG.slice(0, -1)}R`], // 'Q' (010000) is the canonical last digit
  ])('refuses a signature segment with %s', (_what, sig) => {
    expect(SIG.endsWith('Q') && SIG.length % 4 === 2).toBe(true); // what the spoilt forms assume
    expect(parseJwt(`${H}.${b64({ sub: 'a' })}.${sig}`)).toBe('segment is not unpadded base64url');
  });

  it('reuses the last header only for the same segment; each token keeps its own payload', () => {
    const crit = b64({ alg: 'RS256', crit: ['exp'] });
    const other = b64({ alg: 'ES256', kid: 'k2' });
    const seq: [string, string | [string, string | undefined, string]][] = [
      [`${H}.${b64({ sub: 'a' })}.${SIG}`, ['RS256', 'k1', 'a']],
      [`${H}.${b64({ sub: 'b' })}.${SIG.slice(0, -4)}AAAA`, ['RS256', 'k1', 'b']],
      [`${crit}.${b64({ sub: 'c' })}.${SIG}`, 'header crit not supported'],
      [`${crit}.${b64({ sub: 'c' })}.${SIG}`, 'header crit not supported'],
      [`${other}.${b64({ sub: 'd' })}.${SIG}`, ['ES256', 'k2', 'd']],
      [`${H}.${b64({ sub: 'e' })}.${SIG}`, ['RS256', 'k1', 'e']],
      [`${H}.${b64('[1]')}.${SIG}`, 'payload is not a strict JSON object'],
      [`${H}.${b64({ sub: 'f' })}.${SIG}`, ['RS256', 'k1', 'f']],
    ];
    for (const [token, want] of seq) {
      const r = parseJwt(token);
      if (typeof want === 'string') {
        expect(r).toBe(want);
        continue;
      }
      if (typeof r === 'string') throw new Error(`${token}: ${r}`);
      expect([r.alg, r.kid, r.payload['sub']]).toEqual(want);
      expect(r.payloadSegment).toBe(token.split('.')[1]);
    }
  });

  it('decodes every payload on its own: nothing of a longer or non-ASCII one before it shows through', () => {
    const long = { sub: 'x'.repeat(3000), scope: 'a b c' };
    const seq = [long, { sub: 'b' }, { sub: 'zoë', n: 1 }, long, { sub: 'é' }, { s: 'ab' }];
    for (const claims of seq) {
      const r = parseJwt(`${H}.${b64(claims)}.${SIG}`);
      if (typeof r === 'string') throw new Error(r);
      expect({ ...r.payload }).toEqual(claims);
    }
    // A payload that is not UTF-8 after one that was: refused, not read with the old bytes.
    const latin1 = Buffer.from('{"sub":"\xe9"}', 'latin1').toString('base64url');
    expect(parseJwt(`${H}.${latin1}.${SIG}`)).toBe('payload is not a strict JSON object');
    // U+FFFD written in the claims is kept (the lenient read shows it too); a lone surrogate, a
    // truncated sequence and an overlong form are not UTF-8.
    const replacement = parseJwt(`${H}.${b64({ sub: 'a\uFFFDb' })}.${SIG}`);
    if (typeof replacement === 'string') throw new Error(replacement);
    expect(replacement.payload['sub']).toBe('a\uFFFDb');
    for (const bad of ['eda080', 'e282', 'c0af']) {
      const segment = Buffer.concat([Buffer.from('{"sub":"'), Buffer.from(bad, 'hex'), Buffer.from('"}')]).toString('base64url');
      expect(parseJwt(`${H}.${segment}.${SIG}`), bad).toBe('payload is not a strict JSON object');
    }
    // and a header after them reads its own bytes
    expect(parseJwt(`${b64({ alg: 'ES256' })}.${b64({ sub: 'z' })}.${SIG}`)).toMatchObject({ alg: 'ES256' });
  });
});

describe('identityParts scopes', () => {
  it('gives each token the set of its own scope string, also when tokens alternate', () => {
    const sets = ['a b', 'c', 'a b', '', '  x  y ', 'c'].map((scope) => {
      const p = identityParts({ sub: 's', scope });
      if (isFailure(p)) throw new Error(p.detail);
      return [...p.scopes];
    });
    expect(sets).toEqual([['a', 'b'], ['c'], ['a', 'b'], [], ['x', 'y'], ['c']]);
  });
});
