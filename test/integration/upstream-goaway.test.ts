import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h2Connect, h2Request, startProxy, testConfig, type TestProxy } from '../unit/inbound/harness.ts';

/**
 * An app that closes each HTTP/2 connection after a fixed number of requests, as nginx does
 * (`keepalive_requests`, 1000 by default): after answering its Nth stream it sends GOAWAY with
 * that stream as the last one it will process, then closes once its streams are done. Streams
 * the sidecar opened on that connection after the last one are refused without being processed
 * (RFC 9113 §6.8), so the sidecar must move calls to a new connection without failing any.
 */

const PER_CONNECTION = 40;

interface GoawayApp {
  readonly port: number;
  /** Calls answered, and connections accepted. */
  readonly stats: { answered: number; sessions: number; refused: number };
  close(): Promise<void>;
}

async function startGoawayApp(): Promise<GoawayApp> {
  const stats = { answered: 0, sessions: 0, refused: 0 };
  const refusedOnce = new Set<string>();
  const server = http2.createServer();
  server.on('session', (session) => {
    stats.sessions++;
    let n = 0;
    let closing = false;
    session.on('error', () => {});
    session.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      const path = headers[':path'] ?? '';
      if (path.startsWith('/refuse-once/') && !refusedOnce.has(path)) {
        // over its stream limit, say: refused before reading a byte (RFC 9113 §8.7)
        refusedOnce.add(path);
        stats.refused++;
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      if (path.startsWith('/refuse-after-body/')) {
        // reads the whole body first, so the sidecar has sent (and had to keep) all of it
        stream.on('data', () => {});
        stream.on('end', () => {
          stats.refused++;
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        });
        return;
      }
      if (closing) {
        // nghttp2 ignores streams above the GOAWAY's last stream id (the client closes them as
        // refused); one that still reaches the app is refused the same way, never processed
        stats.refused++;
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      n++;
      if (n >= PER_CONNECTION) {
        // like nginx: this stream is the last one processed; then close once in-flight streams are done
        closing = true;
        session.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id);
        session.close();
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        stats.answered++;
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end(`${path} ${Buffer.concat(chunks).toString()}`);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    stats,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('an app that closes its HTTP/2 connection every few requests (nginx keepalive_requests)', () => {
  let app: GoawayApp;
  let proxy: TestProxy;
  let client: http2.ClientHttp2Session;

  beforeAll(async () => {
    app = await startGoawayApp();
    proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'h2c' }));
    client = await h2Connect(proxy.port);
    client.setMaxListeners(0); // the test helper listens for session errors per call
  });
  afterAll(async () => {
    client.close();
    await proxy.close();
    await app.close();
  });

  const call = (i: number, body?: string) =>
    h2Request(client, { ':method': body === undefined ? 'GET' : 'POST', ':path': `/c/${i}`, ':authority': 'orders.test', authorization: 'Bearer good-alice' }, body);

  it('sequential calls: every one answered, on a fresh connection after each GOAWAY', async () => {
    const before = app.stats.sessions;
    for (let i = 0; i < 5 * PER_CONNECTION; i++) {
      const r = await call(i);
      expect([r.headers[':status'], r.body]).toEqual([200, `/c/${i} `]);
    }
    expect(app.stats.sessions - before).toBeGreaterThanOrEqual(5);
  });

  it('concurrent calls, with and without a body: none fails, including those the closing connection refused', async () => {
    const before = { answered: app.stats.answered, sessions: app.stats.sessions };
    const results = [];
    // waves of 50 calls at once over connections that take 40 each: every wave has calls refused
    for (let wave = 0; wave < 6; wave++) {
      results.push(...(await Promise.all(Array.from({ length: 50 }, (_, j) => { const i = wave * 50 + j; return call(i, i % 2 === 0 ? undefined : `body-${i}`); }))));
    }
    const bad = results.map((r, i) => [i, r.headers[':status'], r.rstCode] as const).filter(([, s]) => Number(s) !== 200);
    expect(bad).toEqual([]);
    results.forEach((r, i) => expect(r.body).toBe(`/c/${i} ${i % 2 === 0 ? '' : `body-${i}`}`));
    // each call processed exactly once by the app, over several connections
    expect(app.stats.answered - before.answered).toBe(300);
    expect(app.stats.sessions - before.sessions).toBeGreaterThanOrEqual(300 / PER_CONNECTION);
  });


  it('a call refused while its body is still streaming: what was sent is replayed on a new connection, the rest follows, processed once', async () => {
    const before = app.stats.answered;
    const s = client.request({ ':method': 'POST', ':path': '/refuse-once/stream', ':authority': 'orders.test', authorization: 'Bearer good-alice' });
    const chunks: Buffer[] = [];
    let status: unknown;
    s.on('response', (h) => (status = h[':status']));
    s.on('data', (c: Buffer) => chunks.push(c));
    const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
    s.write('part1-');
    await new Promise((r) => setTimeout(r, 100)); // refused meanwhile
    s.end('part2');
    await closed;
    expect([status, Buffer.concat(chunks).toString()]).toEqual([200, '/refuse-once/stream part1-part2']);
    expect(app.stats.answered - before).toBe(1);
  });

  it('a refused call whose body is too large to keep (over 64 KiB) fails as unavailable, never half-sent', async () => {
    const before = app.stats.answered;
    const refused = app.stats.refused;
    const r = await h2Request(client, { ':method': 'POST', ':path': '/refuse-after-body/big', ':authority': 'orders.test', authorization: 'Bearer good-alice' }, Buffer.alloc(100 * 1024, 0x61));
    expect([r.headers[':status'], r.headers['x-ward-reason']]).toEqual([503, 'ERR_UPSTREAM_UNAVAILABLE']);
    expect(app.stats.answered - before).toBe(0);
    expect(app.stats.refused - refused).toBe(1); // not sent again
  });
});
