import { createHash } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * An HTTP/1.1 app with a WebSocket endpoint (RFC 6455), for the sidecar's tunnel tests: the
 * handshake answered by hand (`Sec-WebSocket-Accept`), text and binary messages echoed back with
 * `echo:` in front (unfragmented, payloads under 64 KiB), a close answered with a close. Every
 * handshake it accepted is recorded with its header fields. a handshake for a path ending `/refuse` gets a
 * 403 instead, one ending `/other` a 101 to h2c; any other request a 200.
 */
export interface WsApp {
  readonly port: number;
  /** Handshakes that reached the app (accepted or not), with their fields. */
  readonly handshakes: { readonly path: string; readonly headers: IncomingHttpHeaders }[];
  /** Plain requests that reached the app. */
  readonly requests: { readonly path: string; readonly headers: IncomingHttpHeaders }[];
  /** Tunnels open on the app's side. */
  open(): number;
  close(): Promise<void>;
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function acceptKey(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64');
}

/** One server frame (FIN set, unmasked). */
export function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]);
  return Buffer.concat([head, payload]);
}

/** Reads complete client frames (masked) off `buf`; returns them and the bytes left over. */
export function readFrames(buf: Buffer): { frames: { opcode: number; payload: Buffer }[]; rest: Buffer } {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const b1 = buf[at + 1] as number;
    let len = b1 & 0x7f;
    let off = at + 2;
    if (len === 126) {
      if (buf.length - at < 4) break;
      len = buf.readUInt16BE(at + 2);
      off = at + 4;
    } else if (len === 127) throw new Error('ws-app: frames of 64 KiB and more are not supported');
    const masked = (b1 & 0x80) !== 0;
    const mask = masked ? buf.subarray(off, off + 4) : null;
    if (masked) off += 4;
    if (buf.length < off + len) break;
    const payload = Buffer.from(buf.subarray(off, off + len));
    if (mask !== null) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (mask[i & 3] as number);
    frames.push({ opcode: (buf[at] as number) & 0x0f, payload });
    at = off + len;
  }
  return { frames, rest: buf.subarray(at) };
}

/** `tls`: served over TLS (https) with this certificate and key, as a destination reached with `https://`. */
export async function startWsApp(opts: { readonly tls?: { readonly cert: Buffer; readonly key: Buffer } } = {}): Promise<WsApp> {
  const handshakes: WsApp['handshakes'][number][] = [];
  const requests: WsApp['requests'][number][] = [];
  const sockets = new Set<Duplex>();
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    requests.push({ path: req.url ?? '', headers: req.headers });
    res.writeHead(200, { 'content-type': 'text/plain' }).end('plain');
  };
  const server = opts.tls === undefined ? http.createServer(onRequest) : https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest);
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    handshakes.push({ path: req.url ?? '', headers: req.headers });
    if (req.url?.endsWith('/refuse') === true) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\nrefused');
      return;
    }
    if (req.url?.endsWith('/other') === true) {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nnot-websocket');
      socket.on('error', () => socket.destroy());
      socket.on('end', () => socket.end());
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      return;
    }
    const key = String(req.headers['sec-websocket-key'] ?? '');
    const protocol = req.headers['sec-websocket-protocol'];
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n` +
        `${protocol === undefined ? '' : `Sec-WebSocket-Protocol: ${String(protocol).split(',')[0]?.trim() ?? ''}\r\n`}x-app: ws-app\r\nx-ward-reason: forged-by-app\r\nx-ward-decision-id: forged-by-app\r\n\r\n`,
    );
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.on('end', () => socket.end()); // the server's sockets are half-open: close when the sidecar does
    let pending = head;
    const onData = (d: Buffer): void => {
      const { frames, rest } = readFrames(Buffer.concat([pending, d]));
      pending = rest;
      for (const f of frames) {
        if (f.opcode === 0x8) {
          socket.end(frame(0x8, f.payload.subarray(0, 2)));
          return;
        }
        if (f.opcode === 0x9) socket.write(frame(0xa, f.payload));
        else if (f.opcode === 0x1 || f.opcode === 0x2) socket.write(frame(f.opcode, Buffer.concat([Buffer.from('echo:'), f.payload])));
      }
    };
    socket.on('data', onData);
    if (head.length > 0) onData(Buffer.alloc(0));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    handshakes,
    requests,
    open: () => sockets.size,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A raw TCP "app": each connection is handed to `onConn` with the bytes of its request head. */
export interface RawApp {
  readonly port: number;
  readonly conns: net.Socket[];
  readonly received: Buffer[];
  open(): number;
  close(): Promise<void>;
}

export async function startRawApp(onHead: (socket: net.Socket, head: string, rest: Buffer) => void): Promise<RawApp> {
  const conns: net.Socket[] = [];
  const received: Buffer[] = [];
  const live = new Set<net.Socket>();
  const server = net.createServer((s) => {
    conns.push(s);
    live.add(s);
    s.on('close', () => live.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let done = false;
    s.on('data', (d: Buffer) => {
      received.push(d);
      if (done) return;
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      done = true;
      onHead(s, buf.subarray(0, end).toString('latin1'), buf.subarray(end + 4));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    conns,
    received,
    open: () => live.size,
    close: () =>
      new Promise((r) => {
        for (const s of live) s.destroy();
        server.close(() => r());
      }),
  };
}

export function handshakeText(path: string, headers: Record<string, string>, version = '1.1', host = 'orders'): string {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `GET ${path} HTTP/${version}\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${lines}\r\n`;
}

export interface Conn {
  readonly socket: net.Socket;
  data(): Buffer;
  readonly closed: Promise<void>;
}

export function connect(port: number, first?: string | Buffer): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => {});
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => {
      if (first !== undefined) socket.write(first);
      resolve({ socket, data: () => Buffer.concat(chunks), closed });
    });
    socket.once('error', reject);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
