import { describe, expect, it } from 'vitest';
import { fromSameOrigin, isUnsafeMethod, originOf } from '../../../src/session/csrf.ts';

const SELF = 'https://app.example.com';
const ev = (e: { origin?: string; referer?: string; secFetchSite?: string }) => ({ origin: e.origin, referer: e.referer, secFetchSite: e.secFetchSite });

describe('CSRF origin check', () => {
  it('treats GET, HEAD and OPTIONS as safe, everything else as state-changing', () => {
    expect(['GET', 'HEAD', 'OPTIONS'].map(isUnsafeMethod)).toEqual([false, false, false]);
    expect(['POST', 'PUT', 'PATCH', 'DELETE'].map(isUnsafeMethod)).toEqual([true, true, true, true]);
  });

  it('accepts a matching Origin, or a same-origin Referer when Origin is absent', () => {
    expect(fromSameOrigin(ev({ origin: SELF }), SELF)).toBe(true);
    expect(fromSameOrigin(ev({ origin: 'https://APP.example.com:443' }), SELF)).toBe(true); // normalized
    expect(fromSameOrigin(ev({ referer: `${SELF}/notes?x=1` }), SELF)).toBe(true);
    expect(fromSameOrigin(ev({ origin: SELF, secFetchSite: 'same-origin' }), SELF)).toBe(true);
  });

  it.each([
    ['no Origin and no Referer', ev({})],
    ['another site', ev({ origin: 'https://evil.example' })],
    ['a sibling subdomain (same site, other origin)', ev({ origin: 'https://evil.example.com' })],
    ['another scheme', ev({ origin: 'http://app.example.com' })],
    ['another port', ev({ origin: 'https://app.example.com:8443' })],
    ['Origin: null', ev({ origin: 'null', referer: `${SELF}/x` })],
    ['an Origin with a path', ev({ origin: `${SELF}/x` })],
    ['a cross-site Referer', ev({ referer: 'https://evil.example/?u=https://app.example.com' })],
    ['Sec-Fetch-Site: cross-site even with a matching Origin', ev({ origin: SELF, secFetchSite: 'cross-site' })],
    ['Sec-Fetch-Site: same-site', ev({ origin: SELF, secFetchSite: 'same-site' })],
    ['a matching Referer but a foreign Origin', ev({ origin: 'https://evil.example', referer: `${SELF}/` })],
  ])('refuses %s', (_why, e) => {
    expect(fromSameOrigin(e, SELF)).toBe(false);
  });

  it('normalizes origins', () => {
    expect(originOf('HTTP://Example.COM:80/path')).toBe('http://example.com');
    expect(originOf('not a url')).toBeNull();
    expect(originOf('data:text/plain,x')).toBeNull();
  });
});
