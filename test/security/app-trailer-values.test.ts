import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { H2Connection, type H2ClientStream, type H2StreamHandler } from '../../src/h2/conn.ts';
import { block, data, headersFrame, literal, startRawH2App } from './support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { startWard, type Ward } from './support/ward.ts';

/**
 * An app's response and trailer field values are held to RFC 9113 §8.2.1 (no NUL, CR, LF, no
 * edge whitespace): a trailer value with a CR LF was handed on, and towards an HTTP/1.1 caller
 * that sent `TE: trailers` node:http's `addTrailers` threw out of the h2 client's socket handler:
 * an uncaught exception, the end of the sidecar (found in review; regression).
 */

/** A raw h2c app: answers every request with 200, a body, and a trailer `x-checksum` carrying `value`. */
function rawApp(value: Buffer): Promise<{ port: number; close(): void }> {
  return startRawH2App((id) =>
    Buffer.concat([headersFrame(id, block([[':status', '200']])), data(id, Buffer.from('ok')), headersFrame(id, literal('x-checksum', value), { endStream: true })]),
  );
}

const recorded: { value: string | undefined } = { value: undefined };
const handler: H2StreamHandler = {
  response() {},
  data(s, chunk) {
    s.consumed(chunk.length);
  },
  trailers(_s: H2ClientStream, fields: string[]) {
    recorded.value = fields[1];
  },
  drain() {},
  close() {},
};

describe('app trailer values with CR/LF', () => {
  it('unit: conn.ts refuses trailers whose value holds LF (stream error), instead of handing them on', async () => {
    const app = await rawApp(Buffer.from('a\r\nx-injected: 1'));
    const conn = new H2Connection({ host: '127.0.0.1', port: app.port, handler });
    const closed = new Promise<H2ClientStream>((r) => {
      (handler as { close: (s: H2ClientStream) => void }).close = r;
    });
    const s = conn.request([':method', 'GET', ':scheme', 'http', ':authority', 'a', ':path', '/'], true, null);
    await closed;
    conn.destroy();
    app.close();
    expect(recorded.value).toBeUndefined();
    expect(s.rstCode).toBe(1);
  });
});

describe('through the sidecar: HTTP/1.1 caller with TE: trailers, h2c app', () => {
  let iss: TestIssuer;
  let app: { port: number; close(): void };
  let ward: Ward;
  beforeAll(async () => {
    iss = await startTestIssuer();
    app = await rawApp(Buffer.from('a\nb'));
    ward = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'h2c' } });
  });
  afterAll(async () => {
    await ward.close();
    app.close();
    await iss.close();
  });

  it('an app trailer value with LF does not throw out of the socket handler', async () => {
    const uncaught: Error[] = [];
    const onErr = (e: Error): void => {
      uncaught.push(e);
    };
    process.on('uncaughtException', onErr);
    try {
      await new Promise<void>((resolve) => {
        const req = http.request({ host: '127.0.0.1', port: ward.port, path: '/public/x', headers: { te: 'trailers' } }, (res) => {
          res.resume();
          res.on('end', () => resolve());
          res.on('error', () => resolve());
        });
        req.on('error', () => resolve());
        req.setTimeout(2000, () => {
          req.destroy();
          resolve();
        });
        req.end();
      });
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      process.off('uncaughtException', onErr);
    }
    expect(uncaught).toEqual([]);
  });
});
