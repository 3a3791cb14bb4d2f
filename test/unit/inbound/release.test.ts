import http from 'node:http';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Exchange } from '../../../src/inbound/exchange.ts';
import { ErrorResponder } from '../../../src/inbound/respond.ts';
import { createListeners, type ListenerCounters, type Listeners } from '../../../src/inbound/server.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import type { Identity } from '../../../src/policy/model.ts';

/**
 * The listeners call `Exchange.release` once the caller's side of a call closed, on both
 * protocols: what the call gathered (the identity, the app's headers, the caller's header list)
 * is dropped, so an exchange V8 promoted does not keep it alive until the next full collection
 * (docs/performance.md, "Memory").
 */
describe('the listeners release a finished exchange', () => {
  const taken: Exchange[] = [];
  const counters: ListenerCounters = { activeStreams: 0, h2Sessions: 0, h1Connections: 0 };
  const responder = new ErrorResponder('orders');
  let listeners: Listeners;

  beforeAll(async () => {
    listeners = await createListeners({
      listen: { host: '127.0.0.1', port: 0 },
      maxHeaderListBytes: 16_384,
      maxConcurrentStreams: 100,
      counters,
      responder,
      log: silentLogger,
      handle(ex) {
        ex.identity = { subject: 'alice' } as unknown as Identity;
        ex.fwdHeaders = { 'x-ward-subject': 'alice' };
        taken.push(ex);
        responder.write(ex, 'ERR_POLICY_DENIED');
      },
      cancel: () => {},
      release: () => Promise.resolve(),
      destroy: () => {},
    });
  });

  afterAll(async () => {
    await listeners.close();
  });

  async function closed(ex: Exchange): Promise<void> {
    for (let i = 0; i < 200 && !ex.closed; i++) await new Promise((r) => setTimeout(r, 5));
    expect(ex.closed).toBe(true);
  }

  function expectReleased(ex: Exchange): void {
    expect(ex.identity).toBeNull();
    expect(ex.fwdHeaders).toEqual({});
    expect(ex.rawHeaders).toEqual([]);
    expect(ex.decisionId).not.toBe('');
  }

  it('over HTTP/1.1', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: listeners.ports.cleartext, path: '/orders', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
    expect(status).toBe(403);
    const ex = taken.at(-1) as Exchange;
    expect(ex.req).not.toBeNull();
    await closed(ex);
    expectReleased(ex);
  });

  it('over HTTP/2', async () => {
    const session = http2.connect(`http://127.0.0.1:${listeners.ports.cleartext}`);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = session.request({ ':method': 'GET', ':path': '/orders' });
        let s = 0;
        req.on('response', (h) => (s = Number(h[':status'])));
        req.on('close', () => resolve(s));
        req.on('error', reject);
        req.resume();
        req.end();
      });
      expect(status).toBe(403);
      const ex = taken.at(-1) as Exchange;
      expect(ex.h2).not.toBeNull();
      await closed(ex);
      expectReleased(ex);
    } finally {
      session.destroy();
    }
  });
});
