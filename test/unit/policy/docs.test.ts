import { describe, expect, it } from 'vitest';
import { toJSONSchema } from '../../../src/lib/schema.ts';
import { EXAMPLE_POLICY, generate, staleFiles } from '../../../scripts/gen-docs.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import { policySchema } from '../../../src/policy/schema.ts';
import { facts, grpc, http, id } from './helpers.ts';

type Json = Record<string, unknown>;

/** Every property of every object in the JSON Schema, with its path. */
function properties(node: Json, path: string, out: [string, Json][], defs: Json, seen = new Set<string>()): [string, Json][] {
  if (typeof node['$ref'] === 'string') {
    const name = node['$ref'].replace('#/$defs/', '');
    if (seen.has(name)) return out;
    seen.add(name);
    return properties(defs[name] as Json, path, out, defs, seen);
  }
  if (node['items'] !== undefined) properties(node['items'] as Json, `${path}[]`, out, defs, seen);
  for (const [k, v] of Object.entries((node['properties'] ?? {}) as Record<string, Json>)) {
    out.push([`${path}.${k}`, v]);
    properties(v, `${path}.${k}`, out, defs, seen);
  }
  return out;
}

describe('generated docs', () => {
  it('are up to date (node scripts/gen-docs.ts)', () => {
    expect(staleFiles()).toEqual([]);
  });

  it('every policy field has a description and an example', () => {
    const js = toJSONSchema(policySchema);
    const props = properties(js, '', [], (js['$defs'] ?? {}) as Json);
    expect(props.length).toBeGreaterThan(40);
    const defs = (js['$defs'] ?? {}) as Record<string, Json>;
    for (const [path, p] of props) {
      const ref = typeof p['$ref'] === 'string' ? defs[p['$ref'].replace('#/$defs/', '')] : undefined;
      expect(typeof (p['description'] ?? ref?.['description']), `${path} description`).toBe('string');
      if (ref === undefined) expect(Array.isArray(p['examples']) && p['examples'].length > 0, `${path} examples`).toBe(true);
    }
  });

  it('policy.md lists every field and the JSON Schema is valid JSON', () => {
    const files = Object.fromEntries(generate().map((f) => [f.path, f.content]));
    const md = files['docs/policy.md'] ?? '';
    for (const field of ['apiVersion', 'hmacSecretFile', 'requireAtJwtType', 'glob', 'maxDepth', 'via', 'dryRun', 'allOf']) expect(md).toContain(`**\`${field}\`**`);
    expect(JSON.parse(files['docs/schema/policy.schema.json'] ?? '')).toMatchObject({ title: 'ward policy' });
    expect(JSON.parse(files['docs/schema/sidecar-config.schema.json'] ?? '')).toMatchObject({ title: 'ward sidecar config' });
    expect(files['docs/sidecar-config.md']).toContain('**`drainTimeoutMs`**');
  });

  it('the example in policy.md loads and behaves as its comments say', () => {
    const p = parsePolicyText(EXAMPLE_POLICY, 'example.yaml');
    const Orders = (m: string) => grpc(`/ward.demo.v1.Orders/${m}`);
    const everything = id({ scope: 'orders.read orders.write', tenant: { id: 'acme' } }, 'https://idp.example.com');
    const d = (who: ReturnType<typeof id> | null, req: ReturnType<typeof grpc>) => evaluate(p, facts(who, req), 0).decision;
    expect(d(everything, Orders('DeleteOrder'))).toMatchObject({ code: 'ERR_POLICY_DENIED', rule: 'no-deletes' });
    expect(d(everything, http('DELETE', '/api/orders/7'))).toMatchObject({ code: 'ERR_POLICY_DENIED', rule: 'no-deletes' });
    expect(d(null, http('HEAD', '/healthz'))).toMatchObject({ kind: 'allow', rule: 'health' });
    expect(d(everything, Orders('GetOrder'))).toMatchObject({ kind: 'allow', rule: 'readers' });
    expect(d(everything, http('GET', '/api/orders/7'))).toMatchObject({ kind: 'allow', rule: 'readers' });
    expect(d(everything, Orders('CreateOrder'))).toMatchObject({ kind: 'allow', rule: 'writers' });
    const viaFrontend = id({ scope: 'orders.write', tenant: { id: 'globex' }, act: { sub: 'frontend' } }, 'https://idp.example.com');
    const viaOther = id({ scope: 'orders.write', tenant: { id: 'globex' }, act: { sub: 'batch' } }, 'https://idp.example.com');
    expect(d(viaFrontend, Orders('CreateOrder'))).toMatchObject({ kind: 'allow', rule: 'writers' });
    expect(d(viaOther, Orders('CreateOrder'))).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_NO_MATCH', rule: 'writers' });
    expect(d(everything, Orders('Chat'))).toMatchObject({ kind: 'allow', rule: 'chat-beta', dryRunDenial: { code: 'ERR_POLICY_NO_MATCH' } });
  });
});
