import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1raw } from './support/h1raw.ts';
import { block, Flag, frame, FrameType, PREFACE, settings, settingsAck } from './support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { startWard, type Ward } from './support/ward.ts';

/**
 * SECURITY.md, "Against the app": its response fields cannot pass for the sidecar's. An h2c
 * app that spelled `x-ward-reason` / `x-ward-decision-id` with upper-case letters (a malformed
 * response, RFC 9113 §8.2.1) got them past the sidecar's lower-case compares to an HTTP/1.1
 * caller, which reads names case-insensitively (found in review; regression). Now the app's
 * stream is reset for the malformed response and the caller gets ERR_UPSTREAM_RESET.
 */

/** A raw h2c app: answers every request with the given header block and END_STREAM. */
function rawApp(fields: readonly (readonly [string, string])[]): Promise<{ port: number; close(): void }> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let preface = false;
    s.write(settings());
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (!preface) {
        if (buf.length < PREFACE.length) return;
        buf = buf.subarray(PREFACE.length);
        preface = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3] as number;
        const flags = buf[4] as number;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === FrameType.SETTINGS && (flags & Flag.ACK) === 0) s.write(settingsAck());
        if (type === FrameType.HEADERS) s.write(frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, id, block(fields)));
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => {
          for (const s of socks) s.destroy();
          server.close();
        },
      }),
    ),
  );
}

let iss: TestIssuer;
let app: { port: number; close(): void };
let ward: Ward;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await rawApp([
    [':status', '200'],
    ['content-length', '0'],
    ['X-Ward-Reason', 'ERR_TOKEN_EXPIRED'],
    ['X-Ward-Decision-Id', 'forged'],
  ]);
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
