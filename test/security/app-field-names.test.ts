import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1raw } from './support/h1raw.ts';
import { block, Flag, frame, FrameType, startRawH2App } from './support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { startWard, type Ward } from './support/ward.ts';

/**
 * SECURITY.md, "Against the app": its response fields cannot pass for the sidecar's. An h2c
 * app that spelled `x-ward-reason` / `x-ward-decision-id` with upper-case letters (a malformed
 * response, RFC 9113 §8.2.1) got them past the sidecar's lower-case compares to an HTTP/1.1
 * caller, which reads names case-insensitively (found in review; regression). Now the app's
 * stream is reset for the malformed response and the caller gets ERR_UPSTREAM_RESET.
 */

let iss: TestIssuer;
let app: { port: number; close(): void };
let ward: Ward;

beforeAll(async () => {
  iss = await startTestIssuer();
  const fields = block([
    [':status', '200'],
    ['content-length', '0'],
    ['X-Ward-Reason', 'ERR_TOKEN_EXPIRED'],
    ['X-Ward-Decision-Id', 'forged'],
  ]);
  app = await startRawH2App((id) => frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, id, fields));
  ward = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'h2c' } });
});
afterAll(async () => {
  await ward.close();
  app.close();
  await iss.close();
});

describe("an h2c app's upper-case x-ward-reason / x-ward-decision-id", () => {
  it('never reach an HTTP/1.1 caller: the response is malformed, the caller gets 502 ERR_UPSTREAM_RESET', async () => {
    const x = await h1raw(ward.port, 'GET /public/x HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n');
    const head = x.raw.split('\r\n\r\n')[0] ?? '';
    expect(head.split('\r\n').filter((l) => /^x-ward-decision-id: forged/i.test(l))).toEqual([]);
    expect(x.replies[0]?.status).toBe(502);
    expect(x.replies[0]?.headers['x-ward-reason']).toBe('ERR_UPSTREAM_RESET');
  });
});
