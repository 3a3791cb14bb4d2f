import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Outbound } from '../../src/outbound/server.ts';
import type { OutboundDecisionRecord } from '../../src/outbound/types.ts';
import { h1raw } from '../security/support/h1raw.ts';
import { type RecordingApp, startH1App } from '../unit/inbound/harness.ts';
import { startEgress } from '../support/egress.ts';

/**
 * docs/outbound.md, "When a call is refused": `CONNECT` is `ERR_REQUEST_INVALID`, 400, written by
 * the same responder as every refusal (`x-ward-reason`, `x-ward-decision-id`). Regression (review,
 * sixteenth session): an app whose `https_proxy` pointed at the egress port sent CONNECT and got
 * no answer at all (Node's http.Server drops the socket when nobody listens for 'connect'), so it
 * could not tell a refusal from a crash.
 */

let app: RecordingApp;
let egress: Outbound;
const records: OutboundDecisionRecord[] = [];

beforeAll(async () => {
  app = await startH1App();
  egress = await startEgress(
    { destinations: [{ name: 'payments', url: `http://127.0.0.1:${app.port}`, protocol: 'http1', resource: 'urn:ward:payments' }] },
    { tokens: { token: () => ({ ok: true, token: 'exchanged', authorization: 'Bearer exchanged', via: 'exchange' }) }, onDecision: (r) => records.push(r) },
  );
});
afterAll(async () => {
  await egress.close();
  await app.close();
});

it.each(['payments:443', 'payments:80'])('CONNECT %s through the egress listener is answered 400 ERR_REQUEST_INVALID with a decision id, not a dropped connection', async (target) => {
  const x = await h1raw(egress.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nAuthorization: Bearer alice\r\n\r\n`);
  expect(x.replies.map((r) => r.status)).toEqual([400]);
  expect(x.replies[0]?.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
  const id = x.replies[0]?.headers['x-ward-decision-id'];
  expect(id).toMatch(/.+/);
  expect(app.requests).toEqual([]);
  // recorded as an outbound refusal under that id, with its method and no destination
  expect(records.filter((r) => r.decisionId === id).map((r) => [r.direction, r.decision, r.code, r.method, r.destination])).toEqual([['outbound', 'deny', 'ERR_REQUEST_INVALID', 'CONNECT', null]]);
});
