import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcStatus } from '../../../src/errors/table.ts';
import { GrpcStream, type GrpcStreamOptions } from '../../../src/h2/grpc-stream.ts';

/**
 * ward's long-lived gRPC call (the policy stream's transport) against node:http2 servers that
 * answer the way a gRPC server can, well or badly. The policy watch's own tests run it against
 * the real control plane (grpc-js); these cover what that server never does.
 */

interface Seen {
  headers: number;
  messages: Buffer[];
  end: Promise<{ code: number; details: string }>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function h2server(onStream: (s: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void): Promise<string> {
  const server = http2.createServer();
  server.on('stream', (s, headers) => {
    s.on('error', () => {}); // the client's resets are expected here
    onStream(s, headers);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => sessions.add(s));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  );
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function open(address: string, over: Partial<GrpcStreamOptions> = {}): { stream: GrpcStream; seen: Seen } {
  let resolveEnd: (v: { code: number; details: string }) => void = () => undefined;
  let ends = 0;
  const seen: Seen = { headers: 0, messages: [], end: new Promise((r) => (resolveEnd = r)) };
  const stream = new GrpcStream(
    { address, path: '/test.v1.Svc/Watch', headers: ['authorization', 'Bearer t0k'], connectTimeoutMs: 2000, keepalive: { intervalMs: 60_000, timeoutMs: 10_000 }, ...over },
    {
      onHeaders: () => seen.headers++,
      onMessage: (m) => seen.messages.push(Buffer.from(m)),
      onEnd: (code, details) => {
        ends++;
        expect(ends).toBe(1);
        resolveEnd({ code, details });
      },
    },
  );
  cleanups.push(() => stream.cancel());
  return { stream, seen };
}

const frameOf = (msg: Buffer, flag = 0): Buffer => {
  const p = Buffer.alloc(5);
  p[0] = flag;
  p.writeUInt32BE(msg.length, 1);
  return Buffer.concat([p, msg]);
};

describe('GrpcStream', () => {
  it('sends metadata and messages, receives messages split and joined across DATA frames, and the status from the trailers', async () => {
    let got: { headers: http2.IncomingHttpHeaders; body: Buffer[] } | undefined;
    const address = await h2server((s, headers) => {
      got = { headers, body: [] };
      s.on('data', (d: Buffer) => got?.body.push(d));
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      const two = Buffer.concat([frameOf(Buffer.from('alpha')), frameOf(Buffer.from('beta'))]);
      const big = frameOf(Buffer.alloc(100_000, 7));
      s.write(two);
      // one message cut into three writes, the cut inside the 5-byte prefix
      s.write(big.subarray(0, 3));
      s.write(big.subarray(3, 50_000));
      s.end(big.subarray(50_000));
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '9', 'grpc-message': 'version%20refused' }));
    });
    const { stream, seen } = open(address);
    stream.write(Buffer.from('hello'));
    expect(await seen.end).toEqual({ code: 9, details: 'version refused' });
    expect(seen.headers).toBe(1);
    expect(seen.messages.map((m) => m.length)).toEqual([5, 4, 100_000]);
    expect(seen.messages[0]?.toString()).toBe('alpha');
    expect(got?.headers['content-type']).toBe('application/grpc');
    expect(got?.headers['te']).toBe('trailers');
    expect(got?.headers['authorization']).toBe('Bearer t0k');
    expect(got?.headers[':path']).toBe('/test.v1.Svc/Watch');
    expect(Buffer.concat(got?.body ?? [])).toEqual(frameOf(Buffer.from('hello')));
  });

  it('a trailers-only answer (a refused call): its status, no headers event', async () => {
    const address = await h2server((s) => s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '16', 'grpc-message': 'no token' }, { endStream: true }));
    const { seen } = open(address);
    expect(await seen.end).toEqual({ code: GrpcStatus.UNAUTHENTICATED, details: 'no token' });
    expect(seen.headers).toBe(0);
  });

  it('an HTTP error status is mapped (503: UNAVAILABLE); a compressed or oversized message ends the call', async () => {
    const a = await h2server((s) => s.respond({ ':status': 503 }, { endStream: true }));
    expect((await open(a).seen.end).code).toBe(GrpcStatus.UNAVAILABLE);
    const b = await h2server((s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' });
      s.write(frameOf(Buffer.from('x'), 1));
    });
    expect(await open(b).seen.end).toEqual({ code: GrpcStatus.INTERNAL, details: 'compressed message, none was negotiated' });
    const c = await h2server((s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' });
      s.write(frameOf(Buffer.alloc(64)).subarray(0, 5)); // only the prefix is needed to refuse it
    });
    const over = open(c, { maxMessageBytes: 16 });
    expect(await over.seen.end).toEqual({ code: GrpcStatus.RESOURCE_EXHAUSTED, details: 'message of 64 bytes, more than 16' });
    expect(over.seen.messages).toEqual([]);
  });

  it('a stream that ends inside a message with status 0 is INTERNAL; a reset stream and a refused connection are UNAVAILABLE', async () => {
    const a = await h2server((s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      s.end(frameOf(Buffer.from('abcdef')).subarray(0, 8));
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    });
    expect((await open(a).seen.end).code).toBe(GrpcStatus.INTERNAL);
    const b = await h2server((s) => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
    expect((await open(b).seen.end).code).toBe(GrpcStatus.UNAVAILABLE);
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await open(`127.0.0.1:${port}`).seen.end;
    expect(refused.code).toBe(GrpcStatus.UNAVAILABLE);
    expect(refused.details).toMatch(/ECONNREFUSED/);
  });

  it('keepalive: a peer that stops answering PINGs ends the call (UNAVAILABLE) instead of hanging until TCP gives up', async () => {
    // Accepts the connection and reads, but never speaks HTTP/2: no SETTINGS, no PING ACK.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((sock) => {
      sockets.add(sock);
      sock.resume();
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          silent.close(() => r());
        }),
    );
    const t0 = Date.now();
    const { seen } = open(`127.0.0.1:${(silent.address() as AddressInfo).port}`, { keepalive: { intervalMs: 50, timeoutMs: 100 } });
    expect(await seen.end).toEqual({ code: GrpcStatus.UNAVAILABLE, details: 'keepalive: no PING answer within 100 ms' });
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('keepalive PINGs answered by a live server keep the call open', async () => {
    let pings = 0;
    const address = await h2server((s) => {
      s.session?.on('ping', () => pings++);
      s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    });
    const { stream, seen } = open(address, { keepalive: { intervalMs: 30, timeoutMs: 200 } });
    await new Promise((r) => setTimeout(r, 400));
    expect(pings).toBeGreaterThanOrEqual(3);
    expect(seen.headers).toBe(1);
    stream.cancel();
    expect(await seen.end).toEqual({ code: GrpcStatus.CANCELLED, details: 'cancelled by the client' });
  });

  it('metadata HTTP/2 cannot carry throws from the constructor and leaves no connection open', async () => {
    let open = 0;
    const sockets = new Set<net.Socket>();
    const server = net.createServer((sock) => {
      open++;
      sockets.add(sock);
      sock.resume();
      sock.on('close', () => open--);
    });
    cleanups.push(() => {
      for (const x of sockets) x.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const events = { onHeaders: () => {}, onMessage: () => {}, onEnd: () => {} };
    expect(() => new GrpcStream({ address, path: '/a.B/C', headers: ['authorization', 'Bearer a\r\nx: y'], connectTimeoutMs: 1000, keepalive: { intervalMs: 1000, timeoutMs: 1000 } }, events)).toThrow();
    await new Promise((r) => setTimeout(r, 200));
    expect(open).toBe(0); // the TCP connection may have been made, but it was closed at once
  });

  it('cancel resets the stream at the server', async () => {
    let reset: number | undefined;
    const closedAtServer = new Promise<void>((resolve) => {
      void h2server((s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        s.on('close', () => {
          reset = s.rstCode;
          resolve();
        });
      }).then((address) => {
        const { stream } = open(address);
        setTimeout(() => stream.cancel(), 50);
      });
    });
    await closedAtServer;
    expect(reset).toBe(http2.constants.NGHTTP2_CANCEL);
  });
});
