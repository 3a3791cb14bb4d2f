import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../../src/errors/codes.ts';
import { H2ServerConnection, type H2ServerStream } from '../../../src/h2/server.ts';
import { ERROR_TABLE } from '../../../src/errors/table.ts';
import { buildErrorResponse, challengeFor, encodeGrpcMessage, ErrorResponder, type ErrorTarget } from '../../../src/inbound/respond.ts';

describe('buildErrorResponse', () => {
  it.each(ERROR_CODES)('%s: HTTP status and grpc-status come from ERROR_TABLE', (code) => {
    const r = buildErrorResponse('orders', code);
    const row = ERROR_TABLE[code];
    expect(r.status).toBe(row.http);
    expect(r.h2[':status']).toBe(row.http);
    expect(r.h1['x-ward-reason']).toBe(code);
    expect(r.grpc[':status']).toBe(200);
    expect(r.grpc['content-type']).toBe('application/grpc');
    expect(r.grpc['grpc-status']).toBe(String(row.grpc));
    expect(r.grpc['x-ward-reason']).toBe(code);
    expect(r.grpcTrailers['grpc-status']).toBe(String(row.grpc));
    expect(r.body.toString()).toBe(`${row.message}\n`);
    expect(r.h1['content-length']).toBe(r.body.length);
    expect(r.h1['content-type']).toMatch(/^text\/plain/);
  });

  it.each([
    ['ERR_TOKEN_MISSING', 'Bearer realm="orders"'],
    ['ERR_TOKEN_EXPIRED', 'Bearer realm="orders", error="invalid_token"'],
    ['ERR_TOKEN_AUDIENCE', 'Bearer realm="orders", error="invalid_token"'],
    ['ERR_SCOPE_INSUFFICIENT', 'Bearer realm="orders", error="insufficient_scope"'],
    ['ERR_TOKEN_IN_QUERY', 'Bearer realm="orders", error="invalid_request"'],
    ['ERR_TOKEN_MULTIPLE', 'Bearer realm="orders", error="invalid_request"'],
    ['ERR_POLICY_DENIED', undefined],
    ['ERR_PATH_INVALID', undefined],
    ['ERR_UPSTREAM_UNAVAILABLE', undefined],
  ] as const)('%s challenge: %s', (code, expected) => {
    expect(challengeFor('orders', code)).toBe(expected);
    const r = buildErrorResponse('orders', code);
    expect(r.h1['www-authenticate']).toBe(expected);
    expect(r.grpc['www-authenticate']).toBe(expected);
  });

  it('every code has exactly one precomputed response', () => {
    const responder = new ErrorResponder('orders');
    for (const c of ERROR_CODES) expect(responder.response(c).code).toBe(c);
  });
});

describe('encodeGrpcMessage', () => {
  it.each([
    ['token expired', 'token expired'],
    ['100% sure', '100%25 sure'],
    ['line\nbreak', 'line%0Abreak'],
    ['caf\u00e9', 'caf%C3%A9'],
    ['tab\t', 'tab%09'],
  ] as const)('%j → %j', (input, expected) => {
    expect(encodeGrpcMessage(input)).toBe(expected);
    expect(decodeURIComponent(encodeGrpcMessage(input))).toBe(input);
  });
});

// ---- writing to real streams

function target(over: Partial<ErrorTarget>): ErrorTarget {
  return { h2: null, res: null, grpc: false, decisionId: 'd-1', method: 'POST', closed: false, finished: false, responseStarted: false, trailers: null, ...over };
}

describe('ErrorResponder.write over HTTP/2', () => {
  const responder = new ErrorResponder('orders');
  let server: net.Server;
  let client: http2.ClientHttp2Session;
  /** Test behaviour per :path: `<code>` [`/grpc`] [`/mid`]. */
  const serverCloses: { path: string; rst: number }[] = [];

  beforeAll(async () => {
    // ward's own HTTP/2 server connection, as the listeners use it
    const onStream = (stream: H2ServerStream, fields: string[]): void => {
      const headers = { ':path': fields[fields.indexOf(':path') + 1] };
      const [, code, ...flags] = (headers[':path'] ?? '').split('/');
      const grpc = flags.includes('grpc');
      const t = target({ h2: stream, grpc, method: fields[fields.indexOf(':method') + 1] ?? 'POST' });
      stream.on('error', () => {});
      stream.on('wantTrailers', () => stream.sendTrailers(t.trailers ?? {}));
      if (flags.includes('mid')) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        t.responseStarted = true;
        stream.write('some data');
      }
      responder.write(t, code as ErrorCode);
      // a second write is ignored: one response per call
      responder.write(t, 'ERR_INTERNAL');
      stream.on('close', () => serverCloses.push({ path: headers[':path'] ?? '', rst: stream.rstCode ?? -1 }));
    };
    server = net.createServer((socket) => {
      new H2ServerConnection(socket, { maxConcurrentStreams: 100, maxHeaderListSize: 65536, maxHeaderPairs: 128, encrypted: false, onStream });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  afterAll(async () => {
    client.close();
    await new Promise((r) => server.close(r));
  });

  function call(path: string, body?: string, method = 'POST'): Promise<{ headers: http2.IncomingHttpHeaders; endOnHeaders: boolean; trailers: http2.IncomingHttpHeaders; body: string; rst: number }> {
    return new Promise((resolve) => {
      const s = client.request({ ':method': method, ':path': path }, { endStream: body === undefined });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      let endOnHeaders = false;
      let data = '';
      s.on('response', (h, flags) => {
        headers = h;
        endOnHeaders = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      });
      s.on('trailers', (t) => (trailers = t));
      s.on('data', (c: Buffer) => (data += c.toString()));
      s.on('error', () => {});
      s.on('close', () => resolve({ headers, endOnHeaders, trailers, body: data, rst: s.rstCode ?? 0 }));
      if (body !== undefined) s.end(body);
    });
  }

  it('plain HTTP: status, challenge, reason, decision id, text body', async () => {
    const r = await call('/ERR_TOKEN_EXPIRED');
    expect(r.headers[':status']).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="orders", error="invalid_token"');
    expect(r.headers['x-ward-reason']).toBe('ERR_TOKEN_EXPIRED');
    expect(r.headers['x-ward-decision-id']).toBe('d-1');
    expect(r.body).toBe(`${ERROR_TABLE.ERR_TOKEN_EXPIRED.message}\n`);
  });

  it('HEAD: the status and fields in one HEADERS frame with END_STREAM, no DATA (RFC 9113 §8.1.1; regression: the body went out and clients reset the stream)', async () => {
    const r = await call('/ERR_POLICY_DENIED', undefined, 'HEAD');
    expect(r.endOnHeaders).toBe(true);
    expect(r.headers[':status']).toBe(403);
    expect(r.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
    expect(r.headers['content-length']).toBe(String(Buffer.byteLength(`${ERROR_TABLE.ERR_POLICY_DENIED.message}\n`)));
    expect(r.body).toBe('');
    expect(r.rst).toBe(0);
  });

  it('gRPC: trailers-only (one HEADERS frame with END_STREAM), HTTP 200', async () => {
    const r = await call('/ERR_POLICY_DENIED/grpc');
    expect(r.endOnHeaders).toBe(true);
    expect(r.headers[':status']).toBe(200);
    expect(r.headers['content-type']).toBe('application/grpc');
    expect(r.headers['grpc-status']).toBe('7');
    expect(r.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
    expect(r.headers['x-ward-decision-id']).toBe('d-1');
    expect(r.body).toBe('');
  });

  it('a large request body is not read: the stream closes with NO_ERROR instead of stalling', async () => {
    // 4 MiB is far beyond the 64 KiB flow-control windows: unless the stream is closed the
    // client could never finish sending, and this call would hang.
    const r = await call('/ERR_TOKEN_MISSING/grpc', 'x'.repeat(4 * 1024 * 1024));
    expect(r.headers['grpc-status']).toBe('16');
    expect(r.rst).toBe(http2.constants.NGHTTP2_NO_ERROR);
    await vi.waitFor(() => expect(serverCloses).toContainEqual({ path: '/ERR_TOKEN_MISSING/grpc', rst: 0 }));
  });

  it('gRPC failure after headers went out: status in trailers', async () => {
    const r = await call('/ERR_UPSTREAM_RESET/grpc/mid');
    expect(r.headers[':status']).toBe(200);
    expect(r.body).toBe('some data');
    expect(r.trailers['grpc-status']).toBe('14');
    expect(r.trailers['x-ward-reason']).toBe('ERR_UPSTREAM_RESET');
  });

  it('plain HTTP failure after headers went out: RST_STREAM', async () => {
    const r = await call('/ERR_UPSTREAM_RESET/mid');
    expect(r.rst).toBe(http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
});

describe('ErrorResponder.write over HTTP/1.1', () => {
  it('writes the table response; a closed target gets nothing', async () => {
    const responder = new ErrorResponder('orders');
    const server = http.createServer((req, res) => {
      if (req.url === '/closed') {
        const t = target({ res, closed: true });
        responder.write(t, 'ERR_POLICY_DENIED');
        expect(res.headersSent).toBe(false);
        res.end('untouched');
        return;
      }
      responder.write(target({ res }), 'ERR_SCOPE_INSUFFICIENT');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const get = (path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> =>
      new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
          })
          .on('error', reject);
      });
    const r = await get('/');
    expect(r.status).toBe(403);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="orders", error="insufficient_scope"');
    expect(r.headers['x-ward-reason']).toBe('ERR_SCOPE_INSUFFICIENT');
    expect(r.headers['x-ward-decision-id']).toBe('d-1');
    const c = await get('/closed');
    expect(c.body).toBe('untouched');
    await new Promise((r2) => server.close(r2));
  });
});
