/**
 * Strict JSON for JOSE headers, JWT payloads and JWKS documents.
 *
 * `JSON.parse` keeps the last of duplicate member names and builds objects on
 * `Object.prototype`. For token content both are hazards: duplicates let two parsers (the IdP's
 * and ours, or ours and the app's) read different claims from the same signed bytes (RFC 7515
 * §5.2 allows rejecting them, and we do), and a `__proto__` member copied later with
 * `Object.assign` or a merge would reach a prototype. So this parser builds objects that inherit
 * nothing (see `Members`), refuses duplicate names and the `__proto__` name, bounds nesting depth, and refuses
 * numbers that do not fit a finite double (`1e999` would otherwise become an `exp` of Infinity).
 *
 * String contents with escapes are decoded by `JSON.parse` on the exact literal, so escape
 * handling is the engine's, not ours.
 */
export type JsonValue = null | boolean | number | string | readonly JsonValue[] | JsonObject;
export interface JsonObject {
  readonly [name: string]: JsonValue;
}

const MAX_DEPTH = 32;

/** The member names last seen at each of the first positions of an object (see `Parser.name`). */
const RECENT_NAMES: (string | undefined)[] = new Array<string | undefined>(16).fill(undefined);

/**
 * Parsed objects are built by `new Members()`. Its prototype is an empty, frozen object whose own
 * prototype is null, so a parsed object inherits nothing (`constructor`, `toString` and
 * `__proto__` all read as undefined) and nothing can be added to what it would inherit. Unlike
 * `Object.create(null)` objects, which V8 keeps as hash tables, these keep fast properties:
 * a token's claims are built in less than half the time and with half the garbage
 * (scripts/bench/micro-authn.ts).
 */
const INHERITS_NOTHING: object = Object.freeze(Object.create(null) as object);
const Members = function Members(this: Record<string, JsonValue>): void {} as unknown as new () => Record<string, JsonValue>;
Members.prototype = INHERITS_NOTHING;

/** Whether `v` inherits nothing: what every object `parseStrictJson` and `toStrictJson` build satisfies. */
export function inheritsNothing(v: object): boolean {
  const p = Object.getPrototypeOf(v) as object | null;
  return p === null || p === INHERITS_NOTHING;
}

/** Thrown internally to unwind; never escapes `parseStrictJson`. One preallocated instance, so
 *  rejecting junk does not pay for a stack trace each time. */
class StrictJsonError extends Error {}
const FAIL = new StrictJsonError('not strict JSON');

/**
 * The parsed value, or `undefined` when `text` is not strict JSON. Never throws. With `freeze`,
 * every object and array is frozen as it is built (what `deepFreeze` would do afterwards, without
 * a second walk: token claims are shared read-only through the verified-token cache).
 */
export function parseStrictJson(text: string, freeze = false): JsonValue | undefined {
  const p = new Parser(text, freeze);
  try {
    p.ws();
    const v = p.value(0);
    p.ws();
    if (p.i !== text.length) return undefined;
    return v;
  } catch (err) {
    if (err === FAIL) return undefined;
    throw err;
  }
}

/** Like `parseStrictJson` but only a JSON object is accepted. */
export function parseStrictJsonObject(text: string, freeze = false): JsonObject | undefined {
  const v = parseStrictJson(text, freeze);
  return isJsonObject(v) ? v : undefined;
}

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Parser {
  readonly s: string;
  readonly freeze: boolean;
  i = 0;

  constructor(s: string, freeze: boolean) {
    this.s = s;
    this.freeze = freeze;
  }

  ws(): void {
    const s = this.s;
    let i = this.i;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    }
    this.i = i;
  }

  value(depth: number): JsonValue {
    const c = this.s.charCodeAt(this.i);
    switch (c) {
      case 0x7b: // {
        return this.object(depth + 1);
      case 0x5b: // [
        return this.array(depth + 1);
      case 0x22: // "
        return this.string();
      case 0x74: // t
        return this.literal('true', true);
      case 0x66: // f
        return this.literal('false', false);
      case 0x6e: // n
        return this.literal('null', null);
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
        throw FAIL;
    }
  }

  literal<T extends JsonValue>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) throw FAIL;
    this.i += word.length;
    return v;
  }

  object(depth: number): JsonObject {
    if (depth > MAX_DEPTH) throw FAIL;
    const out = new Members();
    this.i++; // {
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x7d) {
      this.i++;
      return this.freeze ? Object.freeze(out) : out;
    }
    for (let k = 0; ; k++) {
      if (this.s.charCodeAt(this.i) !== 0x22) throw FAIL;
      const name = this.name(k);
      // Own-property test: nothing inherited can shadow a name.
      if (name === '__proto__' || Object.hasOwn(out, name)) throw FAIL;
      this.ws();
      if (this.s.charCodeAt(this.i) !== 0x3a) throw FAIL; // :
      this.i++;
      this.ws();
      out[name] = this.value(depth);
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x7d) return this.freeze ? Object.freeze(out) : out; // }
      if (c !== 0x2c) throw FAIL; // ,
      this.ws();
    }
  }

  array(depth: number): readonly JsonValue[] {
    if (depth > MAX_DEPTH) throw FAIL;
    const out: JsonValue[] = [];
    this.i++; // [
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x5d) {
      this.i++;
      return this.freeze ? Object.freeze(out) : out;
    }
    for (;;) {
      out.push(this.value(depth));
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x5d) return this.freeze ? Object.freeze(out) : out; // ]
      if (c !== 0x2c) throw FAIL;
      this.ws();
    }
  }

  /**
   * The `k`th member name of an object. Issuers write the same names in the same order token
   * after token, so the name last seen at this position is compared in place first, and reused
   * instead of cut out as a new string when it matches.
   */
  name(k: number): string {
    const known = k < RECENT_NAMES.length ? RECENT_NAMES[k] : undefined;
    const s = this.s;
    const from = this.i + 1;
    if (known !== undefined && s.charCodeAt(from + known.length) === 0x22 && s.startsWith(known, from)) {
      this.i = from + known.length + 1;
      return known;
    }
    const name = this.string();
    // Only names written without escapes: the comparison above is of the raw text.
    if (k < RECENT_NAMES.length && this.i - from - 1 === name.length) RECENT_NAMES[k] = name;
    return name;
  }

  string(): string {
    const s = this.s;
    const start = this.i; // at the opening quote
    let i = start + 1;
    let escaped = false;
    for (;;) {
      if (i >= s.length) throw FAIL;
      const c = s.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) throw FAIL; // raw control characters are not JSON
      if (c === 0x5c) {
        escaped = true;
        i += 2;
      } else i++;
    }
    this.i = i + 1;
    if (!escaped) return s.slice(start + 1, i);
    try {
      return JSON.parse(s.slice(start, i + 1)) as string;
    } catch {
      throw FAIL;
    }
  }

  number(): number {
    const s = this.s;
    const start = this.i;
    let i = start;
    if (s.charCodeAt(i) === 0x2d) i++;
    const digits = i;
    let n = 0;
    if (s.charCodeAt(i) === 0x30) i++;
    else if (isDigit(s.charCodeAt(i))) {
      for (let c = s.charCodeAt(i); isDigit(c); c = s.charCodeAt(++i)) n = n * 10 + (c - 0x30);
    } else throw FAIL;
    const after = s.charCodeAt(i);
    // An integer of up to 15 digits (`exp`, `iat`...) is exact as summed: no text to convert.
    if (after !== 0x2e && after !== 0x65 && after !== 0x45 && i - digits <= 15) {
      this.i = i;
      return start === digits ? n : -n;
    }
    if (s.charCodeAt(i) === 0x2e) {
      i++;
      if (!isDigit(s.charCodeAt(i))) throw FAIL;
      while (isDigit(s.charCodeAt(i))) i++;
    }
    const e = s.charCodeAt(i);
    if (e === 0x65 || e === 0x45) {
      i++;
      const sign = s.charCodeAt(i);
      if (sign === 0x2b || sign === 0x2d) i++;
      if (!isDigit(s.charCodeAt(i))) throw FAIL;
      while (isDigit(s.charCodeAt(i))) i++;
    }
    this.i = i;
    const v = Number(s.slice(start, i));
    if (!Number.isFinite(v)) throw FAIL;
    return v;
  }
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/**
 * Deep-copies an already parsed JSON value (e.g. `Response.json()` from openid-client) into the
 * same shape `parseStrictJson` produces: objects that inherit nothing, no `__proto__` member, bounded
 * depth. `undefined` when the value does not qualify.
 */
export function toStrictJson(v: unknown, depth = 0): JsonValue | undefined {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v !== 'object' || depth >= MAX_DEPTH) return undefined;
  if (Array.isArray(v)) {
    const out: JsonValue[] = [];
    for (const item of v as unknown[]) {
      const c = toStrictJson(item, depth + 1);
      if (c === undefined) return undefined;
      out.push(c);
    }
    return out;
  }
  const out = new Members();
  for (const name of Object.keys(v)) {
    if (name === '__proto__') return undefined;
    const c = toStrictJson((v as Record<string, unknown>)[name], depth + 1);
    if (c === undefined) return undefined;
    out[name] = c;
  }
  return out;
}

/** Freezes a parsed value in place, all the way down (identities are shared via the cache). */
export function deepFreeze<T extends JsonValue>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, JsonValue>)[k] as JsonValue);
  }
  return v;
}
