import type { Identity } from './model.ts';

/**
 * Compiled `when` conditions and how they are tested. `holds()` is the hot path: no allocation,
 * no string building. `failure()` explains a condition that did not hold, in one line, naming
 * claims and policy values only (never a value taken from the token), and runs only when a call
 * is being refused or explained.
 */

export type Scalar = string | number | boolean;

export type CompiledCondition =
  | ClaimCondition
  | { readonly kind: 'scopes'; readonly anyOf: readonly string[] | undefined; readonly allOf: readonly string[] | undefined; readonly scope: true }
  | { readonly kind: 'issuer' | 'subject' | 'actor'; readonly values: ReadonlySet<string>; readonly list: readonly string[]; readonly scope: false }
  | { readonly kind: 'via'; readonly anyOf: ReadonlySet<string> | undefined; readonly allOf: readonly string[] | undefined; readonly scope: false }
  | { readonly kind: 'delegated'; readonly value: boolean; readonly scope: false }
  | { readonly kind: 'maxDepth'; readonly value: number; readonly scope: false }
  | { readonly kind: 'any'; readonly conditions: readonly CompiledCondition[]; readonly scope: boolean };

export interface ClaimCondition {
  readonly kind: 'claim';
  readonly path: readonly string[];
  /** The path as written, for messages. */
  readonly label: string;
  readonly hasEquals: boolean;
  readonly equals: Scalar | undefined;
  readonly in: ReadonlySet<Scalar> | undefined;
  readonly inList: readonly Scalar[] | undefined;
  readonly anyOf: readonly string[] | undefined;
  readonly allOf: readonly string[] | undefined;
  readonly exists: boolean | undefined;
  readonly gt: number | undefined;
  readonly gte: number | undefined;
  readonly lt: number | undefined;
  readonly lte: number | undefined;
  /** A test on `scope`/`scp`: failing only such tests gives ERR_SCOPE_INSUFFICIENT. */
  readonly scope: boolean;
}

/**
 * Reads a claim by path through nested plain objects. Own properties only: `constructor` or
 * `__proto__` in a policy must not reach Object.prototype and "exist" for every token.
 */
export function readClaim(claims: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  let cur: unknown = claims;
  for (let i = 0; i < path.length; i++) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    const key = path[i] as string;
    if (!Object.hasOwn(cur, key)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/** `tok` is one of the space-delimited words of `s` (RFC 6749 §3.3 scope syntax), without splitting. */
export function hasWord(s: string, tok: string): boolean {
  let from = 0;
  for (;;) {
    const i = s.indexOf(tok, from);
    if (i === -1) return false;
    const end = i + tok.length;
    if ((i === 0 || s.charCodeAt(i - 1) === 32) && (end === s.length || s.charCodeAt(end) === 32)) return true;
    from = i + 1;
  }
}

/** The claim, seen as a set of strings (a list, or a space-delimited string), contains `v`. */
function contains(value: unknown, v: string): boolean {
  if (typeof value === 'string') return hasWord(value, v);
  if (Array.isArray(value)) return value.includes(v);
  return false;
}

function isNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

function claimHolds(c: ClaimCondition, claims: Readonly<Record<string, unknown>>): boolean {
  const v = readClaim(claims, c.path);
  const present = v !== undefined && v !== null;
  if (c.exists !== undefined && c.exists !== present) return false;
  if (!present) return c.exists === false;
  if (c.hasEquals && v !== c.equals) return false;
  if (c.in !== undefined && !c.in.has(v as Scalar)) return false;
  if (c.anyOf !== undefined) {
    let any = false;
    for (let i = 0; i < c.anyOf.length && !any; i++) any = contains(v, c.anyOf[i] as string);
    if (!any) return false;
  }
  if (c.allOf !== undefined) {
    for (let i = 0; i < c.allOf.length; i++) if (!contains(v, c.allOf[i] as string)) return false;
  }
  if (c.gt !== undefined || c.gte !== undefined || c.lt !== undefined || c.lte !== undefined) {
    if (!isNumber(v)) return false;
    if (c.gt !== undefined && !(v > c.gt)) return false;
    if (c.gte !== undefined && !(v >= c.gte)) return false;
    if (c.lt !== undefined && !(v < c.lt)) return false;
    if (c.lte !== undefined && !(v <= c.lte)) return false;
  }
  return true;
}

export function holds(c: CompiledCondition, id: Identity): boolean {
  switch (c.kind) {
    case 'claim':
      return claimHolds(c, id.claims);
    case 'scopes': {
      if (c.allOf !== undefined) for (let i = 0; i < c.allOf.length; i++) if (!id.scopes.has(c.allOf[i] as string)) return false;
      if (c.anyOf !== undefined) {
        for (let i = 0; i < c.anyOf.length; i++) if (id.scopes.has(c.anyOf[i] as string)) return true;
        return false;
      }
      return true;
    }
    case 'issuer':
      return c.values.has(id.issuer);
    case 'subject':
      return c.values.has(id.subject);
    case 'actor':
      return id.actors.length > 0 && c.values.has(id.actors[0] as string);
    case 'via': {
      if (c.allOf !== undefined) for (let i = 0; i < c.allOf.length; i++) if (!id.actors.includes(c.allOf[i] as string)) return false;
      if (c.anyOf !== undefined) {
        for (let i = 0; i < id.actors.length; i++) if (c.anyOf.has(id.actors[i] as string)) return true;
        return false;
      }
      return true;
    }
    case 'delegated':
      return id.actors.length > 0 === c.value;
    case 'maxDepth':
      return id.actors.length <= c.value;
    case 'any':
      for (let i = 0; i < c.conditions.length; i++) if (holds(c.conditions[i] as CompiledCondition, id)) return true;
      return false;
  }
}

/** All conditions hold. Without an identity none can be tested, so only an empty list holds. */
export function allHold(conds: readonly CompiledCondition[], id: Identity | null): boolean {
  if (id === null) return conds.length === 0;
  for (let i = 0; i < conds.length; i++) if (!holds(conds[i] as CompiledCondition, id)) return false;
  return true;
}

const list = (xs: Iterable<unknown>): string => `[${[...xs].map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ')}]`;

/** Why `c` does not hold for `id` (call only when it does not). Names claims and policy values only. */
export function failure(c: CompiledCondition, id: Identity): string {
  switch (c.kind) {
    case 'claim': {
      const v = readClaim(id.claims, c.path);
      const name = `claim ${c.label}`;
      const present = v !== undefined && v !== null;
      if (c.exists === false) return `${name} is present`;
      if (!present) {
        // for a set test, "lacks x" says what to add; the claim being absent is implied
        if (c.exists !== true && c.allOf !== undefined) return `${name} lacks ${c.allOf.join(', ')}`;
        if (c.exists !== true && c.anyOf !== undefined) return `${name} has none of ${list(c.anyOf)}`;
        return `${name} is missing`;
      }
      if (c.hasEquals && v !== c.equals) return `${name} is not ${JSON.stringify(c.equals)}`;
      if (c.inList !== undefined && !c.in?.has(v as Scalar)) return `${name} is not one of ${list(c.inList)}`;
      if (c.anyOf !== undefined && !c.anyOf.some((x) => contains(v, x))) return `${name} has none of ${list(c.anyOf)}`;
      if (c.allOf !== undefined) {
        const missing = c.allOf.filter((x) => !contains(v, x));
        if (missing.length > 0) return `${name} lacks ${missing.join(', ')}`;
      }
      if (!isNumber(v)) return `${name} is not a number`;
      if (c.gt !== undefined && !(v > c.gt)) return `${name} is not > ${c.gt}`;
      if (c.gte !== undefined && !(v >= c.gte)) return `${name} is not >= ${c.gte}`;
      if (c.lt !== undefined && !(v < c.lt)) return `${name} is not < ${c.lt}`;
      return `${name} is not <= ${c.lte}`;
    }
    case 'scopes': {
      const missing = c.allOf?.filter((x) => !id.scopes.has(x)) ?? [];
      if (missing.length > 0) return `scope lacks ${missing.join(', ')}`;
      return `scope has none of ${list(c.anyOf ?? [])}`;
    }
    case 'issuer':
      return `issuer is not one of ${list(c.list)}`;
    case 'subject':
      return `subject is not one of ${list(c.list)}`;
    case 'actor':
      return id.actors.length === 0 ? 'call is not delegated (no act claim)' : `immediate actor is not one of ${list(c.list)}`;
    case 'via': {
      const missing = c.allOf?.filter((x) => !id.actors.includes(x)) ?? [];
      if (missing.length > 0) return `actor chain lacks ${missing.join(', ')}`;
      return `no actor in the chain is one of ${list(c.anyOf ?? [])}`;
    }
    case 'delegated':
      return c.value ? 'call is not delegated (no act claim)' : 'call is delegated (act claim present)';
    case 'maxDepth':
      return `delegation chain is longer than ${c.value}`;
    case 'any':
      return `none of: ${c.conditions.map((x) => failure(x, id)).join('; ')}`;
  }
}
