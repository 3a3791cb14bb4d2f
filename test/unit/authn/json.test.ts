import { describe, expect, it } from 'vitest';
import { deepFreeze, inheritsNothing, parseStrictJson, toStrictJson } from '../../../src/authn/json.ts';

/** Nothing inherited: no Object.prototype members, and nothing that can be added to reach one. */
function expectInheritsNothing(v: unknown): void {
  const o = v as Record<string, unknown>;
  expect(inheritsNothing(o)).toBe(true);
  for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__', '__defineGetter__']) expect(o[name], name).toBeUndefined();
  const proto = Object.getPrototypeOf(o) as object | null;
  if (proto !== null) {
    expect(Object.isFrozen(proto)).toBe(true);
    expect(Reflect.ownKeys(proto)).toEqual([]);
    expect(Object.getPrototypeOf(proto)).toBeNull();
  }
}

describe('parseStrictJson', () => {
  it('parses what JSON.parse parses, into objects that inherit nothing', () => {
    const text = ' {"a": [1, -2.5e3, 0, true, false, null, "x\\u00e9\\n\\"q\\""], "b": {"c": {}} , "d": []} ';
    const v = parseStrictJson(text);
    expect(v).toEqual(JSON.parse(text));
    expectInheritsNothing(v);
    expectInheritsNothing((v as { b: object }).b);
  });

  it('refuses duplicate member names (parser-differential attacks)', () => {
    expect(parseStrictJson('{"sub":"alice","sub":"admin"}')).toBeUndefined();
    expect(parseStrictJson('{"a":{"x":1,"x":1}}')).toBeUndefined();
    // the same name in different objects is fine
    expect(parseStrictJson('{"a":{"x":1},"b":{"x":1}}')).toBeDefined();
  });

  it('refuses __proto__ and keeps constructor/prototype as inert data', () => {
    expect(parseStrictJson('{"__proto__":{"polluted":true}}')).toBeUndefined();
    expect(parseStrictJson('{"a":{"__proto__":{}}}')).toBeUndefined();
    const v = parseStrictJson('{"constructor":{"prototype":{"polluted":true}}}') as Record<string, unknown>;
    expect(v['constructor']).toEqual({ prototype: { polluted: true } });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('refuses non-finite numbers, so exp cannot become Infinity', () => {
    expect(parseStrictJson('{"exp":1e999}')).toBeUndefined();
    expect(parseStrictJson('{"exp":-1e999}')).toBeUndefined();
  });

  it('refuses malformed JSON', () => {
    const bad = ['', '{', '{"a":1,}', '[1,]', '{"a" 1}', "{'a':1}", '{"a":01}', '{"a":1.}', '{"a":.5}', '{"a":+1}', '{"a":NaN}',
      '{"a":tru}', '{"a":"\u0001"}', '{"a":"\\x"}', '{"a":"abc}', '{"a":1} x', '{a:1}', '{"a":1e}', '{"a":-}'];
    for (const t of bad) expect(parseStrictJson(t), JSON.stringify(t)).toBeUndefined();
  });

  it('bounds nesting depth', () => {
    expect(parseStrictJson(`${'['.repeat(32)}${']'.repeat(32)}`)).toBeDefined();
    expect(parseStrictJson(`${'['.repeat(33)}${']'.repeat(33)}`)).toBeUndefined();
    expect(parseStrictJson(`${'{"a":'.repeat(40)}1${'}'.repeat(40)}`)).toBeUndefined();
  });
});

describe('toStrictJson', () => {
  it('copies into objects that inherit nothing and refuses own __proto__ members', () => {
    const parsed: unknown = JSON.parse('{"a":{"b":[1,{"c":2}]}}');
    const v = toStrictJson(parsed) as { a: object };
    expect(v).toEqual(parsed);
    expectInheritsNothing(v.a);
    expect(toStrictJson(JSON.parse('{"x":{"__proto__":{"y":1}}}'))).toBeUndefined();
    expect(toStrictJson({ f: () => 1 })).toBeUndefined();
    expect(toStrictJson({ n: Number.NaN })).toBeUndefined();
  });

  it('parseStrictJson(text, true) freezes every object and array as it builds them', () => {
    const v = parseStrictJson('{"a":{"b":[{"c":1},[]]},"e":{}}', true) as { a: { b: [{ c: number }, unknown[]] }; e: object };
    for (const o of [v, v.a, v.a.b, v.a.b[0], v.a.b[1], v.e]) expect(Object.isFrozen(o)).toBe(true);
    expectInheritsNothing(v.a);
    const m = parseStrictJson('{"a":{"b":[1]}}') as { a: { b: number[] } };
    expect(Object.isFrozen(m) || Object.isFrozen(m.a) || Object.isFrozen(m.a.b)).toBe(false);
  });

  it('deepFreeze freezes every level', () => {
    const v = deepFreeze(parseStrictJson('{"a":{"b":[{"c":1}]}}') as never) as { a: { b: { c: number }[] } };
    expect(Object.isFrozen(v.a.b[0])).toBe(true);
    expect(() => {
      (v.a.b[0] as { c: number }).c = 2;
    }).toThrow(TypeError);
  });
});
