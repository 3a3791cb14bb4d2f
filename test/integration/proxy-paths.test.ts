import type http2 from 'node:http2';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type AppEvents,
  h2Connect,
  h2Request,
  rawExchange,
  type RecordingApp,
  startH1App,
  startProxy,
  testConfig,
  type TestProxy,
} from '../unit/inbound/harness.ts';

/**
 * The known Envoy/Istio path bypasses (research §2.4), sent byte-for-byte over HTTP/1.1 and as
 * a raw `:path` over HTTP/2. The test policy denies `/admin…` and `/private…` and allows the
 * rest: a bypass would show up as the app receiving an admin path. For every case we assert
 * what the app saw (nothing, or exactly the normalized path policy judged).
 */

type Outcome = { status: 403; reason: 'ERR_POLICY_DENIED' } | { status: 400; reason: 'ERR_PATH_INVALID' | 'ERR_PATH_AMBIGUOUS' | 'ERR_REQUEST_INVALID' } | { status: 200; forwarded: string };

const CASES: readonly (readonly [target: string, outcome: Outcome, why: string])[] = [
  ['/info/../private', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'CVE-2019-9901: dot-dot is resolved before policy'],
  ['/public/./../admin/', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'dot and dot-dot'],
  ['//admin', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'CVE-2021-31920: merged slashes'],
  // `..` removes the empty segment before it, then slashes merge (RFC 3986 order, as Envoy and
  // the app would): the app gets /public/admin, never /admin
  ['/public//../admin', { status: 200, forwarded: '/public/admin' }, 'empty segment before dot-dot'],
  ['/public//../../admin', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'dot-dots past the empty segment'],
  ['/admin//..', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'a dot-dot that removes only an empty segment stays under /admin'],
  ['/public/%2e%2e/admin', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'escaped dot-dot'],
  ['/public/.%2E/admin', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'half-escaped dot-dot'],
  ['/%61dmin', { status: 403, reason: 'ERR_POLICY_DENIED' }, 'escaped unreserved letter'],
  ['/x%2F..%2Fadmin', { status: 400, reason: 'ERR_PATH_AMBIGUOUS' }, 'CVE-2021-29492: escaped slash'],
  ['/public/..%2fadmin', { status: 400, reason: 'ERR_PATH_AMBIGUOUS' }, 'lower-case escaped slash'],
  ['/public/..%5Cadmin', { status: 400, reason: 'ERR_PATH_AMBIGUOUS' }, 'escaped backslash'],
  ['/public/..\\admin', { status: 400, reason: 'ERR_PATH_AMBIGUOUS' }, 'raw backslash'],
  ['/public#/../admin', { status: 400, reason: 'ERR_PATH_INVALID' }, 'CVE-2021-32779: fragment'],
  ['/admin;x=1', { status: 400, reason: 'ERR_PATH_AMBIGUOUS' }, 'CVE-2026-73553: matrix parameter'],
  ['/public/..;/admin', { status: 400, reason: 'ERR_PATH_AMBIGUOUS' }, 'Tomcat ..; traversal'],
  ['/admin%00.html', { status: 400, reason: 'ERR_PATH_INVALID' }, 'CVE-2019-9900: NUL'],
  ['/public%', { status: 400, reason: 'ERR_PATH_INVALID' }, 'malformed escape'],
  ['/public/%2e%2e/orders?x=/admin', { status: 200, forwarded: '/orders?x=/admin' }, 'query is not path'],
  ['/public/../orders//7/./', { status: 200, forwarded: '/orders/7/' }, 'normalized path is what the app gets'],
  ['/orders/%7Ebob/caf%c3%a9', { status: 200, forwarded: '/orders/~bob/caf%C3%A9' }, 'unreserved decoded, other escapes upper-cased'],
  ['/public/%252F..%252Fadmin', { status: 200, forwarded: '/public/%252F..%252Fadmin' }, 'double encoding is decoded once only: one segment'],
];

let app: RecordingApp & AppEvents;
let proxy: TestProxy;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  app = await startH1App();
  proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1' }));
  session = await h2Connect(proxy.port);
});
afterAll(async () => {
  session.close();
  await proxy.close();
  await app.close();
});
beforeEach(() => {
  app.requests.length = 0;
  proxy.decisions.length = 0;
});

function check(status: number, reason: string | undefined, o: Outcome): void {
  expect(status).toBe(o.status);
  if (o.status === 200) {
    expect(app.requests.map((r) => r.path)).toEqual([o.forwarded]);
    return;
  }
  expect(reason).toBe(o.reason);
  expect(app.requests).toEqual([]);
  expect(proxy.decisions[0]).toMatchObject({ decision: 'deny', code: o.reason });
  if (o.status === 400 && o.reason !== 'ERR_REQUEST_INVALID') expect(proxy.decisions[0]?.route).toBeNull();
}

describe('HTTP/1.1, raw request line', () => {
  it.each(CASES)('%j → %o (%s)', async (target, outcome) => {
    const reply = await rawExchange(proxy.port, `GET ${target} HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer good-alice\r\nConnection: close\r\n\r\n`);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1]);
    const reason = /\r\nx-ward-reason: ([A-Z_]+)/i.exec(reply)?.[1];
    check(status, reason, outcome);
  });
});

describe('HTTP/2, raw :path', () => {
  it.each(CASES)('%j → %o (%s)', async (target, outcome) => {
    const r = await h2Request(session, { ':method': 'GET', ':path': target, authorization: 'Bearer good-alice' });
    check(Number(r.headers[':status']), r.headers['x-ward-reason'] as string | undefined, outcome);
  });
});

describe('method case', () => {
  it('HTTP/2 `get` is not GET: 400 before any policy runs', async () => {
    const r = await h2Request(session, { ':method': 'get', ':path': '/orders/1', authorization: 'Bearer good-alice' });
    expect(r.headers[':status']).toBe(400);
    expect(r.headers['x-ward-reason']).toBe('ERR_REQUEST_INVALID');
    expect(proxy.facts).not.toContainEqual(expect.objectContaining({ request: expect.objectContaining({ method: 'get' }) }));
    expect(app.requests).toEqual([]);
  });

  it('HTTP/1.1 `get` is refused by the parser', async () => {
    const reply = await rawExchange(proxy.port, 'get /orders/1 HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer good-alice\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    expect(app.requests).toEqual([]);
  });
});

describe('escaped slashes allowed by configuration', () => {
  it('they stay encoded in the path policy sees and the app receives', async () => {
    const p = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'http1', paths: { rejectEscapedSlashes: false } }));
    try {
      const reply = await rawExchange(p.port, 'GET /public/..%2fadmin HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer good-alice\r\nConnection: close\r\n\r\n');
      expect(reply).toMatch(/^HTTP\/1\.1 200 /);
      expect(p.facts[0]?.request.path).toBe('/public/..%2Fadmin');
      expect(app.requests.map((r) => r.path)).toEqual(['/public/..%2Fadmin']);
    } finally {
      await p.close();
    }
  });
});
