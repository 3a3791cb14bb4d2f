import { describe, expect, it } from 'vitest';
import { outboundConfigSchema } from '../../../src/config/outbound.ts';
import { ErrorResponder } from '../../../src/inbound/respond.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { PASSTHROUGH, Routes, splitAuthority } from '../../../src/outbound/routes.ts';

describe('splitAuthority', () => {
  it.each([
    ['payments', { host: 'payments', port: '' }],
    ['payments:8080', { host: 'payments', port: '8080' }],
    ['Payments.Default.SVC.', { host: 'payments.default.svc', port: '' }],
    ['127.0.0.1:80', { host: '127.0.0.1', port: '80' }],
    ['[::1]:15001', { host: '[::1]', port: '15001' }],
    ['[::1]', { host: '[::1]', port: '' }],
    ['host:', { host: 'host', port: '' }], // RFC 3986 §3.2.3: an empty port is allowed
  ])('%s', (input, want) => {
    expect(splitAuthority(input)).toEqual(want);
  });

  it.each(['', ':80', 'a:b', 'a:1:2', 'a:99999', '[::1', '[::1]x'])('refuses %j', (input) => {
    expect(splitAuthority(input)).toBeUndefined();
  });

  // What ends an authority in a URL (RFC 3986 §3.2) would move the port the app wrote out of it:
  // `127.0.0.1#:81` was split as host `127.0.0.1#`, port 81, and passed through to port 80
  // (found in review, sixteenth session; regression). The inbound authority check decides.
  it.each(['127.0.0.1#:81', '127.0.0.1?:81', 'a/b:81', 'u@h:81', 'u:p@h', 'a b', 'a\\b:81'])('refuses %j (not host[:port])', (input) => {
    expect(splitAuthority(input)).toBeUndefined();
  });
});

describe('Routes', () => {
  const config = outboundConfigSchema.parse({
    maxPassthroughTargets: 2,
    destinations: [
      { name: 'payments', url: 'http://127.0.0.1:9', resource: 'urn:ward:payments', scopes: ['b', 'a'] },
      { name: 'legacy', url: 'http://127.0.0.1:9', protocol: 'http1', audience: 'legacy-api', noToken: 'client-credentials' },
    ],
  });
  const routes = () => new Routes({ config, baseDir: process.cwd(), responder: new ErrorResponder('frontend'), counters: { upstreamErrors: 0 }, log: silentLogger, identityPrefix: 'x-ward-' });

  it('finds declared destinations by host, whatever the port, with their token target', () => {
    const r = routes();
    const p = r.declared(splitAuthority('PAYMENTS:1234') ?? { host: '', port: '' });
    expect(p?.target).toEqual({ name: 'payments', resource: 'urn:ward:payments', audience: undefined, scope: 'b a' });
    expect(p?.h2).toBe(true);
    expect(r.declared({ host: 'legacy', port: '' })).toMatchObject({ noToken: 'client-credentials', h2: false, target: { audience: 'legacy-api' } });
    expect(r.declared({ host: 'ledger', port: '' })).toBeUndefined();
    r.destroy();
  });

  it('pass-through: one pool per host, port and protocol, bounded; never the egress listener itself', () => {
    const r = routes();
    r.selfPort = 15001;
    const a = r.passthrough({ host: 'example.test', port: '' }, false);
    expect(a).toMatchObject({ name: PASSTHROUGH, target: null, h2: false });
    expect(r.passthrough({ host: 'example.test', port: '80' }, false)).toBe(a);
    expect(r.passthrough({ host: 'example.test', port: '' }, true)).not.toBe(a);
    r.passthrough({ host: 'other.test', port: '' }, false); // evicts the oldest (a)
    expect(r.passthrough({ host: 'example.test', port: '' }, false)).not.toBe(a);
    expect(r.passthrough({ host: '127.0.0.1', port: '15001' }, false)).toBeNull();
    expect(r.passthrough({ host: 'localhost', port: '15001' }, true)).toBeNull();
    expect(r.passthrough({ host: '127.0.0.1', port: '15002' }, false)).not.toBeNull();
    r.destroy();
  });

  it('pass-through: nothing but the host and port written (regression: `127.0.0.1#` with port 81 went to port 80)', () => {
    const r = routes();
    r.selfPort = 81;
    for (const host of ['127.0.0.1#', '127.0.0.1?', 'example.test?x']) {
      expect(r.passthrough({ host, port: '81' }, false), host).toBeNull();
    }
    expect(r.passthrough({ host: 'example.test', port: '0081' }, false)).not.toBeNull();
    r.destroy();
  });
});

describe('outbound config', () => {
  it('defaults: loopback egress on 15001, no pass-through, refuse without a token, exchange defaults', () => {
    const c = outboundConfigSchema.parse({ destinations: [{ name: 'payments', url: 'http://10.0.0.1:15006', resource: 'urn:ward:payments' }] });
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 15001 });
    expect(c.passthrough).toBe(false);
    expect(c.destinations[0]).toMatchObject({ scopes: [], noToken: 'refuse' });
    // no protocol: HTTP/2, h2c over http:// (h2 over https://), which Routes applies
    expect(c.destinations[0]?.protocol).toBeUndefined();
    expect(c.exchange).toMatchObject({ timeoutMs: 3000, cacheEntries: 10_000, renewBeforeSeconds: 30, refusalCacheSeconds: 5, clientAuth: 'client_secret_basic' });
  });

  it.each([
    [{ destinations: [{ name: 'p', url: 'http://x:1' }] }, 'set resource, audience or both'],
    [{ destinations: [{ name: 'Payments', url: 'http://x:1', audience: 'p' }] }, 'lower-case DNS name'],
    [{ destinations: [{ name: 'p:80', url: 'http://x:1', audience: 'p' }] }, 'lower-case DNS name'],
    [{ destinations: [{ name: 'p', url: 'ftp://x:1', audience: 'p' }] }, 'must start with http:// or https://'],
    [{ destinations: [{ name: 'p', url: 'https://x:1', audience: 'p', protocol: 'h2c' }] }, 'h2c is HTTP/2 in cleartext'],
    [{ destinations: [{ name: 'p', url: 'http://x:1', resource: 'not a uri' }] }, 'absolute URI'],
    [{ destinations: [{ name: 'p', url: 'http://x:1', audience: 'p' }, { name: 'p', url: 'http://y:1', audience: 'q' }] }, 'duplicate destination'],
    [{ exchange: { retryInitialMs: 5000, retryMaxMs: 1000 } }, 'retryInitialMs'],
    [{ destinations: [{ name: 'p', url: 'http://x:1', audience: 'p', noToken: 'anonymous' }] }, 'refuse'],
  ])('refuses %j', (input, message) => {
    const r = outboundConfigSchema.safeParse(input);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toContain(message);
  });
});
