import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { HpackDecoder } from '../../../src/h2/hpack.ts';
import { ErrorResponder } from '../../../src/inbound/respond.ts';
import { continuation, FrameType, headersFrame, rawH2, requestBlock } from '../../security/support/h2raw.ts';
import { rawExchange, startH1App } from './harness.ts';
import { attrs, collector, policyText, tracedProxy, until } from './traced.ts';

/**
 * docs/reason-codes.md: every response the sidecar writes itself carries a reason code and a
 * decision id. Regression (review, sixteenth session): the HTTP/1.1 refusals written from the
 * parser's `clientError` (a 431 for an over-long header list, a 400 for bytes llhttp rejects)
 * were prebuilt per code without `x-ward-decision-id`, and left no decision record, span or
 * `ward_decisions_total` sample: a flood of them was invisible on /metrics.
 */

const ALLOW = `  - name: readers
    action: allow
    match:
      http: [{ prefix: /api }]
`;

describe('HTTP/1.1 refusals written by the parser', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  /** A collector, an HTTP/1.1 app and a traced sidecar in front of it, closed after the test. */
  async function rig(): Promise<{ col: Awaited<ReturnType<typeof collector>>; app: Awaited<ReturnType<typeof startH1App>>; proxy: Awaited<ReturnType<typeof tracedProxy>> }> {
    const col = await collector();
    cleanup.push(() => col.close());
    const app = await startH1App();
    cleanup.push(() => app.close());
    const proxy = await tracedProxy({ upstreamPort: app.port, protocol: 'http1', policy: policyText(ALLOW), collectorPort: col.port });
    cleanup.push(() => proxy.close());
    return { col, app, proxy };
  }

  it.each([
    ['a header list over maxHeaderListBytes', `GET /api/a HTTP/1.1\r\nHost: orders\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`, 431, 'ERR_REQUEST_HEADERS_TOO_LARGE'],
    ['an invalid field name', 'GET /api/a HTTP/1.1\r\nHost: orders\r\nBad Name: x\r\n\r\n', 400, 'ERR_REQUEST_INVALID'],
    ['bytes that are not HTTP', '\x16\x03\x01 not a request\r\n\r\n', 400, 'ERR_REQUEST_INVALID'],
  ] as const)('%s: %i with x-ward-decision-id, and a decision record, span, log record and sample with that id', async (_what, text, status, reason) => {
    const { col, app, proxy } = await rig();

    const out = await rawExchange(proxy.port, text, 300);
    const head = out.split('\r\n\r\n')[0] ?? '';
    expect(head.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(head).toContain(`\r\nx-ward-reason: ${reason}\r\n`);
    expect(head).toContain('\r\nconnection: close');
    const id = /\r\nx-ward-decision-id: (\S+)/.exec(head)?.[1];
    expect(id).toBeDefined();

    // Nothing of the request is known: no method, no route.
    expect(proxy.decisions.map((d) => [d.decisionId, d.decision, d.code, d.method, d.route])).toEqual([[id, 'deny', reason, '', null]]);
    expect(await proxy.telemetry.metricsText()).toMatch(new RegExp(`^ward_decisions_total\\{[^}]*ward_reason="${reason}"[^}]*\\} 1$`, 'm'));
    await proxy.telemetry.flush(2000);
    await until(() => col.spans.length > 0 && col.logs.length > 0);
    const span = attrs(col.spans[0]!.attributes);
    const log = attrs(col.logs[0]!.attributes);
    expect({ id: span['ward.decision_id'], status: span['http.response.status_code'], error: span['error.type'], original: span['http.request.method_original'] }).toEqual({
      id,
      status: `int:${status}`,
      error: reason,
      original: undefined,
    });
    expect({ id: log['ward.decision_id'], reason: log['ward.reason'], route: log['ward.route'] }).toEqual({ id, reason, route: undefined });
    expect({ denied: proxy.inbound.counters.denied, requests: proxy.inbound.counters.requests, app: app.requests.length }).toEqual({ denied: 1, requests: 1, app: 0 });
  });

  it('an HTTP/2 header list over the limit: the connection\'s own 431 carries a decision id, recorded like the rest (regression: neither)', async () => {
    const { app, proxy } = await rig();
    const c = await rawH2(proxy.port);
    cleanup.push(async () => c.close());
    const blk = requestBlock('/api/x', Array.from({ length: 100 }, (_, i) => [`x-big-${i}`, 'v'.repeat(1000)] as [string, string]));
    const parts = [headersFrame(1, blk.subarray(0, 16_384), { endStream: true, endHeaders: false })];
    for (let at = 16_384; at < blk.length; at += 16_384) parts.push(continuation(1, blk.subarray(at, at + 16_384), at + 16_384 >= blk.length));
    c.write(Buffer.concat(parts));
    const f = await c.waitFrame((x) => x.type === FrameType.HEADERS);
    const fields: string[] = [];
    new HpackDecoder().decode(f?.payload ?? Buffer.alloc(0), 0, f?.payload.length ?? 0, fields);
    expect(fields.slice(0, 2)).toEqual([':status', '431']);
    const at = fields.indexOf('x-ward-decision-id');
    expect(at).toBeGreaterThan(0);
    const id = fields[at + 1];
    expect(proxy.decisions.map((d) => [d.decisionId, d.decision, d.code, d.route])).toEqual([[id, 'deny', 'ERR_REQUEST_HEADERS_TOO_LARGE', null]]);
    expect(await proxy.telemetry.metricsText()).toMatch(/^ward_decisions_total\{[^}]*ward_reason="ERR_REQUEST_HEADERS_TOO_LARGE"[^}]*\} 1$/m);
    expect(app.requests).toHaveLength(0);
  });

  it('CONNECT is answered 400 ERR_REQUEST_INVALID and recorded with its method (regression: the connection was dropped unanswered)', async () => {
    const { app, proxy } = await rig();
    const out = await rawExchange(proxy.port, 'CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\nAuthorization: Bearer x\r\n\r\n', 300);
    const head = out.split('\r\n\r\n')[0] ?? '';
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(head).toContain('\r\nx-ward-reason: ERR_REQUEST_INVALID\r\n');
    const id = /\r\nx-ward-decision-id: (\S+)/.exec(head)?.[1];
    expect(id).toBeDefined();
    expect(proxy.decisions.map((d) => [d.decisionId, d.decision, d.code, d.method, d.route])).toEqual([[id, 'deny', 'ERR_REQUEST_INVALID', 'CONNECT', null]]);
    expect(app.requests).toHaveLength(0);
  });

  it('every raw refusal gets its own decision id (ERR_TLS_REQUIRED included, whose only record is the log line)', () => {
    const responder = new ErrorResponder('orders');
    const written: string[] = [];
    const socket = { writable: true, end: (b: Buffer) => written.push(b.toString('latin1')) } as unknown as Socket;
    responder.writeClientError(socket, 'ERR_TLS_REQUIRED', 'abc.1');
    responder.writeClientError(socket, 'ERR_REQUEST_INVALID', 'abc.2');
    expect(written[0]).toBe(
      'HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nx-ward-reason: ERR_TLS_REQUIRED\r\nx-ward-decision-id: abc.1\r\nconnection: close\r\n\r\nthis service takes calls over TLS only\n',
    );
    expect(written[1]).toContain('\r\nx-ward-decision-id: abc.2\r\nconnection: close\r\n\r\nmalformed request\n');
  });
});
