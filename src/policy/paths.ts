/**
 * Path matchers for HTTP rules. Paths reaching policy are already normalized by the inbound
 * stage (no query, no `//`, no dot segments), so matching is plain string work: no regular
 * expression is ever built from policy text, and the glob matcher is linear-time backtracking
 * over segments (no catastrophic cases).
 */

import { normalizeTarget, type PathOptions } from '../lib/normalize.ts';

/** One compiled glob segment: a literal, `*` (exactly one non-empty segment) or `**` (any number). */
export type GlobSegment = string | typeof STAR | typeof GLOBSTAR;
export const STAR: unique symbol = Symbol('*');
export const GLOBSTAR: unique symbol = Symbol('**');

/** How a policy path is spelled out for the compare: `//` is refused on its own, `%2F` kept as written by apps that need it. */
const POLICY_SPELLING: PathOptions = { mergeSlashes: true, rejectEscapedSlashes: false };

/**
 * Why a path written in a policy could never match a normalized request path, or null when it
 * is fine. The inbound stage strips the query, removes `//` and dot segments, and spells every
 * path one way (lib/normalize.ts: `%7E` decoded to `~`, other escapes upper-cased, `{` and the
 * like percent-encoded) before policy sees it. A policy path in any other spelling matches
 * nothing, which for a deny rule lets through what it reads as denying: refused, with the
 * spelling to write instead.
 */
export function pathProblem(path: string): string | null {
  if (!path.startsWith('/')) return 'must start with "/"';
  if (path.includes('?') || path.includes('#')) return 'must not contain a query or fragment (paths are matched without them)';
  if (path.includes('//')) return 'must not contain "//" (request paths are matched after merging slashes)';
  for (const seg of path.split('/')) {
    if (seg === '.' || seg === '..') return 'must not contain "." or ".." segments (request paths are matched after resolving them)';
  }
  const n = normalizeTarget(path, POLICY_SPELLING);
  if (!n.ok) return `can never match: requests with such a path are refused (${n.detail})`;
  if (n.path !== path) return `is matched against requests as ${JSON.stringify(n.path)}: write it that way (request paths are normalized before matching)`;
  return null;
}

/** Parses a glob into segments, or returns the reason it is invalid. */
export function compileGlob(glob: string): { segments: readonly GlobSegment[] } | { error: string } {
  const problem = pathProblem(glob);
  if (problem !== null) return { error: problem };
  const segments: GlobSegment[] = [];
  for (const seg of glob.slice(1).split('/')) {
    if (seg === '**') {
      // `**/**` is the same as `**`; collapsing keeps matching linear
      if (segments[segments.length - 1] !== GLOBSTAR) segments.push(GLOBSTAR);
    } else if (seg === '*') {
      segments.push(STAR);
    } else if (seg.includes('*')) {
      return { error: `invalid glob segment "${seg}": "*" and "**" must be whole segments` };
    } else {
      segments.push(seg);
    }
  }
  return { segments };
}

/**
 * Segment-wise wildcard matching (the classic greedy algorithm with one backtrack point, which
 * is O(path segments × pattern segments) at worst). A path `/a/b/` has segments `a`, `b`, ``;
 * `/` has one empty segment. Works on offsets into `path`: no split, no allocation.
 */
export function globMatch(segments: readonly GlobSegment[], path: string): boolean {
  const n = path.length;
  const m = segments.length;
  let p = 1; // start of the current path segment; p > n means every segment was consumed
  let i = 0;
  let starI = -1;
  let starP = -1;
  for (;;) {
    if (p > n) {
      while (i < m && segments[i] === GLOBSTAR) i++;
      return i === m;
    }
    let end = path.indexOf('/', p);
    if (end === -1) end = n;
    if (i < m) {
      const s = segments[i];
      if (s === GLOBSTAR) {
        starI = i;
        starP = p;
        i++;
        continue;
      }
      if (s === STAR ? end > p : end - p === (s as string).length && path.startsWith(s as string, p)) {
        i++;
        p = end + 1;
        continue;
      }
    }
    if (starI < 0) return false;
    // let the last `**` absorb one more segment and retry from there
    let e = path.indexOf('/', starP);
    if (e === -1) e = n;
    starP = e + 1;
    p = starP;
    i = starI + 1;
  }
}

/** Segment-aware prefix: `/api` matches `/api`, `/api/...`, never `/apix`; `/` matches everything. */
export function prefixMatch(prefix: string, path: string): boolean {
  if (prefix.length === 1) return true; // "/" (paths always start with "/")
  return path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === 47 /* / */);
}
