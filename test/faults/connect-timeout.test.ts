import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound } from '../../src/outbound/server.ts';

/**
 * `destinations[].connectTimeoutMs` ("Connect timeout to the destination", docs/outbound.md) for
 * both protocols: a destination that accepts TCP and never answers the TLS ClientHello fails the
 * call with 503 ERR_UPSTREAM_UNAVAILABLE once it has passed. It held an `http1` call for ever
 * (no request timeout by default): only the HTTP/2 pool had the timeout (found in review;
 * regression). The app's `upstream.connectTimeoutMs` goes through the same forwarder.
 */

function get(port: number, host: string, timeoutMs: number): Promise<{ status: number | 'timeout'; reason?: unknown }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host, authorization: 'Bearer alice' }, agent: false }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, reason: res.headers['x-ward-reason'] });
    });
    req.on('error', () => resolve({ status: 0 }));
    req.setTimeout(timeoutMs, () => {
      req.destroy();
      resolve({ status: 'timeout' });
    });
    req.end();
  });
}

describe('connectTimeoutMs, HTTP/2 and HTTP/1.1 destinations', () => {
  it.each(['h2', 'http1'] as const)('an https destination that never completes the handshake fails with 503 after connectTimeoutMs (%s)', async (protocol) => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s)); // accepts, never answers the ClientHello
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as AddressInfo).port;
    const egress = await createOutbound({
      service: 'frontend',
      config: outboundConfigSchema.parse({
        listen: { host: '127.0.0.1', port: 0 },
        destinations: [{ name: 'payments', url: `https://127.0.0.1:${port}`, protocol, resource: 'urn:ward:payments', connectTimeoutMs: 300 }],
      }),
      identityPrefix: 'x-ward-',
      maxTokenBytes: 8192,
      extractBearer,
      tokens: { token: () => ({ ok: true, token: 'exchanged', authorization: 'Bearer exchanged', via: 'exchange' }) },
      log: silentLogger,
      clock: Date.now,
    });
    try {
      expect(await get(egress.port, 'payments', 3000)).toEqual({ status: 503, reason: 'ERR_UPSTREAM_UNAVAILABLE' });
    } finally {
      for (const s of sockets) s.destroy();
      await Promise.race([egress.close(), new Promise((r) => setTimeout(r, 500))]);
      await new Promise((r) => silent.close(r));
    }
  });
});
