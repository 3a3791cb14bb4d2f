import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, startWard, type Ward } from '../security/support/ward.ts';
import { acceptKey, readFrames, startWsApp, type WsApp } from '../support/ws-app.ts';
import { makeSelfSignedCert, startProxy, type TestProxy, testConfig, type TlsFiles } from '../unit/inbound/harness.ts';

/**
 * WebSockets through the sidecar (docs/websockets.md): an HTTP/1.1 handshake is a call
 * like any other: its token checked and the policy applied to its GET, refused with the usual
 * status and reason, and the app never sees a refused one. An allowed handshake goes to the
 * app with the identity headers; the app's 101 comes back (its forged identity fields dropped),
 * then bytes flow both ways until either side closes. Before this the sidecar dropped `Upgrade`
 * and the app saw a plain GET: no WebSocket could pass at all.
 */

let iss: TestIssuer;
let app: WsApp;
let ward: Ward;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startWsApp();
  ward = await startWard({ issuer: iss.issuer, app: { port: app.port, protocol: 'http1' }, upstream: { requestTimeoutMs: 300 } });
});
afterAll(async () => {
  await ward?.close();
  await app?.close();
  await iss?.close();
});
beforeEach(() => {
  app.handshakes.length = 0;
  app.requests.length = 0;
});

interface RawReply {
  readonly head: string;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly socket: net.Socket;
  /** Bytes after the response head. */
  rest: Buffer;
  readonly closed: Promise<void>;
}

/** A handshake written by hand on its own connection; resolves with the response head. */
function handshake(path: string, headers: Record<string, string>, extra: Buffer = Buffer.alloc(0)): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(ward.port, '127.0.0.1');
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    let buf = Buffer.alloc(0);
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.on('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${lines}\r\n`);
      socket.write(extra);
    });
    socket.on('error', reject);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const head = buf.subarray(0, end).toString('latin1');
      const [statusLine, ...fieldLines] = head.split('\r\n');
      const fields: Record<string, string> = {};
      for (const l of fieldLines) fields[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
      const reply: RawReply = { head, status: Number(statusLine?.split(' ')[1]), headers: fields, socket, rest: buf.subarray(end + 4), closed };
      socket.on('data', (more: Buffer) => (reply.rest = Buffer.concat([reply.rest, more])));
      resolve(reply);
    };
    socket.on('data', onData);
  });
}

/** One masked client frame. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] = (masked[i] as number) ^ (mask[i & 3] as number);
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

describe('WebSocket handshakes are judged like any call', () => {
  it('a real WebSocket client with a good token: opens, messages go both ways through the tunnel, and it outlives requestTimeoutMs', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${ward.port}/api/ws`, { headers: { authorization: `Bearer ${iss.token()}` } });
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error('handshake failed'));
    });
    ws.onmessage = (m) => got.push(String(m.data));
    ws.send('hello');
    await eventually(() => got.length === 1, 3000, 'first echo');
    await new Promise((r) => setTimeout(r, 500)); // past upstream.requestTimeoutMs (300 ms)
    ws.send('again');
    await eventually(() => got.length === 2, 3000, 'second echo');
    expect(got).toEqual(['echo:hello', 'echo:again']);
    // the app saw the handshake once, with the caller's identity
    expect(app.handshakes).toHaveLength(1);
    const h = app.handshakes[0]?.headers ?? {};
    expect(h['x-ward-subject']).toBe(iss.claims()['sub']);
    expect(h['x-ward-decision-id']).toMatch(/./);
    expect(h.upgrade).toBe('websocket');
    expect(h['sec-websocket-key']).toMatch(/=$/);
    expect(app.requests).toEqual([]);
    expect(ward.lastCode()).toBeNull();
    // closing from the client closes the app's side
    ws.close(1000);
    await eventually(() => app.open() === 0, 3000, 'the app side closed');
  });

  it('the 101 carries the app\'s handshake fields and the sidecar\'s decision id, not the sidecar fields the app forged; bytes that came with the handshake reach the app', async () => {
    const hello = clientFrame(0x1, Buffer.from('early'));
    const r = await handshake('/api/ws', { authorization: `Bearer ${iss.token()}`, 'sec-websocket-protocol': 'chat, superchat' }, hello);
    expect(r.status).toBe(101);
    expect(r.headers['sec-websocket-accept']).toBe(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='));
    expect(r.headers['sec-websocket-protocol']).toBe('chat');
    expect(r.headers['upgrade']).toBe('websocket');
    expect(r.headers['x-app']).toBe('ws-app');
    expect(r.headers['x-ward-decision-id']).toMatch(/./);
    expect(r.headers['x-ward-decision-id']).not.toBe('forged-by-app');
    expect(r.headers['x-ward-reason']).toBeUndefined();
    expect(r.head.match(/x-ward-decision-id/gi)).toHaveLength(1);
    await eventually(() => readFrames(r.rest).frames.length === 1, 3000, 'echo of the early frame');
    expect(readFrames(r.rest).frames[0]?.payload.toString()).toBe('echo:early');
    // the app closing ends the caller's connection
    r.socket.write(clientFrame(0x8, Buffer.from([0x03, 0xe8])));
    await r.closed;
    await eventually(() => app.open() === 0, 3000, 'the app side closed');
  });

  it('the caller dropping its connection (no close frame) closes the app\'s side of the tunnel', async () => {
    const r = await handshake('/api/ws', { authorization: `Bearer ${iss.token()}` });
    expect(r.status).toBe(101);
    await eventually(() => app.open() === 1, 3000, 'the tunnel open at the app');
    r.socket.destroy();
    await eventually(() => app.open() === 0, 3000, 'the app side closed');
  });

  it.each([
    ['no token', '/api/ws', {}, 401, 'ERR_TOKEN_MISSING'],
    ['a forged signature', '/api/ws', { authorization: `Bearer ${'x'}` }, 401, 'ERR_TOKEN_MALFORMED'],
    ['a route the policy denies', '/api/internal/ws', { authorization: 'TOKEN' }, 403, 'ERR_POLICY_DENIED'],
    ['a token in the query', '/api/ws?access_token=abc', { authorization: 'TOKEN' }, 400, 'ERR_TOKEN_IN_QUERY'],
  ] as const)('%s: refused with its status and reason, the connection closed, the app never sees it', async (_why, path, headers, status, reason) => {
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) h[k] = v === 'TOKEN' ? `Bearer ${iss.token()}` : v;
    const r = await handshake(path, h);
    expect({ status: r.status, reason: r.headers['x-ward-reason'] }).toEqual({ status, reason });
    await r.closed;
    expect(app.handshakes).toEqual([]);
    expect(app.requests).toEqual([]);
  });

  it('a handshake with a body (Content-Length or chunked) is refused before anything reaches the app', async () => {
    for (const framing of [{ 'content-length': '5' }, { 'transfer-encoding': 'chunked' }]) {
      const r = await handshake('/api/ws', { authorization: `Bearer ${iss.token()}`, ...framing }, Buffer.from('hello'));
      expect({ status: r.status, reason: r.headers['x-ward-reason'] }).toEqual({ status: 400, reason: 'ERR_REQUEST_INVALID' });
      await r.closed;
    }
    expect(app.handshakes).toEqual([]);
  });

  it('an app that refuses the handshake (403): its answer is relayed and the connection closed, nothing tunnelled', async () => {
    const r = await handshake('/api/refuse', { authorization: `Bearer ${iss.token()}` });
    expect(r.status).toBe(403);
    await r.closed;
    expect(r.rest.toString()).toBe('refused');
    expect(app.handshakes.map((x) => x.path)).toEqual(['/api/refuse']);
  });

  it('an app that switches to another protocol than websocket: 502 ERR_UPSTREAM_RESET, its bytes never reach the caller', async () => {
    const r = await handshake('/api/other', { authorization: `Bearer ${iss.token()}` });
    expect({ status: r.status, reason: r.headers['x-ward-reason'] }).toEqual({ status: 502, reason: 'ERR_UPSTREAM_RESET' });
    await r.closed;
    expect(r.rest.toString()).not.toContain('not-websocket');
    await eventually(() => app.open() === 0, 3000, 'the app side closed');
  });

  it('a handshake pipelined behind a request still being answered closes the connection, the sidecar unharmed (regression: assigning the busy socket threw)', async () => {
    const s = net.connect(ward.port, '127.0.0.1');
    const data: Buffer[] = [];
    s.on('data', (d: Buffer) => data.push(d));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.on('error', () => {});
    const t = `Bearer ${iss.token()}`;
    s.write(`GET /api/plain HTTP/1.1\r\nHost: orders\r\nAuthorization: ${t}\r\n\r\nGET /api/ws HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: ${t}\r\n\r\n`);
    await closed;
    expect(app.handshakes).toEqual([]);
    // the sidecar still serves
    const ws = new WebSocket(`ws://127.0.0.1:${ward.port}/api/ws`, { headers: { authorization: t } });
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error('handshake failed'));
    });
    ws.close();
  });

  it('another Upgrade (h2c) is not a tunnel: the app gets a plain GET without Upgrade, as before', async () => {
    const res = await fetch(`http://127.0.0.1:${ward.port}/api/plain`, { headers: { authorization: `Bearer ${iss.token()}` } });
    expect(res.status).toBe(200);
    await res.text();
    const s = net.connect(ward.port, '127.0.0.1');
    const data: Buffer[] = [];
    s.on('data', (d: Buffer) => data.push(d));
    s.write(`GET /api/h2c HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nAuthorization: Bearer ${iss.token()}\r\n\r\n`);
    await eventually(() => Buffer.concat(data).toString().includes('plain'), 3000, 'the plain answer');
    s.destroy();
    expect(Buffer.concat(data).toString()).toMatch(/^HTTP\/1\.1 200/);
    expect(app.handshakes).toEqual([]);
    expect(app.requests.map((x) => [x.path, x.headers.upgrade])).toEqual([['/api/plain', undefined], ['/api/h2c', undefined]]);
  });
});

describe('WebSockets on the TLS listener (ALPN http/1.1), as a browser opens wss://', () => {
  let certs: TlsFiles;
  let proxy: TestProxy;
  let tlsApp: WsApp;

  beforeAll(async () => {
    certs = makeSelfSignedCert();
    tlsApp = await startWsApp();
    proxy = await startProxy(testConfig({ upstreamPort: tlsApp.port, protocol: 'http1', tls: { certFile: certs.certFile, keyFile: certs.keyFile } }));
  });
  afterAll(async () => {
    await proxy?.close();
    await tlsApp?.close();
    certs?.cleanup();
  });

  it('judges the handshake and tunnels the WebSocket over TLS (a browser opens a WebSocket connection with ALPN http/1.1)', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: proxy.inbound.ports.tls, ca: readFileSync(certs.certFile), servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve());
      socket.once('error', reject);
    });
    await tunnelOver(socket);
  });

  async function tunnelOver(socket: tls.TLSSocket): Promise<void> {
    expect(socket.alpnProtocol).toBe('http/1.1');
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
    socket.write('GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer good-alice\r\n\r\n');
    await eventually(() => buf.includes('\r\n\r\n'), 3000, 'the 101');
    expect(buf.subarray(0, buf.indexOf('\r\n')).toString()).toBe('HTTP/1.1 101 Switching Protocols');
    const at = buf.indexOf('\r\n\r\n') + 4;
    socket.write(clientFrame(0x1, Buffer.from('secret')));
    await eventually(() => readFrames(buf.subarray(at)).frames.length === 1, 3000, 'the echo');
    expect(readFrames(buf.subarray(at)).frames[0]?.payload.toString()).toBe('echo:secret');
    expect(tlsApp.handshakes[0]?.headers['x-ward-subject']).toBe('alice');
    socket.destroy();
    await eventually(() => tlsApp.open() === 0, 3000, 'the app side closed');
  }
});
