import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frame, onFrames } from '../security/support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { startWard, type Ward } from '../security/support/ward.ts';

/**
 * Regression (found in review): a retried call got the body the caller sent while the relay was
 * paused before its kept chunks, twice, or a complete request with the kept chunks dropped.
 *
 * A raw h2c app: every connection advertises a 4-octet stream window. The first connection
 * refuses its first stream (RST_STREAM REFUSED_STREAM, RFC 9113 §8.7: "not processed, safe to
 * retry") 300 ms after its HEADERS; every later connection collects the request body (granting
 * window as it goes) and answers 200 with it.
 */
interface RawApp {
  port: number;
  bodies: string[];
  /** The next request's stream is refused (300 ms after its HEADERS), once. */
  refuseNext: boolean;
  close(): void;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function startRawApp(): Promise<RawApp> {
  const sockets = new Set<net.Socket>();
  const bodies: string[] = [];
  const app: RawApp = { port: 0, bodies, refuseNext: true, close: () => {} };
  const server = net.createServer((sock) => {
    const refused = new Set<number>();
    sockets.add(sock);
    sock.on('error', () => {});
    // SETTINGS: INITIAL_WINDOW_SIZE (0x4) = 4
    const s = Buffer.alloc(6);
    s.writeUInt16BE(0x4, 0);
    s.writeUInt32BE(4, 2);
    sock.write(frame(0x4, 0, 0, s));
    const bodyOf = new Map<number, Buffer[]>();
    const answer = (id: number): void => {
      const body = Buffer.concat(bodyOf.get(id) ?? []);
      bodies.push(body.toString('latin1'));
      sock.write(frame(0x1, 0x4, id, Buffer.from([0x88]))); // :status 200 (static index 8)
      sock.write(frame(0x0, 0x1, id, body));
    };
    onFrames(sock, true, (type, flags, id, payload) => {
      if (type === 0x4 && (flags & 0x1) === 0) sock.write(frame(0x4, 0x1, 0));
      if (type === 0x1) {
        if (!bodyOf.has(id)) {
          bodyOf.set(id, []);
          if (app.refuseNext) {
            app.refuseNext = false;
            refused.add(id);
            setTimeout(() => sock.write(frame(0x3, 0, id, u32(0x7))), 300);
            return;
          }
        }
        if (!refused.has(id) && (flags & 0x1) !== 0) answer(id);
      }
      if (type === 0x0 && !refused.has(id)) {
        bodyOf.get(id)?.push(Buffer.from(payload));
        if (payload.length > 0) {
          sock.write(frame(0x8, 0, id, u32(payload.length)));
          sock.write(frame(0x8, 0, 0, u32(payload.length)));
        }
        if ((flags & 0x1) !== 0) answer(id);
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve(
        Object.assign(app, {
          port: (server.address() as net.AddressInfo).port,
          close: () => {
            for (const x of sockets) x.destroy();
            server.close();
          },
        }),
      ),
    ),
  );
}

let iss: TestIssuer;
let app: RawApp;
let ward: Ward;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRawApp();
  ward = await startWard({
    issuer: iss.issuer,
    app: { port: app.port, protocol: 'h2c' },
    policy: `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: ${iss.issuer}
    audiences: [urn:ward:orders]
    algorithms: [RS256]
rules:
  - name: open
    action: allow
    token: optional
    match:
      http: [{ prefix: /upload }]
`,
  });
});
afterAll(async () => {
  await ward.close();
  app.close();
  await iss.close();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** POST /upload over HTTP/2: each step writes its text after waiting its delay; the last one ends the body. */
async function upload(steps: readonly (readonly [delayMs: number, text: string])[]): Promise<{ status: number; body: string }> {
  const session = http2.connect(ward.url);
  session.on('error', () => {});
  const req = session.request({ ':method': 'POST', ':path': '/upload' }, { endStream: false });
  req.on('error', () => {});
  let status = 0;
  const chunks: Buffer[] = [];
  req.on('response', (h) => {
    status = Number(h[':status']);
  });
  req.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((r) => {
    req.on('close', () => r());
  });
  for (let i = 0; i < steps.length; i++) {
    const [delay, text] = steps[i] as readonly [number, string];
    await sleep(delay);
    if (i === steps.length - 1) req.end(text);
    else req.write(text);
  }
  await done;
  session.close();
  return { status, body: Buffer.concat(chunks).toString() };
}

describe('a request the app refused unprocessed (REFUSED_STREAM, RFC 9113 §8.7) is sent again with its whole body', () => {
  it('body complete at the refusal: the retried call must not reach the app with an empty body', async () => {
    app.bodies.length = 0;
    app.refuseNext = true;
    const r = await upload([
      [0, 'AAAAAAAA'],
      [100, 'BBBBBBBB'],
    ]);
    // The app (on the replacement connection) must see exactly what the caller sent.
    expect(app.bodies).toEqual(['AAAAAAAABBBBBBBB']);
    expect(r).toEqual({ status: 200, body: 'AAAAAAAABBBBBBBB' });
  });

  it('body still arriving at the refusal: the retried call must carry it in order, once', async () => {
    app.bodies.length = 0;
    app.refuseNext = true;
    const r = await upload([
      [0, 'AAAAAAAA'],
      [100, 'BBBBBBBB'],
      [50, 'CCCCCCCC'],
      [300, 'DDDDDDDD'],
    ]);
    expect(app.bodies).toEqual(['AAAAAAAABBBBBBBBCCCCCCCCDDDDDDDD']);
    expect(r).toEqual({ status: 200, body: 'AAAAAAAABBBBBBBBCCCCCCCCDDDDDDDD' });
  });
});
