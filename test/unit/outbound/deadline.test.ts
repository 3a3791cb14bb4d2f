import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import type { TokenOutcome } from '../../../src/exchange/broker.ts';
import type { Outbound } from '../../../src/outbound/server.ts';
import type { OutboundDecisionRecord } from '../../../src/outbound/types.ts';
import { startH2App } from '../inbound/harness.ts';
import { until } from '../inbound/traced.ts';
import { startEgress } from '../../support/egress.ts';

/**
 * The egress twin of test/unit/inbound/deadline-records.test.ts. A `grpc-timeout` runs from the
 * call's arrival at the egress listener, time spent getting a token included (docs/outbound.md).
 * Regression (review, sixteenth session): when it ran out while the token was being exchanged,
 * the relay answered `ERR_UPSTREAM_TIMEOUT` (a destination never called) and no outbound
 * decision record carried the decision id the app was given.
 */

describe('an egress gRPC deadline that passes while the token is being exchanged', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('is refused with ERR_DEADLINE_EXCEEDED and one outbound decision record with the id; the late token sends nothing', async () => {
    const dest = await startH2App();
    cleanup.push(() => dest.close());
    const records: OutboundDecisionRecord[] = [];
    // The IdP answers when the test says so.
    const waiting: ((t: TokenOutcome) => void)[] = [];
    const egress: Outbound = await startEgress(
      { destinations: [{ name: 'payments', url: `http://127.0.0.1:${dest.port}`, protocol: 'h2c', resource: 'urn:ward:payments' }] },
      { tokens: { token: () => new Promise((resolve) => waiting.push(resolve)) }, onDecision: (r) => records.push(r) },
    );
    cleanup.push(() => egress.close());

    const c = http2.connect(`http://127.0.0.1:${egress.port}`);
    c.on('error', () => {});
    cleanup.push(async () => {
      c.close();
    });
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
      const req = c.request(
        { ':method': 'POST', ':path': '/pay.v1.Payments/Charge', ':authority': 'payments', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '50m', authorization: 'Bearer APPTOKEN' },
        { endStream: true },
      );
      let h: http2.IncomingHttpHeaders = {};
      req.on('response', (x) => (h = x));
      req.resume();
      req.on('close', () => resolve(h));
    });
    expect(waiting).toHaveLength(1); // the call was waiting for its token when the deadline passed
    const id = headers['x-ward-decision-id'];
    expect({ grpcStatus: headers['grpc-status'], reason: headers['x-ward-reason'] }).toEqual({ grpcStatus: '4', reason: 'ERR_DEADLINE_EXCEEDED' });
    expect(id).toMatch(/\S/);
    expect(records.map((r) => [r.decisionId, r.decision, r.code, r.destination, r.tokenMs])).toEqual([[id, 'deny', 'ERR_DEADLINE_EXCEEDED', 'payments', null]]);

    // The token arrives late: the call is over, nothing goes to the destination, nothing is recorded again.
    for (const resolve of waiting.splice(0)) resolve({ ok: true, token: 'EXCHANGED', authorization: 'Bearer EXCHANGED', via: 'exchange' });
    await until(() => egress.counters.activeStreams === 0);
    await new Promise((r) => setImmediate(r));
    expect({ records: records.length, destination: dest.requests.length, forwarded: egress.counters.forwarded, refused: egress.counters.refused }).toEqual({
      records: 1,
      destination: 0,
      forwarded: 0,
      refused: 1,
    });
  });
});
