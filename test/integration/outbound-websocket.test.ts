import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import type { TokenOutcome } from '../../src/exchange/broker.ts';
import type { TokenTarget } from '../../src/exchange/token-client.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound, type Outbound } from '../../src/outbound/server.ts';
import { eventually } from '../security/support/ward.ts';
import { connect, handshakeText, readFrames, startWsApp, type WsApp } from '../support/ws-app.ts';
import { makeSelfSignedCert, type TlsFiles } from '../unit/inbound/harness.ts';

/**
 * An app's WebSocket to another service through the egress listener (docs/websockets.md): the
 * handshake is routed by its Host like any call, its token exchanged for the destination's, and
 * then tunnelled; a destination configured as HTTP/2 refuses it (no RFC 8441), and so do the
 * usual refusals (undeclared destination, a refused exchange). Before this the egress listener
 * sent the handshake on as a plain GET without `Upgrade`.
 */

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

function maskedText(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  const out = Buffer.from(payload);
  for (let i = 0; i < out.length; i++) out[i] = (out[i] as number) ^ (mask[i & 3] as number);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, out]);
}

describe('outbound: WebSockets through the egress listener', () => {
  let chat: WsApp;
  let secure: WsApp;
  let certs: TlsFiles;
  /** An https:// destination that answers every request, a handshake included, 200, keep-alive. */
  let plainTls: https.Server;
  const plainTlsSockets = new Set<Socket>();
  let egress: Outbound;
  const asked: { target: string; subject: string | null }[] = [];

  beforeAll(async () => {
    chat = await startWsApp();
    certs = makeSelfSignedCert();
    secure = await startWsApp({ tls: { cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) } });
    plainTls = https.createServer({ cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) }, (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' }).end('plain');
    });
    plainTls.keepAliveTimeout = 60_000;
    plainTls.on('connection', (sock: Socket) => {
      plainTlsSockets.add(sock);
      sock.on('close', () => plainTlsSockets.delete(sock));
    });
    await new Promise<void>((r) => plainTls.listen(0, '127.0.0.1', () => r()));
    const plainPort = (plainTls.address() as AddressInfo).port;
    const config = outboundConfigSchema.parse({
      listen: { host: '127.0.0.1', port: 0 },
      destinations: [
        { name: 'chat', url: `http://127.0.0.1:${chat.port}`, protocol: 'http1', resource: 'urn:ward:chat' },
        { name: 'secure-chat', url: `https://localhost:${secure.port}`, protocol: 'http1', resource: 'urn:ward:chat', tls: { caFile: certs.certFile } },
        { name: 'plain-tls', url: `https://localhost:${plainPort}`, protocol: 'http1', resource: 'urn:ward:plain', tls: { caFile: certs.certFile } },
        // the system roots, which do not sign this self-signed certificate
        { name: 'untrusted', url: `https://localhost:${plainPort}`, protocol: 'http1', resource: 'urn:ward:plain' },
        { name: 'payments', url: 'http://127.0.0.1:9', protocol: 'h2c', resource: 'urn:ward:payments' },
      ],
    });
    egress = await createOutbound({
      service: 'frontend',
      config,
      identityPrefix: 'x-ward-',
      maxTokenBytes: 8192,
      extractBearer,
      tokens: {
        token(t: TokenTarget, subject: string | null): TokenOutcome | Promise<TokenOutcome> {
          asked.push({ target: t.name, subject });
          if (subject?.startsWith('refuse') === true) return Promise.resolve({ ok: false, code: 'ERR_EXCHANGE_REFUSED', oauthError: 'invalid_target', detail: 'invalid_target' });
          const token = `exchanged-${subject ?? 'none'}-for-${t.name}`;
          return Promise.resolve({ ok: true, token, authorization: `Bearer ${token}`, via: 'exchange' });
        },
      },
      log: silentLogger,
      clock: Date.now,
    });
  });
  afterAll(async () => {
    await egress?.close();
    await chat?.close();
    await secure?.close();
    for (const sock of plainTlsSockets) sock.destroy();
    await new Promise<void>((r) => (plainTls === undefined ? r() : plainTls.close(() => r())));
    certs?.cleanup();
  });
  beforeEach(() => {
    asked.length = 0;
    chat.handshakes.length = 0;
    chat.requests.length = 0;
    secure.handshakes.length = 0;
  });

  it('exchanges the app\'s token for the destination and tunnels the WebSocket', async () => {
    const c = await connect(egress.port, handshakeText('/ws', { authorization: 'Bearer alice-token', 'x-ward-subject': 'spoofed' }, '1.1', 'chat'));
    await eventually(() => c.data().includes('\r\n\r\n'), 3000, 'the 101');
    const head = c.data().toString('latin1');
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 101 Switching Protocols');
    expect(asked).toEqual([{ target: 'chat', subject: 'alice-token' }]);
    const h = chat.handshakes[0]?.headers ?? {};
    expect(h.authorization).toBe('Bearer exchanged-alice-token-for-chat');
    expect(h['x-ward-subject']).toBeUndefined();
    expect(h['sec-websocket-key']).toBe(KEY);
    c.socket.write(maskedText('ping'));
    await eventually(() => readFrames(c.data().subarray(c.data().indexOf('\r\n\r\n') + 4)).frames.length === 1, 3000, 'the echo');
    expect(readFrames(c.data().subarray(c.data().indexOf('\r\n\r\n') + 4)).frames[0]?.payload.toString()).toBe('echo:ping');
    c.socket.destroy();
    await eventually(() => chat.open() === 0, 3000, 'the destination side closed');
  });

  it('to an https:// destination: the handshake goes over TLS, the destination\'s certificate verified, and the tunnel works', async () => {
    const c = await connect(egress.port, handshakeText('/ws', { authorization: 'Bearer bob-token' }, '1.1', 'secure-chat'));
    await eventually(() => c.data().includes('\r\n\r\n'), 3000, 'the 101');
    expect(c.data().toString('latin1').split('\r\n')[0]).toBe('HTTP/1.1 101 Switching Protocols');
    expect(secure.handshakes[0]?.headers.authorization).toBe('Bearer exchanged-bob-token-for-secure-chat');
    c.socket.write(maskedText('over tls'));
    const frames = (): { payload: Buffer }[] => readFrames(c.data().subarray(c.data().indexOf('\r\n\r\n') + 4)).frames;
    await eventually(() => frames().length === 1, 3000, 'the echo');
    expect(frames()[0]?.payload.toString()).toBe('echo:over tls');
    c.socket.destroy();
    await eventually(() => secure.open() === 0, 3000, 'the destination side closed');
  });

  it('over TLS, a handshake the destination answers without switching (200) leaves no connection open there (regression: a keep-alive agent per handshake held each one)', async () => {
    for (let i = 0; i < 3; i++) {
      const c = await connect(egress.port, handshakeText('/ws', { authorization: 'Bearer alice-token' }, '1.1', 'plain-tls'));
      await c.closed;
      expect(c.data().toString('latin1').split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    }
    await eventually(() => plainTlsSockets.size === 0, 3000, 'the destination\'s connections closed');
  });

  it('over TLS, a destination whose certificate is not trusted never gets the handshake (503 ERR_UPSTREAM_UNAVAILABLE)', async () => {
    const c = await connect(egress.port, handshakeText('/ws', { authorization: 'Bearer alice-token' }, '1.1', 'untrusted'));
    await c.closed;
    const head = c.data().toString('latin1');
    expect(head.split('\r\n')[0]).toMatch(/^HTTP\/1.1 503 /);
    expect(head).toContain('x-ward-reason: ERR_UPSTREAM_UNAVAILABLE');
  });

  it.each([
    ['a destination configured as HTTP/2', 'payments', 'Bearer alice-token', 400, 'ERR_REQUEST_INVALID'],
    ['an undeclared destination', 'elsewhere', 'Bearer alice-token', 403, 'ERR_DESTINATION_UNKNOWN'],
    ['a refused exchange', 'chat', 'Bearer refuse-me', 403, 'ERR_EXCHANGE_REFUSED'],
  ] as const)('%s: refused with its reason, the connection closed, nothing reaches a destination', async (_why, host, authorization, status, reason) => {
    const c = await connect(egress.port, handshakeText('/ws', { authorization }, '1.1', host));
    await c.closed;
    const head = c.data().toString('latin1');
    expect(head.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1.1 ${status} `));
    expect(head).toContain(`x-ward-reason: ${reason}`);
    expect(chat.handshakes).toEqual([]);
  });
});
