import { afterEach, describe, expect, it } from 'vitest';
import { createInbound, type Inbound } from '../../../src/inbound/server.ts';
import type { AuthResult, DecisionRecord } from '../../../src/inbound/types.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import type { Telemetry } from '../../../src/telemetry/telemetry.ts';
import { h2Connect, h2Request, identity, startH2App, testConfig, testExtract } from './harness.ts';
import { attrs, collector, type Collector, policyText, telemetryTo, until } from './traced.ts';

/**
 * A gRPC call's `grpc-timeout` runs from its arrival, authentication included (docs/outbound.md,
 * README). Regression (review, sixteenth session): when it ran out while the call was still
 * being decided (a JWKS or introspection fetch in flight), the forwarder's timer answered
 * DEADLINE_EXCEEDED with `ERR_UPSTREAM_TIMEOUT` and a decision id, counted an upstream error for
 * an app that was never called, and the authentication that finished later found the call
 * finished: no decision record, span, log record or `ward_decisions_total` sample carried the id.
 */

const GRPC_CALL = {
  ':method': 'POST',
  ':path': '/ward.demo.v1.Orders/GetOrder',
  ':authority': 'orders',
  'content-type': 'application/grpc',
  te: 'trailers',
  'grpc-timeout': '50m',
  authorization: 'Bearer alice',
};

/** An authentication that waits until the test lets it finish (a JWKS fetch in flight). */
function gatedAuthentication(): { authenticate: () => Promise<AuthResult>; started: () => number; finish: () => void } {
  const waiting: ((r: AuthResult) => void)[] = [];
  let started = 0;
  return {
    authenticate: () => {
      started++;
      return new Promise((resolve) => waiting.push(resolve));
    },
    started: () => started,
    finish: () => {
      for (const resolve of waiting.splice(0)) resolve({ ok: true, identity: identity('alice') });
    },
  };
}

describe('a gRPC deadline that passes before the call is decided', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function rig(policy: CompiledPolicy, authenticate: () => AuthResult | Promise<AuthResult>): Promise<{ inbound: Inbound; decisions: DecisionRecord[]; telemetry: Telemetry; col: Collector; app: Awaited<ReturnType<typeof startH2App>> }> {
    const col = await collector();
    cleanup.push(() => col.close());
    const app = await startH2App();
    cleanup.push(() => app.close());
    const telemetry = telemetryTo(col.port);
    cleanup.push(() => telemetry.shutdown(1000));
    const decisions: DecisionRecord[] = [];
    const inbound = await createInbound({
      config: testConfig({ upstreamPort: app.port, protocol: 'h2c' }),
      authenticate,
      extractBearer: testExtract,
      policy: () => policy,
      evaluate,
      log: silentLogger,
      clock: () => Date.now(),
      onDecision: (r) => decisions.push(r),
      tracer: telemetry.inbound,
    });
    cleanup.push(() => inbound.close());
    return { inbound, decisions, telemetry, col, app };
  }

  it('is refused through the deny path: ERR_DEADLINE_EXCEEDED, one decision record, span, log record and sample with the id the caller got', async () => {
    const auth = gatedAuthentication();
    const policy = policyText(`  - name: readers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
`);
    const { inbound, decisions, telemetry, col, app } = await rig(policy, auth.authenticate);
    const s = await h2Connect(inbound.ports.cleartext);
    cleanup.push(async () => {
      s.close();
    });
    const r = await h2Request(s, GRPC_CALL);
    expect(auth.started()).toBe(1); // the call was waiting for authentication when its deadline passed
    const id = r.headers['x-ward-decision-id'];
    expect({ grpcStatus: r.headers['grpc-status'], reason: r.headers['x-ward-reason'] }).toEqual({ grpcStatus: '4', reason: 'ERR_DEADLINE_EXCEEDED' });
    expect(id).toMatch(/\S/);

    // The authentication finishes after the answer: it finds the call decided, and adds nothing.
    auth.finish();
    await telemetry.flush(2000);
    await until(() => col.spans.length > 0 && col.logs.length > 0);
    await telemetry.flush(2000);

    expect(decisions.map((d) => [d.decisionId, d.decision, d.code, d.route])).toEqual([[id, 'deny', 'ERR_DEADLINE_EXCEEDED', '/ward.demo.v1.Orders/GetOrder']]);
    expect(col.logs.map((l) => [attrs(l.attributes)['ward.decision_id'], attrs(l.attributes)['ward.reason']])).toEqual([[id, 'ERR_DEADLINE_EXCEEDED']]);
    expect(col.spans.map((sp) => [attrs(sp.attributes)['ward.decision_id'], attrs(sp.attributes)['error.type']])).toEqual([[id, 'ERR_DEADLINE_EXCEEDED']]);
    expect(await telemetry.metricsText()).toMatch(/^ward_decisions_total\{[^}]*ward_reason="ERR_DEADLINE_EXCEEDED"[^}]*\} 1$/m);
    // a denial, not an upstream error: the app was never called
    expect({ denied: inbound.counters.denied, allowed: inbound.counters.allowed, upstreamErrors: inbound.counters.upstreamErrors, appRequests: app.requests.length }).toEqual({
      denied: 1,
      allowed: 0,
      upstreamErrors: 0,
      appRequests: 0,
    });
  });

  it('a deadline that passes after the call was allowed is still the app\'s: ERR_UPSTREAM_TIMEOUT, the allow record only', async () => {
    const policy = policyText(`  - name: slow
    action: allow
    match:
      http: [{ prefix: /slow }]
`);
    const { inbound, decisions, app } = await rig(policy, () => ({ ok: true, identity: identity('alice') }));
    const s = await h2Connect(inbound.ports.cleartext);
    cleanup.push(async () => {
      s.close();
    });
    // `/slow`: the app never answers
    const r = await h2Request(s, { ...GRPC_CALL, ':path': '/slow' });
    const reason = r.trailers['x-ward-reason'] ?? r.headers['x-ward-reason'];
    const grpcStatus = r.trailers['grpc-status'] ?? r.headers['grpc-status'];
    expect({ grpcStatus, reason }).toEqual({ grpcStatus: '4', reason: 'ERR_UPSTREAM_TIMEOUT' });
    await until(() => app.events.includes('slow /slow'));
    expect(decisions.map((d) => [d.decision, d.code])).toEqual([['allow', null]]);
    expect(inbound.counters.upstreamErrors).toBe(1);
  });
});
