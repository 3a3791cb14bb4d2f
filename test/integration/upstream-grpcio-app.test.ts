import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import type http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, h2Connect, h2Request, startProxy, testConfig, type TestProxy } from '../unit/inbound/harness.ts';

/**
 * A non-Node app behind the sidecar: a Python grpcio server (Debian python3-grpcio; .ci/run
 * installs it, so a missing one fails here rather than skipping) reached through ward's own
 * HTTP/2 client, with real grpc-js clients in front. The app uses grpc's generic handlers with
 * no (de)serializers, so messages are raw bytes and no generated code is needed.
 *
 * test.Echo/Unary: `fail` → NOT_FOUND before any message (a Trailers-Only response, with
 * trailing metadata); otherwise `echo:<request>`, initial metadata `x-app-initial`, and trailers
 * echoing the identity header ward set. test.Echo/Stream: the request is a count N; answers
 * `msg-0` … `msg-(N-1)`.
 */
const APP = String.raw`
import sys
from concurrent import futures

import grpc


def unary(request, context):
    md = dict(context.invocation_metadata())
    if request == b"fail":
        context.set_trailing_metadata((("x-app-detail", "no-such-order"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "order o-404 not found")
    context.send_initial_metadata((("x-app-initial", "yes"),))
    context.set_trailing_metadata((("x-app-trailer", "done"), ("x-seen-subject", md.get("x-ward-subject", "")),
                                   ("x-seen-authorization", "yes" if "authorization" in md else "no")))
    return b"echo:" + request


def stream(request, context):
    for i in range(int(request.decode())):
        yield b"msg-%d" % i


handler = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()  # runs until the test closes our stdin
server.stop(0)
`;

interface PythonApp {
  readonly port: number;
  close(): Promise<void>;
}

async function startPythonApp(): Promise<PythonApp> {
  const child: ChildProcessWithoutNullStreams = spawn('/usr/bin/python3', ['-c', APP]);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`python grpcio app did not start: ${stderr}`)), 15_000);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m !== null) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`python grpcio app exited (${code}): ${stderr}`));
    });
    child.once('error', (err) => {
      clearTimeout(t);
      reject(new Error(`python grpcio app could not start: ${err.message}`));
    });
  });
  return {
    port,
    close: async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

const identity = (b: Buffer): Buffer => b;

interface Outcome {
  readonly err: grpc.ServiceError | null;
  readonly res: Buffer | undefined;
  readonly headers: grpc.Metadata | undefined;
  readonly trailers: grpc.Metadata | undefined;
}

function unary(client: grpc.Client, req: string, md: grpc.Metadata): Promise<Outcome> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined;
    let trailers: grpc.Metadata | undefined;
    const call = client.makeUnaryRequest('/test.Echo/Unary', identity, identity, Buffer.from(req), md, {}, (err, res) => {
      // `status` may follow the callback: read the trailers a turn later
      setImmediate(() => resolve({ err, res, headers, trailers: trailers ?? err?.metadata }));
    });
    call.on('metadata', (m: grpc.Metadata) => {
      headers = m;
    });
    call.on('status', (s: grpc.StatusObject) => {
      trailers = s.metadata;
    });
  });
}

let app: PythonApp;
let proxy: TestProxy;
let client: grpc.Client;

beforeAll(async () => {
  app = await startPythonApp();
  proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'h2c' }));
  client = new grpc.Client(`127.0.0.1:${proxy.port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await proxy?.close();
  await app?.close();
});

describe('a Python grpcio app behind the sidecar', () => {
  it('100 concurrent unary calls: payloads, initial metadata and trailers come back', async () => {
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => unary(client, `req-${i}`, bearer('good-alice'))));
    for (const [i, r] of results.entries()) {
      expect(r.err).toBeNull();
      expect(r.res?.toString()).toBe(`echo:req-${i}`);
      expect(r.headers?.get('x-app-initial')).toEqual(['yes']);
      expect(r.trailers?.get('x-app-trailer')).toEqual(['done']);
      // the app sees the identity ward verified, not a header the caller could set
      expect(r.trailers?.get('x-seen-subject')).toEqual(['alice']);
      expect(r.trailers?.get('x-seen-authorization')).toEqual(['yes']); // stripAuthorization is off
    }
    const allowed = proxy.decisions.filter((d) => d.decision === 'allow' && d.route === '/test.Echo/Unary');
    expect(allowed).toHaveLength(100);
    expect(allowed[0]).toMatchObject({ protocol: 'grpc', subject: 'alice' });
  });

  it('a server stream of 1000 messages arrives whole and in order', async () => {
    const call = client.makeServerStreamRequest('/test.Echo/Stream', identity, identity, Buffer.from('1000'), bearer('good-alice'), {});
    const got: string[] = [];
    call.on('data', (m: Buffer) => got.push(m.toString()));
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    expect(status.code).toBe(grpc.status.OK);
    expect(got).toHaveLength(1000);
    expect(got).toEqual(Array.from({ length: 1000 }, (_, i) => `msg-${i}`));
  });

  it('an app failure (NOT_FOUND, with message and trailing metadata) reaches the client', async () => {
    const r = await unary(client, 'fail', bearer('good-alice'));
    expect(r.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.err?.details).toBe('order o-404 not found');
    expect(r.trailers?.get('x-app-detail')).toEqual(['no-such-order']);
    expect(r.res).toBeUndefined();
  });

  it('the failure goes through as Trailers-Only: one HEADERS block with grpc-status, no trailers', async () => {
    const session = await h2Connect(proxy.port);
    try {
      const frame = Buffer.from([0, 0, 0, 0, 4, ...Buffer.from('fail')]);
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST',
        ':path': '/test.Echo/Unary',
        'content-type': 'application/grpc',
        te: 'trailers',
        authorization: 'Bearer good-alice',
      };
      const r = await h2Request(session, headers, frame);
      expect(r.headers[':status']).toBe(200);
      expect(r.headers['grpc-status']).toBe(String(grpc.status.NOT_FOUND));
      expect(decodeURIComponent(String(r.headers['grpc-message']))).toBe('order o-404 not found');
      expect(r.headers['x-app-detail']).toBe('no-such-order');
      expect(r.body).toBe('');
      expect(r.trailers).toEqual({});
      expect(r.rstCode).toBe(0);
    } finally {
      session.close();
    }
  });

  it('a call without a token is refused by ward and never reaches the app', async () => {
    const r = await unary(client, 'req-x', new grpc.Metadata());
    expect(r.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(r.trailers?.get('x-ward-reason')).toEqual(['ERR_TOKEN_MISSING']);
  });
});
