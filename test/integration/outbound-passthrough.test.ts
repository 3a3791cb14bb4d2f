import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { boundHosts } from '../../src/outbound/routes.ts';
import type { Outbound } from '../../src/outbound/server.ts';
import { startEgress } from '../support/egress.ts';

/**
 * docs/outbound.md "Pass-through": "A pass-through to the egress listener's own port on loopback
 * is refused (it would loop)." The check read the Host's text, so `127.1`, `2130706433` and the
 * like, which the URL parser then turned into 127.0.0.1, were sent back into the listener until
 * its pool was full and the call hung (found in review; regression).
 */

function fetchVia(port: number, host: string, path: string): Promise<{ status: number; reason: unknown; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-ward-reason'], body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

function get(port: number, host: string, timeoutMs: number): Promise<number | 'timeout'> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.setTimeout(timeoutMs, () => {
      req.destroy();
      resolve('timeout');
    });
    req.end();
  });
}

/** An egress listener with pass-through and no destination (no token is ever asked for). */
function start(maxPassthroughTargets?: number): Promise<Outbound> {
  return startEgress({ passthrough: true, destinations: [], ...(maxPassthroughTargets === undefined ? {} : { maxPassthroughTargets }) }, { service: 'frontend' });
}

describe('pass-through back into the egress listener', () => {
  it.each(['127.0.0.1', '127.1', '2130706433', '0x7f.0.0.1', '0177.0.0.1', '[::ffff:127.0.0.1]', '[0:0:0:0:0:0:0:1]', '[::1]', 'localhost', 'x.localhost', '0', '0.0.0.0'])('Host %s:<egress port> is refused with 400, not looped', async (h) => {
    const egress = await start();
    try {
      const status = await get(egress.port, `${h}:${egress.port}`, 1500);
      expect({ status, loops: egress.counters.passthrough }).toEqual({ status: 400, loops: 0 });
    } finally {
      await Promise.race([egress.close(), new Promise((r) => setTimeout(r, 1000))]);
    }
  });
});

describe('pass-through pool eviction (maxPassthroughTargets: least recently used closed first)', () => {
  it('lets a call in flight on the evicted pool finish, then closes its connection (regression: it was cut, 502)', async () => {
    const socketOf = new Map<string, Socket>();
    const app = http.createServer((req, res) => {
      socketOf.set(req.url ?? '', req.socket);
      if (req.url === '/delay') setTimeout(() => res.end('late answer'), 400);
      else res.end('ok');
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as AddressInfo).port;
    const egress = await start(1);
    try {
      const slow = fetchVia(egress.port, `127.0.0.1:${appPort}`, '/delay');
      await new Promise((r) => setTimeout(r, 100));
      const other = await fetchVia(egress.port, `localhost:${appPort}`, '/other'); // a second host: the first pool is evicted
      expect(other.status).toBe(200);
      expect(await slow).toEqual({ status: 200, reason: undefined, body: 'late answer' });
      // The evicted pool keeps nothing: the connection that carried the slow call ends.
      const s = socketOf.get('/delay');
      if (s !== undefined && !s.destroyed) await new Promise((r) => s.once('close', r));
      expect(s?.destroyed).toBe(true);
    } finally {
      await egress.close();
      app.closeAllConnections();
      await new Promise((r) => app.close(r));
    }
  });
});

describe('h2c pass-through pool eviction with calls waiting for a stream slot', () => {
  it('the waiting calls still go out on the evicted pool and finish (regression: they were refused and failed with 503)', async () => {
    const app = http2.createServer({ settings: { maxConcurrentStreams: 1 } }, (req, res) => {
      setTimeout(() => res.end(`answer ${req.url}`), req.url === '/first' ? 300 : 5);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as AddressInfo).port;
    const egress = await start(1);
    const client = http2.connect(`http://127.0.0.1:${egress.port}`);
    client.on('error', () => {});
    const h2get = (authority: string, path: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = client.request({ ':method': 'GET', ':path': path, ':authority': authority });
        let status = 0;
        let body = '';
        req.setEncoding('utf8');
        req.on('response', (h) => {
          status = Number(h[':status']);
        });
        req.on('data', (c: string) => {
          body += c;
        });
        req.on('end', () => resolve({ status, body }));
        req.on('error', reject);
        req.end();
      });
    try {
      const warm = await h2get(`127.0.0.1:${appPort}`, '/warm'); // the app's one-stream limit has reached the pool
      expect(warm).toEqual({ status: 200, body: 'answer /warm' });
      const first = h2get(`127.0.0.1:${appPort}`, '/first');
      await new Promise((r) => setTimeout(r, 50));
      const waiting = [h2get(`127.0.0.1:${appPort}`, '/w1'), h2get(`127.0.0.1:${appPort}`, '/w2')];
      await new Promise((r) => setTimeout(r, 50));
      // A second destination evicts the first pool while /w1 and /w2 wait for its one stream.
      expect(await h2get(`localhost:${appPort}`, '/other')).toEqual({ status: 200, body: 'answer /other' });
      expect(await first).toEqual({ status: 200, body: 'answer /first' });
      expect(await Promise.all(waiting)).toEqual([
        { status: 200, body: 'answer /w1' },
        { status: 200, body: 'answer /w2' },
      ]);
    } finally {
      client.destroy();
      await egress.close();
      await new Promise((r) => app.close(r));
    }
  });
});

describe('boundHosts', () => {
  const ifs = { lo: [{ address: '127.0.0.1', family: 'IPv4' }, { address: '::1', family: 'IPv6' }], eth0: [{ address: '10.1.2.3', family: 'IPv4' }, { address: 'fe80::1', family: 'IPv6' }] };
  it('a listener bound to every interface is reached at each of their addresses, spelled as a parsed URL spells them', () => {
    expect([...boundHosts('0.0.0.0', ifs)].sort()).toEqual(['10.1.2.3', '127.0.0.1', '[::1]', '[fe80::1]']);
    expect([...boundHosts('::', ifs)].sort()).toEqual(['10.1.2.3', '127.0.0.1', '[::1]', '[fe80::1]']);
  });
  it('a listener bound to one address, at that one', () => {
    expect([...boundHosts('10.1.2.3', ifs)]).toEqual(['10.1.2.3']);
    expect([...boundHosts('::1', ifs)]).toEqual(['[::1]']);
  });
});
