import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, securityPolicy, startWard, type Ward } from '../security/support/ward.ts';
import { acceptKey, connect, handshakeText, type RawApp, sleep, startRawApp, startWsApp, type WsApp } from '../support/ws-app.ts';

/**
 * WebSocket faults found in review (docs/websockets.md, docs/security-testing.md), each a
 * regression test: a reset on a handed-over socket was an uncaught error (the end of the
 * process); a refused handshake's connection stayed open, with its place among the app's calls,
 * as long as the caller kept its side open; an app's 101 without `Connection: Upgrade` reached a
 * caller that had asked for no upgrade.
 */

let iss: TestIssuer;
let app: WsApp;
beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startWsApp();
});
afterAll(async () => {
  await app?.close();
  await iss?.close();
});

/** A client that keeps its side open after the sidecar's FIN (allowHalfOpen), as an attacker would. */
function halfOpenClient(port: number, text: string): Promise<{ socket: net.Socket; data: () => string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => {});
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.once('connect', () => {
      socket.write(text);
      resolve({ socket, data: () => Buffer.concat(chunks).toString('latin1') });
    });
  });
}

describe('a TCP reset on a handed-over socket (regression: an uncaught ECONNRESET ended the sidecar)', () => {
  let ward: Ward;
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown): void => {
    uncaught.push(e);
  };
  beforeAll(async () => {
    // Captured here so an assertion fails cleanly; in `ward sidecar` nothing catches it and the
    // process exits (the last test of this block).
    process.on('uncaughtException', onUncaught);
    ward = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'http1' } });
  });
  afterAll(async () => {
    process.off('uncaughtException', onUncaught);
    await ward?.close();
  });
  afterEach(() => {
    uncaught.length = 0;
  });

  it('an unauthenticated handshake (no token) then a reset: no uncaught error', async () => {
    for (let i = 0; i < 5; i++) {
      const c = await connect(ward.port, handshakeText('/api/ws', {}));
      c.socket.resetAndDestroy();
    }
    await sleep(300);
    expect(uncaught.map((e) => (e as NodeJS.ErrnoException).code)).toEqual([]);
  });

  it('an allowed handshake reset while the app has not answered yet: no uncaught error, counters and slots back to 0', async () => {
    const slow = await startRawApp(() => {}); // takes the handshake, never answers
    const w = await startWard({ issuer: iss.issuer, app: { port: slow.port, protocol: 'http1' }, upstream: { maxRequests: 4 } });
    try {
      const c = await connect(w.port, handshakeText('/api/ws', { authorization: `Bearer ${iss.token()}` }));
      await eventually(() => slow.conns.length === 1, 3000, 'the handshake at the app');
      c.socket.resetAndDestroy();
      await eventually(() => w.counters.activeStreams === 0 && w.counters.upstreamRequests.active === 0, 3000, 'counters back to 0');
      await sleep(100);
      expect(uncaught.map((e) => (e as NodeJS.ErrnoException).code)).toEqual([]);
    } finally {
      await w.close();
      await slow.close();
    }
  });

  describe('the real process', () => {
    const children: ChildProcess[] = [];
    afterAll(() => {
      for (const c of children) c.kill('SIGKILL');
    });
    it('`ward sidecar` survives a tokenless WebSocket handshake followed by a TCP reset', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'ward-rev-proc-'));
      writeFileSync(join(dir, 'policy.yaml'), securityPolicy('http://127.0.0.1:9'));
      writeFileSync(
        join(dir, 'sidecar.yaml'),
        `service: orders\ninbound: { listen: { host: 127.0.0.1, port: 0 } }\nupstream: { url: "http://127.0.0.1:${app.port}", protocol: http1 }\nadmin: { host: 127.0.0.1, port: 0 }\npolicy: { file: policy.yaml }\ntelemetry: { enabled: false }\n`,
      );
      const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));
      const child = spawn(process.execPath, [WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      let exit: string | null = null;
      child.on('exit', (code, signal) => (exit = `code ${code} signal ${signal}`));
      await eventually(() => stderr.includes('sidecar started'), 15_000, 'sidecar start');
      const started = JSON.parse(stderr.split('\n').find((l) => l.includes('sidecar started')) ?? '{}') as { inbound: number };
      for (let i = 0; i < 5 && exit === null; i++) {
        const c = await connect(started.inbound, handshakeText('/api/ws', {}));
        c.socket.resetAndDestroy();
        await sleep(200);
      }
      await sleep(500);
      expect({ exit, crash: /ECONNRESET|EPIPE/.exec(stderr)?.[0] ?? null }).toEqual({ exit: null, crash: null });
    });
  });
});

describe('a refused handshake closes its connection (regression: a caller that kept its side open held it, and its upstream.maxRequests place, for ever)', () => {
  let ward: Ward;
  beforeAll(async () => {
    ward = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'http1' }, upstream: { maxRequests: 1 } });
  });
  afterAll(async () => {
    await ward?.close();
  });

  it('a refused plain request with Connection: close is closed by the sidecar even if the caller keeps its side open (as a handshake now is)', async () => {
    const c = await halfOpenClient(ward.port, 'GET /api/plain HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n');
    await eventually(() => c.data().startsWith('HTTP/1.1 401'), 3000, 'the 401');
    await eventually(() => ward.counters.h1Connections === 0 && ward.counters.activeStreams === 0, 3000, 'the connection closed');
    c.socket.destroy();
  });

  it('a refused handshake (401) whose caller keeps its side open: closed by the sidecar within 6 s', async () => {
    const c = await halfOpenClient(ward.port, handshakeText('/api/ws', {}));
    await eventually(() => c.data().startsWith('HTTP/1.1 401'), 3000, 'the 401');
    let closed = true;
    try {
      await eventually(() => ward.counters.h1Connections === 0 && ward.counters.activeStreams === 0, 6000, 'the connection closed');
    } catch {
      closed = false;
    }
    const counters = { h1Connections: ward.counters.h1Connections, activeStreams: ward.counters.activeStreams };
    c.socket.destroy();
    await eventually(() => ward.counters.h1Connections === 0, 3000, 'cleanup');
    expect({ closed, counters }).toEqual({ closed: true, counters: { h1Connections: 0, activeStreams: 0 } });
  }, 15_000);

  it('and a drain after it does not wait for its deadline', async () => {
    const w = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'http1' } });
    const c = await halfOpenClient(w.port, handshakeText('/api/ws', {}));
    await eventually(() => c.data().startsWith('HTTP/1.1 401'), 3000, 'the 401');
    const t0 = Date.now();
    await w.inbound.drain(3000);
    const took = Date.now() - t0;
    c.socket.destroy();
    await w.close();
    expect(took).toBeLessThan(1000);
  });

  it('a handshake the app refused (403), caller keeps its side open: its upstream.maxRequests place is given back, the next call is served', async () => {
    const c = await halfOpenClient(ward.port, handshakeText('/api/refuse', { authorization: `Bearer ${iss.token()}` }));
    await eventually(() => c.data().startsWith('HTTP/1.1 403'), 3000, 'the app\'s 403');
    await sleep(500);
    const slotsHeld = ward.counters.upstreamRequests.active;
    const res = await fetch(`http://127.0.0.1:${ward.port}/api/plain`, { headers: { authorization: `Bearer ${iss.token()}` } });
    const reason = res.headers.get('x-ward-reason');
    await res.text();
    c.socket.destroy();
    await eventually(() => ward.counters.upstreamRequests.active === 0, 3000, 'cleanup');
    expect({ slotsHeld, status: res.status, reason }).toEqual({ slotsHeld: 0, status: 200, reason: null });
  });
});

describe('an app\'s 101 without `Connection: Upgrade` (regression: Node reports it as a response, and it was relayed)', () => {
  let raw: RawApp;
  let ward: Ward;
  beforeAll(async () => {
    raw = await startRawApp((s) => {
      // `Upgrade: websocket` but no `Connection: Upgrade`: Node's client reports this 101 as a
      // 'response', not an 'upgrade'
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${acceptKey('dGhlIHNhbXBsZSBub25jZQ==')}\r\n\r\n`);
    });
    ward = await startWard({ issuer: iss.issuer, app: { port: raw.port, protocol: 'http1' } });
  });
  afterAll(async () => {
    await ward?.close();
    await raw?.close();
  });

  it('a plain GET (no Upgrade asked) is never answered 101: 502 ERR_UPSTREAM_RESET as for any unasked-for 101', async () => {
    const c = await connect(ward.port, `GET /api/plain HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${iss.token()}\r\n\r\n`);
    await eventually(() => c.data().includes('\r\n\r\n'), 3000, 'an answer');
    const head = c.data().toString('latin1');
    c.socket.destroy();
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 502 Bad Gateway');
  });
});
