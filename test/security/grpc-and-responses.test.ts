import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import { h1raw } from './support/h1raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { eventually, h2Once, startWard, type Ward } from './support/ward.ts';

/**
 * gRPC specifics and what comes back from the app. The caller side: malformed gRPC framing,
 * bad `grpc-timeout`, gRPC where it cannot be (HTTP/1.1, GET). The app side: an app (buggy or
 * compromised) that answers with ambiguous framing, protocol switches, hop-by-hop fields or a
 * poisoned keep-alive stream must not desynchronise the sidecar's connections or reach
 * another caller (response-queue poisoning, PortSwigger "Browser-Powered Desync" 2022; Node
 * CVE-2022-32215 on the client parser).
 */

let iss: TestIssuer;
let orders: OrdersApp;
let ward: Ward;
let token: string;

beforeAll(async () => {
  iss = await startTestIssuer();
  orders = await startOrdersApp();
  ward = await startWard({ issuer: iss.issuer, app: { port: orders.port, protocol: 'h2c' } });
  token = iss.token();
});
afterAll(async () => {
  await ward.close();
  await orders.close();
  await iss.close();
});
beforeEach(() => {
  orders.calls.length = 0;
});

interface GrpcOutcome {
  readonly status: number;
  readonly grpcStatus: string | undefined;
  readonly reason: string | undefined;
  readonly rstCode: number;
}

function grpcRaw(path: string, body: Buffer, extra: http2.OutgoingHttpHeaders = {}): Promise<GrpcOutcome> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(ward.url);
    s.on('error', reject);
    const req = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}`, ...extra });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => {
      headers = h;
    });
    req.on('trailers', (t) => {
      trailers = t;
    });
    req.resume();
    req.on('error', () => {});
    req.on('close', () => {
      s.close();
      const gs = trailers['grpc-status'] ?? headers['grpc-status'];
      const reason = headers['x-ward-reason'] ?? trailers['x-ward-reason'];
      resolve({
        status: Number(headers[':status'] ?? 0),
        grpcStatus: gs === undefined ? undefined : String(gs),
        reason: reason === undefined ? undefined : String(reason),
        rstCode: req.rstCode ?? 0,
      });
    });
    req.end(body);
  });
}

const frameOf = (msg: Buffer, compressed = 0): Buffer => {
  const h = Buffer.alloc(5);
  h[0] = compressed;
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
};

describe('malformed gRPC frames from the caller (gRPC PROTOCOL-HTTP2.md length-prefixed messages; CVE-2023-33953 class: gRPC parser DoS) — the sidecar does not parse messages and must survive any', () => {
  it('baseline: a well-formed GetOrder', async () => {
    const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', frameOf(Buffer.from([0x0a, 0x01, 0x31])));
    expect(r.grpcStatus).toBe('0');
    expect(orders.calls.map((c) => c.method)).toEqual(['GetOrder']);
  });

  it.each([
    ['a length prefix larger than the body (truncated message)', Buffer.from([0, 0, 0, 0, 50, 0x0a])],
    ['a 4 GiB length prefix', Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x01, 0x31])],
    ['not protobuf at all', frameOf(Buffer.from('\u00ff\u00ff\u00ff\u00ff', 'latin1'))],
    ['a half frame header', Buffer.from([0, 0, 0])],
  ])('%s: the app reports an error, the sidecar relays it and stays clean', async (_name, body) => {
    const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', body);
    expect(r.grpcStatus).not.toBe('0');
    expect(r.reason).toBeUndefined(); // the app's error, not a sidecar denial
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams closed');
  });

  it.each([
    ['the compressed flag without grpc-encoding', frameOf(Buffer.from([0x0a, 0x01, 0x31]), 1)],
    ['an undefined flag byte', frameOf(Buffer.from([0x0a, 0x01, 0x31]), 0x80)],
  ])('%s: whatever the app makes of it, it is the app\'s answer and the sidecar stays clean', async (_name, body) => {
    const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', body);
    expect(r.grpcStatus).toBeDefined();
    expect(r.reason).toBeUndefined();
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams closed');
  });

  it('grpc-encoding naming a codec the app does not have', async () => {
    const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', frameOf(Buffer.from([1, 2, 3]), 1), { 'grpc-encoding': 'zstd-bomb' });
    expect(r.grpcStatus).not.toBe('0');
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams closed');
  });
});

describe('gRPC request shape — PROTOCOL-HTTP2.md (POST, HTTP/2, grpc-timeout grammar)', () => {
  it.each([['1000000000S', 'nine digits at most'], ['-1S', 'a sign'], ['1x', 'unknown unit'], ['S', 'no digits'], ['1.5S', 'a fraction']])(
    'grpc-timeout %j (%s) → INTERNAL with ERR_REQUEST_INVALID, nothing forwarded',
    async (value) => {
      const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', frameOf(Buffer.alloc(0)), { 'grpc-timeout': value });
      expect(r).toMatchObject({ status: 200, grpcStatus: '13', reason: 'ERR_REQUEST_INVALID' });
      expect(orders.calls).toEqual([]);
    },
  );

  it('two grpc-timeout fields → INTERNAL with ERR_REQUEST_INVALID, nothing forwarded (regression: the sidecar timed the call by the last, and both reached the app as sent)', async () => {
    const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', frameOf(Buffer.from([0x0a, 0x01, 0x31])), { 'grpc-timeout': ['1S', '99999999H'] });
    expect(r).toMatchObject({ status: 200, grpcStatus: '13', reason: 'ERR_REQUEST_INVALID' });
    expect(orders.calls).toEqual([]);
  });

  it('a huge but well-formed grpc-timeout (99999999H) is clamped, not overflowed into an instant timeout', async () => {
    const r = await grpcRaw('/ward.demo.v1.Orders/GetOrder', frameOf(Buffer.from([0x0a, 0x01, 0x31])), { 'grpc-timeout': '99999999H' });
    expect(r.grpcStatus).toBe('0');
  });

  it('gRPC content-type with GET → ERR_REQUEST_INVALID', async () => {
    const r = await h2Once(ward.port, { ':method': 'GET', ':path': '/ward.demo.v1.Orders/GetOrder', 'content-type': 'application/grpc', authorization: `Bearer ${token}` });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 200, reason: 'ERR_REQUEST_INVALID' });
    expect(r.headers['grpc-status']).toBe('13');
    expect(orders.calls).toEqual([]);
  });

  it('gRPC over HTTP/1.1 → 400 ERR_REQUEST_INVALID', async () => {
    const x = await h1raw(ward.port, `POST /ward.demo.v1.Orders/GetOrder HTTP/1.1\r\nHost: orders\r\nContent-Type: application/grpc\r\nAuthorization: Bearer ${token}\r\nContent-Length: 5\r\n\r\n\u0000\u0000\u0000\u0000\u0000`);
    expect(x.replies[0]?.status).toBe(400);
    expect(x.replies[0]?.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
    expect(orders.calls).toEqual([]);
  });
});

// ---- a raw HTTP/1.1 app: every response byte is the test's choice

describe('response smuggling and status injection from a hostile HTTP/1.1 app (PortSwigger "HTTP/2: The Sequel is Always Worse" response-queue poisoning, RFC 9112 §6.3)', () => {
  let rawApp: net.Server;
  let rawWard: Ward;
  const seen: string[] = [];
  const responses: Record<string, string> = {
    '/api/dup-cl': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello',
    '/api/cl-te': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    '/api/obs-fold': 'HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok',
    '/api/bad-name': 'HTTP/1.1 200 OK\r\n:status: 500\r\nContent-Length: 2\r\n\r\nok',
    '/api/switch': 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u0081\u0005hello',
    '/api/hop': 'HTTP/1.1 200 OK\r\nConnection: close, x-secret\r\nX-Secret: leak\r\nKeep-Alive: timeout=1\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok',
    '/api/poison': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled',
    '/api/real': 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal',
  };

  beforeAll(async () => {
    rawApp = net.createServer((sock) => {
      let buf = '';
      sock.on('error', () => {});
      sock.on('data', (c: Buffer) => {
        buf += c.toString('latin1');
        let end = buf.indexOf('\r\n\r\n');
        while (end !== -1) {
          const head = buf.slice(0, end);
          buf = buf.slice(end + 4);
          const path = head.split(' ')[1] ?? '';
          seen.push(path);
          sock.write(responses[path] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n', 'latin1');
          end = buf.indexOf('\r\n\r\n');
        }
      });
    });
    await new Promise<void>((r) => rawApp.listen(0, '127.0.0.1', r));
    // One upstream socket, so a poisoned keep-alive connection would be reused by the next call.
    rawWard = await startWard({
      issuer: iss.issuer,
      app: { port: (rawApp.address() as AddressInfo).port, protocol: 'http1' },
      extraYaml: '',
    });
  });
  afterAll(async () => {
    await rawWard.close();
    await new Promise<void>((r) => rawApp.close(() => r()));
  });

  async function viaH2(path: string): Promise<{ status: number; reason: string | undefined; body: string; headers: http2.IncomingHttpHeaders }> {
    const r = await h2Once(rawWard.port, { ':path': path, authorization: `Bearer ${token}` });
    return { status: r.status, reason: r.reason, body: r.body, headers: r.headers };
  }

  it.each([['/api/dup-cl'], ['/api/cl-te'], ['/api/obs-fold'], ['/api/bad-name']])('%s: ambiguous response framing → 502 ERR_UPSTREAM_RESET, never relayed', async (path) => {
    const r = await viaH2(path);
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 502, reason: 'ERR_UPSTREAM_RESET' });
    expect(r.body).not.toContain('hello');
  });

  it('/switch: a 101 from the app does not turn the caller\'s stream into a tunnel', async () => {
    const r = await viaH2('/api/switch');
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(r.body).not.toContain('hello');
    const x = await h1raw(rawWard.port, `GET /api/switch HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
    expect(x.replies[0]?.status).not.toBe(101);
    expect(x.raw).not.toContain('hello');
  });

  it('/hop: hop-by-hop fields and those named in Connection never reach the caller', async () => {
    const r = await viaH2('/api/hop');
    expect(r.status).toBe(200);
    for (const f of ['connection', 'x-secret', 'keep-alive', 'proxy-connection', 'upgrade', 'transfer-encoding']) expect(r.headers[f]).toBeUndefined();
    const x = await h1raw(rawWard.port, `GET /api/hop HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
    expect(x.replies[0]?.status).toBe(200);
    expect(x.replies[0]?.headers['x-secret']).toBeUndefined();
    expect(x.replies[0]?.headers['upgrade']).toBeUndefined();
  });

  it('/poison: bytes after a complete response never become the next caller\'s response', async () => {
    const first = await viaH2('/api/poison');
    expect(first.body).toBe('ok');
    for (let i = 0; i < 5; i++) {
      const next = await viaH2('/api/real');
      expect(next.body).toBe('real');
    }
    await eventually(() => rawWard.counters.activeStreams === 0, 3000, 'streams closed');
  });
});

describe('response framing from an h2c app that lies about its content-length (RFC 9113 §8.1.1; response-queue poisoning towards HTTP/1.1 callers)', () => {
  // Regression (found while fuzzing): the sidecar relayed `content-length: 5` with 10 octets of
  // DATA. An HTTP/1.1 caller on keep-alive then read the 5 extra octets as the start of its next
  // response; an HTTP/2 caller (node) failed its whole connection, other calls on it included.
  let app: http2.Http2Server;
  let h2Ward: Ward;
  const BODY = '0123456789';

  beforeAll(async () => {
    app = http2.createServer();
    app.on('stream', (s, h) => {
      s.on('error', () => {});
      const cl = h['x-cl'] as string | undefined;
      const fields: http2.OutgoingHttpHeaders = { ':status': 200 };
      if (cl !== undefined) fields['content-length'] = cl;
      if (h['x-trailers'] === '1') {
        s.respond(fields, { waitForTrailers: true });
        s.once('wantTrailers', () => s.sendTrailers({ 'x-done': 'yes' }));
      } else s.respond(fields);
      s.end(h[':method'] === 'HEAD' ? undefined : BODY);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    h2Ward = await startWard({ issuer: iss.issuer, app: { port: (app.address() as AddressInfo).port, protocol: 'h2c' } });
  });
  afterAll(async () => {
    await h2Ward.close();
    await new Promise<void>((r) => app.close(() => r()));
  });

  function h1(extra: string, method = 'GET'): Promise<string> {
    return new Promise((resolve) => {
      const sock = net.connect(h2Ward.port, '127.0.0.1');
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
      sock.on('error', () => {});
      sock.on('close', () => resolve(got));
      sock.write(`${method} /api/cl HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\n${extra}\r\n`);
      // keep-alive: the sidecar closes the connection only when it cannot frame the response
      setTimeout(() => sock.destroy(), 1500);
    });
  }

  it.each([
    ['shorter than the DATA', '5', 'x-trailers: 0'],
    ['longer than the DATA', '20', 'x-trailers: 0'],
    ['shorter than the DATA, with trailers', '5', 'x-trailers: 1\r\nTE: trailers'],
    ['longer than the DATA, with trailers', '20', 'x-trailers: 1\r\nTE: trailers'],
  ])('content-length %s: an HTTP/1.1 caller never gets octets past the declared length; the connection is closed', async (_what, cl, extra) => {
    const raw = await h1(`x-cl: ${cl}\r\n${extra}\r\n`);
    const head = raw.indexOf('\r\n\r\n');
    // Either a 502 before anything was relayed, or headers and a connection closed under them:
    // never the 10 octets after a `content-length: 5`, never a response that looks complete.
    if (raw.startsWith('HTTP/1.1 502')) expect(raw).toContain('ERR_UPSTREAM_RESET');
    else expect(raw.slice(head + 4).length).toBeLessThan(Number(cl));
    if (cl === '5') expect(raw).not.toContain('56789');
    await eventually(() => h2Ward.counters.activeStreams === 0 && h2Ward.counters.h1Connections === 0, 3000, 'closed');
  });

  it('an HTTP/2 caller gets its stream reset, and its connection serves the next call', async () => {
    const session = http2.connect(`http://127.0.0.1:${h2Ward.port}`);
    try {
      const call = (cl: string | undefined): Promise<{ status: number | undefined; body: string; error: string | undefined }> =>
        new Promise((resolve) => {
          const req = session.request({ ':path': '/api/cl', authorization: `Bearer ${token}`, ...(cl === undefined ? {} : { 'x-cl': cl }) });
          let status: number | undefined;
          let body = '';
          req.on('response', (h) => (status = Number(h[':status'])));
          req.on('data', (d: Buffer) => (body += d.toString()));
          req.on('end', () => resolve({ status, body, error: undefined }));
          req.on('error', (e: Error) => resolve({ status, body, error: e.message }));
        });
      for (const cl of ['5', '20']) {
        const bad = await call(cl);
        expect(bad.body).not.toBe(BODY);
        expect(bad.status === 502 || bad.error !== undefined).toBe(true);
      }
      expect(await call('10')).toEqual({ status: 200, body: BODY, error: undefined });
      expect(await call(undefined)).toEqual({ status: 200, body: BODY, error: undefined });
      expect(session.destroyed).toBe(false);
    } finally {
      session.close();
    }
  });

  it('a HEAD response may declare the length of content it does not carry', async () => {
    const raw = await h1('x-cl: 10\r\nConnection: close\r\n', 'HEAD');
    expect(raw).toMatch(/^HTTP\/1\.1 200 /);
    expect(raw.toLowerCase()).toContain('content-length: 10');
  });
});
