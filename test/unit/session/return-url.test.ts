import { describe, expect, it } from 'vitest';
import { safeReturnPath } from '../../../src/session/return-url.ts';

describe('return URL after sign-in (no open redirect)', () => {
  it.each(['/', '/orders', '/orders/42?tab=items&x=1', '/a%20b', '/%2F%2Fevil.example', '/.wardrobe', '/%2Ewardrobe', '/x/.ward/logout', '/x?r=/.ward/logout'])('accepts same-origin path %s', (p) => {
    expect(safeReturnPath(p)).toBe(p);
  });

  it.each([
    ['absolute URL', 'https://evil.example/'],
    ['protocol-relative', '//evil.example/'],
    ['backslash as slash', '/\\evil.example/'],
    ['backslash later', '/a\\..\\..\\evil'],
    ['scheme', 'javascript:alert(1)'],
    ['data URL', 'data:text/html,x'],
    ['no leading slash', 'evil.example'],
    ['tab collapsing into //', '/\t/evil.example'],
    ['newline (header splitting)', '/a\r\nSet-Cookie: x=1'],
    ['dot segments that become //', '/a/..//evil.example'],
    ['dot segments', '/a/../b'],
    ['fragment', '/a#b'],
    ['non-ASCII', '/é'],
    ['the sidecar\'s own endpoints', '/.ward/logout'],
    ['the reserved prefix itself', '/.ward'],
    // regression: the sidecar decodes escaped unreserved characters before it routes (lib/normalize.ts)
    ['the sidecar\'s endpoints, dot escaped', '/%2Eward/logout'],
    ['the sidecar\'s endpoints, dot escaped in lower case', '/%2eward/sign-in?return=/x'],
    ['the sidecar\'s endpoints, dot and letter escaped', '/%2E%77ard/callback?state=s&code=c'],
    ['the sidecar\'s endpoints, a letter escaped', '/.%77ard/logout'],
    ['the reserved prefix itself, escaped', '/%2Eward'],
    ['a path the sidecar refuses (;)', '/a;b'],
    ['empty', ''],
    ['too long', `/${'a'.repeat(3000)}`],
  ])('refuses %s', (_why, p) => {
    expect(safeReturnPath(p)).toBeNull();
  });
});
