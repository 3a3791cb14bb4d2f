import { describe, expect, it } from 'vitest';
import * as z from '../../../src/lib/schema.ts';

/** The issues of a failed parse as `path: message` lines (the root path is empty). */
function problems(s: z.Schema, v: unknown): string[] {
  const r = s.safeParse(v);
  if (r.success) return [];
  return r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('schema: leaves', () => {
  it.each<[string, z.Schema, unknown, string[]]>([
    ['string', z.string(), 1, [': Invalid input: expected string, received number']],
    ['string, null', z.string(), null, [': Invalid input: expected string, received null']],
    ['string, array', z.string(), [], [': Invalid input: expected string, received array']],
    ['string min', z.string().min(2), 'a', [': Too small: expected string to have >=2 characters']],
    ['string max', z.string().max(1), 'ab', [': Too big: expected string to have <=1 characters']],
    ['string regex', z.string().regex(/^a+$/), 'b', [': Invalid string: must match pattern /^a+$/']],
    ['every check reports', z.string().min(3, 'short').regex(/^a+$/, { error: 'only a' }), 'b', [': short', ': only a']],
    ['int', z.int(), 1.5, [': Invalid input: expected int, received number']],
    ['int, string', z.int(), '1', [': Invalid input: expected number, received string']],
    ['int, unsafe', z.int(), 2 ** 60, [': Too big: expected int to be <=9007199254740991']],
    ['enum of one', z.enum(['browser']), 'x', [': Invalid input: expected "browser"']],
    ['url, own message for the type too', z.url({ error: 'must be an absolute URL' }), 5, [': must be an absolute URL']],
    ['number, NaN', z.number(), NaN, [': Invalid input: expected number, received NaN']],
    ['number, Infinity', z.number(), Infinity, [': Invalid input: expected number, received Infinity']],
    ['positive', z.int().positive(), 0, [': Too small: expected number to be >0']],
    ['nonnegative', z.int().nonnegative(), -1, [': Too small: expected number to be >=0']],
    ['min and max', z.int().min(1).max(3), 4, [': Too big: expected number to be <=3']],
    ['boolean', z.boolean(), 'true', [': Invalid input: expected boolean, received string']],
    ['enum', z.enum(['allow', 'deny']), 'permit', [': Invalid option: expected one of "allow"|"deny"']],
    ['enum, own message', z.enum(['a'], { error: 'pick a' }), 'b', [': pick a']],
    ['literal', z.literal('ward.dev/v1'), 'v2', [': Invalid input: expected "ward.dev/v1"']],
    ['url', z.url(), 'not a url', [': Invalid URL']],
    ['url, own message', z.url({ error: 'must be an absolute URL' }), '/relative', [': must be an absolute URL']],
    ['url, protocol', z.url({ protocol: /^http$/ }), 'https://x:1', [': Invalid URL: protocol must match /^http$/']],
    ['url, http(s) needs //', z.url({ protocol: /^https?$/ }), 'http:example.com', [': Invalid URL: must start with http:// or https://']],
  ])('%s', (_name, s, v, expected) => {
    expect(problems(s, v)).toEqual(expected);
  });

  it('passes good values through, a URL trimmed', () => {
    expect(z.string().min(1).parse('x')).toBe('x');
    expect(z.int().min(0).parse(0)).toBe(0);
    expect(z.number().parse(-0.5)).toBe(-0.5);
    expect(z.url().parse('  https://idp.example/a \n')).toBe('https://idp.example/a');
    expect(z.url({ protocol: /^http$/ }).parse('http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080');
    expect(z.unknown().parse({ any: [1] })).toEqual({ any: [1] });
  });
});

describe('schema: objects', () => {
  const s = z.strictObject({
    name: z.string(),
    port: z.int().default(80),
    tags: z.array(z.string()).default([]),
    tls: z.strictObject({ on: z.boolean().default(false), ca: z.string().optional() }).prefault({}),
    note: z.string().optional(),
  });

  it('applies defaults, parses prefaults, and leaves absent optional keys out', () => {
    const v = s.parse({ name: 'a' });
    expect(v).toEqual({ name: 'a', port: 80, tags: [], tls: { on: false } });
    expect(Object.hasOwn(v, 'note')).toBe(false);
    expect(Object.hasOwn(v.tls, 'ca')).toBe(false);
  });

  it('hands out a fresh copy of a default, never the shared one', () => {
    const a = s.parse({ name: 'a' });
    a.tags.push('x');
    expect(s.parse({ name: 'b' }).tags).toEqual([]);
  });

  it('a default is not checked, a prefault is', () => {
    expect(z.int().min(5).default(1).parse(undefined)).toBe(1);
    expect(problems(z.int().min(5).prefault(1), undefined)).toEqual([': Too small: expected number to be >=5']);
  });

  it('names every unknown key once, at the object, and still checks the known ones', () => {
    const r = s.safeParse({ name: 1, colour: 'red', size: 2 });
    expect(r.success).toBe(false);
    expect(r.error?.issues).toEqual([
      { code: 'invalid_type', path: ['name'], message: 'Invalid input: expected string, received number' },
      { code: 'unrecognized_keys', path: [], message: 'Unrecognized keys: "colour", "size"', keys: ['colour', 'size'] },
    ]);
    expect(problems(z.strictObject({}), { a: 1 })).toEqual([': Unrecognized key: "a"']);
  });

  it('reports a missing required key at its path, and paths through arrays', () => {
    expect(problems(s, {})).toEqual(['name: Invalid input: expected string, received undefined']);
    expect(problems(s, { name: 'a', tags: ['x', 2] })).toEqual(['tags.1: Invalid input: expected string, received number']);
    expect(problems(s, { name: 'a', tls: { on: 'yes' } })).toEqual(['tls.on: Invalid input: expected boolean, received string']);
  });

  it('takes plain objects only', () => {
    expect(problems(s, [])).toEqual([': Invalid input: expected object, received array']);
    expect(problems(s, null)).toEqual([': Invalid input: expected object, received null']);
    expect(problems(s, new Date(0))).toEqual([': Invalid input: expected object, received object']);
  });

  it('does not let an own __proto__ key through as a prototype', () => {
    const input = JSON.parse('{"name":"a","__proto__":{"polluted":true}}') as unknown;
    expect(problems(s, input)).toEqual([': Unrecognized key: "__proto__"']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('resolves a recursive shape through a getter', () => {
    interface Node {
      name: string;
      children?: Node[] | undefined;
    }
    const node: z.Schema<Node> = z.strictObject({
      name: z.string(),
      get children(): z.Optional<Node[]> {
        return z.array(node).optional();
      },
    });
    expect(node.parse({ name: 'a', children: [{ name: 'b', children: [] }] })).toEqual({ name: 'a', children: [{ name: 'b', children: [] }] });
    expect(problems(node, { name: 'a', children: [{ name: 2 }] })).toEqual(['children.0.name: Invalid input: expected string, received number']);
  });
});

describe('schema: arrays, records, unions', () => {
  it('checks items and the minimum length; an array over its maximum is refused whole, its items unread', () => {
    expect(problems(z.array(z.string()).min(1, 'needs one'), [])).toEqual([': needs one']);
    expect(problems(z.array(z.string()).min(3), [1])).toEqual(['0: Invalid input: expected string, received number', ': Too small: expected array to have >=3 items']);
    expect(problems(z.array(z.string()).max(1), [1, 2])).toEqual([': Too big: expected array to have <=1 items']);
  });

  it('checks record keys and values', () => {
    const r = z.record(z.string().regex(/^[a-z]+$/), z.string());
    expect(r.parse({ a: 'x' })).toEqual({ a: 'x' });
    expect(problems(r, { A: 'x', b: 1 })).toEqual(['A: Invalid key in record', 'b: Invalid input: expected string, received number']);
    expect(problems(r, [])).toEqual([': Invalid input: expected record, received array']);
  });

  it('keeps a record key spelled __proto__ as a key, not as the prototype', () => {
    const v = z.record(z.string(), z.unknown()).parse(JSON.parse('{"__proto__":{"admin":true}}'));
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect((v)['admin']).toBeUndefined();
    expect(Object.keys(v)).toEqual(['__proto__']);
  });

  it('a union takes the first option that parses, else says why', () => {
    const u = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)], { error: 'a path or a list' });
    expect(u.parse('a.b')).toBe('a.b');
    expect(u.parse(['a'])).toEqual(['a']);
    expect(problems(u, 5)).toEqual([': a path or a list']);
    // One option had the right type and failed a check only: its issue says more.
    expect(problems(u, '')).toEqual([': Too small: expected string to have >=1 characters']);
    expect(problems(z.union([z.string(), z.number()]), true)).toEqual([': Invalid input']);
  });
});

describe('schema: refinements', () => {
  it('run on a well-typed value, at a path of their choosing', () => {
    const s = z
      .strictObject({ a: z.string().optional(), b: z.string().optional() })
      .refine((o) => (o.a === undefined) !== (o.b === undefined), { message: 'set exactly one of a or b' })
      .refine((o) => o.a !== 'x', { message: 'not x', path: ['a'] });
    expect(problems(s, {})).toEqual([': set exactly one of a or b']);
    expect(problems(s, { a: 'x' })).toEqual(['a: not x']);
    expect(s.parse({ b: 'y' })).toEqual({ b: 'y' });
  });

  it('do not run when the value has the wrong type somewhere, but do after a failed check', () => {
    let calls = 0;
    const s = z.strictObject({ n: z.int().min(1) }).refine(() => {
      calls++;
      return false;
    }, 'refined');
    expect(problems(s, { n: 'one' })).toEqual(['n: Invalid input: expected number, received string']);
    expect(calls).toBe(0);
    expect(problems(s, { n: 0 })).toEqual(['n: Too small: expected number to be >=1', ': refined']);
    expect(calls).toBe(1);
  });

  it('superRefine adds issues below the value', () => {
    const s = z.array(z.string()).superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((v, i) => {
        if (seen.has(v)) ctx.addIssue({ code: 'custom', path: [i], message: `duplicate '${v}'` });
        seen.add(v);
      });
    });
    expect(problems(s, ['a', 'b', 'a'])).toEqual(["2: duplicate 'a'"]);
  });

  it('meta, refine and checks never change the schema they are called on', () => {
    const base = z.string();
    const strict = base.min(3).refine((v) => v !== 'bad', 'no').meta({ description: 'x' });
    expect(base.parse('')).toBe('');
    expect(base.metadata).toBeUndefined();
    expect(problems(strict, 'bad')).toEqual([': no']);
    expect(strict.metadata).toEqual({ description: 'x' });
  });
});

describe('schema: JSON Schema', () => {
  it('describes what parses, named schemas under $defs, defaulted keys not required', () => {
    const item = z.strictObject({ n: z.int().positive() }).meta({ id: 'Item', description: 'One item.' });
    const s = z
      .strictObject({
        kind: z.literal('List').meta({ description: 'Always `List`.' }),
        mode: z.enum(['a', 'b']).default('a'),
        items: z.array(item).max(10).optional(),
        first: item.optional().meta({ description: 'The first.' }),
        labels: z.record(z.string().min(1), z.string()).prefault({}),
        scalar: z.union([z.string(), z.number(), z.boolean()]),
        path: z.union([z.string(), z.array(z.string()).min(1)]),
        uri: z.url(),
        ratio: z.number().min(0).max(1),
      })
      .meta({ title: 'list' });
    expect(z.toJSONSchema(s)).toEqual({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      properties: {
        kind: { type: 'string', const: 'List', description: 'Always `List`.' },
        mode: { default: 'a', type: 'string', enum: ['a', 'b'] },
        items: { maxItems: 10, type: 'array', items: { $ref: '#/$defs/Item' } },
        first: { description: 'The first.', $ref: '#/$defs/Item' },
        labels: { default: {}, type: 'object', propertyNames: { type: 'string', minLength: 1 }, additionalProperties: { type: 'string' } },
        scalar: { type: ['string', 'number', 'boolean'] },
        path: { anyOf: [{ type: 'string' }, { minItems: 1, type: 'array', items: { type: 'string' } }] },
        uri: { type: 'string', format: 'uri' },
        ratio: { type: 'number', minimum: 0, maximum: 1 },
      },
      required: ['kind', 'scalar', 'path', 'uri', 'ratio'],
      additionalProperties: false,
      title: 'list',
      $defs: {
        Item: {
          type: 'object',
          properties: { n: { type: 'integer', exclusiveMinimum: 0, maximum: Number.MAX_SAFE_INTEGER } },
          required: ['n'],
          additionalProperties: false,
          description: 'One item.',
        },
      },
    });
  });
});
