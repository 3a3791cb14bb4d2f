import { readFileSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseSidecarConfig } from '../../../src/config/sidecar.ts';
import { demoFiles, EXAMPLE_PORTS, formatTable, runDemo } from '../../../src/demo/demo.ts';
import { DEFAULT_DEV_IDP_YAML, defaultDevIdpConfig } from '../../../src/devidp/config.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { parseYamlFile } from '../../../src/lib/yaml-schema.ts';
import { createYamlLocator } from '../../../src/lib/yaml-locate.ts';
import { policySchema } from '../../../src/policy/schema.ts';
import { checkPolicy } from '../../../src/policy/semantic.ts';

/**
 * `ward demo` lives in src/demo/demo.ts; its tests sit here, beside the dev IdP it is built on.
 *
 * The demo writes its sidecar config and policy at run time (the dev IdP's port is dynamic);
 * deploy/examples/ holds the same files for the README's fixed ports. These tests keep the two
 * from drifting and check that both load with the real schemas. To regenerate the examples:
 * write `demoFiles(EXAMPLE_PORTS)` and `DEFAULT_DEV_IDP_YAML` to deploy/examples/.
 */

const EXAMPLES = fileURLToPath(new URL('../../../deploy/examples/', import.meta.url));
const read = (name: string): string => readFileSync(`${EXAMPLES}${name}`, 'utf8');

describe('demo files', () => {
  const files = demoFiles(EXAMPLE_PORTS);

  it.each(['orders.policy.yaml', 'sidecar.yaml'] as const)('deploy/examples/%s is demoFiles() for the README ports', (name) => {
    expect(read(name)).toBe(files[name]);
  });

  it('deploy/examples/dev-idp.yaml is the embedded dev IdP config, and the secret file matches it', () => {
    expect(read('dev-idp.yaml')).toBe(DEFAULT_DEV_IDP_YAML);
    const secret = defaultDevIdpConfig().clients.find((c) => c.clientId === 'orders-sidecar')?.clientSecret;
    expect(read('orders-sidecar.secret').trim()).toBe(secret);
  });

  it('the policy loads: schema and semantic checks, issuer and audiences of the dev IdP', () => {
    const text = files['orders.policy.yaml'];
    const policy = parseYamlFile(text, 'orders.policy.yaml', policySchema);
    expect(checkPolicy(policy, createYamlLocator(text, 'orders.policy.yaml'))).toEqual([]);
    expect(policy.service).toBe('orders');
    expect(policy.issuers).toEqual([expect.objectContaining({ issuer: 'http://127.0.0.1:4400', audiences: ['urn:ward:orders', 'urn:ward:orders-opaque'] })]);
    expect(policy.rules.map((r) => [r.name, r.action])).toEqual([
      ['no-deletes', 'deny'],
      ['readers', 'allow'],
      ['writers', 'allow'],
    ]);
  });

  it('the policy and the dev IdP agree on the resources and scopes', () => {
    const idp = defaultDevIdpConfig();
    const policy = parseYamlFile(files['orders.policy.yaml'], 'p.yaml', policySchema);
    const scopes = new Set(idp.resourceServers.filter((r) => r.resource.startsWith('urn:ward:orders')).flatMap((r) => r.scopes));
    for (const rule of policy.rules) for (const c of rule.when) for (const s of c.scopes?.allOf ?? []) expect(scopes).toContain(s);
    for (const aud of policy.issuers[0]?.audiences ?? []) expect(idp.resourceServers.map((r) => r.resource)).toContain(aud);
    const sidecarClient = idp.clients.find((c) => c.clientId === 'orders-sidecar');
    expect(sidecarClient?.serves).toEqual(expect.arrayContaining(policy.issuers[0]?.audiences ?? []));
  });

  it('the sidecar config loads and names the policy file and credentials', () => {
    const cfg = parseSidecarConfig(files['sidecar.yaml'], '/tmp/demo/sidecar.yaml');
    expect(cfg).toMatchObject({ service: 'orders', policy: { file: 'orders.policy.yaml' }, upstream: { url: 'http://127.0.0.1:8080', protocol: 'h2c' } });
    expect(cfg.inbound.listen).toEqual({ host: '127.0.0.1', port: 15006 });
    expect(cfg.authn.credentials).toEqual([{ issuer: 'http://127.0.0.1:4400', clientId: 'orders-sidecar', clientSecretFile: 'orders-sidecar.secret' }]);
  });

  it('renders the result table in aligned columns', () => {
    const table = formatTable([
      { caller: 'frontend', method: 'GetOrder', expected: 'OK', got: 'OK', reason: '-', decisionId: 'd1', reachedApp: true, ok: true },
      { caller: '(no token)', method: 'GetOrder', expected: 'UNAUTHENTICATED ERR_TOKEN_MISSING', got: 'OK', reason: '-', decisionId: '-', reachedApp: true, ok: false },
    ]);
    const lines = table.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[2]?.startsWith('✓')).toBe(true);
    expect(lines[3]?.startsWith('✗')).toBe(true);
    const col = (l: string | undefined, s: string): number => l?.indexOf(s) ?? -1;
    expect(col(lines[2], 'OK')).toBe(col(lines[0], 'expected'));
    expect(col(lines[3], 'UNAUTHENTICATED')).toBe(col(lines[0], 'expected'));
    expect(col(lines[3], 'reached')).toBe(col(lines[0], 'app'));
  });
});

describe('ward demo, end to end (dev IdP, Orders app, real sidecar, grpc-js client)', () => {
  function capture(): { out: PassThrough; text: () => string } {
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => {
      text += c.toString();
    });
    return { out, text: () => text };
  }

  it('--once: every call goes as expected and the exit code is 0', async () => {
    const { out, text } = capture();
    const code = await runDemo({ once: true, log: silentLogger, out });
    expect(text()).toContain('all 11 calls went as expected');
    expect(code).toBe(0);
    const rows = text().split('\n').filter((l) => /^[✓✗] /.test(l));
    expect(rows).toHaveLength(12); // 11 calls, then one more after the policy edit
    expect(rows.every((r) => r.startsWith('✓'))).toBe(true);
    // the policy comes from the control plane, and an edit published there changes a decision
    expect(text()).toContain('policy from the control plane');
    expect(rows.at(-1)).toMatch(/reporting \(after edit\).*PERMISSION_DENIED +ERR_POLICY_DENIED/);
    expect(text()).not.toContain('NOT APPLIED');
    // the decision trail comes back from the control plane, one line per call, with trace ids
    const trail = text().slice(text().indexOf('Decision trail from the control plane'));
    expect(trail).toMatch(/orders +reporting +\/ward\.demo\.v1\.Orders\/GetOrder +deny +ERR_POLICY_DENIED +freeze-reporting +[0-9a-f]{12} [0-9a-f]{32}/);
    expect(trail).toMatch(/ledger +frontend +POST \/append +allow/);
    // reason codes come from the sidecar's x-ward-reason, not from the expectation column
    expect(rows.find((r) => r.includes('reporting') && r.includes('CreateOrder'))?.match(/ERR_SCOPE_INSUFFICIENT/g)).toHaveLength(2);
    expect(rows.find((r) => r.includes('(no token)'))?.match(/ERR_TOKEN_MISSING/g)).toHaveLength(2);
  });

  it('without --once keeps the mesh up until stopped, and re-runs the calls when the policy file is edited', async () => {
    const { out, text } = capture();
    const stop = new AbortController();
    let edited = false;
    out.on('data', () => {
      const m = /Edit (\S+orders\.yaml) and save/.exec(text());
      if (m?.[1] !== undefined && !edited) {
        edited = true;
        // the edit a user would make: reading now needs orders.write, which reporting lacks
        const file = m[1];
        const text0 = readFileSync(file, 'utf8');
        const i = text0.indexOf('- name: readers');
        writeFileSync(file, text0.slice(0, i) + text0.slice(i).replace('allOf: [orders.read]', 'allOf: [orders.write]'));
      }
      if (text().includes('is in force; the same calls now')) stop.abort();
    });
    const timer = setTimeout(() => stop.abort(), 15_000);
    const code = await runDemo({ once: false, log: silentLogger, out, signal: stop.signal });
    clearTimeout(timer);
    expect(code).toBe(0);
    expect(text()).toMatch(/sidecar {3}127\.0\.0\.1:\d+ -> app 127\.0\.0\.1:\d+/);
    const after = text().slice(text().indexOf('is in force; the same calls now'));
    expect(after).toMatch(/reporting +GetOrder +OK +PERMISSION_DENIED +ERR_SCOPE_INSUFFICIENT/);
    expect(after).toMatch(/frontend +GetOrder +OK +OK/);
  });
});
