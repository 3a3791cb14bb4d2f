import { copyFileSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { type Order, type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import { ConfigError } from '../../src/errors/ward-error.ts';
import type { TokenOutcome } from '../../src/exchange/broker.ts';
import type * as z from '../../src/lib/schema.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound, type Outbound } from '../../src/outbound/server.ts';
import {
  type AppEvents,
  h1Request,
  h2Connect,
  h2Request,
  type H2Response,
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
 * TLS origination: the app calls `http://orders` in cleartext on its own pod, and its sidecar
 * reaches the destination's ward sidecar over TLS (`https://` destination url), verifying its
 * certificate, so the exchanged token never crosses the network in clear. The destinations are
 * real ward inbound listeners with TLS (ALPN h2 and http/1.1) in front of real apps.
 */

let certs: TlsFiles;
let otherCa: TlsFiles;
let ordersApp: OrdersApp;
let grpcProxy: TestProxy;
let httpApp: RecordingApp & AppEvents;
let httpProxy: TestProxy;
let egress: Outbound;
let session: http2.ClientHttp2Session;
let exchanged = 0;

/** The token source: every call gets `good-alice`, which the destination sidecars accept. */
const tokens = {
  token(): TokenOutcome {
    exchanged++;
    return { ok: true, token: 'good-alice', authorization: 'Bearer good-alice', via: 'exchange' };
  },
};

function egressFor(destinations: z.input<typeof outboundConfigSchema>['destinations'], baseDir?: string): Promise<Outbound> {
  return createOutbound({
    service: 'frontend',
    config: outboundConfigSchema.parse({ listen: { host: '127.0.0.1', port: 0 }, destinations }),
    ...(baseDir === undefined ? {} : { baseDir }),
    configFile: '/etc/ward/sidecar.yaml',
    identityPrefix: 'x-ward-',
    maxTokenBytes: 8192,
    extractBearer,
    tokens,
    log: silentLogger,
    clock: Date.now,
  });
}

beforeAll(async () => {
  certs = makeSelfSignedCert(); // valid for localhost and 127.0.0.1
  otherCa = makeSelfSignedCert();
  const tlsFiles = { certFile: certs.certFile, keyFile: certs.keyFile };
  ordersApp = await startOrdersApp();
  grpcProxy = await startProxy(testConfig({ upstreamPort: ordersApp.port, tls: tlsFiles }));
  httpApp = await startH2App();
  httpProxy = await startProxy(testConfig({ upstreamPort: httpApp.port, tls: tlsFiles }));
  copyFileSync(otherCa.certFile, join(certs.dir, 'rotating-h2.pem'));
  copyFileSync(otherCa.certFile, join(certs.dir, 'rotating-h1.pem'));
  const grpcTls = grpcProxy.inbound.ports.tls as number;
  const httpTls = httpProxy.inbound.ports.tls as number;
  egress = await egressFor(
    [
      // the CA file relative to the config's directory (baseDir below)
      { name: 'orders', url: `https://127.0.0.1:${grpcTls}`, resource: 'urn:ward:orders', tls: { caFile: 'cert.pem' } },
      { name: 'web', url: `https://localhost:${httpTls}`, protocol: 'http1', resource: 'urn:ward:web', tls: { caFile: certs.certFile } },
      { name: 'web2', url: `https://127.0.0.1:${httpTls}`, protocol: 'h2', resource: 'urn:ward:web', tls: { caFile: certs.certFile, serverName: 'localhost' } },
      { name: 'wrong-ca', url: `https://127.0.0.1:${httpTls}`, resource: 'urn:ward:web', tls: { caFile: otherCa.certFile } },
      { name: 'wrong-ca-h1', url: `https://localhost:${httpTls}`, protocol: 'http1', resource: 'urn:ward:web', tls: { caFile: otherCa.certFile } },
      { name: 'wrong-name', url: `https://127.0.0.1:${httpTls}`, resource: 'urn:ward:web', tls: { caFile: certs.certFile, serverName: 'payments.internal' } },
      { name: 'system-roots', url: `https://localhost:${httpTls}`, resource: 'urn:ward:web' },
      // a cleartext destination on the TLS port: the sidecar's TLS listener gets garbage
      { name: 'cleartext', url: `http://127.0.0.1:${httpTls}`, resource: 'urn:ward:web' },
      // CA files that start wrong and are corrected in place
      { name: 'rotating', url: `https://localhost:${httpTls}`, resource: 'urn:ward:web', tls: { caFile: 'rotating-h2.pem' } },
      { name: 'rotating-h1', url: `https://localhost:${httpTls}`, protocol: 'http1', resource: 'urn:ward:web', tls: { caFile: 'rotating-h1.pem' } },
    ],
    certs.dir,
  );
  session = await h2Connect(egress.port);
});

afterAll(async () => {
  session?.close();
  await egress?.close();
  await grpcProxy?.close();
  await httpProxy?.close();
  await ordersApp?.close();
  await httpApp?.close();
  certs?.cleanup();
  otherCa?.cleanup();
});

beforeEach(() => {
  httpApp.requests.length = 0;
  exchanged = 0;
});

const appToken = { authorization: 'Bearer the-apps-own-token' };

describe('outbound to https:// destinations', () => {
  it('gRPC over h2 with TLS: the destination sidecar verifies the exchanged token, the app sees the caller', async () => {
    const client = ordersClient(egress.port, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'orders' });
    try {
      const md = new grpc.Metadata();
      md.set('authorization', appToken.authorization);
      const r = await unary<Order>(client, 'GetOrder', { id: 'tls-out-1' }, md);
      expect(r.err).toBeNull();
      expect(r.res?.seenSubject).toBe('alice');
      expect(exchanged).toBe(1);
    } finally {
      client.close();
    }
  });

  it('HTTP/1.1 over TLS (https), and h2 with a serverName other than the url\'s host', async () => {
    const h1 = await h1Request(egress.port, { path: '/api/x', headers: { host: 'web', ...appToken } });
    expect(h1.status).toBe(200);
    const h2 = await h2Request(session, { ':method': 'GET', ':path': '/api/y', ':authority': 'web2', ...appToken });
    expect(h2.headers[':status']).toBe(200);
    expect(httpApp.requests.map((q) => [q.path, q.headers['x-ward-subject']])).toEqual([
      ['/api/x', 'alice'],
      ['/api/y', 'alice'],
    ]);
  });

  it('fails closed when the certificate does not verify: another CA, another name, not in the system roots, or no TLS at all', async () => {
    // a handshake that fails is a connection that failed: 503, as a refused connection
    for (const authority of ['wrong-ca', 'wrong-name', 'system-roots']) {
      const r = await h2Request(session, { ':method': 'GET', ':path': `/never/${authority}`, ':authority': authority, ...appToken });
      expect(r.headers[':status'], authority).toBe(503);
      expect(r.headers['x-ward-reason'], authority).toBe('ERR_UPSTREAM_UNAVAILABLE');
    }
    // h2c to a TLS port: the peer's answer is no HTTP/2 (502), or it hangs up first (503)
    const clear = await h2Request(session, { ':method': 'GET', ':path': '/never/cleartext', ':authority': 'cleartext', ...appToken });
    expect([502, 503]).toContain(clear.headers[':status']);
    expect(['ERR_UPSTREAM_RESET', 'ERR_UPSTREAM_UNAVAILABLE']).toContain(clear.headers['x-ward-reason']);
    const h1 = await h1Request(egress.port, { path: '/never/h1', headers: { host: 'wrong-ca-h1', ...appToken } });
    expect(h1.status).toBe(503);
    expect(h1.headers['x-ward-reason']).toBe('ERR_UPSTREAM_UNAVAILABLE');
    // nothing reached the app behind the destination's sidecar
    expect(httpApp.requests).toEqual([]);
  });
});

describe('a destination CA file updated in place', () => {
  it('is read again for the next connection: no restart', async () => {
    const h2 = (): Promise<H2Response> => h2Request(session, { ':method': 'GET', ':path': '/rotating', ':authority': 'rotating', ...appToken });
    const h1 = (): Promise<number> => h1Request(egress.port, { path: '/rotating-h1', headers: { host: 'rotating-h1', ...appToken } }).then((r) => r.status);
    expect((await h2()).headers[':status']).toBe(503);
    expect(await h1()).toBe(503);
    copyFileSync(certs.certFile, join(certs.dir, 'rotating-h2.pem'));
    copyFileSync(certs.certFile, join(certs.dir, 'rotating-h1.pem'));
    expect((await h2()).headers[':status']).toBe(200);
    expect(await h1()).toBe(200);
  });
});

describe('https:// destination settings', () => {
  const base = { name: 'payments', resource: 'urn:ward:payments' };
  const issues = (d: Record<string, unknown>): string[] => {
    const r = outboundConfigSchema.safeParse({ destinations: [{ ...base, ...d }] });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('defaults to h2 over https:// and h2c over http://, and refuses mismatches', () => {
    expect(issues({ url: 'https://payments:15443' })).toEqual([]);
    expect(issues({ url: 'https://payments:15443', protocol: 'http1', tls: { caFile: 'ca.pem', serverName: 'payments.svc' } })).toEqual([]);
    expect(issues({ url: 'https://payments:15443', protocol: 'h2c' })).toEqual(['destinations.0.protocol: h2c is HTTP/2 in cleartext: an https:// url speaks h2 or http1']);
    expect(issues({ url: 'http://payments:15006', protocol: 'h2' })).toEqual(['destinations.0.protocol: h2 is HTTP/2 over TLS: it needs an https:// url (h2c for http://)']);
    expect(issues({ url: 'http://payments:15006', tls: { caFile: 'ca.pem' } })).toEqual(['destinations.0.tls: tls applies only to an https:// url']);
    expect(issues({ url: 'https://payments:15443', tls: { serverName: 'not a name' } })).toEqual(['destinations.0.tls.serverName: must be a DNS name']);
    expect(issues({ url: 'ftp://payments' }).length).toBe(1);
  });

  it('refuses to start with a CA file it cannot read, naming the setting', async () => {
    const start = egressFor([{ ...base, url: 'https://payments:15443', tls: { caFile: 'missing-ca.pem' } }], '/nonexistent-dir');
    await expect(start).rejects.toBeInstanceOf(ConfigError);
    await expect(start).rejects.toThrow(/sidecar\.yaml.*outbound\.destinations\[0\]\.tls\.caFile.*cannot read \/nonexistent-dir\/missing-ca\.pem: ENOENT/);
  });
});

describe(':scheme towards an https:// destination', () => {
  it('is https over TLS and http in cleartext (RFC 9113 §8.3.1; regression: always http)', async () => {
    const seen: string[] = [];
    const answer = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void => {
      seen.push(String(req.headers[':scheme']));
      res.end('ok');
    };
    const secure = http2.createSecureServer({ cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) }, answer);
    const plain = http2.createServer(answer);
    await Promise.all([secure, plain].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
    const port = (s: http2.Http2Server | http2.Http2SecureServer): number => (s.address() as { port: number }).port;
    const out = await egressFor([
      { name: 'tls', url: `https://127.0.0.1:${port(secure)}`, resource: 'urn:ward:tls', tls: { caFile: certs.certFile } },
      { name: 'clear', url: `http://127.0.0.1:${port(plain)}`, resource: 'urn:ward:clear' },
    ]);
    const s = await h2Connect(out.port);
    try {
      for (const authority of ['tls', 'clear']) {
        const r = await h2Request(s, { ':method': 'GET', ':path': '/x', ':authority': authority, ...appToken });
        expect(r.headers[':status']).toBe(200);
      }
      expect(seen).toEqual(['https', 'http']);
    } finally {
      s.close();
      await out.close();
      await Promise.all([secure, plain].map((x) => new Promise((r) => x.close(r))));
    }
  });
});
