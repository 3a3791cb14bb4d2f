import { afterEach, describe, expect, it } from 'vitest';
import { h2Connect, h2Request, startH2App } from './harness.ts';
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
});
