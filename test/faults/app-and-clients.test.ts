import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OrdersClient } from '../integration/harness.ts';
import { type RecordingApp, startRecordingApp } from '../security/support/app.ts';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, h2Once, settledHeap, startWard, type Ward } from '../security/support/ward.ts';

/**
 * Fault injection on the app side and from slow peers, with real processes and sockets:
 * - the app (the sample gRPC app in its own process) is SIGKILLed under load and restarted on
 *   the same port: calls in flight and during the outage end with a coded UNAVAILABLE, none
 *   hangs, and the sidecar's pool reconnects by itself;
 * - slow clients (slowloris headers, silent connections, clients that never read a large
 *   response) cost bounded memory and do not stop other clients from being served;
 * - slow apps meet the call's deadline (`grpc-timeout`, `upstream.requestTimeoutMs`) and see the
 *   cancellation.
 */

let iss: TestIssuer;
let token: string;

beforeAll(async () => {
  iss = await startTestIssuer();
  token = iss.token();
});
afterAll(async () => {
  await iss.close();
});

// ---- the app in its own process

const ORDERS_APP = fileURLToPath(new URL('../../src/demo/orders-app.ts', import.meta.url));

function spawnApp(port: number): Promise<{ proc: ChildProcess; port: number }> {
  const code = `const { startOrdersApp } = await import(${JSON.stringify(ORDERS_APP)}); const a = await startOrdersApp({ port: ${port} }); process.stdout.write('listening ' + a.port + '\\n');`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening (\d+)/.exec(out);
      if (m?.[1] !== undefined) resolve({ proc, port: Number(m[1]) });
    });
    proc.on('exit', (c) => reject(new Error(`app exited ${c}`)));
  });
}

describe('the app crashes and restarts under load', () => {
  let ward: Ward;
  let app: { proc: ChildProcess; port: number };

  beforeAll(async () => {
    app = await spawnApp(0);
    ward = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'h2c' }, upstream: { connectTimeoutMs: 500 } });
  });
  afterAll(async () => {
    await ward.close();
    app.proc.kill('SIGKILL');
  });

  it('in-flight and outage calls get UNAVAILABLE with a reason, none hangs; service resumes once the app is back', async () => {
    const outcomes: { code: grpc.status; reason: string | undefined; phase: string }[] = [];
    let phase = 'before';
    let stop = false;
    const client = new OrdersClient(`127.0.0.1:${ward.port}`);
    const worker = async (): Promise<void> => {
      while (!stop) {
        const r = await client.unary('GetOrder', { id: '1' }, token, 5000);
        // the phase in which the call ended: one started before the kill may end in it
        outcomes.push({ code: r.code, reason: r.trailers['x-ward-reason'], phase });
        if (r.code !== grpc.status.OK) await new Promise((res) => setTimeout(res, 5));
      }
    };
    const load = Array.from({ length: 6 }, () => worker());
    await eventually(() => outcomes.length >= 30, 10_000, 'load before the crash');
    phase = 'crash';
    app.proc.kill('SIGKILL');
    await new Promise<void>((r) => app.proc.once('exit', () => r()));
    await eventually(() => outcomes.filter((o) => o.phase === 'crash').length >= 20, 10_000, 'calls during the outage');
    phase = 'restarting';
    app = await spawnApp(app.port);
    phase = 'after';
    await eventually(() => outcomes.filter((o) => o.phase === 'after' && o.code === grpc.status.OK).length >= 30, 15_000, 'service to resume');
    stop = true;
    await Promise.all(load);
    client.close();

    expect(outcomes.filter((o) => o.phase === 'before').every((o) => o.code === grpc.status.OK)).toBe(true);
    const failed = outcomes.filter((o) => o.code !== grpc.status.OK);
    expect(failed.length).toBeGreaterThan(0);
    for (const f of failed) {
      // Every failure is the sidecar's coded answer, also for calls cut mid-response (before the
      // fix those ended with empty trailers: "Call ended without gRPC status").
      expect({ code: f.code, reason: f.reason }).toSatisfy(
        (o: { code: grpc.status; reason: string | undefined }) =>
          o.code === grpc.status.UNAVAILABLE && (o.reason === 'ERR_UPSTREAM_UNAVAILABLE' || o.reason === 'ERR_UPSTREAM_RESET'),
      );
    }
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'activeStreams back to 0');
    expect(ward.counters.upstreamErrors).toBe(failed.length);
  });
});

// ---- slow clients, slow apps

describe('slow clients and slow apps', () => {
  let app: RecordingApp;
  let ward: Ward;

  beforeAll(async () => {
    app = await startRecordingApp('h2c');
    ward = await startWard({ issuer: iss.issuer, app, upstream: { requestTimeoutMs: 400 } });
  });
  afterAll(async () => {
    await ward.close();
    await app.close();
  });

  async function normalCall(): Promise<void> {
    const r = await h2Once(ward.port, { ':path': '/api/ok', authorization: `Bearer ${token}` });
    expect(r.status).toBe(200);
  }

  it('slowloris: 200 connections trickling an HTTP/1.1 header block and 200 silent ones do not starve other clients', async () => {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 200; i++) {
      const s = net.connect(ward.port, '127.0.0.1', () => s.write('GET /api/x HTTP/1.1\r\nHost: orders\r\nX-Slow: '));
      s.on('error', () => {});
      sockets.push(s);
      const q = net.connect(ward.port, '127.0.0.1');
      q.on('error', () => {});
      sockets.push(q);
    }
    const drip = setInterval(() => {
      for (const s of sockets) if (!s.destroyed && s.writable) s.write('a');
    }, 50);
    try {
      for (let i = 0; i < 10; i++) await normalCall();
    } finally {
      clearInterval(drip);
      for (const s of sockets) s.destroy();
    }
    await eventually(() => ward.counters.h1Connections === 0 && ward.counters.activeStreams === 0, 5000, 'connections released');
    expect(app.seen.filter((s) => s.path === '/api/x')).toEqual([]);
  });

  it('clients that never read an 8 MiB response (HTTP/2 window 0, paused HTTP/1.1 sockets): memory bounded, all released', async () => {
    const heap0 = await settledHeap();
    const sessions: http2.ClientHttp2Session[] = [];
    const h1s: http.ClientRequest[] = [];
    for (let i = 0; i < 8; i++) {
      const s = http2.connect(ward.url, { settings: { initialWindowSize: 0 } });
      s.on('error', () => {});
      sessions.push(s);
      for (let k = 0; k < 4; k++) {
        const st = s.request({ ':path': '/big', authorization: `Bearer ${token}` });
        st.on('error', () => {});
      }
      const req = http.get({ host: '127.0.0.1', port: ward.port, path: '/big', headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
        res.pause();
        res.socket.pause();
      });
      req.on('error', () => {});
      h1s.push(req);
    }
    await eventually(() => app.seen.filter((s) => s.path === '/big').length === 40, 5000, 'every big response requested');
    await new Promise((r) => setTimeout(r, 300));
    // 40 × 8 MiB would be 320 MiB if the sidecar buffered what the clients do not read
    expect(await settledHeap()).toBeLessThan(heap0 + 96 * 1024 * 1024);
    await normalCall();
    for (const s of sessions) s.destroy();
    for (const r of h1s) r.destroy();
    await eventually(() => ward.counters.activeStreams === 0, 5000, 'streams released');
    await eventually(() => app.open() === 0, 5000, 'app streams cancelled');
  });

  it('a slow app meets requestTimeoutMs: 504 ERR_UPSTREAM_TIMEOUT, and the app sees the cancellation', async () => {
    app.reset();
    const r = await h2Once(ward.port, { ':path': '/slow/x', authorization: `Bearer ${token}` });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 504, reason: 'ERR_UPSTREAM_TIMEOUT' });
    expect(app.seen.map((s) => s.path)).toEqual(['/slow/x']);
    await eventually(() => app.open() === 0, 3000, 'the app stream cancelled');
  });

  it('a client giving up on a slow app cancels the app\'s stream', async () => {
    app.reset();
    const s = http2.connect(ward.url);
    const st = s.request({ ':path': '/slow/cancel', authorization: `Bearer ${token}` });
    st.on('error', () => {});
    await eventually(() => app.seen.length === 1, 3000, 'the call to reach the app');
    st.close(http2.constants.NGHTTP2_CANCEL);
    await eventually(() => app.open() === 0, 3000, 'the app stream cancelled');
    s.destroy();
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams released');
  });
});

describe('slow gRPC app meets grpc-timeout', () => {
  let orders: { proc: ChildProcess; port: number };
  let ward: Ward;

  beforeAll(async () => {
    orders = await spawnApp(0);
    ward = await startWard({ issuer: iss.issuer, app: { port: orders.port, protocol: 'h2c' } });
  });
  afterAll(async () => {
    await ward.close();
    orders.proc.kill('SIGKILL');
  });

  it('Sleep(5 s) with a 200 ms deadline: DEADLINE_EXCEEDED from the sidecar or the client, never a hang; nothing left open', async () => {
    const client = new OrdersClient(`127.0.0.1:${ward.port}`);
    const r = await client.unary('Sleep', { ms: 5000 }, token, 200);
    client.close();
    expect(r.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams released');
  });
});

// ---- the app dies in the middle of a response

describe('the app dies mid-response: the caller never gets a truncated response passed off as complete', () => {
  let ward: Ward;
  let app: http2.Http2Server;

  beforeAll(async () => {
    // Answers headers and part of the body, then its process "dies" (the connection drops).
    app = http2.createServer();
    app.on('stream', (st, h) => {
      const grpcCall = String(h['content-type'] ?? '').startsWith('application/grpc');
      st.on('error', () => {});
      st.respond({ ':status': 200, 'content-type': grpcCall ? 'application/grpc' : 'text/plain' }, { waitForTrailers: true });
      st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
      st.write(grpcCall ? Buffer.from([0, 0, 0, 0, 10, 0x0a, 0x01]) : 'partial body ');
      setTimeout(() => st.session?.socket.destroy(), 20);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    ward = await startWard({ issuer: iss.issuer, app: { port: (app.address() as net.AddressInfo).port, protocol: 'h2c' } });
  });
  afterAll(async () => {
    await ward.close();
    await new Promise<void>((r) => app.close(() => r()));
  });

  it('gRPC: UNAVAILABLE with ERR_UPSTREAM_RESET in trailers, not an OK or a status-less end', async () => {
    const client = new OrdersClient(`127.0.0.1:${ward.port}`);
    const r = await client.unary('GetOrder', { id: '1' }, token, 5000);
    client.close();
    expect({ code: r.code, reason: r.trailers['x-ward-reason'] }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'ERR_UPSTREAM_RESET' });
  });

  it('HTTP/2 caller: the stream is reset (INTERNAL_ERROR), never ended cleanly', async () => {
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: `Bearer ${token}` });
    expect(r.status).toBe(200);
    expect(r.body).toBe('partial body ');
    expect(r.rstCode).toBe(http2.constants.NGHTTP2_INTERNAL_ERROR);
  });

  it('HTTP/1.1 caller: the connection drops before the end of the chunked body', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: ward.port, path: '/api/x', headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.complete ? 'complete' : 'incomplete'));
        res.on('aborted', () => resolve('aborted'));
        res.on('error', () => resolve('aborted'));
      });
      req.on('error', () => resolve('error'));
    });
    expect(outcome).not.toBe('complete');
  });
});
