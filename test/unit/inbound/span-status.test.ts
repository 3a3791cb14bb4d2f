import type http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/lib/log.ts';
import { createInbound, type Inbound } from '../../../src/inbound/server.ts';
import type { CallTracer } from '../../../src/inbound/types.ts';
import { h2Connect, h2Request, startH2App, TEST_POLICY, testAuthenticate, testConfig, testEvaluate, testExtract } from './harness.ts';

/**
 * What a call's span is ended with: the status the caller was sent. Responses relayed from an
 * HTTP/2 app go out as raw header fields (forward.ts), denials as header objects (respond.ts);
 * both must report the status, and a gRPC status wherever it was sent.
 */
describe('span end status', () => {
  const ended: { status: number; grpcStatus: number; failed: boolean }[] = [];
  const tracer: CallTracer = {
    now: () => 0,
    begin: () => ({ end: (status, grpcStatus, failed) => void ended.push({ status, grpcStatus, failed }) }),
  };
  let app: Awaited<ReturnType<typeof startH2App>>;
  let inbound: Inbound;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    app = await startH2App();
    inbound = await createInbound({
      config: testConfig({ upstreamPort: app.port }),
      authenticate: testAuthenticate(),
      extractBearer: testExtract,
      policy: () => TEST_POLICY,
      evaluate: testEvaluate(),
      log: silentLogger,
      clock: () => 1_700_000_000_000,
      tracer,
    });
    session = await h2Connect(inbound.ports.cleartext);
  });

  afterAll(async () => {
    session.destroy();
    await inbound.close();
    await app.close();
  });

  const last = async (n: number): Promise<{ status: number; grpcStatus: number; failed: boolean }> => {
    for (let i = 0; i < 100 && ended.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    return ended[n - 1] as { status: number; grpcStatus: number; failed: boolean };
  };

  it('reports the app status of a relayed HTTP/2 response', async () => {
    const r = await h2Request(session, { ':method': 'GET', ':path': '/hello', authorization: 'Bearer good-alice' });
    expect(r.headers[':status']).toBe(200);
    expect(await last(1)).toEqual({ status: 200, grpcStatus: -1, failed: false });
  });

  it('reports a denial written by the sidecar', async () => {
    const r = await h2Request(session, { ':method': 'GET', ':path': '/admin', authorization: 'Bearer good-alice' });
    expect(r.headers[':status']).toBe(403);
    expect(await last(2)).toEqual({ status: 403, grpcStatus: -1, failed: false });
  });

  it('reports a gRPC denial with its grpc-status', async () => {
    const r = await h2Request(
      session,
      { ':method': 'POST', ':path': '/ward.demo.v1.Orders/DeleteOrder', 'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer good-alice' },
      Buffer.alloc(5),
    );
    expect(r.headers['grpc-status'] ?? r.trailers['grpc-status']).toBe('7');
    expect(await last(3)).toEqual({ status: 200, grpcStatus: 7, failed: false });
  });
});
