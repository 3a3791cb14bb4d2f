import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { type H2ClientStream, H2Connection, H2ProtocolError, type H2StreamHandler } from '../../../src/h2/conn.ts';
import {
  CANCEL,
  COMPRESSION_ERROR,
  CONTINUATION,
  DATA,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FLOW_CONTROL_ERROR,
  frame,
  FRAME_SIZE_ERROR,
  GOAWAY,
  HEADERS,
  PING,
  PREFACE,
  PROTOCOL_ERROR,
  PUSH_PROMISE,
  REFUSED_STREAM,
  RST_STREAM,
  SETTINGS,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_FRAME_SIZE,
  settingsFrame,
  u32Frame,
  WINDOW_UPDATE,
  writeFrameHeader,
} from '../../../src/h2/frames.ts';
import { HpackEncoder } from '../../../src/h2/hpack.ts';
import { prng } from '../../support/prng.ts';

/**
 * ward's HTTP/2 client connection against real node:http2 servers (call shapes, flow control,
 * limits, GOAWAY, resets) and against a raw TCP peer scripted frame by frame (protocol
 * violations, padding, flow-control edges, and a seeded fuzz of arbitrary frames).
 */

// ---- recording handler: one `Call` per stream, as the pool keeps one exchange per stream

class Call {
  stream!: H2ClientStream;
  /** What happened, in order: response, data, trailers, drain, close. */
  readonly events: string[] = [];
  fields: string[] | null = null;
  responses = 0;
  readonly chunks: Buffer[] = [];
  trailers: string[] | null = null;
  closes = 0;
  /** Handler calls after `close` (must stay 0). */
  late = 0;
  /** Replaces the immediate `consumed(n)` after each DATA payload. */
  consume: ((s: H2ClientStream, n: number) => void) | null = null;
  onDrain: (() => void) | null = null;
  readonly closed: Promise<void>;
  resolveClosed: () => void = () => {};

  constructor() {
    this.closed = new Promise((r) => {
      this.resolveClosed = r;
    });
  }

  body(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** `events` with runs of `data` folded into one. */
  shape(): string[] {
    return this.events.filter((e, i) => !(e === 'data' && this.events[i - 1] === 'data'));
  }
}

function callOf(s: H2ClientStream): Call {
  const c = s.owner as Call;
  if (c.closes > 0) c.late++;
  return c;
}

const recorder: H2StreamHandler = {
  response(s, fields, end) {
    const c = callOf(s);
    c.events.push(end ? 'response+end' : 'response');
    c.responses++;
    c.fields = fields;
  },
  data(s, chunk, end) {
    const c = callOf(s);
    if (chunk.length > 0) c.events.push('data');
    if (end) c.events.push('end');
    c.chunks.push(chunk);
    if (c.consume === null) s.consumed(chunk.length);
    else c.consume(s, chunk.length);
  },
  trailers(s, fields) {
    const c = callOf(s);
    c.events.push('trailers');
    c.trailers = fields;
  },
  drain(s) {
    const c = callOf(s);
    c.events.push('drain');
    const f = c.onDrain;
    c.onDrain = null;
    f?.();
  },
  close(s) {
    const c = s.owner as Call;
    if (c.closes > 0) c.late++;
    c.events.push('close');
    c.closes++;
    c.resolveClosed();
  },
};

interface Client {
  readonly conn: H2Connection;
  unusable: number;
  readonly closed: Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

function connect(port: number): Client {
  let onClose: () => void = () => {};
  const closed = new Promise<void>((r) => {
    onClose = r;
  });
  const client: { conn: H2Connection | null; unusable: number; closed: Promise<void> } = { conn: null, unusable: 0, closed };
  client.conn = new H2Connection({
    host: '127.0.0.1',
    port,
    handler: recorder,
    connectTimeoutMs: 2000,
    onUnusable: () => client.unusable++,
    onClose: () => onClose(),
  });
  const conn = client.conn;
  cleanups.push(() => conn.destroy());
  return client as Client;
}

function open(conn: H2Connection, fields: string[], end: boolean): Call {
  const c = new Call();
  c.stream = conn.request(fields, end, c);
  return c;
}

function requestFields(port: number, path: string, extra: string[] = []): string[] {
  return [':method', 'POST', ':scheme', 'http', ':authority', `127.0.0.1:${port}`, ':path', path, ...extra];
}

/** Writes `data` in `size` pieces, waiting for `drain` whenever `write` says so, then ends. */
async function upload(c: Call, data: Buffer, size: number, trailers: string[] | null = null): Promise<void> {
  for (let off = 0; off < data.length; off += size) {
    if (!c.stream.write(data.subarray(off, off + size))) {
      await new Promise<void>((r) => {
        c.onDrain = r;
      });
    }
  }
  c.stream.end(trailers);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function waitUntil(cond: () => boolean, ms = 3000): Promise<void> {
  const stop = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > stop) throw new Error('timed out waiting for a condition');
    await new Promise((r) => setTimeout(r, 2));
  }
}

function ticks(n = 3): Promise<void> {
  let p = Promise.resolve();
  for (let i = 0; i < n; i++) p = p.then(() => new Promise<void>((r) => setImmediate(r)));
  return p;
}

// ---- node:http2 servers

type OnStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, raw: string[]) => void;

async function nodeServer(onStream: OnStream, opts: http2.ServerOptions = {}): Promise<{ port: number; sessions: Set<http2.ServerHttp2Session> }> {
  const server = http2.createServer(opts);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('error', () => {});
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers, _flags, raw) => {
    stream.on('error', () => {});
    onStream(stream, headers, raw);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, sessions };
}

function echo(stream: http2.ServerHttp2Stream): void {
  stream.respond({ ':status': 200 });
  stream.pipe(stream);
}

// ---- a raw peer scripted frame by frame

interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly id: number;
  readonly payload: Buffer;
}

const encoder = new HpackEncoder();

function block(fields: string[]): Buffer {
  const b = Buffer.alloc(encoder.maxEncodedLength(fields));
  return b.subarray(0, encoder.encode(fields, b, 0));
}

function headersFrame(id: number, fields: string[], flags = FLAG_END_HEADERS): Buffer {
  return frame(HEADERS, flags, id, block(fields));
}

function dataFrame(id: number, body: string | Buffer, flags = 0): Buffer {
  return frame(DATA, flags, id, typeof body === 'string' ? Buffer.from(body) : body);
}

/** A header block as HEADERS (carrying `flags`, plus END_HEADERS on the last frame) and CONTINUATION frames of 16384 octets. */
function headerFrames(id: number, fields: string[], flags = 0): Buffer {
  const b = block(fields);
  const out: Buffer[] = [];
  for (let off = 0; off < b.length || off === 0; off += 16384) {
    const last = off + 16384 >= b.length;
    out.push(frame(off === 0 ? HEADERS : CONTINUATION, (off === 0 ? flags : 0) | (last ? FLAG_END_HEADERS : 0), id, b.subarray(off, off + 16384)));
  }
  return Buffer.concat(out);
}

/** A frame header claiming `length`, without the payload. */
function rawHeader(length: number, type: number, flags: number, id: number): Buffer {
  const h = Buffer.alloc(9);
  writeFrameHeader(h, 0, length, type, flags, id);
  return h;
}

class Peer {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  readonly ended: Promise<void>;
  #buf = Buffer.alloc(0);
  #prefaceSeen = false;
  #waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    socket.on('data', (c: Buffer) => this.#onData(c));
    this.ended = new Promise((r) => socket.on('close', () => r()));
  }

  send(...bufs: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(bufs));
  }

  /** The first frame from the client (so far or to come) matching `pred`. */
  waitFrame(pred: (f: Frame) => boolean, what = 'a frame', ms = 3000): Promise<Frame> {
    const seen = this.frames.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      this.#waiters.push({
        pred,
        resolve: (f) => {
          clearTimeout(t);
          resolve(f);
        },
      });
    });
  }

  goaway(): Promise<Frame> {
    return this.waitFrame((f) => f.type === GOAWAY, 'GOAWAY');
  }

  rst(id: number): Promise<Frame> {
    return this.waitFrame((f) => f.type === RST_STREAM && f.id === id, `RST_STREAM on ${id}`);
  }

  /** A round trip: every frame the client wrote before answering this PING has arrived. */
  async ping(): Promise<void> {
    const data = randomBytes(8);
    this.send(frame(PING, 0, 0, data));
    await this.waitFrame((f) => f.type === PING && (f.flags & FLAG_ACK) !== 0 && f.payload.equals(data), 'PING ACK');
  }

  dataBytes(id: number): number {
    return this.frames.filter((f) => f.type === DATA && f.id === id).reduce((n, f) => n + f.payload.length, 0);
  }

  #onData(chunk: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    if (!this.#prefaceSeen) {
      if (this.#buf.length < PREFACE.length) return;
      expect(this.#buf.subarray(0, PREFACE.length).equals(PREFACE)).toBe(true);
      this.#buf = this.#buf.subarray(PREFACE.length);
      this.#prefaceSeen = true;
    }
    while (this.#buf.length >= 9) {
      const len = this.#buf.readUIntBE(0, 3);
      if (this.#buf.length < 9 + len) return;
      const f: Frame = {
        type: this.#buf[3] as number,
        flags: this.#buf[4] as number,
        id: this.#buf.readUInt32BE(5) & 0x7fff_ffff,
        payload: this.#buf.subarray(9, 9 + len),
      };
      this.#buf = this.#buf.subarray(9 + len);
      this.frames.push(f);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(f)) return true;
        w.resolve(f);
        return false;
      });
    }
  }
}

/** Accepts connections; each gets `preface` (the server's SETTINGS; null: nothing) on accept. */
async function scriptedServer(preface: Buffer | null = settingsFrame([])): Promise<{ port: number; accept(): Promise<Peer> }> {
  const peers: Peer[] = [];
  const waiting: ((p: Peer) => void)[] = [];
  const sockets = new Set<Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const p = new Peer(socket);
    if (preface !== null) p.send(preface);
    const w = waiting.shift();
    if (w !== undefined) w(p);
    else peers.push(p);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return {
    port: (server.address() as AddressInfo).port,
    accept: () => {
      const p = peers.shift();
      return p !== undefined ? Promise.resolve(p) : new Promise((r) => waiting.push(r));
    },
  };
}

/** A client with `n` streams open on a scripted peer (requests without bodies), once the peer has seen them all. */
async function scripted(n: number, preface?: Buffer | null): Promise<{ client: Client; peer: Peer; calls: Call[] }> {
  const srv = await scriptedServer(preface);
  const client = connect(srv.port);
  const calls: Call[] = [];
  for (let i = 0; i < n; i++) calls.push(open(client.conn, requestFields(srv.port, `/s${i}`), true));
  const peer = await srv.accept();
  const last = 2 * n - 1;
  await peer.waitFrame((f) => f.type === HEADERS && f.id === last, `HEADERS on ${last}`);
  return { client, peer, calls };
}

const OK_200 = [':status', '200'];

// ---- against node:http2

describe('H2Connection against node:http2', () => {
  it('a unary gRPC-shaped call: fields exactly as sent, response headers, body and trailers in order', async () => {
    const body = randomBytes(1024);
    let seenRaw: string[] = [];
    let seenBody = Buffer.alloc(0);
    const { port } = await nodeServer((stream, _headers, raw) => {
      seenRaw = raw;
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        seenBody = Buffer.concat(chunks);
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-app': 'yes' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'fine' }));
        stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0, 3]), Buffer.from('abc')]));
      });
    });
    const { conn } = connect(port);
    const fields = requestFields(port, '/pkg.Svc/Method', ['content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', '5S', 'x-custom', 'v1']);
    const c = open(conn, fields, false);
    expect(c.stream.write(body)).toBe(true);
    c.stream.end(null);
    await c.closed;

    expect(seenRaw).toEqual(fields);
    expect(seenBody.equals(body)).toBe(true);
    expect(c.shape()).toEqual(['response', 'data', 'trailers', 'close']);
    expect(c.fields?.slice(0, 2)).toEqual([':status', '200']);
    const names = (c.fields ?? []).filter((_, i) => i % 2 === 0);
    expect(names.filter((n) => n.startsWith(':'))).toEqual([':status']);
    expect(c.fields).toEqual(expect.arrayContaining(['content-type', 'application/grpc', 'x-app', 'yes']));
    expect(c.body().toString('latin1')).toBe('\0\0\0\0\x03abc');
    expect(c.trailers).toEqual(['grpc-status', '0', 'grpc-message', 'fine']);
    expect(c.stream.remoteEnded).toBe(true);
    expect(c.stream.rstCode).toBeUndefined();
    expect(c.stream.error).toBeUndefined();
    expect(c.closes).toBe(1);
    expect(conn.activeStreams).toBe(0);
    expect(conn.usable).toBe(true);
    // The close handler saw its owner (it resolved c.closed); after it, the stream lets go of it.
    expect(c.stream.owner).toBeNull();
  });

  it('an app whose HPACK table is 0 (SETTINGS_HEADER_TABLE_SIZE) accepts every request: the first block announces size 0 (RFC 7541 §4.2)', async () => {
    // Regression: without the size update, node:http2 (nghttp2) refused the request headers as
    // a compression error once its SETTINGS had been acknowledged.
    const seen: string[] = [];
    const { port } = await nodeServer(
      (stream, headers) => {
        seen.push(headers[':path'] as string);
        stream.respond({ ':status': 200 });
        stream.end('ok');
      },
      { settings: { headerTableSize: 0 } },
    );
    const { conn } = connect(port);
    for (const path of ['/a', '/b', '/c']) {
      const c = open(conn, requestFields(port, path), true);
      await c.closed;
      expect(c.stream.rstCode, path).toBeUndefined();
      expect(c.fields?.slice(0, 2)).toEqual([':status', '200']);
      expect(c.body().toString()).toBe('ok');
    }
    expect(seen).toEqual(['/a', '/b', '/c']);
    expect(conn.usable).toBe(true);
  });

  it('a stream reset by the caller lets go of its owner once the deferred close has run', async () => {
    const { port } = await nodeServer(() => {});
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/slow'), false);
    await ticks();
    c.stream.reset(0x8);
    expect(c.stream.owner).toBe(c);
    await c.closed;
    await ticks(1);
    expect(c.stream.owner).toBeNull();
  });

  it('5 MiB both ways under flow control, with a slow consumer: every byte arrives intact', async () => {
    const data = randomBytes(5 * 1024 * 1024);
    let serverHash = '';
    const { port } = await nodeServer((stream) => {
      const h = createHash('sha256');
      stream.on('data', (c: Buffer) => h.update(c));
      stream.on('end', () => {
        serverHash = h.digest('hex');
      });
      echo(stream);
    });
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/echo'), false);
    let n = 0;
    c.consume = (s, len) => {
      // every 4th payload is passed on late: the server must wait for the window
      if (++n % 4 === 0) setTimeout(() => s.consumed(len), 2);
      else s.consumed(len);
    };
    await upload(c, data, 64 * 1024);
    await c.closed;
    expect(c.stream.error).toBeUndefined();
    expect(c.stream.rstCode).toBeUndefined();
    expect(serverHash).toBe(sha256(data));
    expect(c.body().length).toBe(data.length);
    expect(sha256(c.body())).toBe(sha256(data));
    expect(c.events.filter((e) => e === 'drain').length).toBeGreaterThan(0);
    expect(c.late).toBe(0);
  });

  it('200 concurrent streams over a MAX_CONCURRENT_STREAMS of 10 wait for slots; none is refused', async () => {
    let active = 0;
    let maxActive = 0;
    const { port } = await nodeServer(
      (stream, headers) => {
        active++;
        maxActive = Math.max(maxActive, active);
        stream.on('close', () => active--);
        setTimeout(() => {
          stream.respond({ ':status': 200 });
          stream.end(`ok ${headers[':path']}`);
        }, 1);
      },
      { settings: { maxConcurrentStreams: 10 } },
    );
    const { conn } = connect(port);
    // One call first: the server's SETTINGS (its limit) have arrived when it completes.
    const first = open(conn, requestFields(port, '/first'), true);
    await first.closed;
    const calls = Array.from({ length: 200 }, (_, i) => open(conn, requestFields(port, `/p${i}`), true));
    expect(conn.activeStreams).toBe(10);
    await Promise.all(calls.map((c) => c.closed));
    for (const [i, c] of calls.entries()) {
      expect(c.stream.refused).toBe(false);
      expect(c.stream.error).toBeUndefined();
      expect(c.body().toString()).toBe(`ok /p${i}`);
    }
    expect(maxActive).toBeLessThanOrEqual(10);
    expect(conn.activeStreams).toBe(0);
  });

  it('queued streams cancelled while they wait never open; the others open in the order they came', async () => {
    const seen: string[] = [];
    let releaseFirst: () => void = () => {};
    const { port } = await nodeServer(
      (stream, headers) => {
        const path = String(headers[':path']);
        seen.push(path);
        const answer = (): void => {
          stream.respond({ ':status': 200 });
          stream.end(`ok ${path}`);
        };
        if (path === '/held') releaseFirst = answer;
        else setTimeout(answer, 1);
      },
      { settings: { maxConcurrentStreams: 1 } },
    );
    const { conn } = connect(port);
    await open(conn, requestFields(port, '/first'), true).closed; // the server's limit has arrived
    const held = open(conn, requestFields(port, '/held'), true);
    await waitUntil(() => seen.includes('/held'));
    const queued = Array.from({ length: 12 }, (_, i) => open(conn, requestFields(port, `/q${i}`), true));
    // cancelled oldest first, as expiring deadlines do, and a few from the middle and the end
    const cancelled = new Set([0, 1, 2, 5, 8, 11]);
    for (const i of cancelled) (queued[i] as Call).stream.reset(CANCEL);
    releaseFirst();
    await held.closed;
    await Promise.all(queued.map((c) => c.closed));
    expect(seen).toEqual(['/first', '/held', ...queued.map((_, i) => `/q${i}`).filter((_, i) => !cancelled.has(i))]);
    for (const [i, c] of queued.entries()) {
      if (cancelled.has(i)) expect(c.stream.rstCode).toBe(CANCEL);
      else expect(c.body().toString()).toBe(`ok /q${i}`);
    }
    expect(conn.activeStreams).toBe(0);
  });

  it('streams over the limit sent before the server SETTINGS arrived are refused (safe to retry), never failed', async () => {
    const { port } = await nodeServer(
      (stream) => {
        setTimeout(() => {
          stream.respond({ ':status': 200 });
          stream.end('ok');
        }, 5);
      },
      { settings: { maxConcurrentStreams: 10 } },
    );
    const { conn } = connect(port);
    const calls = Array.from({ length: 50 }, (_, i) => open(conn, requestFields(port, `/p${i}`), true));
    await Promise.all(calls.map((c) => c.closed));
    for (const c of calls) {
      if (c.stream.refused) expect(c.stream.rstCode).toBe(REFUSED_STREAM);
      else expect(c.body().toString()).toBe('ok');
      expect(c.stream.error).toBeUndefined();
    }
    expect(calls.filter((c) => !c.stream.refused).length).toBeGreaterThanOrEqual(10);
  });

  it('request trailers reach the server as trailers', async () => {
    let trailers: http2.IncomingHttpHeaders = {};
    let body = '';
    const { port } = await nodeServer((stream) => {
      stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
        trailers = t;
      });
      stream.setEncoding('latin1');
      stream.on('data', (c: string) => {
        body += c;
      });
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end();
      });
    });
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/up', ['te', 'trailers']), false);
    c.stream.write(Buffer.from('payload'));
    c.stream.end(['x-checksum', 'abc', 'x-more', 'def']);
    await c.closed;
    expect(body).toBe('payload');
    expect(trailers['x-checksum']).toBe('abc');
    expect(trailers['x-more']).toBe('def');
    expect(c.fields?.slice(0, 2)).toEqual(OK_200);
  });

  it('trailers on a request without a body: HEADERS then trailers with END_STREAM', async () => {
    let trailers: http2.IncomingHttpHeaders = {};
    const { port } = await nodeServer((stream) => {
      stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
        trailers = t;
      });
      stream.resume();
      stream.on('end', () => {
        stream.respond({ ':status': 204 });
        stream.end();
      });
    });
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/t'), false);
    c.stream.end(['x-checksum', 'abc']);
    await c.closed;
    expect(trailers['x-checksum']).toBe('abc');
    expect(c.fields?.slice(0, 2)).toEqual([':status', '204']);
  });

  it('a 40 KiB response header arrives through CONTINUATION frames', async () => {
    const big = 'v'.repeat(40 * 1024);
    const { port } = await nodeServer(
      (stream) => {
        stream.respond({ ':status': 200, 'x-big': big, 'x-after': 'z' });
        stream.end('done');
      },
      { maxSendHeaderBlockLength: 1024 * 1024, settings: { maxHeaderListSize: 1024 * 1024 } },
    );
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/big'), true);
    await c.closed;
    expect(c.stream.error).toBeUndefined();
    const f = c.fields ?? [];
    expect(f[f.indexOf('x-big') + 1]).toBe(big);
    expect(f[f.indexOf('x-after') + 1]).toBe('z');
    expect(c.body().toString()).toBe('done');
  });

  it('a 100 KiB response header list resets only its stream (PROTOCOL_ERROR); another stream completes', async () => {
    const { port } = await nodeServer(
      (stream, headers) => {
        if (headers[':path'] === '/huge') {
          // random hex: Huffman cannot shrink it much below 64 KiB on the wire either
          stream.respond({ ':status': 200, 'x-huge': randomBytes(50 * 1024).toString('hex') });
          stream.end('never seen');
        } else {
          setTimeout(() => {
            stream.respond({ ':status': 200, 'x-small': 's' });
            stream.end('small');
          }, 20);
        }
      },
      { maxSendHeaderBlockLength: 1024 * 1024 },
    );
    const { conn } = connect(port);
    const huge = open(conn, requestFields(port, '/huge'), true);
    const other = open(conn, requestFields(port, '/other'), true);
    await Promise.all([huge.closed, other.closed]);
    expect(huge.stream.rstCode).toBe(PROTOCOL_ERROR);
    expect(huge.stream.refused).toBe(false);
    expect(huge.responses).toBe(0);
    expect((huge.stream.error as H2ProtocolError).h2code).toBe(PROTOCOL_ERROR);
    expect(other.stream.error).toBeUndefined();
    expect(other.body().toString()).toBe('small');
    expect(conn.usable).toBe(true);
    // and the connection (its HPACK table) is still good for new calls
    const after = open(conn, requestFields(port, '/after'), true);
    await after.closed;
    expect(after.body().toString()).toBe('small');
  });

  it('a 30 KiB request header goes out as HEADERS + CONTINUATION and arrives intact', async () => {
    const big = 'q'.repeat(30 * 1024);
    let seen: string | undefined;
    const { port } = await nodeServer(
      (stream, headers) => {
        seen = headers['x-big'] as string | undefined;
        stream.respond({ ':status': 200 });
        stream.end();
      },
      { settings: { maxHeaderListSize: 256 * 1024 } },
    );
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/bighdr', ['x-big', big]), true);
    await c.closed;
    expect(c.stream.error).toBeUndefined();
    expect(c.fields?.slice(0, 2)).toEqual(OK_200);
    expect(seen).toBe(big);
  });

  it('GOAWAY: streams above the last id are refused, the connection turns unusable, the rest complete', async () => {
    const pending: http2.ServerHttp2Stream[] = [];
    const { port } = await nodeServer((stream) => {
      pending.push(stream);
      if (pending.length < 3) return;
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, 1);
      const first = pending[0] as http2.ServerHttp2Stream;
      first.respond({ ':status': 200 });
      first.end('first');
    });
    const client = connect(port);
    const { conn } = client;
    const calls = [1, 2, 3].map((i) => open(conn, requestFields(port, `/g${i}`), true));
    await Promise.all(calls.map((c) => c.closed));
    const [a, b, c] = calls as [Call, Call, Call];
    expect(a.stream.id).toBe(1);
    expect(a.stream.refused).toBe(false);
    expect(a.body().toString()).toBe('first');
    for (const s of [b.stream, c.stream]) {
      expect(s.refused).toBe(true);
      expect(s.id).toBeGreaterThan(1);
    }
    expect(conn.usable).toBe(false);
    expect(client.unusable).toBe(1);
    expect(() => conn.request(requestFields(port, '/late'), true, new Call())).toThrow(H2ProtocolError);
    await client.closed; // the socket ends once the last stream is done
  });

  it('REFUSED_STREAM before a response is refused; CANCEL after response headers is not', async () => {
    const { port } = await nodeServer((stream, headers) => {
      if (headers[':path'] === '/refuse') {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      stream.respond({ ':status': 200 });
      // node's close(code) ends its side (END_STREAM) before the RST_STREAM: the request body
      // is still open, so the stream is not over until the reset
      stream.write('partial', () => stream.close(http2.constants.NGHTTP2_CANCEL));
    });
    const { conn } = connect(port);
    const refused = open(conn, requestFields(port, '/refuse'), true);
    const cancelled = open(conn, requestFields(port, '/cancel'), false);
    cancelled.stream.write(Buffer.from('upload in progress'));
    await Promise.all([refused.closed, cancelled.closed]);
    expect(refused.stream.refused).toBe(true);
    expect(refused.stream.rstCode).toBe(REFUSED_STREAM);
    expect(refused.responses).toBe(0);
    expect(cancelled.stream.refused).toBe(false);
    expect(cancelled.stream.rstCode).toBe(CANCEL);
    expect(cancelled.responses).toBe(1);
    expect(cancelled.body().toString()).toBe('partial');
    expect(conn.usable).toBe(true);
  });

  it('a graceful close(): GOAWAY, open streams finish, then the socket closes (onClose)', async () => {
    let goaway = -1;
    const { port } = await nodeServer((stream) => {
      stream.session?.once('goaway', (code: number) => {
        goaway = code;
      });
      setTimeout(() => {
        stream.respond({ ':status': 200 });
        stream.end('finished');
      }, 10);
    });
    const client = connect(port);
    const c = open(client.conn, requestFields(port, '/in-flight'), true);
    await new Promise((r) => setTimeout(r, 2));
    client.conn.close();
    expect(client.conn.usable).toBe(false);
    expect(client.unusable).toBe(1);
    await c.closed;
    expect(c.body().toString()).toBe('finished');
    await client.closed;
    expect(goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it('close() with streams waiting for a slot: they still go out and finish, the GOAWAY after the last (regression: they were refused, and a closing pool failed them)', async () => {
    const seen: string[] = [];
    let releaseHeld: () => void = () => {};
    const { port } = await nodeServer(
      (stream, headers) => {
        const path = String(headers[':path']);
        seen.push(path);
        if (path === '/first') stream.session?.once('goaway', () => seen.push('goaway'));
        const answer = (): void => {
          stream.respond({ ':status': 200 });
          stream.end(`ok ${path}`);
        };
        if (path === '/held') releaseHeld = answer;
        else setTimeout(answer, 1);
      },
      { settings: { maxConcurrentStreams: 1 } },
    );
    const client = connect(port);
    await open(client.conn, requestFields(port, '/first'), true).closed; // the server's limit has arrived
    const held = open(client.conn, requestFields(port, '/held'), true);
    await waitUntil(() => seen.includes('/held'));
    const queued = Array.from({ length: 3 }, (_, i) => open(client.conn, requestFields(port, `/q${i}`), true));
    client.conn.close();
    expect(client.conn.usable).toBe(false);
    expect(client.unusable).toBe(1);
    expect(() => open(client.conn, requestFields(port, '/late'), true)).toThrow(H2ProtocolError);
    releaseHeld();
    await held.closed;
    await Promise.all(queued.map((c) => c.closed));
    for (const [i, c] of queued.entries()) {
      expect(c.stream.refused).toBe(false);
      expect(c.body().toString()).toBe(`ok /q${i}`);
    }
    await client.closed;
    expect(seen).toEqual(['/first', '/held', '/q0', '/q1', '/q2', 'goaway']);
  });

  it('close() whose last waiting stream is cancelled still sends its GOAWAY and ends', async () => {
    let goaway = -1;
    let releaseHeld: () => void = () => {};
    let arrived = false;
    const { port } = await nodeServer(
      (stream) => {
        stream.session?.once('goaway', (code: number) => {
          goaway = code;
        });
        arrived = true;
        releaseHeld = () => {
          stream.respond({ ':status': 200 });
          stream.end('ok');
        };
      },
      { settings: { maxConcurrentStreams: 1 } },
    );
    const client = connect(port);
    await sleep(20); // the server's SETTINGS (one stream at a time) has arrived
    const held = open(client.conn, requestFields(port, '/held'), true);
    await waitUntil(() => arrived);
    const waiting = open(client.conn, requestFields(port, '/waiting'), true);
    client.conn.close();
    waiting.stream.reset(CANCEL);
    await waiting.closed;
    releaseHeld();
    await held.closed;
    expect(held.body().toString()).toBe('ok');
    await client.closed;
    expect(goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it('reset(CANCEL) from the client: the server sees CANCEL and aborted; close fires once, on a later tick', async () => {
    let arrived: () => void = () => {};
    const seen = new Promise<void>((r) => {
      arrived = r;
    });
    let serverClosed: () => void = () => {};
    const serverDone = new Promise<void>((r) => {
      serverClosed = r;
    });
    let rstCode = -1;
    let aborted = false;
    const { port } = await nodeServer((stream) => {
      stream.on('aborted', () => {
        aborted = true;
      });
      stream.on('close', () => {
        rstCode = stream.rstCode ?? -1;
        serverClosed();
      });
      arrived();
    });
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/slow'), false);
    c.stream.write(Buffer.from('some'));
    await seen;
    c.stream.reset(CANCEL);
    expect(c.closes).toBe(0);
    await c.closed;
    expect(c.closes).toBe(1);
    expect(c.stream.rstCode).toBe(CANCEL);
    expect(c.stream.refused).toBe(false);
    c.stream.reset(CANCEL); // a second reset is a no-op
    await serverDone;
    expect(rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(aborted).toBe(true);
    await ticks();
    expect(c.closes).toBe(1);
    expect(conn.activeStreams).toBe(0);
  });

  it('connection refused: streams fail with ECONNREFUSED and are not marked refused', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const client = connect(port);
    const calls = [open(client.conn, requestFields(port, '/a'), true), open(client.conn, requestFields(port, '/b'), false)];
    calls[1]?.stream.write(Buffer.from('x'));
    await Promise.all(calls.map((c) => c.closed));
    for (const c of calls) {
      expect((c.stream.error as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
      expect(c.stream.refused).toBe(false);
      expect(c.closes).toBe(1);
    }
    expect(client.conn.usable).toBe(false);
    expect(client.unusable).toBe(1);
    await client.closed;
  });

  it('informational 103 (and 100) responses are skipped: one response, 200', async () => {
    const { port } = await nodeServer((stream) => {
      stream.additionalHeaders({ ':status': 100 });
      stream.additionalHeaders({ ':status': 103, link: '</a>; rel=preload' });
      setTimeout(() => {
        stream.respond({ ':status': 200, 'x-final': '1' });
        stream.end('body');
      }, 5);
    });
    const { conn } = connect(port);
    const c = open(conn, requestFields(port, '/early'), true);
    await c.closed;
    expect(c.responses).toBe(1);
    expect(c.fields?.slice(0, 2)).toEqual(OK_200);
    expect(c.fields).toContain('x-final');
    expect(c.fields).not.toContain('link');
    expect(c.body().toString()).toBe('body');
  });
});

// ---- against a scripted peer

describe('H2Connection against a scripted peer', () => {
  it('request headers over 16 KiB: HEADERS of SETTINGS_MAX_FRAME_SIZE, then CONTINUATION with END_HEADERS', async () => {
    const srv = await scriptedServer();
    const client = connect(srv.port);
    const big = 'q'.repeat(30 * 1024);
    const c = open(client.conn, requestFields(srv.port, '/x', ['x-big', big]), true);
    const peer = await srv.accept();
    const last = await peer.waitFrame((f) => f.type === CONTINUATION && (f.flags & FLAG_END_HEADERS) !== 0, 'last CONTINUATION');
    const frames = peer.frames.filter((f) => f.id === 1);
    expect(frames[0]?.type).toBe(HEADERS);
    expect(frames[0]?.flags).toBe(FLAG_END_STREAM);
    expect(frames[0]?.payload.length).toBe(16384);
    expect(frames.slice(1).every((f) => f.type === CONTINUATION)).toBe(true);
    expect(frames.at(-1)).toBe(last);
    peer.send(headersFrame(1, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM));
    await c.closed;
    expect(c.fields).toEqual(OK_200);
  });

  describe('connection errors: GOAWAY with the code, every stream fails, nothing thrown', () => {
    const cases: [string, number, (p: Peer) => void][] = [
      ['DATA on stream 0', PROTOCOL_ERROR, (p) => p.send(dataFrame(0, 'abc'))],
      ['HEADERS on a server-initiated (even) stream', PROTOCOL_ERROR, (p) => p.send(headersFrame(2, OK_200))],
      [
        'PUSH_PROMISE',
        PROTOCOL_ERROR,
        (p) => p.send(frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, Buffer.concat([Buffer.from([0, 0, 0, 2]), block([':method', 'GET', ':path', '/p'])]))),
      ],
      ['a frame longer than 16384', FRAME_SIZE_ERROR, (p) => p.send(rawHeader(16385, DATA, 0, 1), Buffer.alloc(16385))],
      ['a frame header announcing more than 16384 (payload not yet sent)', FRAME_SIZE_ERROR, (p) => p.send(rawHeader(1 << 20, DATA, 0, 1))],
      ['CONTINUATION without HEADERS', PROTOCOL_ERROR, (p) => p.send(frame(CONTINUATION, FLAG_END_HEADERS, 1, block(OK_200)))],
      ['a frame other than CONTINUATION inside a header block', PROTOCOL_ERROR, (p) => p.send(headersFrame(1, OK_200, 0), dataFrame(1, 'x'))],
      ['CONTINUATION on another stream', PROTOCOL_ERROR, (p) => p.send(headersFrame(1, OK_200, 0), frame(CONTINUATION, FLAG_END_HEADERS, 3, Buffer.alloc(0)))],
      ['SETTINGS_MAX_FRAME_SIZE below 16384', PROTOCOL_ERROR, (p) => p.send(settingsFrame([[SETTINGS_MAX_FRAME_SIZE, 16383]]))],
      ['SETTINGS_ENABLE_PUSH=1', PROTOCOL_ERROR, (p) => p.send(settingsFrame([[SETTINGS_ENABLE_PUSH, 1]]))],
      ['SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1', FLOW_CONTROL_ERROR, (p) => p.send(settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 0x8000_0000]]))],
      ['SETTINGS of a length not a multiple of 6', FRAME_SIZE_ERROR, (p) => p.send(frame(SETTINGS, 0, 0, Buffer.alloc(5)))],
      ['WINDOW_UPDATE overflowing the connection window', FLOW_CONTROL_ERROR, (p) => p.send(u32Frame(WINDOW_UPDATE, 0, 0x7fff_ffff))],
      ['WINDOW_UPDATE of 0 on the connection', PROTOCOL_ERROR, (p) => p.send(u32Frame(WINDOW_UPDATE, 0, 0))],
      [
        'SETTINGS_INITIAL_WINDOW_SIZE pushing a stream window over 2^31-1',
        FLOW_CONTROL_ERROR,
        (p) => p.send(u32Frame(WINDOW_UPDATE, 1, 0x7fff_ffff - 65_535), settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 65_536]])),
      ],
      ['PING of the wrong length', FRAME_SIZE_ERROR, (p) => p.send(frame(PING, 0, 0, Buffer.alloc(7)))],
      ['RST_STREAM on stream 0', PROTOCOL_ERROR, (p) => p.send(u32Frame(RST_STREAM, 0, CANCEL))],
      ['RST_STREAM on an idle stream', PROTOCOL_ERROR, (p) => p.send(u32Frame(RST_STREAM, 99, CANCEL))],
      ['GOAWAY on a stream', PROTOCOL_ERROR, (p) => p.send(frame(GOAWAY, 0, 1, Buffer.alloc(8)))],
      ['a bad HPACK block (index 0)', COMPRESSION_ERROR, (p) => p.send(frame(HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x80])))],
      ['a truncated HPACK block', COMPRESSION_ERROR, (p) => p.send(frame(HEADERS, FLAG_END_HEADERS, 1, block(OK_200.concat('x-a', 'bcd')).subarray(0, 4)))],
      ['DATA padding longer than the frame', PROTOCOL_ERROR, (p) => p.send(headersFrame(1, OK_200), dataFrame(1, Buffer.from([10, 1, 2]), FLAG_PADDED))],
      ['HEADERS padding longer than the frame', PROTOCOL_ERROR, (p) => p.send(frame(HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, Buffer.concat([Buffer.from([200]), block(OK_200)])))],
      ['HEADERS with PRIORITY but too short for it', PROTOCOL_ERROR, (p) => p.send(frame(HEADERS, FLAG_END_HEADERS | FLAG_PRIORITY, 1, Buffer.from([0, 0, 0])))],
    ];
    it.each(cases)('%s', async (_name, code, violate) => {
      const { client, peer, calls } = await scripted(2);
      violate(peer);
      const goaway = await peer.goaway();
      expect(goaway.payload.readUInt32BE(4)).toBe(code);
      await Promise.all(calls.map((c) => c.closed));
      for (const c of calls) {
        expect(c.stream.error).toBeInstanceOf(H2ProtocolError);
        expect((c.stream.error as H2ProtocolError).h2code).toBe(code);
        expect(c.stream.refused).toBe(false);
        expect(c.closes).toBe(1);
      }
      expect(client.conn.usable).toBe(false);
      expect(client.unusable).toBe(1);
      await peer.ended; // the client closes the socket after its GOAWAY
      await client.closed;
    });

    it('a first frame other than SETTINGS', async () => {
      const { client, peer, calls } = await scripted(1, null);
      peer.send(frame(PING, 0, 0, Buffer.alloc(8)));
      const goaway = await peer.goaway();
      expect(goaway.payload.readUInt32BE(4)).toBe(PROTOCOL_ERROR);
      await calls[0]?.closed;
      expect((calls[0]?.stream.error as H2ProtocolError).h2code).toBe(PROTOCOL_ERROR);
      await client.closed;
    });
  });

  describe('stream errors: RST_STREAM on that stream only, the other stream completes', () => {
    const cases: [string, number, Buffer[]][] = [
      ['DATA before HEADERS', PROTOCOL_ERROR, [dataFrame(1, 'early')]],
      ['trailers without END_STREAM', PROTOCOL_ERROR, [headersFrame(1, OK_200), headersFrame(1, ['x-t', '1'])]],
      ['a pseudo-header in trailers', PROTOCOL_ERROR, [headersFrame(1, OK_200), headersFrame(1, [':path', '/x'], FLAG_END_HEADERS | FLAG_END_STREAM)]],
      ['no :status', PROTOCOL_ERROR, [headersFrame(1, ['content-type', 'text/plain'])]],
      [':status 2x0', PROTOCOL_ERROR, [headersFrame(1, [':status', '2x0'])]],
      [':status not first', PROTOCOL_ERROR, [headersFrame(1, ['x-a', '1', ':status', '200'])]],
      ['a request pseudo-header in a response', PROTOCOL_ERROR, [headersFrame(1, [':status', '200', ':path', '/'])]],
      ['101 Switching Protocols', PROTOCOL_ERROR, [headersFrame(1, [':status', '101'])]],
      ['an informational response with END_STREAM', PROTOCOL_ERROR, [headersFrame(1, [':status', '103'], FLAG_END_HEADERS | FLAG_END_STREAM)]],
      ['WINDOW_UPDATE of 0 on a stream', PROTOCOL_ERROR, [u32Frame(WINDOW_UPDATE, 1, 0)]],
      ['WINDOW_UPDATE overflowing a stream window', FLOW_CONTROL_ERROR, [u32Frame(WINDOW_UPDATE, 1, 0x7fff_ffff)]],
      ['PRIORITY of the wrong length', FRAME_SIZE_ERROR, [frame(2 /* PRIORITY */, 0, 1, Buffer.alloc(4))]],
      ['DATA after END_STREAM', 5 /* STREAM_CLOSED */, [headersFrame(1, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM), dataFrame(1, 'late')]],
    ];
    it.each(cases)('%s', async (_name, code, frames) => {
      // stream 1 sends a body it does not end, so the response ending does not close it
      const srv = await scriptedServer();
      const client = connect(srv.port);
      const bad = open(client.conn, requestFields(srv.port, '/bad'), false);
      bad.stream.write(Buffer.from('req'));
      const good = open(client.conn, requestFields(srv.port, '/good'), true);
      const peer = await srv.accept();
      await peer.waitFrame((f) => f.type === HEADERS && f.id === 3, 'HEADERS on 3');
      peer.send(...frames);
      const rst = await peer.rst(1);
      expect(rst.payload.readUInt32BE(0)).toBe(code);
      await bad.closed;
      expect(bad.stream.rstCode).toBe(code);
      expect((bad.stream.error as H2ProtocolError).h2code).toBe(code);
      expect(bad.stream.refused).toBe(false);
      // frames the peer sent before it saw our RST_STREAM are dropped, the connection goes on
      peer.send(dataFrame(1, 'in flight'), headersFrame(3, OK_200), dataFrame(3, 'good', FLAG_END_STREAM));
      await good.closed;
      expect(good.stream.error).toBeUndefined();
      expect(good.body().toString()).toBe('good');
      expect(client.conn.usable).toBe(true);
      expect(peer.frames.some((f) => f.type === GOAWAY)).toBe(false);
      expect(bad.closes).toBe(1);
      expect(bad.late).toBe(0);
    });
  });

  it('regression: a flood of empty CONTINUATION frames is bounded like the header block (PROTOCOL_ERROR)', async () => {
    // Empty frames added nothing to the block's size, so a peer could make the client keep
    // one buffer reference per 9 octets it sent, without limit (the CONTINUATION-flood class).
    const { peer, calls } = await scripted(1);
    const empty = frame(CONTINUATION, 0, 1, Buffer.alloc(0));
    peer.send(headersFrame(1, OK_200, 0), Buffer.concat(Array.from({ length: 40_000 }, () => empty)), frame(CONTINUATION, FLAG_END_HEADERS, 1, Buffer.alloc(0)));
    const goaway = await peer.goaway();
    expect(goaway.payload.readUInt32BE(4)).toBe(PROTOCOL_ERROR);
    await calls[0]?.closed;
    expect(calls[0]?.responses).toBe(0);
    expect((calls[0]?.stream.error as H2ProtocolError).h2code).toBe(PROTOCOL_ERROR);
  });

  it('header blocks split over many small CONTINUATION frames are fine', async () => {
    const { peer, calls } = await scripted(1);
    const b = block([':status', '200', 'x-v', 'w'.repeat(2000)]);
    const frames = [frame(HEADERS, FLAG_END_STREAM, 1, b.subarray(0, 1))];
    for (let off = 1; off < b.length; off += 7) frames.push(frame(CONTINUATION, off + 7 >= b.length ? FLAG_END_HEADERS : 0, 1, b.subarray(off, off + 7)));
    peer.send(...frames);
    await calls[0]?.closed;
    expect(calls[0]?.fields).toEqual([':status', '200', 'x-v', 'w'.repeat(2000)]);
  });

  it('regression: an oversized header list on a stream we reset drops it; the connection and its other streams go on', async () => {
    const { client, peer, calls } = await scripted(2);
    const [gone, other] = calls as [Call, Call];
    gone.stream.reset(CANCEL);
    await peer.rst(1);
    await gone.closed;
    // the app answered before it saw the reset: 100 KiB of headers, over our 64 KiB list limit
    peer.send(headerFrames(1, [':status', '200', 'x-huge', 'h'.repeat(100 * 1024)], FLAG_END_STREAM));
    peer.send(headersFrame(3, [':status', '200', 'x-ok', '1'], FLAG_END_HEADERS | FLAG_END_STREAM));
    await other.closed;
    expect(other.stream.error).toBeUndefined();
    expect(other.fields).toEqual([':status', '200', 'x-ok', '1']);
    await peer.ping();
    expect(peer.frames.some((f) => f.type === GOAWAY)).toBe(false);
    expect(client.conn.usable).toBe(true);
    expect(gone.closes).toBe(1);
  });

  it('an oversized header list on an open stream resets only that stream', async () => {
    const { client, peer, calls } = await scripted(2);
    const [big, other] = calls as [Call, Call];
    peer.send(headerFrames(1, [':status', '200', 'x-huge', 'h'.repeat(100 * 1024)], FLAG_END_STREAM));
    expect((await peer.rst(1)).payload.readUInt32BE(0)).toBe(PROTOCOL_ERROR);
    peer.send(headersFrame(3, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM));
    await Promise.all([big.closed, other.closed]);
    expect(big.stream.rstCode).toBe(PROTOCOL_ERROR);
    expect(big.responses).toBe(0);
    expect(other.fields).toEqual(OK_200);
    expect(client.conn.usable).toBe(true);
  });

  it('DATA beyond the stream window (256 KiB, nothing consumed) resets the stream with FLOW_CONTROL_ERROR', async () => {
    const { client, peer, calls } = await scripted(2);
    const [flood, other] = calls as [Call, Call];
    flood.consume = () => {}; // never passed on: no WINDOW_UPDATE
    peer.send(headersFrame(1, OK_200));
    const chunk = dataFrame(1, Buffer.alloc(16384));
    peer.send(Buffer.concat(Array.from({ length: 16 }, () => chunk))); // exactly 256 KiB: fits
    await peer.ping();
    expect(flood.closes).toBe(0);
    expect(peer.frames.some((f) => f.type === WINDOW_UPDATE && f.id === 1)).toBe(false);
    peer.send(dataFrame(1, 'x'));
    expect((await peer.rst(1)).payload.readUInt32BE(0)).toBe(FLOW_CONTROL_ERROR);
    await flood.closed;
    expect(flood.stream.rstCode).toBe(FLOW_CONTROL_ERROR);
    peer.send(headersFrame(3, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM));
    await other.closed;
    expect(client.conn.usable).toBe(true);
  });

  it('consumed() gives the stream window back: WINDOW_UPDATE once half of it is passed on', async () => {
    const { peer, calls } = await scripted(1);
    const c = calls[0] as Call;
    const held: number[] = [];
    c.consume = (_s, n) => held.push(n);
    peer.send(headersFrame(1, OK_200));
    const chunk = dataFrame(1, Buffer.alloc(16384));
    peer.send(Buffer.concat(Array.from({ length: 10 }, () => chunk)));
    await peer.ping();
    c.stream.consumed(held.slice(0, 7).reduce((a, b) => a + b, 0)); // 112 KiB: under half
    await peer.ping();
    expect(peer.frames.some((f) => f.type === WINDOW_UPDATE && f.id === 1)).toBe(false);
    c.stream.consumed(held.slice(7).reduce((a, b) => a + b, 0)); // 160 KiB in all
    await peer.ping();
    const wu = peer.frames.filter((f) => f.type === WINDOW_UPDATE && f.id === 1);
    expect(wu.map((f) => f.payload.readUInt32BE(0))).toEqual([160 * 1024]);
  });

  it('padded DATA and padded HEADERS with PRIORITY decode correctly', async () => {
    const { peer, calls } = await scripted(1);
    const c = calls[0] as Call;
    const hb = block([':status', '200', 'x-p', 'padded']);
    // pad length, stream dependency (4), weight (1), block, padding
    peer.send(frame(HEADERS, FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY, 1, Buffer.concat([Buffer.from([7]), Buffer.from([0, 0, 0, 0, 15]), hb, Buffer.alloc(7)])));
    peer.send(frame(DATA, FLAG_PADDED, 1, Buffer.concat([Buffer.from([3]), Buffer.from('hello'), Buffer.alloc(3)])));
    peer.send(frame(DATA, FLAG_PADDED, 1, Buffer.from([0])));
    peer.send(frame(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, Buffer.concat([Buffer.from([2]), Buffer.from(' world'), Buffer.alloc(2)])));
    await c.closed;
    expect(c.stream.error).toBeUndefined();
    expect(c.fields).toEqual([':status', '200', 'x-p', 'padded']);
    expect(c.body().toString()).toBe('hello world');
  });

  it('padded HEADERS split over CONTINUATION', async () => {
    const { peer, calls } = await scripted(1);
    const c = calls[0] as Call;
    const hb = block([':status', '200', 'x-long', 'y'.repeat(100)]);
    peer.send(
      frame(HEADERS, FLAG_PADDED | FLAG_END_STREAM, 1, Buffer.concat([Buffer.from([4]), hb.subarray(0, 10), Buffer.alloc(4)])),
      frame(CONTINUATION, 0, 1, hb.subarray(10, 50)),
      frame(CONTINUATION, FLAG_END_HEADERS, 1, hb.subarray(50)),
    );
    await c.closed;
    expect(c.fields).toEqual([':status', '200', 'x-long', 'y'.repeat(100)]);
    expect(c.events).toEqual(['response+end', 'close']);
  });

  it('a frame split across reads, and many frames in one read, decode the same', async () => {
    const { peer, calls } = await scripted(2);
    const bytes = Buffer.concat([
      headersFrame(1, OK_200),
      dataFrame(1, 'one', FLAG_END_STREAM),
      headersFrame(3, [':status', '201']),
      dataFrame(3, 'two'),
      headersFrame(3, ['x-trailer', 't'], FLAG_END_HEADERS | FLAG_END_STREAM),
    ]);
    for (let i = 0; i < bytes.length; i += 5) {
      peer.send(bytes.subarray(i, i + 5));
      await ticks(1);
    }
    await Promise.all(calls.map((c) => c.closed));
    expect(calls[0]?.body().toString()).toBe('one');
    expect(calls[1]?.fields).toEqual([':status', '201']);
    expect(calls[1]?.trailers).toEqual(['x-trailer', 't']);
  });

  it('flow control: a stream window of 100 holds the body until WINDOW_UPDATE; a larger SETTINGS window releases it too', async () => {
    const srv = await scriptedServer(settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 100]]));
    const client = connect(srv.port);
    const peer = await srv.accept();
    // our SETTINGS ACK is written while the server's SETTINGS are applied
    await peer.waitFrame((f) => f.type === SETTINGS && (f.flags & FLAG_ACK) !== 0, 'SETTINGS ACK');
    const body = randomBytes(1000);
    const a = open(client.conn, requestFields(srv.port, '/a'), false);
    expect(a.stream.write(body)).toBe(false);
    a.stream.end(['x-sum', 'a']);
    await peer.ping();
    expect(peer.dataBytes(1)).toBe(100);
    expect(a.events).not.toContain('drain');
    peer.send(u32Frame(WINDOW_UPDATE, 1, 400));
    await peer.ping();
    expect(peer.dataBytes(1)).toBe(500);
    expect(a.events).not.toContain('drain');
    peer.send(u32Frame(WINDOW_UPDATE, 1, 500));
    await peer.ping();
    expect(peer.dataBytes(1)).toBe(1000);
    expect(a.events).toContain('drain');
    const sent = Buffer.concat(peer.frames.filter((f) => f.type === DATA && f.id === 1).map((f) => f.payload));
    expect(sent.equals(body)).toBe(true);
    // the trailers follow the body once it is all out
    const trailers = await peer.waitFrame((f) => f.type === HEADERS && f.id === 1 && (f.flags & FLAG_END_STREAM) !== 0, 'request trailers');
    expect(peer.frames.indexOf(trailers)).toBeGreaterThan(peer.frames.lastIndexOf(peer.frames.filter((f) => f.type === DATA && f.id === 1).at(-1) as Frame));

    const b = open(client.conn, requestFields(srv.port, '/b'), false);
    expect(b.stream.write(body)).toBe(false);
    await peer.ping();
    expect(peer.dataBytes(3)).toBe(100);
    peer.send(settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 1100]]));
    await peer.ping();
    expect(peer.dataBytes(3)).toBe(1000);
    expect(b.events).toContain('drain');

    // the connection window (65535) is shared: 2000 bytes sent so far
    const c = open(client.conn, requestFields(srv.port, '/c'), false);
    peer.send(settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20]]));
    await peer.ping();
    expect(c.stream.write(randomBytes(70_000))).toBe(false);
    await peer.ping();
    expect(peer.dataBytes(5)).toBe(65_535 - 2000);
    peer.send(u32Frame(WINDOW_UPDATE, 0, 10_000));
    await peer.ping();
    expect(peer.dataBytes(5)).toBe(70_000);
    expect(c.events).toContain('drain');
  });

  it('a body written while the stream waits for a slot goes out once it opens', async () => {
    const srv = await scriptedServer(settingsFrame([[3 /* MAX_CONCURRENT_STREAMS */, 1]]));
    const client = connect(srv.port);
    const peer = await srv.accept();
    await peer.waitFrame((f) => f.type === SETTINGS && (f.flags & FLAG_ACK) !== 0, 'SETTINGS ACK');
    const a = open(client.conn, requestFields(srv.port, '/a'), true);
    const b = open(client.conn, requestFields(srv.port, '/b'), false);
    expect(b.stream.id).toBe(0);
    expect(b.stream.write(Buffer.from('queued body'))).toBe(false);
    b.stream.end(['x-t', '1']);
    await peer.ping();
    expect(peer.frames.filter((f) => f.type === HEADERS).map((f) => f.id)).toEqual([1]);
    peer.send(headersFrame(1, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM));
    await a.closed;
    await peer.waitFrame((f) => f.type === HEADERS && f.id === 3 && (f.flags & FLAG_END_STREAM) !== 0, 'trailers on 3');
    expect(peer.dataBytes(3)).toBe(11);
    expect(b.events).toContain('drain');
    peer.send(headersFrame(3, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM));
    await b.closed;
    expect(b.stream.error).toBeUndefined();
  });

  it('a GOAWAY refuses queued streams too, and the socket ends when the last stream is done', async () => {
    const srv = await scriptedServer(settingsFrame([[3 /* MAX_CONCURRENT_STREAMS */, 1]]));
    const client = connect(srv.port);
    const peer = await srv.accept();
    await peer.waitFrame((f) => f.type === SETTINGS && (f.flags & FLAG_ACK) !== 0, 'SETTINGS ACK');
    const a = open(client.conn, requestFields(srv.port, '/a'), true);
    const b = open(client.conn, requestFields(srv.port, '/b'), true);
    await peer.waitFrame((f) => f.type === HEADERS && f.id === 1, 'HEADERS 1');
    const goaway = Buffer.alloc(8);
    goaway.writeUInt32BE(1, 0);
    peer.send(frame(GOAWAY, 0, 0, goaway));
    await b.closed;
    expect(b.stream.refused).toBe(true);
    expect(b.stream.id).toBe(0);
    expect(client.unusable).toBe(1);
    expect(a.closes).toBe(0);
    peer.send(headersFrame(1, OK_200, FLAG_END_HEADERS | FLAG_END_STREAM));
    await a.closed;
    expect(a.stream.refused).toBe(false);
    expect(a.fields).toEqual(OK_200);
    await peer.ended;
    await client.closed;
  });

  it('the peer closing the socket fails open streams with ECONNRESET', async () => {
    const { client, peer, calls } = await scripted(2);
    peer.send(headersFrame(1, OK_200));
    await peer.ping();
    peer.socket.destroy();
    await Promise.all(calls.map((c) => c.closed));
    for (const c of calls) expect((c.stream.error as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    await client.closed;
  });

  it('fuzz: 300 seeded rounds of arbitrary frames never throw, and every stream closes exactly once', { timeout: 20_000 }, async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown): void => {
      uncaught.push(e);
    };
    process.on('uncaughtException', onUncaught);
    try {
      const srv = await scriptedServer();
      const rand = prng(0x5eed_2024);
      const int = (n: number): number => Math.floor(rand() * n);
      const valid = [block(OK_200), block([':status', '204', 'x-a', 'b']), block(['x-t', 'v']), block([':status', '103'])];
      for (let round = 0; round < 300; round++) {
        const client = connect(srv.port);
        const calls = [
          open(client.conn, requestFields(srv.port, '/f1'), true),
          open(client.conn, requestFields(srv.port, '/f3'), false),
          open(client.conn, requestFields(srv.port, '/f5'), false),
        ];
        calls[1]?.stream.write(randomBytes(int(200)));
        calls[2]?.stream.write(randomBytes(70_000)); // more than the default windows: pending bytes
        const peer = await srv.accept();
        await peer.waitFrame((f) => f.type === HEADERS && f.id === 5, 'HEADERS on 5');
        const frames: Buffer[] = [];
        for (let i = 1 + int(20); i > 0; i--) {
          const type = int(11);
          const flags = int(256);
          const ids = [0, 1, 3, 1 + int(0x7fff_ffff)];
          const id = ids[int(ids.length)] as number;
          const payload =
            (type === HEADERS || type === CONTINUATION) && rand() < 0.5 ? (valid[int(valid.length)] as Buffer) : randomBytes(int(65));
          frames.push(frame(type, flags, id, payload));
        }
        peer.send(...frames);
        await ticks(2);
        peer.socket.destroy();
        await Promise.all(calls.map((c) => c.closed));
        await client.closed;
        await ticks(1);
        for (const c of calls) {
          expect(c.closes, `round ${round}`).toBe(1);
          expect(c.late, `round ${round}`).toBe(0);
        }
        expect(client.conn.usable).toBe(false);
      }
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toEqual([]);
  });
});

describe('H2Connection against a peer that floods PINGs and does not read', () => {
  it('the acknowledgements queued stay bounded: the connection ends instead (CVE-2019-9512; regression: the client leg queued them without bound)', async () => {
    let peer: net.Socket | undefined;
    const server = net.createServer((sock) => {
      peer = sock;
      sock.on('error', () => {});
      sock.pause(); // never reads what ward writes
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const handler: H2StreamHandler = { response() {}, data() {}, trailers() {}, drain() {}, close() {} };
    const conn = new H2Connection({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, handler });
    try {
      while (peer === undefined) await sleep(5);
      const p = peer;
      p.write(settingsFrame([]));
      const batch = Buffer.concat(Array.from({ length: 2000 }, () => frame(PING, 0, 0, Buffer.alloc(8))));
      let maxQueued = 0;
      const stop = Date.now() + 4000;
      while (Date.now() < stop && !conn.socket.destroyed && p.writable && maxQueued < 40 * 1024 * 1024) {
        if (!p.write(batch)) await Promise.race([once(p, 'drain'), sleep(50)]);
        else await sleep(0);
        maxQueued = Math.max(maxQueued, conn.socket.writableLength);
      }
      // 1000 acknowledgements (17 octets each) behind whatever the socket buffers, then GOAWAY.
      expect(maxQueued).toBeLessThan(4 * 1024 * 1024);
      expect(conn.socket.destroyed || !conn.usable).toBe(true);
    } finally {
      conn.destroy();
      peer?.destroy();
      server.close();
    }
  });
});
