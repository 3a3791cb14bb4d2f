import { describe, expect, it } from 'vitest';
import { compileGlob, globMatch, pathProblem, prefixMatch } from '../../../src/policy/paths.ts';

function glob(pattern: string): (path: string) => boolean {
  const g = compileGlob(pattern);
  if ('error' in g) throw new Error(g.error);
  return (path) => globMatch(g.segments, path);
}

describe('path matchers', () => {
  it('prefix is segment-aware: /api matches /api, /api/ and /api/x, never /apix', () => {
    expect(prefixMatch('/api', '/api')).toBe(true);
    expect(prefixMatch('/api', '/api/')).toBe(true);
    expect(prefixMatch('/api', '/api/x/y')).toBe(true);
    expect(prefixMatch('/api', '/apix')).toBe(false);
    expect(prefixMatch('/api', '/ap')).toBe(false);
    expect(prefixMatch('/api', '/API')).toBe(false);
    expect(prefixMatch('/', '/anything/at/all')).toBe(true);
    expect(prefixMatch('/', '/')).toBe(true);
  });

  it('* is exactly one non-empty segment', () => {
    const m = glob('/api/*/items');
    expect(m('/api/42/items')).toBe(true);
    expect(m('/api/items')).toBe(false);
    expect(m('/api/1/2/items')).toBe(false);
    expect(m('/api//items')).toBe(false);
    expect(m('/api/42/items/')).toBe(false);
    const tail = glob('/api/*');
    expect(tail('/api/a')).toBe(true);
    expect(tail('/api/')).toBe(false);
    expect(tail('/api')).toBe(false);
    expect(tail('/api/a/b')).toBe(false);
  });

  it('** is any number of segments, including none', () => {
    const m = glob('/api/**');
    expect(m('/api')).toBe(true);
    expect(m('/api/')).toBe(true);
    expect(m('/api/a/b/c')).toBe(true);
    expect(m('/apix')).toBe(false);
    expect(m('/other/api')).toBe(false);
    const mid = glob('/a/**/z');
    expect(mid('/a/z')).toBe(true);
    expect(mid('/a/b/c/z')).toBe(true);
    expect(mid('/a/b/c/z/y')).toBe(false);
    expect(mid('/a/z/z')).toBe(true);
    const all = glob('/**');
    expect(all('/')).toBe(true);
    expect(all('/x/y')).toBe(true);
  });

  it('combines * and ** with backtracking', () => {
    const m = glob('/**/v1/*/x/**');
    expect(m('/v1/a/x')).toBe(true);
    expect(m('/p/q/v1/a/x/r/s')).toBe(true);
    expect(m('/p/v1/x')).toBe(false);
    expect(m('/v1/a/y/v1/b/x')).toBe(true);
    expect(m('/v1/a/y/v1/b/y')).toBe(false);
  });

  it('stays fast on adversarial input (no exponential backtracking)', () => {
    const m = glob('/**/a/**/a/**/a/**/a/**/b');
    const path = `/${Array.from({ length: 2000 }, () => 'a').join('/')}`;
    expect(m(path)).toBe(false);
    expect(m(`${path}/b`)).toBe(true);
  });

  it('literal segments are compared exactly (regex metacharacters are plain text)', () => {
    const m = glob('/a.b/(x)+/%5By%5D');
    expect(m('/a.b/(x)+/%5By%5D')).toBe(true);
    expect(m('/aXb/(x)+/%5By%5D')).toBe(false);
    expect(m('/a.b/xx/y')).toBe(false);
  });

  it('refuses a path spelled other than requests are normalized to, naming the spelling (regression: such a deny rule matched nothing)', () => {
    expect(pathProblem('/docs/%7Eadmin')).toBe('is matched against requests as "/docs/~admin": write it that way (request paths are normalized before matching)');
    expect(pathProblem('/docs/caf%c3%a9')).toContain('"/docs/caf%C3%A9"');
    expect(pathProblem('/docs/{private}')).toContain('"/docs/%7Bprivate%7D"');
    expect(pathProblem('/docs/a[0]')).toContain('"/docs/a%5B0%5D"');
    expect(compileGlob('/docs/%7Eadmin/**')).toHaveProperty('error');
    expect(pathProblem('/docs/a;b')).toMatch(/^can never match: requests with such a path are refused/);
    expect(pathProblem('/docs/caf\u00e9')).toMatch(/^can never match/);
    expect(pathProblem('/docs/a b')).toMatch(/^can never match/);
    for (const ok of ['/docs/~admin', '/docs/caf%C3%A9', '/a/%2F/b', '/api/*', '/pkg.Service/Method', '/']) expect(pathProblem(ok), ok).toBeNull();
  });

  it('refuses partial-segment wildcards and non-normalized globs', () => {
    expect(compileGlob('/v*/x')).toEqual({ error: 'invalid glob segment "v*": "*" and "**" must be whole segments' });
    expect(compileGlob('/a/***')).toHaveProperty('error');
    expect(compileGlob('a/*')).toEqual({ error: 'must start with "/"' });
    expect(compileGlob('/a/../*')).toHaveProperty('error');
  });
});
