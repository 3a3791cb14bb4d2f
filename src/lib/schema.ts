/**
 * The schema language of ward's configuration and policy files: the checks, the defaults and the
 * documentation of every field in one declaration, read three ways - to validate a parsed file
 * (`safeParse`: the value with defaults applied, or every problem with its field path), to type
 * it (`output<S>`), and to describe it (`toJSONSchema`, from which scripts/gen-docs.ts writes the
 * reference docs and JSON Schemas).
 *
 * The API is the subset of zod 4 that ward's schemas use, with zod's semantics and messages
 * (`Invalid input: expected string, received number`, `Unrecognized key: "colour"`...), so a
 * schema reads as a zod schema does. ward keeps its own because zod stayed in every sidecar's
 * heap for the life of the process for a few milliseconds of work at start-up: a copy of it cost
 * ~6 MB of peak RSS under load (BENCHMARKS.md, `results/ab-zod-alone.json`).
 *
 * Semantics, as in zod: every check of a value runs and reports; refinements (`refine`,
 * `superRefine`) run only when nothing so far made the value's type wrong (a too-short string
 * does not stop them, a number where an object belongs does); `default(v)` answers `undefined`
 * with a copy of `v` unchecked, `prefault(v)` parses `v` in its place; an object is strict (an
 * unknown key is an error), leaves out the optional keys its input does not have and checks
 * nothing of them; an array over its maximum is refused whole, its items unread; a union takes
 * the first option that parses, and when exactly one option failed on its checks alone, reports
 * that option's issues. test/unit/lib/schema-zod.test.ts holds this against zod itself on random
 * schemas and inputs, messages and JSON Schemas included; where the two differ on purpose (a
 * URL's refusal says why, a record key spelled `__proto__` is kept as a key) it says so.
 */

// ---------------------------------------------------------------------------------------------
// Issues

export type PathItem = string | number;

export type IssueCode = 'invalid_type' | 'invalid_value' | 'too_small' | 'too_big' | 'invalid_format' | 'unrecognized_keys' | 'invalid_key' | 'invalid_union' | 'custom';

export interface Issue {
  readonly code: IssueCode;
  readonly path: readonly PathItem[];
  readonly message: string;
  /** `unrecognized_keys`: the keys, in input order. */
  readonly keys?: readonly string[];
}

/** An issue being collected; `hard` ones (wrong type or value) stop the refinements above them. */
interface Found extends Issue {
  readonly hard: boolean;
  /** An array over its max: not even a length check above it runs (zod's `continue: false`). */
  readonly abort?: boolean;
}

export type SafeParseResult<O> = { readonly success: true; readonly data: O; readonly error?: undefined } | { readonly success: false; readonly data?: undefined; readonly error: SchemaError };

export class SchemaError extends Error {
  readonly issues: readonly Issue[];
  constructor(issues: readonly Issue[]) {
    super(issues.map((i) => `${i.path.length === 0 ? '(root)' : i.path.join('.')}: ${i.message}`).join('; '));
    this.name = 'SchemaError';
    this.issues = issues;
  }
}

/** What `superRefine` hands its function. */
export interface RefineContext {
  addIssue(issue: { readonly code: 'custom'; readonly message: string; readonly path?: readonly PathItem[] }): void;
}

/** A custom message: the string itself, `{ error }` or `{ message }`. */
export type Message = string | { readonly error?: string; readonly message?: string };

function messageOf(m: Message | undefined): string | undefined {
  if (m === undefined || typeof m === 'string') return m;
  return m.error ?? m.message;
}

/** zod's name for the type of a value, in `invalid_type` messages. */
function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : Number.isFinite(v) ? 'number' : String(v);
  return typeof v;
}

function quote(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** One parse: the issues found so far. */
class Run {
  readonly issues: Found[] = [];

  add(code: IssueCode, path: readonly PathItem[], message: string, hard: boolean, keys?: readonly string[]): void {
    this.issues.push(keys === undefined ? { code, path, message, hard } : { code, path, message, hard, keys });
  }

  /** A wrong value that stops even the length checks above it (zod's `continue: false`). */
  abort(code: IssueCode, path: readonly PathItem[], message: string): void {
    this.issues.push({ code, path, message, hard: true, abort: true });
  }

  abortedSince(start: number): boolean {
    for (let i = start; i < this.issues.length; i++) if ((this.issues[i] as Found).abort === true) return true;
    return false;
  }

  hardSince(start: number): boolean {
    for (let i = start; i < this.issues.length; i++) if ((this.issues[i] as Found).hard) return true;
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

export type Json = { [k: string]: unknown };

/** Documentation attached to a schema: `id` makes it a named definition (`$defs`). */
export interface Meta {
  readonly id?: string;
  readonly title?: string;
  readonly description?: string;
  readonly examples?: readonly unknown[];
}

class JsonContext {
  readonly defs = new Map<string, Json>();
}

// ---------------------------------------------------------------------------------------------
// Schemas

type Refinement = (value: unknown, path: readonly PathItem[], run: Run) => void;

export abstract class Schema<O = unknown, I = O> {
  /** The type a successful parse returns (never set: for `output<S>`). */
  declare readonly _output: O;
  /** The type of what parses (never set: for `input<S>`). */
  declare readonly _input: I;
  protected _meta: Meta | undefined;
  protected _refinements: readonly Refinement[] = [];

  /** The value with defaults applied (and issues added to `run`). */
  protected abstract parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown;
  /** The JSON Schema of this type, without its metadata. */
  protected abstract jsonBody(ctx: JsonContext): Json;

  /** @internal */
  run(v: unknown, path: readonly PathItem[], run: Run): unknown {
    const start = run.issues.length;
    const out = this.parseValue(v, path, run);
    if (this._refinements.length > 0 && !run.hardSince(start)) {
      for (const r of this._refinements) r(out, path, run);
    }
    return out;
  }

  /** zod's optin: what an absent key means ('optional': nothing; 'defaulted': a value stands in; undefined: it is required). */
  get optin(): 'optional' | 'defaulted' | undefined {
    return undefined;
  }

  /** zod's optout: whether the output may be undefined. */
  get optout(): boolean {
    return false;
  }

  safeParse(v: unknown): SafeParseResult<O> {
    const run = new Run();
    const data = this.run(v, [], run);
    if (run.issues.length === 0) return { success: true, data: data as O };
    return { success: false, error: new SchemaError(run.issues.map(({ hard: _, abort: _a, ...i }) => i)) };
  }

  parse(v: unknown): O {
    const r = this.safeParse(v);
    if (!r.success) throw r.error;
    return r.data;
  }

  protected clone(patch: Record<string, unknown>): this {
    return Object.assign(Object.create(Object.getPrototypeOf(this) as object) as this, this, patch);
  }

  meta(m: Meta): this {
    return this.clone({ _meta: { ...this._meta, ...m } });
  }

  /** The metadata set with `meta`. */
  get metadata(): Meta | undefined {
    return this._meta;
  }

  optional(): Optional<O, I> {
    return new Optional(this);
  }

  default(value: Exclude<O, undefined>): Defaulted<Exclude<O, undefined>, I> {
    return new Defaulted(this as Schema<Exclude<O, undefined>, I>, value, false);
  }

  /** `undefined` parses as `value` would (the value goes through this schema's checks). */
  prefault(value: Exclude<I, undefined>): Defaulted<Exclude<O, undefined>, I> {
    return new Defaulted(this as Schema<Exclude<O, undefined>, I>, value, true);
  }

  refine(ok: (value: O) => boolean, message?: Message | { readonly message?: string; readonly error?: string; readonly path?: readonly PathItem[] }): this {
    const text = messageOf(message) ?? 'Invalid input';
    const extra = typeof message === 'object' && 'path' in message ? (message.path ?? []) : [];
    const r: Refinement = (value, path, run) => {
      if (!ok(value as O)) run.add('custom', [...path, ...extra], text, false);
    };
    return this.clone({ _refinements: [...this._refinements, r] });
  }

  superRefine(check: (value: O, ctx: RefineContext) => void): this {
    const r: Refinement = (value, path, run) => {
      check(value as O, { addIssue: (i) => run.add('custom', [...path, ...(i.path ?? [])], i.message, false) });
    };
    return this.clone({ _refinements: [...this._refinements, r] });
  }

  /** @internal The JSON Schema of this node: a `$ref` for a named one. */
  json(ctx: JsonContext): Json {
    const id = this._meta?.id;
    if (id === undefined) return this.jsonWithMeta(ctx);
    if (!ctx.defs.has(id)) {
      ctx.defs.set(id, {}); // its place in $defs: where it is first met, before what it uses
      ctx.defs.set(id, this.jsonWithMeta(ctx));
    }
    return { $ref: `#/$defs/${id}` };
  }

  protected jsonWithMeta(ctx: JsonContext): Json {
    return { ...this.jsonBody(ctx), ...metaJson(this._meta) };
  }
}

function metaJson(m: Meta | undefined): Json {
  if (m === undefined) return {};
  const out: Json = {};
  for (const [k, v] of Object.entries(m)) if (k !== 'id' && v !== undefined) out[k] = v;
  return out;
}

/** A wrapper (optional, default): its own metadata comes first in its JSON and wins over the wrapped schema's (as in zod). */
abstract class Wrapper<O, I> extends Schema<O, I> {
  protected abstract readonly inner: Schema;

  protected override jsonWithMeta(ctx: JsonContext): Json {
    const own = metaJson(this._meta);
    return { ...own, ...this.inner.json(ctx), ...own };
  }

  protected jsonBody(ctx: JsonContext): Json {
    return this.inner.json(ctx);
  }
}

export class Optional<O, I = O> extends Wrapper<O | undefined, I | undefined> {
  protected readonly inner: Schema<O, I>;
  constructor(inner: Schema<O, I>) {
    super();
    this.inner = inner;
  }

  override get optin(): 'optional' | 'defaulted' {
    return this.inner.optin === 'defaulted' ? 'defaulted' : 'optional';
  }

  override get optout(): boolean {
    return true;
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (v !== undefined) return this.inner.run(v, path, run);
    if (this.inner.optin !== 'defaulted') return undefined;
    const r = new Run();
    const out = this.inner.run(v, path, r);
    return r.issues.length > 0 ? undefined : out;
  }
}

export class Defaulted<O, I = O> extends Wrapper<O, I | undefined> {
  protected readonly inner: Schema<O, I>;
  protected readonly _value: unknown;
  protected readonly _prefault: boolean;
  constructor(inner: Schema<O, I>, value: unknown, prefault: boolean) {
    super();
    this.inner = inner;
    this._value = value;
    this._prefault = prefault;
  }

  override get optin(): 'defaulted' {
    return 'defaulted';
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (v !== undefined) return this.inner.run(v, path, run);
    if (this._prefault) return this.inner.run(this._value, path, run);
    return shallowCopy(this._value);
  }

  // zod's order: a default before the metadata, a prefault after it.
  protected override jsonWithMeta(ctx: JsonContext): Json {
    const d = { default: JSON.parse(JSON.stringify(this._value)) as unknown };
    const own = this._prefault ? { ...metaJson(this._meta), ...d } : { ...d, ...metaJson(this._meta) };
    return { ...own, ...this.inner.json(ctx), ...own };
  }
}

function shallowCopy(v: unknown): unknown {
  if (Array.isArray(v)) return [...(v as unknown[])];
  if (isPlainObject(v)) return { ...v };
  return v;
}

// ---- strings

type StringCheck =
  | { readonly kind: 'min' | 'max'; readonly n: number; readonly message: string | undefined }
  | { readonly kind: 'regex'; readonly re: RegExp; readonly message: string | undefined }
  | { readonly kind: 'url'; readonly protocol: RegExp | undefined; readonly message: string | undefined };

/** zod's `^https?$`: with it, an http(s) URL must be spelled with `://` (`http:example.com` is refused). */
const HTTP_PROTOCOL = '^https?$';

export class StringSchema extends Schema<string> {
  protected readonly checks: readonly StringCheck[] = [];
  /** `url({ error })`: the message of every issue of the schema, a wrong type's too (as zod's `z.url`). */
  protected readonly typeMessage: string | undefined;

  /** @internal */
  withTypeMessage(m: string | undefined): this {
    return m === undefined ? this : this.clone({ typeMessage: m });
  }

  min(n: number, message?: Message): this {
    return this.with({ kind: 'min', n, message: messageOf(message) });
  }

  max(n: number, message?: Message): this {
    return this.with({ kind: 'max', n, message: messageOf(message) });
  }

  regex(re: RegExp, message?: Message): this {
    return this.with({ kind: 'regex', re, message: messageOf(message) });
  }

  /** An absolute URL (WHATWG), trimmed; with `protocol`, its scheme (without `:`) must match. */
  url(opts: { readonly protocol?: RegExp; readonly error?: string } = {}): this {
    return this.with({ kind: 'url', protocol: opts.protocol, message: opts.error });
  }

  private with(c: StringCheck): this {
    return this.clone({ checks: [...this.checks, c] });
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (typeof v !== 'string') {
      run.add('invalid_type', path, this.typeMessage ?? `Invalid input: expected string, received ${typeName(v)}`, true);
      return v;
    }
    let s = v;
    for (const c of this.checks) {
      switch (c.kind) {
        case 'min':
          if (s.length < c.n) run.add('too_small', path, c.message ?? `Too small: expected string to have >=${c.n} characters`, false);
          break;
        case 'max':
          if (s.length > c.n) run.add('too_big', path, c.message ?? `Too big: expected string to have <=${c.n} characters`, false);
          break;
        case 'regex':
          c.re.lastIndex = 0;
          if (!c.re.test(s)) run.add('invalid_format', path, c.message ?? `Invalid string: must match pattern ${String(c.re)}`, false);
          break;
        case 'url': {
          const url = parseUrl(s.trim(), c.protocol);
          if (typeof url === 'string') s = url;
          else run.add('invalid_format', path, c.message ?? url.why, false);
          break;
        }
      }
    }
    return s;
  }

  protected jsonBody(): Json {
    const j: Json = { type: 'string' };
    const patterns: string[] = [];
    for (const c of this.checks) {
      if (c.kind === 'min') j['minLength'] = Math.max(c.n, (j['minLength'] as number | undefined) ?? 0);
      else if (c.kind === 'max') j['maxLength'] = Math.min(c.n, (j['maxLength'] as number | undefined) ?? Infinity);
      else if (c.kind === 'regex') patterns.push(c.re.source);
      else j['format'] = 'uri';
    }
    if (patterns.length === 1) j['pattern'] = patterns[0];
    else if (patterns.length > 1) j['allOf'] = patterns.map((pattern) => ({ pattern }));
    return j;
  }
}

/** The URL as zod's `url` check leaves it (tabs and newlines dropped), or why it is refused. */
function parseUrl(trimmed: string, protocol: RegExp | undefined): string | { readonly why: string } {
  if (protocol === undefined) return URL.canParse(trimmed) ? trimmed.replace(/[\t\n\r]/g, '') : { why: 'Invalid URL' };
  if (protocol.source === HTTP_PROTOCOL && !/^https?:\/\//i.test(trimmed)) return { why: 'Invalid URL: must start with http:// or https://' };
  const u = URL.parse(trimmed);
  if (u === null) return { why: 'Invalid URL' };
  protocol.lastIndex = 0;
  if (!protocol.test(u.protocol.slice(0, -1))) return { why: `Invalid URL: protocol must match ${String(protocol)}` };
  return trimmed.replace(/[\t\n\r]/g, '');
}

// ---- numbers

interface Bound {
  readonly value: number;
  readonly inclusive: boolean;
  readonly message: string | undefined;
}

export class NumberSchema extends Schema<number> {
  protected readonly integer: boolean = false;
  protected readonly lower: readonly Bound[] = [];
  protected readonly upper: readonly Bound[] = [];

  min(n: number, message?: Message): this {
    return this.clone({ lower: [...this.lower, { value: n, inclusive: true, message: messageOf(message) }] });
  }

  max(n: number, message?: Message): this {
    return this.clone({ upper: [...this.upper, { value: n, inclusive: true, message: messageOf(message) }] });
  }

  positive(message?: Message): this {
    return this.clone({ lower: [...this.lower, { value: 0, inclusive: false, message: messageOf(message) }] });
  }

  nonnegative(message?: Message): this {
    return this.min(0, message);
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      run.add('invalid_type', path, `Invalid input: expected number, received ${typeName(v)}`, true);
      return v;
    }
    if (this.integer) {
      if (!Number.isInteger(v)) {
        run.abort('invalid_type', path, 'Invalid input: expected int, received number');
        return v;
      }
      if (v > Number.MAX_SAFE_INTEGER) run.add('too_big', path, `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}`, false);
      if (v < Number.MIN_SAFE_INTEGER) run.add('too_small', path, `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}`, false);
    }
    for (const b of this.lower) {
      if (b.inclusive ? v < b.value : v <= b.value) run.add('too_small', path, b.message ?? `Too small: expected number to be ${b.inclusive ? '>=' : '>'}${b.value}`, false);
    }
    for (const b of this.upper) {
      if (v > b.value) run.add('too_big', path, b.message ?? `Too big: expected number to be <=${b.value}`, false);
    }
    return v;
  }

  protected jsonBody(): Json {
    const j: Json = { type: this.integer ? 'integer' : 'number' };
    let lo: { value: number; inclusive: boolean } | undefined = this.integer ? { value: Number.MIN_SAFE_INTEGER, inclusive: true } : undefined;
    for (const b of this.lower) if (lo === undefined || b.value > lo.value || (b.value === lo.value && !b.inclusive)) lo = b;
    let hi: number | undefined = this.integer ? Number.MAX_SAFE_INTEGER : undefined;
    for (const b of this.upper) if (hi === undefined || b.value < hi) hi = b.value;
    if (lo !== undefined) j[lo.inclusive ? 'minimum' : 'exclusiveMinimum'] = lo.value;
    if (hi !== undefined) j['maximum'] = hi;
    return j;
  }
}

class IntSchema extends NumberSchema {
  protected override readonly integer = true;
}

// ---- the rest of the leaves

export class BooleanSchema extends Schema<boolean> {
  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (typeof v !== 'boolean') run.add('invalid_type', path, `Invalid input: expected boolean, received ${typeName(v)}`, true);
    return v;
  }

  protected jsonBody(): Json {
    return { type: 'boolean' };
  }
}

export class UnknownSchema extends Schema<unknown> {
  protected parseValue(v: unknown): unknown {
    return v;
  }

  protected jsonBody(): Json {
    return {};
  }
}

export class EnumSchema<T extends string> extends Schema<T> {
  readonly options: readonly T[];
  protected readonly _message: string | undefined;
  constructor(options: readonly T[], message: string | undefined) {
    super();
    this.options = options;
    this._message = message;
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (!(this.options as readonly unknown[]).includes(v)) {
      const expected = this.options.length === 1 ? `Invalid input: expected ${quote(this.options[0])}` : `Invalid option: expected one of ${this.options.map(quote).join('|')}`;
      run.add('invalid_value', path, this._message ?? expected, true);
    }
    return v;
  }

  protected jsonBody(): Json {
    return { type: 'string', enum: [...this.options] };
  }
}

export class LiteralSchema<T extends string | number | boolean> extends Schema<T> {
  readonly value: T;
  protected readonly _message: string | undefined;
  constructor(value: T, message: string | undefined) {
    super();
    this.value = value;
    this._message = message;
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (v !== this.value) run.add('invalid_value', path, this._message ?? `Invalid input: expected ${quote(this.value)}`, true);
    return v;
  }

  protected jsonBody(): Json {
    return { type: typeof this.value, const: this.value };
  }
}

// ---- containers

export class ArraySchema<O, I = O> extends Schema<O[], I[]> {
  readonly element: Schema<O, I>;
  protected readonly minItems: { readonly n: number; readonly message: string | undefined } | undefined;
  protected readonly maxItems: { readonly n: number; readonly message: string | undefined } | undefined;
  constructor(element: Schema<O, I>) {
    super();
    this.element = element;
  }

  min(n: number, message?: Message): this {
    return this.clone({ minItems: { n, message: messageOf(message) } });
  }

  max(n: number, message?: Message): this {
    return this.clone({ maxItems: { n, message: messageOf(message) } });
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (!Array.isArray(v)) {
      run.add('invalid_type', path, `Invalid input: expected array, received ${typeName(v)}`, true);
      return v;
    }
    if (this.maxItems !== undefined && v.length > this.maxItems.n) {
      run.abort('too_big', path, this.maxItems.message ?? `Too big: expected array to have <=${this.maxItems.n} items`);
      return v;
    }
    const start = run.issues.length;
    const out = (v as unknown[]).map((item, i) => this.element.run(item, [...path, i], run));
    if (this.minItems !== undefined && out.length < this.minItems.n && !run.abortedSince(start)) {
      run.add('too_small', path, this.minItems.message ?? `Too small: expected array to have >=${this.minItems.n} items`, false);
    }
    return out;
  }

  protected jsonBody(ctx: JsonContext): Json {
    const j: Json = {};
    if (this.minItems !== undefined) j['minItems'] = this.minItems.n;
    if (this.maxItems !== undefined) j['maxItems'] = this.maxItems.n;
    return { ...j, type: 'array', items: this.element.json(ctx) };
  }
}

export class RecordSchema<V, VI = V> extends Schema<Record<string, V>, Record<string, VI>> {
  protected readonly _key: Schema<string>;
  protected readonly _value: Schema<V, VI>;
  constructor(key: Schema<string>, value: Schema<V, VI>) {
    super();
    this._key = key;
    this._value = value;
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (!isPlainObject(v)) {
      run.add('invalid_type', path, `Invalid input: expected record, received ${typeName(v)}`, true);
      return v;
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) {
      const keyRun = new Run();
      this._key.run(k, [], keyRun);
      if (keyRun.issues.length > 0) {
        run.add('invalid_key', [...path, k], 'Invalid key in record', true);
        continue;
      }
      // Defined, not assigned: a key spelled `__proto__` stays a key instead of becoming the prototype.
      Object.defineProperty(out, k, { value: this._value.run(v[k], [...path, k], run), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  protected jsonBody(ctx: JsonContext): Json {
    return { type: 'object', propertyNames: this._key.json(ctx), additionalProperties: this._value.json(ctx) };
  }
}

export class UnionSchema<O, I = O> extends Schema<O, I> {
  protected readonly _options: readonly Schema[];
  protected readonly _message: string | undefined;
  constructor(options: readonly Schema[], message: string | undefined) {
    super();
    this._options = options;
    this._message = message;
  }

  override get optin(): 'optional' | 'defaulted' | undefined {
    if (this._options.some((o) => o.optin === 'defaulted')) return 'defaulted';
    return this._options.some((o) => o.optin !== undefined) ? 'optional' : undefined;
  }

  override get optout(): boolean {
    return this._options.some((o) => o.optout);
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    const tries: { readonly r: Run; readonly out: unknown }[] = [];
    for (const o of this._options) {
      const r = new Run();
      const out = o.run(v, path, r);
      if (r.issues.length === 0) return out;
      tries.push({ r, out });
    }
    // As zod: when exactly one option failed on its checks only (its type matched), its issues
    // say more than "invalid input", and its value is what the refinements above see.
    const typed = tries.filter((t) => !t.r.hardSince(0));
    if (typed.length === 1) {
      const t = typed[0] as { readonly r: Run; readonly out: unknown };
      run.issues.push(...t.r.issues);
      return t.out;
    }
    run.add('invalid_union', path, this._message ?? 'Invalid input', true);
    return v;
  }

  protected jsonBody(ctx: JsonContext): Json {
    const options = this._options.map((o) => o.json(ctx));
    // Bare types (`string | number | boolean`) as one `type` list, as zod writes them: each once, one as a string.
    const types: unknown[] = [];
    const bare = options.every((o) => {
      const keys = Object.keys(o);
      if (keys.length !== 1 || keys[0] !== 'type') return false;
      const t = o['type'];
      for (const m of Array.isArray(t) ? (t as unknown[]) : [t]) {
        if (typeof m !== 'string') return false;
        if (!types.includes(m)) types.push(m);
      }
      return true;
    });
    if (bare && options.length > 0) return { type: types.length === 1 ? types[0] : types };
    return { anyOf: options };
  }
}

/** The fields of an object schema; a getter makes a field refer to a schema defined later (recursion). */
export type Shape = { readonly [k: string]: Schema<unknown, unknown> };

type OptionalKeys<S extends Shape> = { [K in keyof S]: undefined extends output<S[K]> ? K : never }[keyof S];
type RequiredKeys<S extends Shape> = Exclude<keyof S, OptionalKeys<S>>;
type OptionalInputKeys<S extends Shape> = { [K in keyof S]: undefined extends input<S[K]> ? K : never }[keyof S];
type RequiredInputKeys<S extends Shape> = Exclude<keyof S, OptionalInputKeys<S>>;
type Flatten<T> = { [K in keyof T]: T[K] } & {};
export type ObjectOutput<S extends Shape> = Flatten<{ [K in RequiredKeys<S>]: output<S[K]> } & { [K in OptionalKeys<S>]?: output<S[K]> }>;
export type ObjectInput<S extends Shape> = Flatten<{ [K in RequiredInputKeys<S>]: input<S[K]> } & { [K in OptionalInputKeys<S>]?: input<S[K]> }>;

export class ObjectSchema<S extends Shape> extends Schema<ObjectOutput<S>, ObjectInput<S>> {
  protected readonly _shape: S;
  protected _entries: readonly (readonly [string, Schema])[] | undefined;
  constructor(shape: S) {
    super();
    this._shape = shape;
  }

  /** The shape the schema was declared with. */
  get shape(): S {
    return this._shape;
  }

  /** The fields, read once (a field's getter runs on first use, after every schema exists). */
  get entries(): readonly (readonly [string, Schema])[] {
    this._entries ??= Object.keys(this._shape).map((k) => [k, this._shape[k] as Schema] as const);
    return this._entries;
  }

  protected parseValue(v: unknown, path: readonly PathItem[], run: Run): unknown {
    if (!isPlainObject(v)) {
      run.add('invalid_type', path, `Invalid input: expected object, received ${typeName(v)}`, true);
      return v;
    }
    const out: Record<string, unknown> = {};
    const entries = this.entries;
    for (const [k, s] of entries) {
      const present = Object.hasOwn(v, k);
      if (!present && s.optout && s.optin === 'optional') continue;
      const r = new Run();
      const value = s.run(present ? v[k] : undefined, [...path, k], r);
      if (!present && s.optin === undefined) {
        run.issues.push(...r.issues);
        if (r.issues.length === 0) run.add('invalid_type', [...path, k], 'Invalid input: expected nonoptional, received undefined', true);
        continue;
      }
      if (present || !s.optout) run.issues.push(...r.issues);
      if (value !== undefined || present || (s.optin === 'defaulted' && !s.optout)) out[k] = value;
    }
    const unknownKeys = Object.keys(v).filter((k) => !Object.hasOwn(this._shape, k));
    if (unknownKeys.length > 0) {
      run.add('unrecognized_keys', path, `Unrecognized key${unknownKeys.length > 1 ? 's' : ''}: ${unknownKeys.map(quote).join(', ')}`, false, unknownKeys);
    }
    return out;
  }

  protected jsonBody(ctx: JsonContext): Json {
    const properties: Json = {};
    const required: string[] = [];
    for (const [k, s] of this.entries) {
      properties[k] = s.json(ctx);
      if (s.optin === undefined) required.push(k);
    }
    return { type: 'object', properties, ...(required.length > 0 ? { required } : {}), additionalProperties: false };
  }
}

// ---------------------------------------------------------------------------------------------
// Constructors (the `z.` of a schema file: `import * as z from '../lib/schema.ts'`)

export type output<S> = S extends Schema<infer O, unknown> ? O : never;
export type input<S> = S extends Schema<unknown, infer I> ? I : never;

export function string(): StringSchema {
  return new StringSchema();
}

export function url(opts: { readonly protocol?: RegExp; readonly error?: string } = {}): StringSchema {
  return new StringSchema().withTypeMessage(opts.error).url(opts);
}

export function number(): NumberSchema {
  return new NumberSchema();
}

/** A safe integer. */
export function int(): NumberSchema {
  return new IntSchema();
}

export function boolean(): BooleanSchema {
  return new BooleanSchema();
}

export function unknown(): UnknownSchema {
  return new UnknownSchema();
}

function enumOf<const T extends string>(options: readonly T[], opts?: Message): EnumSchema<T> {
  return new EnumSchema(options, messageOf(opts));
}
export { enumOf as enum };

export function literal<const T extends string | number | boolean>(value: T, opts?: Message): LiteralSchema<T> {
  return new LiteralSchema(value, messageOf(opts));
}

export function array<O, I>(element: Schema<O, I>): ArraySchema<O, I> {
  return new ArraySchema(element);
}

export function record<V, VI>(key: Schema<string>, value: Schema<V, VI>): RecordSchema<V, VI> {
  return new RecordSchema(key, value);
}

export function union<const T extends readonly Schema[]>(options: T, opts?: Message): UnionSchema<output<T[number]>, input<T[number]>> {
  return new UnionSchema(options, messageOf(opts));
}

/** An object whose keys are exactly the shape's (an unknown key is an error). */
export function strictObject<S extends Shape>(shape: S): ObjectSchema<S> {
  return new ObjectSchema(shape);
}

/**
 * The JSON Schema (draft 2020-12) of the input `schema` accepts: named schemas (`meta({ id })`)
 * under `$defs`, fields with a default not required.
 */
export function toJSONSchema(schema: Schema): Json {
  const ctx = new JsonContext();
  const body = schema.json(ctx);
  const out: Json = { $schema: 'https://json-schema.org/draft/2020-12/schema', ...body };
  if (ctx.defs.size > 0) out['$defs'] = Object.fromEntries(ctx.defs);
  return out;
}
