import http2 from 'node:http2';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Mesh, startMesh } from '../integration/harness.ts';
import { type RecordingApp, startRecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';
import { block, FrameType, headersFrame, rawH2 } from './support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { h2Once, startWard, type Ward } from './support/ward.ts';

/**
 * Path and method normalization bypasses. The invariant under test: the path policy judges is
 * byte for byte the path the app receives, so no spelling of a denied route reaches the app as
 * that route. Sources: Envoy CVE-2019-9901 (dot segments), CVE-2021-29492 / Istio
 * Istio (escaped slashes), CVE-2021-31920 (merged slashes), CVE-2021-32779 /
 * CVE-2021-39156 (fragments), CVE-2019-9900 (NUL), case confusion, Tomcat
 * path parameters (`..;/`), and the gRPC method forms of the same tricks.
 */

let iss: TestIssuer;
let app: RecordingApp;
let ward: Ward;
let token: string;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRecordingApp('h2c');
  ward = await startWard({ issuer: iss.issuer, app });
  token = iss.token();
});
afterAll(async () => {
  await ward.close();
  await app.close();
  await iss.close();
});
beforeEach(() => {
  app.reset();
  ward.decisions.length = 0;
});

/** `/api/internal/**` is denied by a deny rule; `/api/**` is allowed: every spelling below targets the former. */
const DENIED_SPELLINGS: readonly (readonly [target: string, why: string])[] = [
  ['/api/internal/x', 'the plain path'],
  ['/api/./internal/x', 'dot segment'],
  ['/api/x/../internal/x', 'dot-dot segment (CVE-2019-9901)'],
  ['/api//internal/x', 'merged slashes (CVE-2021-31920)'],
  ['//api/internal/x', 'leading double slash'],
  ['/api/%2e/internal/x', 'escaped dot'],
  ['/api/x/%2e%2e/internal/x', 'escaped dot-dot'],
  ['/api/x/.%2E/internal/x', 'half-escaped dot-dot, mixed case'],
  ['/api/%69nternal/x', 'escaped unreserved letter'],
  ['/api/in%74ernal/x', 'escaped letter in the middle'],
  ['/api/internal', 'the prefix itself'],
  ['/api/internal/', 'the prefix with a trailing slash'],
  ['/api/internal/x?y=/api/ok', 'a query that looks like a path'],
  ['/public/../api/internal/x', 'escape from an open route'],
  ['/public/%2e%2e/api/internal/x', 'escaped escape from an open route'],
];

/** Spellings refused outright as invalid or ambiguous (400): some app would read them as the denied route. */
const REFUSED_SPELLINGS: readonly (readonly [target: string, reason: string, why: string])[] = [
  ['/api%2finternal/x', 'ERR_PATH_AMBIGUOUS', 'escaped slash (CVE-2021-29492)'],
  ['/api/x%2F..%2Finternal/x', 'ERR_PATH_AMBIGUOUS', 'escaped slashes around dot-dot'],
  ['/api%5cinternal/x', 'ERR_PATH_AMBIGUOUS', 'escaped backslash'],
  ['/api\\internal/x', 'ERR_PATH_AMBIGUOUS', 'raw backslash (IIS/Windows separator)'],
  ['/api/internal;x=1/x', 'ERR_PATH_AMBIGUOUS', 'path parameter (Tomcat)'],
  ['/api/x/..;/internal/x', 'ERR_PATH_AMBIGUOUS', 'Tomcat ..;/ traversal'],
  ['/api/internal%00/x', 'ERR_PATH_INVALID', 'escaped NUL (CVE-2019-9900)'],
  ['/api/internal%0a/x', 'ERR_PATH_INVALID', 'escaped LF'],
  ['/api/ok#/../internal/x', 'ERR_PATH_INVALID', 'fragment (CVE-2021-32779)'],
  ['/api/%', 'ERR_PATH_INVALID', 'truncated escape'],
  ['/api/%zz', 'ERR_PATH_INVALID', 'non-hex escape'],
  ['http://orders/api/internal/x', 'ERR_PATH_INVALID', 'absolute-form target'],
];

describe.each(['HTTP/1.1', 'HTTP/2'] as const)('HTTP path spellings over %s', (proto) => {
  async function send(target: string): Promise<{ status: number | undefined; reason: string | undefined }> {
    if (proto === 'HTTP/2') {
      const r = await h2Once(ward.port, { ':path': target, authorization: `Bearer ${token}` });
      return { status: r.status, reason: r.reason };
    }
    const x = await h1raw(ward.port, `GET ${target} HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
    return { status: x.replies[0]?.status, reason: x.replies[0]?.headers['x-ward-reason'] };
  }

  it.each(DENIED_SPELLINGS)('%s (%s) → 403 ERR_POLICY_DENIED', async (target) => {
    expect(await send(target)).toEqual({ status: 403, reason: 'ERR_POLICY_DENIED' });
    expect(app.seen).toEqual([]);
  });

  it.each(REFUSED_SPELLINGS)('%s → 400 %s (%s)', async (target, reason) => {
    const r = await send(target);
    // HTTP/2's own validation may refuse a raw backslash-free but odd :path first (no reason then).
    if (r.status === 400 || r.reason !== undefined) expect(r).toEqual({ status: 400, reason });
    else expect(r.status).toBe(0);
    expect(app.seen).toEqual([]);
  });

  it.each([
    ['/api/Internal/x', '/api/Internal/x', 'another case is another path (RFC 3986 §6.2.2.1): policy and app see the same bytes'],
    ['/api/internal../x', '/api/internal../x', 'a segment with trailing dots is its own segment'],
    ['/api/%c0%ae%c0%ae/internal/x', '/api/%C0%AE%C0%AE/internal/x', 'overlong UTF-8 dots stay escaped, never decoded to ".."'],
    ['/api/%ef%bc%8finternal/x', '/api/%EF%BC%8Finternal/x', 'fullwidth solidus stays escaped'],
    ['/api/%252e%252e/internal/x', '/api/%252e%252e/internal/x', 'double encoding is decoded once: no dot-dot'],
    ['/api/ok/', '/api/ok/', 'trailing slash kept'],
  ])('%s is allowed and forwarded exactly as judged: %s (%s)', async (target, forwarded) => {
    expect((await send(target)).status).toBe(200);
    expect(app.seen.map((s) => s.path)).toEqual([forwarded]);
    expect(ward.decisions.at(-1)?.route).toBe(forwarded);
  });
});

describe('methods — RFC 9110 §9.1 (methods are case-sensitive); method-override headers', () => {
  it.each([['get'], ['TRACE'], ['PROPFIND'], ['G\u00c9T']])('%j is refused as ERR_REQUEST_INVALID (HTTP/2)', async (method) => {
    const r = await h2Once(ward.port, { ':method': method, ':path': '/api/x', authorization: `Bearer ${token}` });
    if (r.status !== 0) expect({ status: r.status, reason: r.reason }).toEqual({ status: 400, reason: 'ERR_REQUEST_INVALID' });
    expect(app.seen).toEqual([]);
  });

  it('CONNECT (RFC 9113 §8.5: no :path, no :scheme) never opens a tunnel', async () => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, block([[':method', 'CONNECT'], [':authority', 'orders:443'], ['authorization', `Bearer ${token}`]]), { endStream: false }));
    const f = await c.waitFrame((x) => x.streamId === 1 && (x.type === FrameType.HEADERS || x.type === FrameType.RST_STREAM));
    c.close();
    expect(f).toBeDefined();
    if (f?.type === FrameType.HEADERS) expect(ward.lastCode()).toBe('ERR_REQUEST_INVALID');
    expect(app.seen).toEqual([]);
  });

  it('a method-override header cannot turn an allowed GET into something policy never judged', async () => {
    const r = await h2Once(ward.port, { ':path': '/public/x', 'x-http-method-override': 'DELETE', 'x-http-method': 'DELETE' });
    expect(r.status).toBe(200);
    // Forwarded as-is (the app's business), but the decision was for GET on the open route.
    expect(ward.decisions.at(-1)).toMatchObject({ method: 'GET', decision: 'allow', rule: 'public' });
    expect(app.seen[0]?.method).toBe('GET');
  });

  it('HEAD is judged as HEAD: the open route only allows GET', async () => {
    const r = await h2Once(ward.port, { ':method': 'HEAD', ':path': '/public/x' });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 403, reason: 'ERR_POLICY_NO_MATCH' });
    expect(app.seen).toEqual([]);
  });
});

describe('gRPC method path forms against a real grpc-js app — DeleteOrder is denied whatever its spelling', () => {
  let mesh: Mesh;
  let grpcToken: string;

  beforeAll(async () => {
    // Everything on Orders and every HTTP path is allowed for orders.read, except the deny rule:
    // so a spelling that slipped past the deny would reach the app's DeleteOrder handler.
    mesh = await startMesh({
      policy: (issuer) => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: ${issuer}
    audiences: [urn:ward:orders]
    algorithms: [RS256, ES256]
rules:
  - name: no-deletes
    action: deny
    match:
      grpc: [/ward.demo.v1.Orders/DeleteOrder]
  - name: everything-else
    action: allow
    match:
      grpc: ["/ward.demo.v1.Orders/*"]
      http: [{ prefix: / }]
    when:
      - scopes: { allOf: [orders.read] }
`,
    });
    grpcToken = await mesh.idp.token('frontend', 'urn:ward:orders', 'orders.read');
  });
  afterAll(async () => {
    await mesh.close();
  });

  /** A DeleteOrder request message ({id: "1"}) in a gRPC frame. */
  const MESSAGE = Buffer.from([0, 0, 0, 0, 3, 0x0a, 0x01, 0x31]);

  function grpcCall(path: string, contentType = 'application/grpc'): Promise<{ status: number; grpcStatus: string | undefined; reason: string | undefined }> {
    return new Promise((resolve, reject) => {
      const s = http2.connect(`http://${mesh.target}`);
      s.on('error', reject);
      const req = s.request({ ':method': 'POST', ':path': path, 'content-type': contentType, te: 'trailers', authorization: `Bearer ${grpcToken}` });
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
        resolve({ status: Number(headers[':status'] ?? 0), grpcStatus: gs === undefined ? undefined : String(gs), reason: reason === undefined ? undefined : String(reason) });
      });
      req.end(MESSAGE);
    });
  }

  it('baseline: GetOrder is allowed and reaches the handler', async () => {
    const r = await grpcCall('/ward.demo.v1.Orders/GetOrder');
    expect(r.grpcStatus).toBe('0');
    expect(mesh.app.calls.map((c) => c.method)).toContain('GetOrder');
  });

  it.each([
    ['/ward.demo.v1.Orders/DeleteOrder', 'the method itself'],
    ['//ward.demo.v1.Orders/DeleteOrder', 'leading double slash'],
    ['/ward.demo.v1.Orders//DeleteOrder', 'double slash before the method'],
    ['/ward.demo.v1.Orders/./DeleteOrder', 'dot segment'],
    ['/x/../ward.demo.v1.Orders/DeleteOrder', 'dot-dot segment'],
    ['/ward.demo.v1.Orders/%44eleteOrder', 'escaped letter'],
    ['/ward.demo.v1.Orders/DeleteOrder?x=1', 'a query'],
  ])('%s (%s) → PERMISSION_DENIED with ERR_POLICY_DENIED, handler never called', async (path) => {
    const before = mesh.app.calls.length;
    const r = await grpcCall(path);
    expect(r).toEqual({ status: 200, grpcStatus: '7', reason: 'ERR_POLICY_DENIED' });
    expect(mesh.app.calls.slice(before).map((c) => c.method)).not.toContain('DeleteOrder');
  });

  it.each([
    ['/ward.demo.v1.Orders/DeleteOrder/', 'trailing slash'],
    ['/ward.demo.v1.Orders/deleteorder', 'lower case'],
    ['/ward.demo.v1.orders/DeleteOrder', 'service in lower case'],
    ['/ward.demo.v1.Orders/DeleteOrder%20', 'escaped trailing space'],
    ['/ward.demo.v1.Orders/DeleteOrder.', 'trailing dot'],
  ])('%s (%s): not the method by the app\'s rules either; whatever ward decides, the handler is never called', async (path) => {
    const before = mesh.app.calls.length;
    const r = await grpcCall(path);
    expect(r.grpcStatus).not.toBe('0');
    expect(mesh.app.calls.slice(before).map((c) => c.method)).not.toContain('DeleteOrder');
  });

  it.each([['application/grpc+proto'], ['application/grpc+json'], ['application/json'], ['text/plain']])(
    'content-type %s cannot dodge the deny rule (deny rules match gRPC paths for every request)',
    async (ct) => {
      const before = mesh.app.calls.length;
      const r = await grpcCall('/ward.demo.v1.Orders/DeleteOrder', ct);
      expect(r.reason).toBe('ERR_POLICY_DENIED');
      expect(mesh.app.calls.slice(before).map((c) => c.method)).not.toContain('DeleteOrder');
    },
  );
});
