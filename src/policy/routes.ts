import type { RequestFacts } from './model.ts';
import { globMatch, prefixMatch, type GlobSegment } from './paths.ts';

/**
 * Route matchers of a compiled rule, and the per-action index the evaluator uses to find the
 * candidate rules of a request without looking at every rule: gRPC methods in a Map, service
 * wildcards in a Map by service, HTTP rules bucketed by method (exact paths in a Map, prefixes
 * and globs in a list tested in order).
 */

export type RouteMatcher =
  | { readonly kind: 'grpc'; readonly method: string }
  | { readonly kind: 'grpc-service'; readonly service: string }
  | { readonly kind: 'http'; readonly methods: ReadonlySet<string> | null; readonly path: PathMatcher };

export type PathMatcher =
  | { readonly kind: 'exact'; readonly value: string }
  | { readonly kind: 'prefix'; readonly value: string }
  | { readonly kind: 'glob'; readonly value: string; readonly segments: readonly GlobSegment[] };

export function pathMatches(m: PathMatcher, path: string): boolean {
  switch (m.kind) {
    case 'exact':
      return m.value === path;
    case 'prefix':
      return prefixMatch(m.value, path);
    case 'glob':
      return globMatch(m.segments, path);
  }
}

/** `pkg.Svc` of `/pkg.Svc/Method` (undefined when the string is not of that shape). */
export function grpcServiceOf(method: string): string | undefined {
  const slash = method.lastIndexOf('/');
  return slash > 1 ? method.slice(1, slash) : undefined;
}

/**
 * The key gRPC matchers compare against. Allow rules: gRPC calls only. Deny rules: every request,
 * by path, so a call the app would still treat as gRPC cannot dodge a deny by its content type.
 */
export function grpcKey(req: RequestFacts, action: 'allow' | 'deny'): string | undefined {
  if (req.protocol === 'grpc') return req.grpcMethod ?? req.path;
  return action === 'deny' ? req.path : undefined;
}

/** Linear check of one matcher: the reference semantics (explain, tests); evaluate uses the index. */
export function routeMatches(m: RouteMatcher, req: RequestFacts, action: 'allow' | 'deny'): boolean {
  switch (m.kind) {
    case 'grpc':
      return grpcKey(req, action) === m.method;
    case 'grpc-service': {
      const key = grpcKey(req, action);
      return key !== undefined && grpcServiceOf(key) === m.service;
    }
    case 'http':
      return (m.methods === null || m.methods.has(req.method)) && pathMatches(m.path, req.path);
  }
}

export interface DynamicEntry {
  /** Position of the rule in its action's rule list. */
  readonly rule: number;
  readonly path: PathMatcher;
}

export interface HttpBucket {
  readonly exact: ReadonlyMap<string, readonly number[]>;
  /** Prefix and glob matchers, sorted by rule position. */
  readonly dynamic: readonly DynamicEntry[];
}

export interface RouteIndex {
  readonly grpcExact: ReadonlyMap<string, readonly number[]>;
  readonly grpcService: ReadonlyMap<string, readonly number[]>;
  /** Buckets for methods some rule names; each also holds the rules that match every method. */
  readonly http: ReadonlyMap<string, HttpBucket>;
  /** For methods no rule names: only the rules that match every method. */
  readonly httpAny: HttpBucket;
  /**
   * Scratch space for candidate rule positions, reused by every evaluation. Safe because
   * evaluate() is synchronous and never re-entered; it is the only mutable part of a policy.
   */
  readonly scratch: Int32Array;
}

const EMPTY: readonly number[] = [];
const NONE = 0x7fffffff;

export function buildIndex(rules: readonly { readonly routes: readonly RouteMatcher[] }[]): RouteIndex {
  const grpcExact = new Map<string, number[]>();
  const grpcService = new Map<string, number[]>();
  const methods = new Set<string>();
  for (const r of rules) for (const m of r.routes) if (m.kind === 'http' && m.methods !== null) for (const x of m.methods) methods.add(x);

  const push = (map: Map<string, number[]>, key: string, i: number): void => {
    const list = map.get(key);
    if (list === undefined) map.set(key, [i]);
    else if (list[list.length - 1] !== i) list.push(i);
  };
  const bucket = (method: string | null): HttpBucket => {
    const exact = new Map<string, number[]>();
    const dynamic: DynamicEntry[] = [];
    rules.forEach((r, i) => {
      for (const m of r.routes) {
        if (m.kind !== 'http') continue;
        if (m.methods !== null && (method === null || !m.methods.has(method))) continue;
        if (m.path.kind === 'exact') push(exact, m.path.value, i);
        else dynamic.push({ rule: i, path: m.path });
      }
    });
    return { exact, dynamic };
  };

  rules.forEach((r, i) => {
    for (const m of r.routes) {
      if (m.kind === 'grpc') push(grpcExact, m.method, i);
      else if (m.kind === 'grpc-service') push(grpcService, m.service, i);
    }
  });
  const http = new Map<string, HttpBucket>();
  for (const method of methods) http.set(method, bucket(method));
  return { grpcExact, grpcService, http, httpAny: bucket(null), scratch: new Int32Array(rules.length) };
}

/**
 * Writes the positions of the rules whose route matches `req` into `index.scratch`, ascending
 * and without duplicates, and returns how many. A four-way merge of sorted lists: the gRPC
 * method's rules, its service's wildcard rules, the exact-path rules, and the prefix/glob rules
 * that match (tested here, in order).
 */
export function collectCandidates(index: RouteIndex, req: RequestFacts, key: string | undefined): number {
  let a = EMPTY;
  let b = EMPTY;
  if (key !== undefined) {
    if (index.grpcExact.size > 0) a = index.grpcExact.get(key) ?? EMPTY;
    if (index.grpcService.size > 0) {
      const svc = grpcServiceOf(key);
      if (svc !== undefined) b = index.grpcService.get(svc) ?? EMPTY;
    }
  }
  const bucket = index.http.get(req.method) ?? index.httpAny;
  const c = bucket.exact.size > 0 ? (bucket.exact.get(req.path) ?? EMPTY) : EMPTY;
  const d = bucket.dynamic;
  const out = index.scratch;
  const path = req.path;

  let ia = 0;
  let ib = 0;
  let ic = 0;
  let id = 0;
  let n = 0;
  let last = -1;
  // next dynamic entry that matches (NONE when exhausted)
  let vd = NONE;
  while (id < d.length) {
    const e = d[id] as DynamicEntry;
    if (pathMatches(e.path, path)) {
      vd = e.rule;
      break;
    }
    id++;
  }
  for (;;) {
    const va = ia < a.length ? (a[ia] as number) : NONE;
    const vb = ib < b.length ? (b[ib] as number) : NONE;
    const vc = ic < c.length ? (c[ic] as number) : NONE;
    const min = Math.min(va, vb, vc, vd);
    if (min === NONE) return n;
    if (min !== last) {
      out[n++] = min;
      last = min;
    }
    if (va === min) ia++;
    if (vb === min) ib++;
    if (vc === min) ic++;
    if (vd === min) {
      vd = NONE;
      for (id++; id < d.length; id++) {
        const e = d[id] as DynamicEntry;
        // a rule already emitted needs no second test of another of its matchers
        if (e.rule !== last && pathMatches(e.path, path)) {
          vd = e.rule;
          break;
        }
      }
    }
  }
}
