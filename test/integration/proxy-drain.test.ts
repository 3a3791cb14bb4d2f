import type http2 from 'node:http2';
import net from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { startOrdersApp } from '../../src/demo/orders-app.ts';
import { h2Connect, h2Request, startH1App, startH2App, startProxy, testConfig } from '../unit/inbound/harness.ts';

/**
 * Graceful shutdown: listeners stop accepting, HTTP/2 clients get GOAWAY, HTTP/1.1 responses
 * carry `Connection: close`, in-flight calls finish, and at the deadline the rest is destroyed.
 */

function grpcFrame(msg: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
}

function countFrames(body: Buffer): number {
  let n = 0;
  for (let i = 0; i + 5 <= body.length; i += 5 + body.readUInt32BE(i + 1)) n++;
  return n;
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

function rawSocket(port: number): Promise<{ socket: net.Socket; data: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const socket = net.connect(port, '127.0.0.1', () => resolve({ socket, data: () => buf, closed }));
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.on('data', (c: Buffer) => (buf += c.toString('latin1')));
    socket.on('error', reject);
  });
}

describe('drain', () => {
  it('an in-flight gRPC stream finishes after GOAWAY; new connections are refused', async () => {
    const app = await startOrdersApp();
    const proxy = await startProxy(testConfig({ upstreamPort: app.port }));
    const session = await h2Connect(proxy.port);
    const goaway = new Promise<number>((resolve) => session.on('goaway', (code: number) => resolve(code)));
    try {
      // ListOrdersRequest{count: 5, interval_ms: 60}
      const stream = session.request({
        ':method': 'POST',
        ':path': '/ward.demo.v1.Orders/ListOrders',
        'content-type': 'application/grpc',
        te: 'trailers',
        authorization: 'Bearer good-alice',
      });
      const chunks: Buffer[] = [];
      let trailers: http2.IncomingHttpHeaders = {};
      stream.on('trailers', (t) => (trailers = t));
      const firstData = new Promise<void>((r) => stream.once('data', () => r()));
      stream.on('data', (c: Buffer) => chunks.push(c));
      const ended = new Promise<void>((r) => stream.on('close', () => r()));
      stream.end(grpcFrame(Buffer.from([0x08, 0x05, 0x10, 0x3c])));
      await firstData;

      const drained = proxy.inbound.drain(10_000);
      expect(await goaway).toBe(0); // NO_ERROR: a graceful GOAWAY
      await vi.waitFor(async () => expect(await connectRefused(proxy.port)).toBe(true));

      await ended;
      expect(countFrames(Buffer.concat(chunks))).toBe(5);
      expect(trailers['grpc-status']).toBe('0');
      await drained;
      expect(proxy.inbound.counters.h2Sessions).toBe(0);
      expect(proxy.inbound.counters.activeStreams).toBe(0);
    } finally {
      session.destroy();
      await proxy.close();
      await app.close();
    }
  });

  it('HTTP/1.1: idle keep-alive connections close, a busy one gets `Connection: close` after its response', async () => {
    const app = await startH1App();
    const proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }));
    try {
      const idle = await rawSocket(proxy.port);
      idle.socket.write('GET /orders/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\n');
      await vi.waitFor(() => expect(idle.data()).toContain('ok /orders/1'));

      const busy = await rawSocket(proxy.port);
      busy.socket.write('GET /delay/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\n');
      await vi.waitFor(() => expect(app.events).toContain('delay /delay/1'));

      const drained = proxy.inbound.drain(10_000);
      await idle.closed;
      expect(busy.data()).toBe(''); // the idle one closed at once, not after the busy call
      await busy.closed;
      expect(busy.data()).toMatch(/^HTTP\/1\.1 200 /);
      expect(busy.data().toLowerCase()).toContain('\r\nconnection: close\r\n');
      expect(busy.data()).toContain('ok /delay/1');
      await drained;
      expect(proxy.inbound.counters.h1Connections).toBe(0);
    } finally {
      await proxy.close();
      await app.close();
    }
  });

  it('at the deadline, calls still running are destroyed and the app sees the cancellation', async () => {
    const app = await startH2App();
    const proxy = await startProxy(testConfig({ upstreamPort: app.port }));
    const session = await h2Connect(proxy.port);
    try {
      const stuck = h2Request(session, { ':path': '/slow/forever', authorization: 'Bearer good-alice' });
      await vi.waitFor(() => expect(app.events).toContain('slow /slow/forever'));
      await proxy.inbound.drain(100);
      const r = await stuck;
      expect(r.headers[':status']).toBeUndefined(); // never answered
      expect(proxy.inbound.counters.activeStreams).toBe(0);
      await vi.waitFor(() => expect(app.events.some((e) => e.startsWith('reset /slow/forever'))).toBe(true));
    } finally {
      session.destroy();
      await proxy.close();
      await app.close();
    }
  });
});
