import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import { MAX_DEPTH } from '../../../src/lib/yaml-schema.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';

/**
 * A policy nested deeper than the checks can recurse is a ConfigError with its place, never
 * another exception (regression: ~700 levels of `any:` overflowed the stack in the schema
 * checks; in the reload timer that ended the sidecar, and `ward policy check` printed no place).
 */

const HEAD = 'apiVersion: ward.dev/v1\nkind: Policy\nservice: orders\nissuers:\n  - issuer: https://idp.example.com\n    audiences: [urn:ward:orders]\nrules:\n  - name: r\n    action: allow\n    match: { grpc: [/a.B/C] }\n    when:\n';

/** Block style: `any` nested `n` times, the innermost condition on the last line. */
function blockPolicy(n: number): string {
  let text = HEAD;
  let indent = '      ';
  for (let i = 0; i < n; i++) {
    text += `${indent}- any:\n`;
    indent += '    ';
  }
  return `${text}${indent}- scopes: { allOf: [x] }\n`;
}

function refusal(text: string): ConfigError {
  try {
    parsePolicyText(text, 'deep.yaml', { env: {} });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw new Error(`not a ConfigError: ${String(err)}`, { cause: err });
  }
  throw new Error('loaded');
}

describe('nesting depth', () => {
  it('a policy nested within the limit loads', () => {
    expect(parsePolicyText(blockPolicy(25), 'deep.yaml', { env: {} }).rules).toHaveLength(1);
  });

  it(`past ${MAX_DEPTH} levels: refused at the first value too deep, with its line and path`, () => {
    const e = refusal(blockPolicy(40));
    expect(e.issues).toHaveLength(1);
    const issue = e.issues[0];
    expect(issue?.message).toBe(`nested more than ${MAX_DEPTH} levels deep`);
    expect(issue?.path).toMatch(/^rules\[0\]\.when\[0\](\.any\[0\])+/);
    // Path segments: rules, 0, when, 0, then any, 0 per level: the map of level 30 (0-based,
    // on line 12 + 30) is the first value 64 segments down.
    expect(issue?.line).toBe(12 + 30);
  });

  it('far past it, block or flow style, JSON too: a ConfigError every time', () => {
    for (const n of [200, 720, 5000]) {
      expect(refusal(blockPolicy(n)).issues[0]?.line).toBeGreaterThan(1);
      let flow = '{ scopes: { allOf: [x] } }';
      for (let i = 0; i < n; i++) flow = `{ any: [${flow}] }`;
      refusal(HEAD.replace('    when:\n', `    when: [${flow}]\n`));
      refusal('['.repeat(n) + ']'.repeat(n));
    }
  });
});
