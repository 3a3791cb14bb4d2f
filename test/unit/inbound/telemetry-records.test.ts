import { afterEach, describe, expect, it } from 'vitest';
import { h1Request, h2Connect, h2Request, startH1App, startH2App } from './harness.ts';
import type { InboundDeps } from '../../../src/inbound/types.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import { attrs, collector, policyText, tracedProxy, until } from './traced.ts';

/** What the inbound stack hands telemetry, read back off the wire: spans and decision log records. */

describe('inbound decision records and spans', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  // Regression (found in review): a call with a gRPC content-type whose path is not
  // `/Service/Method` had its span named after the path, and `rpc.service`/`rpc.method` cut from it.
  it.each([
    '/api/users/alice.smith@example.com/reset-7f3a9c',
    '/users/alice.smith@example.com',
  ])('a call with content-type application/grpc to %s: the path stays off the span (it stays on the log record)', async (path) => {
    const col = await collector();
    cleanup.push(() => col.close());
    const app = await startH2App();
    cleanup.push(() => app.close());
    const policy = policyText(`  - name: readers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
`);
    const proxy = await tracedProxy({ upstreamPort: app.port, protocol: 'h2c', policy, collectorPort: col.port });
    cleanup.push(() => proxy.close());
    const s = await h2Connect(proxy.port);
    await h2Request(s, { ':method': 'POST', ':path': path, ':authority': 'orders', 'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer good-alice' });
    s.close();
    expect(proxy.decisions[0]?.decision).toBe('deny');
    await proxy.telemetry.flush(2000);
    await until(() => col.spans.length > 0 && col.logs.length > 0);
    const span = col.spans[0]!;
    const a = attrs(span.attributes);
    expect(span.name).toBe('POST');
    expect(Object.values(a).join(' ')).not.toContain('alice');
    expect(a['rpc.service']).toBeUndefined();
    expect(a['http.request.method']).toBe('POST');
    expect(attrs(col.logs[0]!.attributes)['ward.route']).toBe(path);
  });

  // Regression (found in review): of a matched dry-run deny only the code reached the record;
  // docs/policy.md promises its rule too. An SRE rolling `no-deletes` out in dry-run looks for it.
  it.each([
    ['a matched dryRun: true deny rule', '', `  - name: no-deletes
    action: deny
    dryRun: true
    match:
      http: [{ methods: [DELETE], prefix: /api }]
  - name: readers
    action: allow
    match:
      http: [{ prefix: /api }]
`, 'readers'],
    ['a dry-run policy', 'mode: dry-run\n', `  - name: no-deletes
    action: deny
    match:
      http: [{ methods: [DELETE], prefix: /api }]
  - name: readers
    action: allow
    match:
      http: [{ prefix: /api }]
`, '(dry-run)'],
  ] as const)('%s: the rule that would have denied is on the record, span and log (ward.dry_run.rule); ward.rule is unchanged', async (_what, extra, rules, allowedBy) => {
    const col = await collector();
    cleanup.push(() => col.close());
    const app = await startH1App();
    cleanup.push(() => app.close());
    const proxy = await tracedProxy({ upstreamPort: app.port, protocol: 'http1', policy: policyText(rules, extra), collectorPort: col.port });
    cleanup.push(() => proxy.close());
    const r = await h1Request(proxy.port, { method: 'DELETE', path: '/api/orders/1', headers: { authorization: 'Bearer good-alice', host: 'orders' } });
    expect(r.status).toBe(200); // dry-run: let through
    expect(proxy.decisions.map((d) => [d.decision, d.rule, d.dryRunCode, d.dryRunRule])).toEqual([['allow', allowedBy, 'ERR_POLICY_DENIED', 'no-deletes']]);
    await proxy.telemetry.flush(2000);
    await until(() => col.logs.length > 0 && col.spans.length > 0);
    const log = col.logs[0]!;
    expect(attrs(log.attributes)).toMatchObject({ 'ward.decision': 'dry-run-deny', 'ward.reason': 'ERR_POLICY_DENIED', 'ward.rule': allowedBy, 'ward.dry_run.rule': 'no-deletes' });
    expect(log.body.stringValue).toBe(`dry-run-deny /api/orders/1 ERR_POLICY_DENIED rule=${allowedBy} dry-run-rule=no-deletes`);
    expect(attrs(col.spans[0]!.attributes)).toMatchObject({ 'ward.rule': allowedBy, 'ward.dry_run.rule': 'no-deletes' });
  });

  it('a plain allow has no ward.dry_run.rule', async () => {
    const col = await collector();
    cleanup.push(() => col.close());
    const app = await startH1App();
    cleanup.push(() => app.close());
    const proxy = await tracedProxy({ upstreamPort: app.port, protocol: 'http1', policy: policyText(`  - name: readers
    action: allow
    match:
      http: [{ prefix: /api }]
`), collectorPort: col.port });
    cleanup.push(() => proxy.close());
    expect((await h1Request(proxy.port, { path: '/api/orders/1', headers: { authorization: 'Bearer good-alice', host: 'orders' } })).status).toBe(200);
    expect(proxy.decisions[0]?.dryRunRule).toBeNull();
    await proxy.telemetry.flush(2000);
    await until(() => col.logs.length > 0);
    expect(Object.keys(attrs(col.logs[0]!.attributes))).not.toContain('ward.dry_run.rule');
  });

  // Regression (found in review): a stage that threw was answered 500 ERR_INTERNAL with an
  // x-ward-decision-id, but no decision record, span, log record or metric carried that id.
  const readers = `  - name: readers
    action: allow
    match:
      http: [{ prefix: /orders }]
`;

  async function internalError(o: { policy: () => CompiledPolicy; extractBearer?: InboundDeps['extractBearer']; token: string }): Promise<void> {
    const col = await collector();
    cleanup.push(() => col.close());
    const app = await startH1App();
    cleanup.push(() => app.close());
    const proxy = await tracedProxy({ upstreamPort: app.port, protocol: 'http1', policy: o.policy, collectorPort: col.port, ...(o.extractBearer === undefined ? {} : { extractBearer: o.extractBearer }) });
    cleanup.push(() => proxy.close());
    const r = await h1Request(proxy.port, { path: '/orders/1', headers: { authorization: `Bearer ${o.token}`, host: 'orders' } });
    expect(r.status).toBe(500);
    expect(r.headers['x-ward-reason']).toBe('ERR_INTERNAL');
    const id = r.headers['x-ward-decision-id'];
    expect(typeof id).toBe('string');
    expect(app.requests).toHaveLength(0);
    expect(proxy.decisions.map((d) => [d.decisionId, d.decision, d.code])).toEqual([[id, 'deny', 'ERR_INTERNAL']]);
    await proxy.telemetry.flush(2000);
    await until(() => col.logs.length > 0 && col.spans.length > 0);
    expect(attrs(col.logs[0]!.attributes)).toMatchObject({ 'ward.decision_id': id, 'ward.decision': 'deny', 'ward.reason': 'ERR_INTERNAL' });
    expect(attrs(col.spans[0]!.attributes)).toMatchObject({ 'ward.decision_id': id, 'error.type': 'ERR_INTERNAL', 'http.response.status_code': 'int:500' });
    expect(await proxy.telemetry.metricsText()).toMatch(/ward_decisions_total\{[^}]*ward_reason="ERR_INTERNAL"[^}]*\} 1/);
  }

  it('a stage that throws after an asynchronous authentication (500 ERR_INTERNAL): a decision record, span, log record and metric with the id the caller got', async () => {
    const policy = policyText(readers);
    let reads = 0;
    await internalError({
      token: 'async-alice',
      // the first read (before authentication) works, the one after it throws
      policy: () => {
        if (reads++ % 2 === 1) throw new Error('policy snapshot broke');
        return policy;
      },
    });
  });

  it('a stage that throws synchronously (500 ERR_INTERNAL): a decision record, span, log record and metric too', async () => {
    const policy = policyText(readers);
    await internalError({
      token: 'good-alice',
      policy: () => policy,
      extractBearer: () => {
        throw new Error('bug');
      },
    });
  });
});
