import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcCallError, GrpcUnaryClient, splitAddress } from '../../../src/h2/grpc-unary.ts';
import { makeSelfSignedCert } from '../inbound/harness.ts';

/**
 * ward's gRPC unary client (telemetry export) against real grpc-js servers: the message and
 * metadata arrive as sent, statuses and their messages come back, TLS with the CA given, the
 * deadline, an unreachable server, and a server that comes back.
 */

const PATH = '/test.v1.Echo/Call';
const identity = (b: Buffer): Buffer => b;

interface Seen {
  readonly body: Buffer;
  readonly md: grpc.Metadata;
}

type Behaviour = (body: Buffer, cb: grpc.sendUnaryData<Buffer>, call: grpc.ServerUnaryCall<Buffer, Buffer>) => void;

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function serve(behaviour: Behaviour, creds = grpc.ServerCredentials.createInsecure(), port = 0): Promise<{ port: number; seen: Seen[]; server: grpc.Server }> {
  const seen: Seen[] = [];
  const server = new grpc.Server();
  server.addService(
    { Call: { path: PATH, requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
    {
      Call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        seen.push({ body: call.request, md: call.metadata });
        behaviour(call.request, cb, call);
      },
    },
  );
  const bound = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p))));
  cleanups.push(() => void server.forceShutdown());
  return { port: bound, seen, server };
}

function client(port: number, o: { timeoutMs?: number; tls?: { ca: Buffer | null } } = {}): GrpcUnaryClient {
  const c = new GrpcUnaryClient({ address: `127.0.0.1:${port}`, timeoutMs: o.timeoutMs ?? 2000, ...(o.tls === undefined ? {} : { tls: o.tls }) });
  cleanups.push(() => c.close());
  return c;
}

function call(c: GrpcUnaryClient, body: Buffer, headers: readonly string[] = []): Promise<GrpcCallError | null> {
  return new Promise((resolve) => c.call(PATH, headers, body, resolve));
}

describe('GrpcUnaryClient', () => {
  it('delivers the message and the metadata; OK comes back as null', async () => {
    const h = await serve((_b, cb) => cb(null, Buffer.from('ignored')));
    const c = client(h.port);
    const body = Buffer.alloc(100_000, 7); // larger than one DATA frame and the initial stream window
    expect(await call(c, body, ['x-api-key', 'k1', 'authorization', 'Bearer tok'])).toBeNull();
    expect(h.seen[0]?.body.equals(body)).toBe(true);
    expect(h.seen[0]?.md.get('x-api-key')).toEqual(['k1']);
    expect(h.seen[0]?.md.get('authorization')).toEqual(['Bearer tok']);
    // one connection for many calls, also concurrent ones
    const results = await Promise.all(Array.from({ length: 150 }, (_, i) => call(c, Buffer.from(`m${i}`))));
    expect(results.every((r) => r === null)).toBe(true);
    expect(h.seen.map((s) => s.body.toString()).slice(1).sort()).toEqual(Array.from({ length: 150 }, (_, i) => `m${i}`).sort());
  });

  it('a status other than OK comes back with its code and decoded message', async () => {
    const h = await serve((_b, cb) => cb({ code: grpc.status.UNAUTHENTICATED, details: 'no token for café' }));
    const err = await call(client(h.port), Buffer.from('x'));
    expect(err).toBeInstanceOf(GrpcCallError);
    expect({ code: err?.code, details: err?.details }).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'no token for café' });
  });

  it('misses its deadline: DEADLINE_EXCEEDED, and the server sees the call cancelled', async () => {
    let cancelled = false;
    const h = await serve((_b, _cb, c) => c.on('cancelled', () => (cancelled = true)));
    const t0 = Date.now();
    const err = await call(client(h.port, { timeoutMs: 200 }), Buffer.from('x'));
    expect(err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    await new Promise((r) => setTimeout(r, 100));
    expect(cancelled).toBe(true);
  });

  it('TLS: verifies the server with the CA given; another CA fails the call', async () => {
    const cert = makeSelfSignedCert();
    const other = makeSelfSignedCert();
    cleanups.push(() => cert.cleanup(), () => other.cleanup());
    const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(cert.certFile), private_key: readFileSync(cert.keyFile) }], false);
    const h = await serve((_b, cb) => cb(null, Buffer.alloc(0)), creds);
    expect(await call(client(h.port, { tls: { ca: readFileSync(cert.certFile) } }), Buffer.from('x'))).toBeNull();
    expect(h.seen).toHaveLength(1);
    const bad = await call(client(h.port, { tls: { ca: readFileSync(other.certFile) } }), Buffer.from('x'));
    expect(bad?.code).toBe(grpc.status.UNAVAILABLE);
    expect(h.seen).toHaveLength(1);
  });

  it('TLS to a server that does not do ALPN (so it cannot speak h2): the connection is dropped, UNAVAILABLE', async () => {
    const { createServer } = await import('node:tls');
    const cert = makeSelfSignedCert();
    cleanups.push(() => cert.cleanup());
    const server = createServer({ cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }, (sock) => {
      sock.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const err = await call(client((server.address() as { port: number }).port, { tls: { ca: readFileSync(cert.certFile) } }), Buffer.from('x'));
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(err?.details).toMatch(/did not select h2/);
  });

  it('a server that is not there: UNAVAILABLE, then calls fail at once until the backoff has passed, then it reconnects', async () => {
    const h = await serve((_b, cb) => cb(null, Buffer.alloc(0)));
    const port = h.port;
    h.server.forceShutdown();
    const c = client(port);
    expect((await call(c, Buffer.from('a')))?.code).toBe(grpc.status.UNAVAILABLE);
    const again = await call(c, Buffer.from('b'));
    expect(again?.details).toMatch(/waiting to reconnect/);
    const back = await serve((_b, cb) => cb(null, Buffer.alloc(0)), undefined, port);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await call(c, Buffer.from('c'))).toBeNull();
    expect(back.seen.map((s) => s.body.toString())).toEqual(['c']);
  });

  it('after close(), calls fail at once', async () => {
    const h = await serve((_b, cb) => cb(null, Buffer.alloc(0)));
    const c = client(h.port);
    expect(await call(c, Buffer.from('a'))).toBeNull();
    c.close();
    expect((await call(c, Buffer.from('b')))?.details).toBe('client closed');
  });

  it.each([
    ['127.0.0.1:4317', '127.0.0.1', 4317],
    ['[::1]:4317', '::1', 4317],
    ['collector.obs:443', 'collector.obs', 443],
  ])('splits %s', (address, host, port) => {
    expect(splitAddress(address)).toEqual({ host, port });
  });

  it.each(['4317', ':4317', 'host:', 'host:0', 'host:70000'])('refuses %s', (address) => {
    expect(() => splitAddress(address)).toThrow(/not host:port/);
  });
});

describe('GrpcUnaryClient and a server that rotates its connections', () => {
  it('a call the server refused unprocessed (GOAWAY before it) is sent once more on a new connection', async () => {
    const http2 = await import('node:http2');
    const server = http2.createServer();
    let sessions = 0;
    const bodies: Buffer[] = [];
    server.on('session', (session) => {
      // The first connection is turned away at once: last stream id 0, nothing processed.
      if (++sessions === 1) session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
    });
    server.on('stream', (stream) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        bodies.push(Buffer.concat(chunks));
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;
    const c = client(port);
    expect(await call(c, Buffer.from('once'))).toBeNull();
    expect(sessions).toBe(2);
    // delivered exactly once, with its gRPC length prefix
    expect(bodies).toEqual([Buffer.concat([Buffer.from([0, 0, 0, 0, 4]), Buffer.from('once')])]);
  });
});
