import { readFileSync } from 'node:fs';
import https from 'node:https';
import http2 from 'node:http2';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Order, type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import {
  type AppEvents,
  bearer,
  h1Request,
  h2Request,
  makeSelfSignedCert,
  ordersClient,
  type RecordingApp,
  startH2App,
  startProxy,
  testConfig,
  type TestProxy,
  type TlsFiles,
  unary,
} from '../unit/inbound/harness.ts';

/**
 * The TLS listener: ALPN picks `h2` or `http/1.1`, both reach the same stack. The certificate
 * is self-signed and generated with openssl at test time.
 */

let certs: TlsFiles;
let ca: Buffer;
let ordersApp: OrdersApp;
let grpcProxy: TestProxy;
let httpApp: RecordingApp & AppEvents;
let httpProxy: TestProxy;

beforeAll(async () => {
  certs = makeSelfSignedCert();
  ca = readFileSync(certs.certFile);
  const tlsFiles = { certFile: certs.certFile, keyFile: certs.keyFile };
  ordersApp = await startOrdersApp();
  grpcProxy = await startProxy(testConfig({ upstreamPort: ordersApp.port, tls: tlsFiles }));
  httpApp = await startH2App();
  httpProxy = await startProxy(testConfig({ upstreamPort: httpApp.port, tls: tlsFiles }));
});

afterAll(async () => {
  await grpcProxy.close();
  await httpProxy.close();
  await ordersApp.close();
  await httpApp.close();
  certs.cleanup();
});

function alpn(port: number, protocols: string[]): Promise<string | false | null> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca, ALPNProtocols: protocols, servername: 'localhost' }, () => {
      resolve(s.alpnProtocol ?? null);
      s.destroy();
    });
    s.on('error', reject);
  });
}

describe('TLS listener', () => {
  it('negotiates h2 and http/1.1 by ALPN', async () => {
    const port = grpcProxy.inbound.ports.tls as number;
    expect(port).toBeGreaterThan(0);
    expect(await alpn(port, ['h2', 'http/1.1'])).toBe('h2');
    expect(await alpn(port, ['http/1.1'])).toBe('http/1.1');
  });

  it('gRPC over TLS (grpc-js client), identity reaches the app', async () => {
    const client = ordersClient(grpcProxy.inbound.ports.tls as number, grpc.credentials.createSsl(ca));
    try {
      const r = await unary<Order>(client, 'GetOrder', { id: 'tls-1' }, bearer('good-alice'));
      expect(r.err).toBeNull();
      expect(r.res?.seenSubject).toBe('alice');
      const denied = await unary(client, 'DeleteOrder', { id: 'tls-1' }, bearer('good-alice'));
      expect(denied.err?.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(ordersApp.calls.map((c) => c.method)).toEqual(['GetOrder']);
    } finally {
      client.close();
    }
  });

  it('HTTP/2 over TLS', async () => {
    const session = http2.connect(`https://localhost:${httpProxy.inbound.ports.tls}`, { ca });
    try {
      const r = await h2Request(session, { ':path': '/orders/1', authorization: 'Bearer good-alice' });
      expect(r.headers[':status']).toBe(200);
      expect(r.body).toBe('ok /orders/1');
      expect(session.alpnProtocol).toBe('h2');
    } finally {
      session.close();
    }
  });

  it('HTTP/1.1 over TLS', async () => {
    const r = await new Promise<{ status: number; body: string; alpn: string | false | null | undefined }>((resolve, reject) => {
      // https.request hands these to tls.connect, ALPN included (not in its option type).
      const options: https.RequestOptions & tls.ConnectionOptions = {
        host: '127.0.0.1',
        servername: 'localhost',
        port: httpProxy.inbound.ports.tls,
        path: '/orders/2',
        ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
        headers: { authorization: 'Bearer good-alice' },
      };
      const req = https.request(
        options,
        (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, alpn: (res.socket as tls.TLSSocket).alpnProtocol }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(r).toEqual({ status: 200, body: 'ok /orders/2', alpn: 'http/1.1' });
    expect(httpApp.requests.at(-1)?.headers['x-ward-subject']).toBe('alice');
  });

  it('the cleartext port keeps working next to it', async () => {
    const r = await h1Request(httpProxy.port, { path: '/orders/3', headers: { authorization: 'Bearer good-alice' } });
    expect(r.status).toBe(200);
  });
});

/**
 * One captured port for both: with `inbound.tls` and no TLS port of its own, a connection to the
 * cleartext listener that opens with a TLS handshake is served TLS (ALPN as above), and cleartext
 * h2c and HTTP/1.1 are served as before. The next hop's sidecar reaches a pod whose traffic is
 * captured this way, on the app's own port.
 */
describe('TLS sniffed on the cleartext port', () => {
  let proxy: TestProxy;

  beforeAll(async () => {
    const cfg = testConfig({ upstreamPort: httpApp.port, tls: { certFile: certs.certFile, keyFile: certs.keyFile } });
    const { port: _port, ...noPort } = cfg.inbound.tls!;
    proxy = await startProxy({ ...cfg, inbound: { ...cfg.inbound, tls: noPort } });
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('opens no TLS-only port', () => {
    expect(proxy.inbound.ports.tls).toBeUndefined();
  });

  it('negotiates h2 and http/1.1 by ALPN on the cleartext port', async () => {
    expect(await alpn(proxy.port, ['h2', 'http/1.1'])).toBe('h2');
    expect(await alpn(proxy.port, ['http/1.1'])).toBe('http/1.1');
  });

  it('serves HTTP/2 over TLS, HTTP/1.1 over TLS, h2c and cleartext HTTP/1.1 on the one port', async () => {
    const session = http2.connect(`https://localhost:${proxy.port}`, { ca });
    try {
      const r = await h2Request(session, { ':path': '/sniffed/tls-h2', authorization: 'Bearer good-alice' });
      expect(r.headers[':status']).toBe(200);
      expect(session.alpnProtocol).toBe('h2');
    } finally {
      session.close();
    }
    const h1tls = await new Promise<number>((resolve, reject) => {
      const options: https.RequestOptions & tls.ConnectionOptions = {
        host: '127.0.0.1',
        servername: 'localhost',
        port: proxy.port,
        path: '/sniffed/tls-h1',
        ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
        headers: { authorization: 'Bearer good-alice' },
      };
      const req = https.request(options, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
    expect(h1tls).toBe(200);
    const clear = http2.connect(`http://127.0.0.1:${proxy.port}`);
    try {
      const r = await h2Request(clear, { ':path': '/sniffed/h2c', authorization: 'Bearer good-alice' });
      expect(r.headers[':status']).toBe(200);
    } finally {
      clear.close();
    }
    const h1 = await h1Request(proxy.port, { path: '/sniffed/h1', headers: { authorization: 'Bearer good-alice' } });
    expect(h1.status).toBe(200);
    expect(httpApp.requests.filter((q) => q.path.startsWith('/sniffed/')).map((q) => [q.path, q.headers['x-ward-subject']])).toEqual([
      ['/sniffed/tls-h2', 'alice'],
      ['/sniffed/tls-h1', 'alice'],
      ['/sniffed/h2c', 'alice'],
      ['/sniffed/h1', 'alice'],
    ]);
  });

  it('gRPC over TLS on the cleartext port (grpc-js), and a denial is still a denial', async () => {
    const grpcCfg = testConfig({ upstreamPort: ordersApp.port, tls: { certFile: certs.certFile, keyFile: certs.keyFile } });
    const { port: _p, ...noPort } = grpcCfg.inbound.tls!;
    const grpcSniffed = await startProxy({ ...grpcCfg, inbound: { ...grpcCfg.inbound, tls: noPort } });
    const client = ordersClient(grpcSniffed.port, grpc.credentials.createSsl(ca), { 'grpc.ssl_target_name_override': 'localhost' });
    try {
      const ok = await unary<Order>(client, 'GetOrder', { id: 'sniffed-1' }, bearer('good-alice'));
      expect(ok.err).toBeNull();
      expect(ok.res?.seenSubject).toBe('alice');
      const denied = await unary(client, 'DeleteOrder', { id: 'sniffed-1' }, bearer('good-alice'));
      expect(denied.err?.code).toBe(grpc.status.PERMISSION_DENIED);
    } finally {
      client.close();
      await grpcSniffed.close();
    }
  });
});

describe('a TLS handshake on the cleartext port of a sidecar without inbound.tls', () => {
  it('is refused as the malformed HTTP/1.1 it then is, and reaches nothing', async () => {
    const plain = await startProxy(testConfig({ upstreamPort: httpApp.port }));
    const before = httpApp.requests.length;
    try {
      const err = await new Promise<string>((resolve) => {
        const s = tls.connect({ host: '127.0.0.1', port: plain.port, ca, servername: 'localhost' }, () => resolve('connected'));
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
      expect(err).not.toBe('connected');
      expect(httpApp.requests.length).toBe(before);
    } finally {
      await plain.close();
    }
  });
});

describe('inbound.tls.mode strict, from loopback', () => {
  it('still serves the pod itself in cleartext (the refusal is for the network: test/integration/capture-netns.test.ts)', async () => {
    const cfg = testConfig({ upstreamPort: httpApp.port, tls: { certFile: certs.certFile, keyFile: certs.keyFile } });
    const strict = await startProxy({ ...cfg, inbound: { ...cfg.inbound, tls: { ...cfg.inbound.tls!, mode: 'strict' } } });
    try {
      expect((await h1Request(strict.port, { path: '/strict/h1', headers: { authorization: 'Bearer good-alice' } })).status).toBe(200);
      const clear = http2.connect(`http://127.0.0.1:${strict.port}`);
      try {
        expect((await h2Request(clear, { ':path': '/strict/h2c', authorization: 'Bearer good-alice' })).headers[':status']).toBe(200);
      } finally {
        clear.close();
      }
      expect(await alpn(strict.port, ['h2'])).toBe('h2');
    } finally {
      await strict.close();
    }
  });
});
