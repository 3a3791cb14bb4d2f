import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound } from '../../src/outbound/server.ts';

/**
 * A destination `url` with an IPv6 literal (`http://[::1]:port`, which the config schema takes)
 * is reached, over HTTP/1.1 and h2c: the relay connected to `url.hostname`, brackets and all,
 * which was looked up as a name and never found (503 on every call; found in review;
 * regression). The app's `upstream.url` goes through the same relay.
 */

describe('IPv6 literal destination url', () => {
  it.each(['http1', 'h2c'] as const)('reaches a destination at http://[::1]:port (%s)', async (protocol) => {
    const answer = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void => {
      res.end(`got ${req.headers.authorization ?? ''}`);
    };
    const dest = protocol === 'http1' ? http.createServer(answer) : http2.createServer(answer);
    await new Promise<void>((r) => dest.listen(0, '::1', r));
    const egress = await createOutbound({
      service: 'frontend',
      config: outboundConfigSchema.parse({
        listen: { host: '127.0.0.1', port: 0 },
        destinations: [{ name: 'payments', url: `http://[::1]:${(dest.address() as AddressInfo).port}`, protocol, resource: 'urn:ward:payments' }],
      }),
      identityPrefix: 'x-ward-',
      maxTokenBytes: 8192,
      extractBearer,
      tokens: { token: () => ({ ok: true, token: 'exchanged', authorization: 'Bearer exchanged', via: 'exchange' }) },
      log: silentLogger,
      clock: Date.now,
    });
    try {
      const r = await new Promise<{ status: number; reason: unknown; body: string }>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: egress.port, path: '/', headers: { host: 'payments', authorization: 'Bearer alice' }, agent: false }, (res) => {
          const c: Buffer[] = [];
          res.on('data', (d: Buffer) => c.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-ward-reason'], body: Buffer.concat(c).toString() }));
        });
        req.on('error', reject);
        req.end();
      });
      expect(r).toEqual({ status: 200, reason: undefined, body: 'got Bearer exchanged' });
    } finally {
      await egress.close();
      if (dest instanceof http.Server) dest.closeAllConnections();
      await new Promise((r) => dest.close(r));
    }
  });
});
