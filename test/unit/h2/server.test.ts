import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CANCEL,
  COMPRESSION_ERROR,
  CONTINUATION,
  DATA,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLOW_CONTROL_ERROR,
  frame,
  goawayFrame,
  FRAME_SIZE_ERROR,
  GOAWAY,
  HEADERS,
  NO_ERROR,
  PING,
  PREFACE,
  PROTOCOL_ERROR,
  PUSH_PROMISE,
  REFUSED_STREAM,
  RST_STREAM,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  settingsFrame,
  STREAM_CLOSED,
  u32Frame,
  WINDOW_UPDATE,
} from '../../../src/h2/frames.ts';
import { HpackDecoder } from '../../../src/h2/hpack.ts';
import { ENHANCE_YOUR_CALM, H2ServerConnection, type H2ServerOptions, PROBE_FRAME_TYPE, type H2ServerStream } from '../../../src/h2/server.ts';
import { block, requestBlock } from '../../security/support/h2raw.ts';
import { type Frame, RawClient } from './raw-client.ts';
import { prng } from '../../support/prng.ts';

/**
 * ward's HTTP/2 server connection (src/h2/server.ts) on its own, on a plain `net` server:
 * against node:http2 clients and curl (call shapes, flow control, concurrency, trailers, resets,
 * graceful close), and against a raw client scripted frame by frame (malformed requests,
 * connection errors, floods, slow drip, and a seeded fuzz of arbitrary frames).
 */


// ---- the server under test

type Handler = (s: H2ServerStream, fields: string[], endStream: boolean) => void;

/** One `onStream` call and what its stream did afterwards. */
interface Seen {
  readonly stream: H2ServerStream;
  readonly fields: string[];
  readonly endStream: boolean;
  /** 'data' (runs folded), 'trailers', 'end', 'close', in order. */
  readonly events: string[];
  trailers: Record<string, string | string[]> | null;
  closes: number;
}

interface Harness {
  readonly port: number;
  readonly conns: H2ServerConnection[];
  /** Server-side sockets, in accept order. */
  readonly sockets: net.Socket[];
  readonly seen: Seen[];
  /** onClose calls per connection. */
  readonly closes: Map<H2ServerConnection, number>;
  readonly errors: Error[];
}

const cleanups: (() => void | Promise<void>)[] = [];

afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function serve(handler: Handler, o: Partial<Omit<H2ServerOptions, 'onStream'>> = {}): Promise<Harness> {
  const h: Harness = { port: 0, conns: [], sockets: [], seen: [], closes: new Map(), errors: [] };
  const server = net.createServer((socket) => {
    h.sockets.push(socket);
    const conn = new H2ServerConnection(socket, {
      maxConcurrentStreams: o.maxConcurrentStreams ?? 100,
      maxHeaderListSize: o.maxHeaderListSize ?? 16_384,
      maxHeaderPairs: o.maxHeaderPairs ?? 128,
      encrypted: false,
      onStream(s, fields, endStream) {
        const rec: Seen = { stream: s, fields, endStream, events: [], trailers: null, closes: 0 };
        h.seen.push(rec);
        s.on('data', () => {
          if (rec.events.at(-1) !== 'data') rec.events.push('data');
        });
        s.on('trailers', (t: Record<string, string | string[]>) => {
          rec.trailers = t;
          rec.events.push('trailers');
        });
        s.on('end', () => rec.events.push('end'));
        s.on('close', () => {
          rec.closes++;
          rec.events.push('close');
        });
        handler(s, fields, endStream);
      },
      onClose(c) {
        h.closes.set(c, (h.closes.get(c) ?? 0) + 1);
        o.onClose?.(c);
      },
      onError(err) {
        h.errors.push(err);
      },
    });
    h.conns.push(conn);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  (h as { port: number }).port = (server.address() as AddressInfo).port;
  cleanups.push(async () => {
    for (const s of h.sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return h;
}

async function until(cond: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const stop = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > stop) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * The request body, collected once `end` comes. Listeners go on before `resume()`: unlike a
 * node Readable (which starts flowing on the next tick), an H2ServerStream delivers what it
 * buffered, and `end`, synchronously inside `resume()`.
 */
function readAll(s: H2ServerStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const body = new Promise<Buffer>((resolve) => s.on('end', () => resolve(Buffer.concat(chunks))));
  s.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
  s.resume();
  return body;
}

// ---- node:http2 and curl clients

async function nodeClient(port: number): Promise<http2.ClientHttp2Session> {
  const c = http2.connect(`http://127.0.0.1:${port}`);
  c.on('error', () => {});
  cleanups.push(() => {
    c.destroy();
  });
  // Requests go out once the server's SETTINGS (MAX_CONCURRENT_STREAMS) is known.
  await once(c, 'remoteSettings');
  return c;
}

interface Reply {
  readonly headers: http2.IncomingHttpHeaders;
  readonly flags: number;
  readonly body: Buffer;
  readonly trailers: http2.IncomingHttpHeaders | null;
}

function reply(req: http2.ClientHttp2Stream): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let headers: http2.IncomingHttpHeaders = {};
    let flags = 0;
    let trailers: http2.IncomingHttpHeaders | null = null;
    const chunks: Buffer[] = [];
    req.on('response', (h, f) => {
      headers = h;
      flags = f;
    });
    req.on('trailers', (t) => {
      trailers = t;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ headers, flags, body: Buffer.concat(chunks), trailers }));
    req.on('error', reject);
  });
}

function curl(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', [...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

// ---- raw frames

function headers(id: number, blk: Buffer, endStream: boolean): Buffer {
  return frame(HEADERS, FLAG_END_HEADERS | (endStream ? FLAG_END_STREAM : 0), id, blk);
}

function data(id: number, payload: Buffer | string, endStream = false): Buffer {
  return frame(DATA, endStream ? FLAG_END_STREAM : 0, id, typeof payload === 'string' ? Buffer.from(payload) : payload);
}

function pingFrame(n: number): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(n, 4);
  return frame(PING, 0, 0, p);
}

async function raw(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.destroy());
  return c;
}

function isEnd(f: Frame): boolean {
  return (f.type === DATA || f.type === HEADERS) && (f.flags & FLAG_END_STREAM) !== 0;
}

/** A request checked against RFC 9113 §8.3.1 / §8.2 independently of the code under test: why it is malformed, or null. */
function malformed(fields: readonly string[]): string | null {
  const seen = new Set<string>();
  let regular = false;
  const pseudo = new Map<string, string>();
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    if (/^[ \t]|[ \t]$|[\0\r\n]/.test(value)) return `bad value for ${name}`;
    if (name.startsWith(':')) {
      if (regular) return `${name} after a regular field`;
      if (![':method', ':scheme', ':authority', ':path'].includes(name)) return `unknown ${name}`;
      if (seen.has(name)) return `repeated ${name}`;
      seen.add(name);
      pseudo.set(name, value);
      continue;
    }
    regular = true;
    if (!/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(name)) return `bad name ${JSON.stringify(name)}`;
    if (['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'].includes(name)) return `connection-specific ${name}`;
    if (name === 'te' && value !== 'trailers') return `te: ${value}`;
  }
  const method = pseudo.get(':method');
  if (method === undefined) return 'no :method';
  if (method === 'CONNECT') {
    if (pseudo.has(':scheme') || pseudo.has(':path') || !pseudo.has(':authority')) return 'bad CONNECT';
  } else if (!pseudo.has(':scheme') || (pseudo.get(':path') ?? '') === '') return 'no :scheme or :path';
  return null;
}

// ---- 1. unary

describe('unary calls', () => {
  it('delivers the request fields as sent (pseudo-headers first) and the body after resume; headers, data and trailers reach node:http2', async () => {
    const h = await serve((s, fields) => {
      void readAll(s).then((body) => {
        s.respond({ ':status': 201, 'content-type': 'text/plain', 'x-path': fields[fields.indexOf(':path') + 1] }, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'x-body-sha256': sha(body) }));
        s.end(Buffer.concat([Buffer.from('echo:'), body]));
      });
    });
    const c = await nodeClient(h.port);
    const req = c.request({ ':method': 'POST', ':path': '/orders/1?x=y', 'content-type': 'text/plain', 'x-custom': 'abc', 'x-multi': ['1', '2'] });
    req.end('hello');
    const r = await reply(req);

    expect(r.headers[':status']).toBe(201);
    expect(r.headers['x-path']).toBe('/orders/1?x=y');
    expect(r.body.toString()).toBe('echo:hello');
    expect(r.trailers?.['x-body-sha256']).toBe(sha(Buffer.from('hello')));

    const { fields, events } = h.seen[0] as Seen;
    const names = fields.filter((_, i) => i % 2 === 0);
    expect(names.slice(0, 4).sort()).toEqual([':authority', ':method', ':path', ':scheme']);
    expect(names.slice(4).every((n) => !n.startsWith(':'))).toBe(true);
    const pairs = new Map<string, string[]>();
    for (let i = 0; i < fields.length; i += 2) pairs.set(fields[i] as string, [...(pairs.get(fields[i] as string) ?? []), fields[i + 1] as string]);
    expect(pairs.get(':method')).toEqual(['POST']);
    expect(pairs.get(':scheme')).toEqual(['http']);
    expect(pairs.get(':authority')).toEqual([`127.0.0.1:${h.port}`]);
    expect(pairs.get(':path')).toEqual(['/orders/1?x=y']);
    expect(pairs.get('x-custom')).toEqual(['abc']);
    expect(pairs.get('x-multi')).toEqual(['1', '2']);
    await until(() => events.includes('close'));
    expect(events).toEqual(['data', 'end', 'close']);
    expect(h.seen[0]?.stream.rstCode).toBe(NO_ERROR);
  });

  it('the body does not flow before resume()', async () => {
    let stream: H2ServerStream | undefined;
    const h = await serve((s) => {
      stream = s;
    });
    const c = await nodeClient(h.port);
    const req = c.request({ ':method': 'POST', ':path': '/' });
    req.end('abc');
    req.on('error', () => {});
    await until(() => stream !== undefined);
    await sleep(50);
    const s = stream as H2ServerStream;
    expect(s.isPaused()).toBe(true);
    expect(h.seen[0]?.events).toEqual([]);
    const body = readAll(s);
    expect((await body).toString()).toBe('abc');
    s.end('ok');
    expect((await reply(req)).body.toString()).toBe('ok');
  });

  it('answers curl --http2-prior-knowledge', async () => {
    const h = await serve((s, fields) => {
      s.respond({ ':status': 200, 'content-type': 'text/plain' });
      s.end(`hello ${fields[fields.indexOf(':path') + 1]}\n`);
    });
    const r = await curl(['--http2-prior-knowledge', '-sS', '-D', '-', `http://127.0.0.1:${h.port}/greet?n=1`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/2 200 ?\r\n/);
    expect(r.stdout).toMatch(/content-type: text\/plain/);
    expect(r.stdout.endsWith('\r\n\r\nhello /greet?n=1\n')).toBe(true);
    await until(() => h.closes.size === 1, 2000, 'onClose after curl left');
  });

  it('a client that shrinks its HPACK table (SETTINGS_HEADER_TABLE_SIZE 0) is told so at the first header block (RFC 7541 §4.2): nghttp', async () => {
    // Regression: ward's encoder never indexes, so it sent no size update, and a client whose
    // decoder lowered the table below 4096 refused the response as a compression error.
    const h = await serve((s) => {
      s.respond({ ':status': 200, 'x-one': '1' });
      s.end('hello');
    });
    for (const size of ['0', '100']) {
      const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile('nghttp', ['-v', `--header-table-size=${size}`, `http://127.0.0.1:${h.port}/a`, `http://127.0.0.1:${h.port}/b`], { timeout: 10_000 }, (err, stdout, stderr) => {
          resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
        });
      });
      expect(r.stdout, r.stdout).not.toMatch(/COMPRESSION_ERROR/);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout.match(/x-one: 1/g)).toHaveLength(2);
    }
  });

  it('the first header block on a connection sets the dynamic table size to 0; later ones carry no update', async () => {
    const h = await serve((s) => {
      s.respond({ ':status': 200 });
      s.end();
    });
    // A decoder that allows no dynamic table at all: it would refuse a block that assumed one.
    const c = await RawClient.connect(h.port, { settings: [[SETTINGS_HEADER_TABLE_SIZE, 0]] });
    c.socket.write(headers(1, requestBlock('/x'), true));
    c.socket.write(headers(3, requestBlock('/y'), true));
    const first = (await c.wait((f) => f.streamId === 1 && f.type === HEADERS)) as Frame;
    const second = (await c.wait((f) => f.streamId === 3 && f.type === HEADERS)) as Frame;
    expect(first.payload[0]).toBe(0x20); // §6.3: a size update to 0
    expect(second.payload[0]).not.toBe(0x20);
    const d = new HpackDecoder({ maxTableSize: 0 });
    const out: string[] = [];
    d.decode(first.payload, 0, first.payload.length, out);
    d.decode(second.payload, 0, second.payload.length, out);
    expect(out).toEqual([':status', '200', ':status', '200']);
    c.socket.destroy();
  });
});

// ---- 2. big bodies and flow control

describe('flow control', () => {
  const MiB = 1024 * 1024;

  it('padding-only DATA frames: their window is given back, so the stream does not stall (regression)', async () => {
    const h = await serve((s) => s.resume());
    const c = await raw(h.port);
    c.socket.write(headers(1, requestBlock('/', [], 'POST'), false));
    await until(() => h.seen.length === 1);
    // 255 frames of 256 octets, each all padding (pad length 255): 65 280 flow-controlled octets.
    const pad = Buffer.alloc(256);
    pad[0] = 255;
    c.socket.write(Buffer.concat(Array.from({ length: 255 }, () => frame(DATA, FLAG_PADDED, 1, pad))));
    const wu = await c.wait((f) => f.type === WINDOW_UPDATE && f.streamId === 1, 1000);
    expect(wu).toBeDefined();
  });

  it('echoes an 8 MiB upload while the handler pauses 50 ms every MiB; never more than one stream window buffered', async () => {
    let maxInbox = 0;
    let stream: H2ServerStream | undefined;
    const inboxLength = (): number => (stream?.inbox ?? []).reduce((n, b) => n + b.length, 0);
    const h = await serve((s) => {
      stream = s;
      s.respond({ ':status': 200 });
      let got = 0;
      let holds = 0;
      const hold = (): void => {
        holds++;
        s.pause();
      };
      const release = (): void => {
        if (--holds === 0) s.resume();
      };
      s.on('data', (chunk: Buffer) => {
        const before = got;
        got += chunk.length;
        if (Math.floor(got / MiB) > Math.floor(before / MiB)) {
          hold();
          setTimeout(release, 50);
        }
        if (!s.write(chunk)) {
          hold();
          s.once('drain', release);
        }
      });
      s.on('end', () => s.end());
      s.resume();
    });
    const c = await nodeClient(h.port);
    // Sampled after every read the connection processed (its listener runs first).
    h.sockets[0]?.on('data', () => {
      maxInbox = Math.max(maxInbox, inboxLength());
    });
    const body = randomBytes(8 * MiB);
    const req = c.request({ ':method': 'POST', ':path': '/echo' });
    const done = reply(req);
    for (let off = 0; off < body.length; off += 64 * 1024) {
      if (!req.write(body.subarray(off, off + 64 * 1024))) await once(req, 'drain');
    }
    req.end();
    const started = Date.now();
    const r = await done;
    expect(r.body.length).toBe(body.length);
    expect(sha(r.body)).toBe(sha(body));
    expect(maxInbox).toBeLessThanOrEqual(65_535);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('sends 8 MiB to a slow reader intact; write() returns false and drain follows', async () => {
    const body = randomBytes(8 * MiB);
    let falses = 0;
    let drains = 0;
    const h = await serve((s) => {
      s.respond({ ':status': 200 });
      let off = 0;
      const pump = (): void => {
        while (off < body.length) {
          const chunk = body.subarray(off, off + 256 * 1024);
          off += chunk.length;
          if (!s.write(chunk)) {
            falses++;
            s.once('drain', () => {
              drains++;
              pump();
            });
            return;
          }
        }
        s.end();
      };
      pump();
    });
    const c = await nodeClient(h.port);
    const req = c.request({ ':path': '/download' });
    req.end();
    const chunks: Buffer[] = [];
    let got = 0;
    req.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const before = got;
      got += chunk.length;
      if (Math.floor(got / MiB) > Math.floor(before / MiB)) {
        req.pause();
        setTimeout(() => req.resume(), 30);
      }
    });
    await once(req, 'end');
    const all = Buffer.concat(chunks);
    expect(all.length).toBe(body.length);
    expect(sha(all)).toBe(sha(body));
    expect(falses).toBeGreaterThan(0);
    expect(drains).toBe(falses);
  });
});

// ---- 3. concurrency

describe('concurrency', () => {
  it('300 concurrent requests on one connection with maxConcurrentStreams 100: node queues by the SETTINGS, all complete', async () => {
    let open = 0;
    let maxOpen = 0;
    const h = await serve(
      (s, fields) => {
        open++;
        maxOpen = Math.max(maxOpen, open);
        s.on('close', () => open--);
        const path = fields[fields.indexOf(':path') + 1] as string;
        setTimeout(() => s.end(`done ${path}`), 5);
      },
      { maxConcurrentStreams: 100 },
    );
    const c = await nodeClient(h.port);
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) => {
        const req = c.request({ ':path': `/r/${i}` });
        req.end();
        return reply(req);
      }),
    );
    replies.forEach((r, i) => {
      expect(r.headers[':status']).toBe(200);
      expect(r.body.toString()).toBe(`done /r/${i}`);
    });
    expect(h.seen.length).toBe(300);
    expect(maxOpen).toBeLessThanOrEqual(100);
    expect(maxOpen).toBeGreaterThan(50);
    expect(h.conns.length).toBe(1);
  });
});

// ---- 4. trailers

describe('trailers', () => {
  it('request trailers come as `trailers` before `end`; response trailers go out via wantTrailers + sendTrailers', async () => {
    const h = await serve((s) => {
      void readAll(s).then((body) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0', 'x-got': body.toString() }));
        s.end('resp');
      });
    });
    const c = await nodeClient(h.port);
    const req = c.request({ ':method': 'POST', ':path': '/svc/Method', te: 'trailers' }, { waitForTrailers: true });
    req.on('wantTrailers', () => req.sendTrailers({ 'x-req-trailer': 'yes' }));
    req.end('req-body');
    const r = await reply(req);
    expect(r.body.toString()).toBe('resp');
    expect(r.trailers?.['grpc-status']).toBe('0');
    expect(r.trailers?.['x-got']).toBe('req-body');
    const seen = h.seen[0] as Seen;
    await until(() => seen.closes > 0);
    expect(seen.events).toEqual(['data', 'trailers', 'end', 'close']);
    expect(seen.trailers).toEqual({ 'x-req-trailer': 'yes' });
  });

  it.each<[string, [string, string][]]>([
    ['an upper-case name', [['X-Upper', '1']]],
    ['a connection-specific field', [['connection', 'close']]],
    ['a value with a leading space', [['x-a', ' 1']]],
  ])('request trailers with %s are malformed (§8.2.1, §8.2.2): RST_STREAM(PROTOCOL_ERROR), no `trailers` / `end`', async (_name, trailer) => {
    const h = await serve((s) => s.resume());
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/t', [], 'POST'), false), data(1, 'body'), headers(1, block(trailer), true));
    const rst = await c.rst(1, 500);
    const seen = h.seen[0] as Seen;
    expect({ rst: rst?.code, events: seen.events }).toEqual({ rst: PROTOCOL_ERROR, events: ['data', 'close'] });
  });

  it('respond(..., { endStream: true }) is a trailers-only response: END_STREAM on the HEADERS frame', async () => {
    const h = await serve((s) => s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true }));
    const c = await nodeClient(h.port);
    const req = c.request({ ':path': '/svc/Missing' });
    req.end();
    const r = await reply(req);
    expect(r.headers['grpc-status']).toBe('12');
    expect(r.flags & http2.constants.NGHTTP2_FLAG_END_STREAM).toBe(http2.constants.NGHTTP2_FLAG_END_STREAM);
    expect(r.body.length).toBe(0);

    const rc = await raw(h.port);
    rc.send(headers(1, requestBlock('/svc/Missing'), true));
    const f = await rc.wait((x) => x.streamId === 1 && x.type === HEADERS);
    expect(f?.flags).toBe(FLAG_END_HEADERS | FLAG_END_STREAM);
    expect(f?.fields).toEqual([':status', '200', 'content-type', 'application/grpc', 'grpc-status', '12']);
    await sleep(30);
    expect(rc.of(1).map((x) => x.type)).toEqual([HEADERS]);
  });
});

// ---- 5 and 6. early responses and resets

describe('early end and resets', () => {
  it('a response ended while nobody reads the upload: RST_STREAM(NO_ERROR) after the complete response (§8.1)', async () => {
    const h = await serve((s) => s.end('early'));
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/upload', [], 'POST'), false), data(1, Buffer.alloc(100, 1)));
    const rst = await c.rst(1);
    expect(rst?.code).toBe(NO_ERROR);
    const frames = c.of(1);
    const end = frames.findIndex(isEnd);
    expect(end).toBeGreaterThanOrEqual(0);
    expect(frames.indexOf(rst as Frame)).toBeGreaterThan(end);
    expect(frames[0]?.fields).toEqual([':status', '200']);
    expect(Buffer.concat(frames.filter((f) => f.type === DATA).map((f) => f.payload)).toString()).toBe('early');
    const seen = h.seen[0] as Seen;
    await until(() => seen.closes > 0);
    expect(seen.stream.rstCode).toBe(NO_ERROR);
    expect(seen.events).toEqual(['close']);
  });

  it('DATA the client had in flight on a stream the server reset is ignored (§5.1)', async () => {
    const h = await serve((s, fields) => s.end(fields.includes('/upload') ? 'early' : 'second'));
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/upload', [], 'POST'), false), data(1, 'part'));
    expect((await c.rst(1))?.code).toBe(NO_ERROR);
    c.send(data(1, 'more'), data(1, 'last', true), headers(3, requestBlock('/next'), true));
    expect(await c.wait((f) => f.streamId === 3 && isEnd(f), 1000)).toBeDefined();
    expect(c.frames.find((f) => f.type === GOAWAY)).toBeUndefined();
  });

  it('trailers the client had in flight on a stream the server reset are ignored, not a connection error (§5.1)', async () => {
    const h = await serve((s, fields) => s.end(fields.includes('/upload') ? 'early' : 'second'));
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/upload', [], 'POST'), false), data(1, 'part'));
    expect((await c.rst(1))?.code).toBe(NO_ERROR);
    // Sent before the client saw the RST_STREAM: the end of its body, as trailers.
    c.send(headers(1, block([['x-trailer', '1']]), true), headers(3, requestBlock('/next'), true));
    const r3 = await c.wait((f) => f.streamId === 3 && isEnd(f), 1000);
    const goaway = c.frames.find((f) => f.type === GOAWAY);
    expect(goaway === undefined ? 'no GOAWAY' : `GOAWAY code ${goaway.code}`).toBe('no GOAWAY');
    expect(r3).toBeDefined();
  });

  it('a response ended while the upload is being read: the stream stays until the client ends it', async () => {
    const h = await serve((s) => {
      s.resume();
      s.end('early');
    });
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/upload', [], 'POST'), false), data(1, Buffer.alloc(100, 1)));
    expect(await c.wait((f) => f.streamId === 1 && isEnd(f))).toBeDefined();
    await sleep(50);
    const seen = h.seen[0] as Seen;
    expect(seen.stream.destroyed).toBe(false);
    expect(seen.events).toEqual(['data']);
    c.send(data(1, 'last', true));
    await until(() => seen.closes > 0);
    expect(seen.events).toEqual(['data', 'end', 'close']);
    expect(seen.stream.rstCode).toBe(NO_ERROR);
    await sleep(20);
    expect(c.frames.filter((f) => f.type === RST_STREAM)).toEqual([]);
  });

  it('RST_STREAM(CANCEL) from the client mid-body: `close` with rstCode 8 and no `end`', async () => {
    // Raw frames: node's ClientHttp2Stream.close() ends the writable side (END_STREAM) first.
    const h = await serve((s) => s.resume());
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/upload', [], 'POST'), false), data(1, Buffer.alloc(1000, 7)));
    await until(() => h.seen[0]?.events.includes('data') === true);
    c.send(u32Frame(RST_STREAM, 1, CANCEL));
    const seen = h.seen[0] as Seen;
    await until(() => seen.closes > 0);
    expect(seen.stream.rstCode).toBe(CANCEL);
    expect(seen.events).toEqual(['data', 'close']);
    expect(seen.stream.destroyed).toBe(true);
    expect(seen.stream.readableEnded).toBe(false);
    // The connection goes on.
    c.send(headers(3, requestBlock('/next'), true));
    await until(() => h.seen.length === 2);
  });

  it('a client that half-closes the socket after a complete request still gets the response (as the class comment promises)', async () => {
    const h = await serve((s) => {
      setTimeout(() => s.end('late answer'), 30);
    });
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/half'), true));
    await until(() => h.seen.length === 1);
    c.socket.end();
    const r = await c.wait((f) => f.streamId === 1 && isEnd(f), 1000);
    expect({ rstCode: h.seen[0]?.stream.rstCode, errors: h.errors.map((e) => (e as NodeJS.ErrnoException).code ?? e.message) }).toEqual({ rstCode: NO_ERROR, errors: [] });
    expect(r).toBeDefined();
    expect(Buffer.concat(c.of(1).filter((f) => f.type === DATA).map((f) => f.payload)).toString()).toBe('late answer');
    // it was also probed (below) with a frame of an experimental type, which it must ignore
    expect(c.frames.some((f) => f.type === PROBE_FRAME_TYPE && f.streamId === 0 && f.payload.toString() === 'ward-eof')).toBe(true);
  });

  it('a client that only half-closed keeps its waiting stream open, and is probed a few times, further apart, not for ever', async () => {
    const h = await serve(() => {});
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/long'), true));
    await until(() => h.seen.length === 1);
    c.socket.end();
    // probes at 0, 0.25 and 1.25 s, then 5.25 and 21.25 s: three, then a pause (one every 250 ms would be nine by then)
    const probes = (): number => c.frames.filter((f) => f.type === PROBE_FRAME_TYPE).length;
    await until(() => probes() >= 3, 4000, 'three probes');
    await sleep(800);
    expect(probes()).toBe(3);
    const seen = h.seen[0] as Seen;
    expect(seen.closes).toBe(0);
    seen.stream.end('the answer, at last');
    const r = await c.wait((f) => f.streamId === 1 && isEnd(f), 1000);
    expect(r).toBeDefined();
  });

  it('a client that closes the whole connection while its stream waits: the stream closes (CANCEL) at once, not when it is answered', async () => {
    // Regression: TCP shows a client that closed the connection as one that half-closed it, so the
    // stream stayed open, and the call open at the app, until the handler answered; a silent app
    // (a long gRPC stream) kept it for ever. The probe draws the client's reset, and the
    // write after it fails.
    const h = await serve(() => {});
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/never-answered'), true));
    await until(() => h.seen.length === 1);
    c.socket.destroy();
    const seen = h.seen[0] as Seen;
    await until(() => seen.closes > 0, 3000);
    expect(seen.stream.rstCode).toBe(CANCEL);
    expect(seen.events).toContain('close');
  });
});

// ---- 6b. header lists over the limits

describe('a header list over the limits: 431 with END_STREAM, never seen by onStream, the connection kept', () => {
  const fieldsOf = (f: Frame): string[] => {
    const out: string[] = [];
    new HpackDecoder().decode(f.payload, 0, f.payload.length, out);
    return out;
  };
  const big = Array.from({ length: 30 }, (_, i) => [`x-big-${i}`, 'v'.repeat(200)] as [string, string]); // ~7 KB
  const many = Array.from({ length: 200 }, (_, i) => [`x-${i}`, '1'] as [string, string]);

  it.each<[string, [string, string][], boolean]>([
    ['over maxHeaderListSize, the request ended', big, true],
    ['over maxHeaderListSize, a body still to come: then RST_STREAM(NO_ERROR), the body ignored', big, false],
    ['over 128 fields', many, true],
  ])('%s', async (_name, extra, end) => {
    const h = await serve((s) => s.end('should not happen'), { maxHeaderListSize: 4096 });
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/big', extra, end ? 'GET' : 'POST'), end));
    const f = await c.wait((x) => x.streamId === 1 && x.type === HEADERS);
    expect(fieldsOf(f as Frame)).toEqual([':status', '431', 'content-length', '0']);
    expect((f as Frame).flags & FLAG_END_STREAM).toBe(FLAG_END_STREAM);
    if (!end) {
      expect((await c.rst(1))?.code).toBe(NO_ERROR);
      c.send(data(1, 'a late body', false), headers(1, block([['x-trailer', '1']]), true));
    }
    c.send(headers(3, requestBlock('/after'), true));
    expect(await c.wait((x) => x.streamId === 3 && isEnd(x))).toBeDefined();
    expect(h.seen.map((s) => s.fields[s.fields.indexOf(':path') + 1])).toEqual(['/after']);
    expect(c.frames.find((x) => x.type === GOAWAY)).toBeUndefined();
  });
});

// ---- 7. closing the connection

describe('closing the connection', () => {
  /** A server that echoes body lengths, and a client with stream 1 open, its body half sent. */
  async function oneInFlight(): Promise<{ h: Harness; c: RawClient; conn: H2ServerConnection }> {
    const h = await serve((s) => {
      void readAll(s).then((b) => s.end(`got ${b.length}`));
    });
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/inflight', [], 'POST'), false), data(1, 'abc'));
    await until(() => h.seen.length === 1);
    return { h, c, conn: h.conns[0] as H2ServerConnection };
  }

  it('close(): GOAWAY with the last stream id, the in-flight stream completes, a later stream is refused, onClose once the socket closes', async () => {
    const { h, c, conn } = await oneInFlight();
    conn.close();
    const goaway = await c.goaway();
    expect(goaway?.payload.readUInt32BE(0)).toBe(1);
    expect(goaway?.code).toBe(NO_ERROR);

    c.send(headers(3, requestBlock('/late'), true));
    expect((await c.rst(3))?.code).toBe(REFUSED_STREAM);
    expect(h.seen.length).toBe(1);

    c.send(data(1, 'def', true));
    expect(await c.wait((f) => f.streamId === 1 && isEnd(f))).toBeDefined();
    expect(Buffer.concat(c.of(1).filter((f) => f.type === DATA).map((f) => f.payload)).toString()).toBe('got 6');
    // The server ends its side once stream 1 is over; the client's socket closes in turn.
    expect(await c.waitClosed()).toBe(true);
    await until(() => h.closes.get(conn) === 1, 2000, 'onClose');
    await sleep(30);
    expect(h.closes.get(conn)).toBe(1);
    expect(h.seen[0]?.closes).toBe(1);
  });

  it('close(): any number of streams raced past our GOAWAY are refused while the open call finishes (the refusal bound is for a client\'s own GOAWAY)', async () => {
    const { c, conn } = await oneInFlight();
    conn.close();
    await c.goaway();
    const late: Buffer[] = [];
    for (let id = 3; id < 3 + 2 * 150; id += 2) late.push(headers(id, requestBlock('/late'), true));
    c.send(Buffer.concat(late));
    expect((await c.rst(3 + 2 * 149))?.code).toBe(REFUSED_STREAM);
    c.send(data(1, 'def', true));
    expect(await c.wait((f) => f.streamId === 1 && isEnd(f))).toBeDefined();
    expect(c.frames.filter((f) => f.type === GOAWAY)).toHaveLength(1); // no second GOAWAY, no ENHANCE_YOUR_CALM
  });

  it('destroy(): every stream closes with rstCode set; onClose exactly once', async () => {
    const h = await serve(() => {});
    const c = await nodeClient(h.port);
    for (let i = 0; i < 3; i++) {
      const req = c.request({ ':method': 'POST', ':path': `/hang/${i}` });
      req.on('error', () => {});
      req.write('x');
    }
    await until(() => h.seen.length === 3);
    const conn = h.conns[0] as H2ServerConnection;
    conn.destroy();
    conn.destroy();
    await until(() => h.seen.every((s) => s.closes > 0));
    for (const s of h.seen) {
      expect(s.closes).toBe(1);
      expect(s.stream.rstCode).toBe(CANCEL);
      expect(s.events).not.toContain('end');
    }
    await until(() => h.closes.get(conn) === 1, 2000, 'onClose');
    await sleep(50);
    expect(h.closes.get(conn)).toBe(1);
    expect(conn.closed).toBe(true);
  });
});

// ---- 8. malformed requests

describe('malformed requests: RST_STREAM(PROTOCOL_ERROR), never seen by onStream', () => {
  const base: [string, string][] = [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':authority', 'orders'],
    [':path', '/'],
  ];
  const without = (name: string): [string, string][] => base.filter(([n]) => n !== name);
  const cases: [string, [string, string][]][] = [
    ['missing :method', without(':method')],
    ['missing :scheme', without(':scheme')],
    ['missing :path', without(':path')],
    ['empty :path', [...without(':path'), [':path', '']]],
    ['duplicate :path', [...base, [':path', '/again']]],
    ['unknown pseudo-header :foo', [...base, [':foo', 'bar']]],
    ['pseudo-header after a regular field', [[':method', 'GET'], [':scheme', 'http'], ['x-a', '1'], [':path', '/']]],
    ['upper-case name', [...base, ['X-Upper', '1']]],
    ['a name with a space', [...base, ['x bad', '1']]],
    ['a value with a leading space', [...base, ['x-a', ' 1']]],
    ['connection', [...base, ['connection', 'close']]],
    ['te: gzip', [...base, ['te', 'gzip']]],
    ['content-length > 0 on HEADERS with END_STREAM', [...base, ['content-length', '5']]],
    ['non-numeric content-length', [...base, ['content-length', 'abc']]],
    ['CONNECT without :authority', [[':method', 'CONNECT']]],
  ];

  it.each(cases)('%s', async (_name, fields) => {
    const h = await serve((s) => s.end('should not happen'));
    const c = await raw(h.port);
    c.send(headers(1, block(fields), true));
    expect((await c.rst(1))?.code).toBe(PROTOCOL_ERROR);
    // The connection is still good.
    c.send(headers(3, requestBlock('/after'), true));
    expect(await c.wait((f) => f.streamId === 3 && isEnd(f))).toBeDefined();
    expect(h.seen.map((s) => s.fields[s.fields.indexOf(':path') + 1])).toEqual(['/after']);
    expect(c.frames.find((f) => f.type === GOAWAY)).toBeUndefined();
  });

  it('a long value accepted on one stream does not let a bad long value through on the next', async () => {
    const h = await serve((s) => s.end('ok'));
    const c = await raw(h.port);
    const good = `Bearer ${'t'.repeat(700)}`;
    const bad = `Bearer ${'t'.repeat(350)}\r${'t'.repeat(349)}`;
    c.send(headers(1, requestBlock('/good', [['authorization', good]]), true));
    expect(await c.wait((f) => f.streamId === 1 && isEnd(f))).toBeDefined();
    c.send(headers(3, requestBlock('/good-again', [['authorization', good]]), true));
    expect(await c.wait((f) => f.streamId === 3 && isEnd(f))).toBeDefined();
    c.send(headers(5, requestBlock('/bad', [['authorization', bad]]), true));
    expect((await c.rst(5))?.code).toBe(PROTOCOL_ERROR);
    expect(h.seen.map((s) => s.fields[s.fields.indexOf(':path') + 1])).toEqual(['/good', '/good-again']);
  });

  it.each([
    ['content-length 5 with 3 DATA bytes', '5', 'abc'],
    ['content-length 3 with 5 DATA bytes', '3', 'abcde'],
  ])('%s: RST_STREAM(PROTOCOL_ERROR), the body never reaches the handler', async (_name, cl, body) => {
    // onStream does see these headers: they are valid until the DATA contradicts them.
    const h = await serve((s) => s.resume());
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/cl', [['content-length', cl]], 'POST'), false), data(1, body, true));
    expect((await c.rst(1))?.code).toBe(PROTOCOL_ERROR);
    const seen = h.seen[0] as Seen;
    await until(() => seen.closes > 0);
    expect(seen.stream.rstCode).toBe(PROTOCOL_ERROR);
    expect(seen.events).toEqual(['close']);
  });

  it.each<[string, [string, string][], boolean]>([
    ['te: trailers', [[':method', 'POST'], [':scheme', 'http'], [':authority', 'a'], [':path', '/'], ['te', 'trailers']], true],
    ['CONNECT with :authority and no :scheme / :path', [[':method', 'CONNECT'], [':authority', 'example.com:443']], false],
    ['host and no :authority', [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['host', 'example.com']], true],
  ])('allowed: %s', async (_name, fields, endStream) => {
    const h = await serve((s) => s.respond({ ':status': 200 }, { endStream: true }));
    const c = await raw(h.port);
    c.send(headers(1, block(fields), endStream));
    const f = await c.wait((x) => x.streamId === 1 && (x.type === HEADERS || x.type === RST_STREAM));
    expect(f?.type).toBe(HEADERS);
    expect(f?.fields).toEqual([':status', '200']);
    expect(h.seen.map((s) => s.fields)).toEqual([fields.flat()]);
  });
});

// ---- 9. connection errors

describe('connection errors: GOAWAY with the §5.4.1 code', () => {
  /** Sends `bytes` after the preface and SETTINGS (or instead of them), then the GOAWAY's code. */
  async function goawayFor(bytes: Buffer, o: { preface?: boolean; open?: Buffer } = {}): Promise<number | undefined> {
    const h = await serve(() => {});
    const c = await RawClient.connect(h.port, { preface: o.preface ?? true });
    cleanups.push(() => c.destroy());
    if (o.open !== undefined) {
      c.send(o.open);
      await until(() => h.seen.length === 1);
    }
    c.send(bytes);
    const g = await c.goaway();
    expect(await c.waitClosed()).toBe(true);
    return g?.code;
  }

  it('request bodies nobody reads yet, past 10 MiB on one connection: ENHANCE_YOUR_CALM (node\'s maxSessionMemory)', async () => {
    const h = await serve(() => {}, { maxConcurrentStreams: 1000 }); // never resumes a body: as if every call were still being authenticated
    const c = await RawClient.connect(h.port, { preface: true });
    cleanups.push(() => c.destroy());
    const chunk = Buffer.alloc(16_000, 0x61);
    // 200 streams × 4 DATA frames of 16 000 bytes (within each 64 KiB stream window): 12.8 MB in all
    for (let id = 1; id <= 399; id += 2) {
      c.send(Buffer.concat([headers(id, requestBlock('/', [], 'POST'), false), data(id, chunk), data(id, chunk), data(id, chunk), data(id, chunk)]));
      if (id % 40 === 1) await new Promise((r) => setImmediate(r));
    }
    const g = await c.goaway();
    expect(g?.code).toBe(ENHANCE_YOUR_CALM);
    expect(h.seen.length).toBeGreaterThan(150); // the streams were opened; the bound is on bytes, not streams
  });

  it('request bodies nobody reads yet, under the bound, are kept and delivered once resumed', async () => {
    const streams: H2ServerStream[] = [];
    const h = await serve((s) => streams.push(s));
    const c = await RawClient.connect(h.port, { preface: true });
    cleanups.push(() => c.destroy());
    const chunk = Buffer.alloc(16_000, 0x62);
    for (let id = 1; id <= 79; id += 2) c.send(Buffer.concat([headers(id, requestBlock('/', [], 'POST'), false), data(id, chunk), data(id, chunk, true)]));
    await until(() => streams.length === 40);
    await new Promise((r) => setTimeout(r, 50));
    let total = 0;
    let ended = 0;
    for (const s of streams) {
      s.on('data', (b: Buffer) => (total += b.length));
      s.on('end', () => ended++);
      s.resume();
    }
    await until(() => ended === 40);
    expect(total).toBe(40 * 32_000);
  });

  it('a bad preface', async () => {
    expect(await goawayFor(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), { preface: false })).toBe(PROTOCOL_ERROR);
  });

  it('a first frame that is not SETTINGS', async () => {
    expect(await goawayFor(Buffer.concat([PREFACE, pingFrame(1)]), { preface: false })).toBe(PROTOCOL_ERROR);
  });

  it('HEADERS on an even stream', async () => {
    expect(await goawayFor(headers(2, requestBlock('/'), true))).toBe(PROTOCOL_ERROR);
  });

  it('HEADERS on stream 3 after stream 5 was opened', async () => {
    const code = await goawayFor(headers(3, requestBlock('/'), true), { open: headers(5, requestBlock('/', [], 'POST'), false) });
    // §5.1.1 names PROTOCOL_ERROR for a stream id lower than one already used; the code sends
    // STREAM_CLOSED (stream 3 is closed by §5.1.1's implicit transition). Either is a GOAWAY.
    expect([PROTOCOL_ERROR, STREAM_CLOSED]).toContain(code);
    console.log(`[stream id reuse] HEADERS on 3 after 5: GOAWAY code ${code}`);
  });

  it('DATA on an idle stream', async () => {
    expect(await goawayFor(data(7, 'x'))).toBe(PROTOCOL_ERROR);
  });

  it('WINDOW_UPDATE, DATA or RST_STREAM on an even stream below the last one opened: idle, as ward never opens one (§5.1; regression: ignored)', async () => {
    const open = headers(3, requestBlock('/', [], 'POST'), false);
    expect(await goawayFor(u32Frame(WINDOW_UPDATE, 2, 100), { open })).toBe(PROTOCOL_ERROR);
    expect(await goawayFor(data(2, 'x'), { open })).toBe(PROTOCOL_ERROR);
    expect(await goawayFor(u32Frame(RST_STREAM, 2, 0), { open })).toBe(PROTOCOL_ERROR);
  });

  it('PUSH_PROMISE from the client', async () => {
    expect(await goawayFor(frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, Buffer.from([0, 0, 0, 2])))).toBe(PROTOCOL_ERROR);
  });

  it('a frame over 16384 octets', async () => {
    expect(await goawayFor(frame(PING, 0, 0, Buffer.alloc(16_385)))).toBe(FRAME_SIZE_ERROR);
  });

  it('SETTINGS_INITIAL_WINDOW_SIZE 2^31', async () => {
    expect(await goawayFor(settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 2 ** 31]]))).toBe(FLOW_CONTROL_ERROR);
  });

  it('WINDOW_UPDATE of 0 on stream 0', async () => {
    expect(await goawayFor(u32Frame(WINDOW_UPDATE, 0, 0))).toBe(PROTOCOL_ERROR);
  });

  it('a bad HPACK block: COMPRESSION_ERROR', async () => {
    // An indexed field with index 0 (RFC 7541 §6.1).
    expect(await goawayFor(headers(1, Buffer.from([0x80]), true))).toBe(COMPRESSION_ERROR);
  });

  it('a CONTINUATION flood (200 small frames): ENHANCE_YOUR_CALM', async () => {
    const blk = block([[':method', 'GET'], [':scheme', 'http'], [':authority', 'a'], [':path', '/'], ['x-long', 'v'.repeat(1990)]]);
    const parts = [frame(HEADERS, FLAG_END_STREAM, 1, blk.subarray(0, 10))];
    for (let i = 1; i <= 200; i++) parts.push(frame(CONTINUATION, i === 200 ? FLAG_END_HEADERS : 0, 1, blk.subarray(i * 10, i * 10 + 10)));
    expect(await goawayFor(Buffer.concat(parts))).toBe(ENHANCE_YOUR_CALM);
  });

  it('1001 empty DATA frames: ENHANCE_YOUR_CALM', async () => {
    const empties = Buffer.concat(Array.from({ length: 1001 }, () => data(1, Buffer.alloc(0))));
    expect(await goawayFor(empties, { open: headers(1, requestBlock('/', [], 'POST'), false) })).toBe(ENHANCE_YOUR_CALM);
  });

  it('streams the client makes the server reset count as resets ("MadeYouReset", CVE-2025-8671): ENHANCE_YOUR_CALM before 5000 (regression)', async () => {
    const h = await serve(() => {}, { maxConcurrentStreams: 100 });
    const c = await raw(h.port);
    const blk = requestBlock('/', [], 'GET');
    let id = 1;
    // Each stream opened, then pushed past a 2^31-1 send window: a stream error the server sends (§6.9.1).
    for (let batch = 0; batch < 25 && !c.isClosed; batch++) {
      const bufs: Buffer[] = [];
      for (let i = 0; i < 200; i++, id += 2) bufs.push(headers(id, blk, true), u32Frame(WINDOW_UPDATE, id, 0x7fff_ffff));
      c.socket.write(Buffer.concat(bufs));
      await tick();
    }
    const g = await c.goaway(3000);
    expect(g?.code).toBe(ENHANCE_YOUR_CALM);
    expect(h.seen.length).toBeLessThan(5000);
  });

  it('the bound on queued acknowledgements starts over when the socket drains: periodic PINGs during a long transfer do not add up (regression)', async () => {
    const { Duplex } = await import('node:stream');
    const written: Buffer[] = [];
    let needDrain = false;
    const sock = new Duplex({
      write(chunk: Buffer, _enc, cb) {
        written.push(chunk);
        cb();
      },
      read() {},
    });
    Object.defineProperty(sock, 'writableNeedDrain', { get: () => needDrain });
    new H2ServerConnection(sock, { maxConcurrentStreams: 100, maxHeaderListSize: 16_384, maxHeaderPairs: 128, encrypted: false, onStream() {} });
    sock.push(Buffer.concat([PREFACE, settingsFrame([])]));
    await tick();
    const pings = (n: number): Buffer => Buffer.concat(Array.from({ length: n }, (_, i) => pingFrame(i)));
    const goaway = (): boolean => {
      const all = Buffer.concat(written);
      for (let p = 0; p + 9 <= all.length; p += 9 + all.readUIntBE(p, 3)) if (all[p + 3] === GOAWAY) return true;
      return false;
    };
    // Backed up while 600 PINGs are answered; it drains, fills again at once, 600 more.
    needDrain = true;
    sock.push(pings(600));
    await tick();
    sock.emit('drain');
    sock.push(pings(600));
    await tick();
    expect(goaway()).toBe(false);
    // 1001 within one backed-up spell still end it.
    sock.push(pings(1001));
    await tick();
    expect(goaway()).toBe(true);
  });

  it('a PING flood from a client that does not read: the connection ends, the queued answers stay bounded', async () => {
    const h = await serve(() => {});
    const c = await RawClient.connect(h.port, { paused: true });
    cleanups.push(() => c.destroy());
    await until(() => h.sockets.length === 1);
    const server = h.sockets[0] as net.Socket;
    const conn = h.conns[0] as H2ServerConnection;
    const batch = Buffer.concat(Array.from({ length: 1000 }, (_, i) => pingFrame(i)));
    const heap0 = process.memoryUsage().heapUsed;
    let maxQueued = 0;
    let sent = 0;
    // 200 000 PINGs (3.4 MB of answers) is about what loopback's socket buffers absorb before
    // the server's write queue backs up at all, so the flood goes on (up to 1 000 000) until the
    // server gives up; how many it took is logged.
    while (sent < 1_000_000 && !conn.closed && c.socket.writable) {
      const ok = c.socket.write(batch);
      sent += 1000;
      maxQueued = Math.max(maxQueued, server.writableLength);
      if (!ok) await Promise.race([once(c.socket, 'drain'), sleep(500)]);
      else await tick();
    }
    await until(() => conn.closed, 5000, 'the server to give up on the connection');
    maxQueued = Math.max(maxQueued, server.writableLength);
    const heapGrowth = process.memoryUsage().heapUsed - heap0;
    // Now read what the server sent: the GOAWAY sits behind the acknowledgements it did write.
    c.socket.resume();
    const g = await c.goaway(5000);
    if (g !== undefined) expect(g.code).toBe(ENHANCE_YOUR_CALM);
    else expect(c.isClosed).toBe(true);
    console.log(`[ping flood] the server gave up after ${sent} PINGs; its write queue peaked at ${maxQueued} bytes, heap grew ${(heapGrowth / 1048576).toFixed(1)} MiB`);
    expect(sent).toBeLessThan(1_000_000);
    expect(maxQueued).toBeLessThan(1024 * 1024);
    expect(heapGrowth).toBeLessThan(64 * 1024 * 1024);
  });
});

// ---- 9b. a client that does not read (CVE-2019-9517 class; found in review)

describe('a client that does not read its answers', () => {
  /** A tiny GET: :method GET, :scheme http, :path / (static table), :authority 'a'. */
  const TINY = Buffer.from([0x82, 0x86, 0x84, 0x01, 0x01, 0x61]);

  it('answered at once, request after request: the server stops reading while its output is queued, then answers every one once the client reads', async () => {
    // What the sidecar does for a refusal: a few fields and END_STREAM, at once.
    const h = await serve((s) => {
      s.respond({ ':status': 401, 'www-authenticate': 'Bearer realm="orders"', 'x-ward-reason': 'ERR_TOKEN_MISSING', 'x-ward-decision-id': '01J9Z3Y7M4X2W8V6T5R3Q1P0NM', 'content-length': '0' }, { endStream: true });
    });
    const c = await RawClient.connect(h.port, { paused: true });
    cleanups.push(() => c.destroy());
    await until(() => h.sockets.length === 1);
    const server = h.sockets[0] as net.Socket;
    // 100 000 requests, 1.5 MB: their answers, ~11 MB, all queued without the bound.
    const N = 100_000;
    for (let first = 1; first < 2 * N; first += 4000) {
      const parts: Buffer[] = [];
      for (let id = first; id < first + 4000 && id < 2 * N; id += 2) parts.push(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, id, TINY));
      c.socket.write(Buffer.concat(parts));
    }
    let queued = 0;
    for (let i = 0; i < 50; i++) {
      queued = Math.max(queued, server.writableLength);
      await sleep(10);
    }
    expect(queued).toBeGreaterThan(1024 * 1024); // the client did fill it
    expect(queued).toBeLessThan(4 * 1024 * 1024);
    expect(server.isPaused()).toBe(true);
    expect(h.conns[0]?.closed).toBe(false);
    c.socket.resume();
    const last = await c.wait((f) => f.streamId === 2 * N - 1, 20_000);
    expect(last?.type).toBe(HEADERS);
  }, 60_000);

  it('held request bodies pin about what they count, however the client packs its reads', async () => {
    const h = await serve(() => {}); // never resumed: calls still being authenticated
    const c = await RawClient.connect(h.port);
    cleanups.push(() => c.destroy());
    await until(() => h.sockets.length === 1);
    // Each 4096-octet DATA frame in a ~64 KiB write, the rest frames of an unknown type (ignored,
    // RFC 9113 §4.1): kept as slices, each 4 KiB counted pinned a whole read.
    const filler = Buffer.concat([0, 1, 2].map(() => frame(0xfa, 0, 0, Buffer.alloc(16_384))).concat(frame(0xfa, 0, 0, Buffer.alloc(16_384 - 4096 - 9 * 5))));
    const STREAMS = 4;
    const PER = 15; // 15 × 4096 = 61 440, within the 65 535 stream window
    for (let id = 1; id < 2 * STREAMS; id += 2) {
      c.send(frame(HEADERS, FLAG_END_HEADERS, id, requestBlock('/', [], 'POST')));
      for (let i = 0; i < PER; i++) {
        c.send(Buffer.concat([frame(DATA, 0, id, Buffer.alloc(4096, 0x61)), filler]));
        await sleep(2);
      }
    }
    const counted = STREAMS * PER * 4096;
    await until(() => h.seen.reduce((n, x) => n + x.stream.inboxBytes, 0) === counted, 5000, 'the bodies held');
    // Every distinct ArrayBuffer the held chunks keep alive (a copy may share Node's buffer pool).
    const buffers = new Set<ArrayBufferLike>(h.seen.flatMap((x) => x.stream.inbox ?? []).map((b) => b.buffer));
    const pinned = [...buffers].reduce((n, b) => n + b.byteLength, 0);
    expect(pinned).toBeLessThanOrEqual(2 * counted);
  });

  it("after the client's GOAWAY, new streams are refused at most 100 times, then the connection ends with ENHANCE_YOUR_CALM", async () => {
    const h = await serve(() => {}); // the first stream stays open: a call still waiting
    const c = await RawClient.connect(h.port);
    cleanups.push(() => c.destroy());
    c.send(frame(HEADERS, FLAG_END_HEADERS, 1, requestBlock('/', [], 'POST')), goawayFrame(0, NO_ERROR));
    await until(() => h.seen.length === 1);
    const parts: Buffer[] = [];
    for (let id = 3; id < 3 + 2 * 150; id += 2) parts.push(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, id, TINY));
    c.send(Buffer.concat(parts));
    const g = await c.goaway(5000);
    expect(g?.payload.readUInt32BE(4)).toBe(ENHANCE_YOUR_CALM);
    expect(c.frames.filter((f) => f.type === RST_STREAM).length).toBeLessThanOrEqual(101);
  });
});

// ---- 10. slow drip

describe('slow drip', () => {
  it('a request written one byte at a time gets a correct response', async () => {
    const h = await serve((s) => {
      void readAll(s).then((b) => s.end(`${b.length} ${sha(b)}`));
    });
    const c = await RawClient.connect(h.port, { preface: false, autoAck: false });
    cleanups.push(() => c.destroy());
    const body = randomBytes(1900);
    const bytes = Buffer.concat([PREFACE, settingsFrame([]), headers(1, requestBlock('/drip', [['content-length', String(body.length)]], 'POST'), false), data(1, body, true)]);
    const started = Date.now();
    for (let i = 0; i < bytes.length; i++) {
      c.socket.write(bytes.subarray(i, i + 1));
      if (i % 16 === 15) await sleep(1);
      else await tick();
    }
    const end = await c.wait((f) => f.streamId === 1 && isEnd(f), 5000);
    expect(end).toBeDefined();
    expect(Buffer.concat(c.of(1).filter((f) => f.type === DATA).map((f) => f.payload)).toString()).toBe(`${body.length} ${sha(body)}`);
    console.log(`[slow drip] ${bytes.length} one-byte writes: ${Date.now() - started} ms`);
  });

  /**
   * Sends one 16 KiB DATA frame a byte per write and returns the time the connection itself
   * spent in its socket `data` handler (between a listener put before it and one after it).
   * `lockstep`: each byte waits until the server has read the previous one, so every read holds
   * one byte (the worst case for a reader that re-concatenates its partial frame per read);
   * otherwise the writes go in groups of 32 per macrotask and loopback coalesces them.
   */
  async function drip16k(lockstep: boolean): Promise<{ reads: number; handlerMs: number; wallMs: number }> {
    let received: Buffer | undefined;
    const h = await serve((s) => {
      void readAll(s).then((b) => {
        received = b;
        s.end('ok');
      });
    });
    const c = await raw(h.port);
    c.send(headers(1, requestBlock('/drip', [], 'POST'), false));
    await until(() => h.seen.length === 1);
    await sleep(10);
    const server = h.sockets[0] as net.Socket;
    let reads = 0;
    let handlerMs = 0;
    let t = 0;
    server.prependListener('data', () => {
      t = performance.now();
    });
    server.on('data', () => {
      handlerMs += performance.now() - t;
      reads++;
    });
    const body = randomBytes(16_384);
    const bytes = data(1, body, true);
    const t0 = performance.now();
    for (let i = 0; i < bytes.length; i++) {
      c.socket.write(bytes.subarray(i, i + 1));
      if (lockstep) {
        const want = reads + 1;
        while (reads < want) await new Promise<void>((r) => setImmediate(r));
      } else if (i % 32 === 31) await new Promise<void>((r) => setImmediate(r));
    }
    await until(() => received !== undefined, 20_000, 'the body');
    const wallMs = performance.now() - t0;
    expect(sha(received as Buffer)).toBe(sha(body));
    expect(await c.wait((f) => f.streamId === 1 && isEnd(f))).toBeDefined();
    return { reads, handlerMs, wallMs };
  }

  it('a 16 KiB DATA frame in 1-byte writes arrives intact (timed: the partial frame is re-concatenated on every read)', async () => {
    const batched = await drip16k(false);
    const lockstep = await drip16k(true);
    expect(lockstep.reads).toBeGreaterThan(16_000);
    for (const [name, r] of [['batched', batched], ['one byte per read', lockstep]] as const) {
      console.log(`[slow drip] 16 KiB DATA frame, ${name}: ${r.reads} server reads, ${r.handlerMs.toFixed(1)} ms in the connection's data handler (${((r.handlerMs * 1000) / r.reads).toFixed(1)} µs/read), ${r.wallMs.toFixed(0)} ms wall`);
    }
  }, 60_000);
});

// ---- 11. fuzz


describe('fuzz', () => {
  it('300 seeded connections of random frames: no crash, no malformed request reaches onStream, one close per stream, one onClose per connection', async () => {
    const bad: string[] = [];
    let pick = prng(0);
    const h = await serve((s) => {
      // Exercise the response paths too, chosen by the same seeded generator.
      const r = Math.floor(pick() * 5);
      if (r === 1) s.respond({ ':status': 200 }, { endStream: true });
      else if (r === 2) void readAll(s).then(() => !s.destroyed && s.end('ok'));
      else if (r === 3) s.close(CANCEL);
      else if (r === 4) s.write('partial');
    });
    const variants: [string, string][][] = [
      [[':method', 'GET'], [':scheme', 'http'], [':authority', 'a'], [':path', '/']],
      [[':method', 'POST'], [':scheme', 'http'], [':authority', 'a'], [':path', '/up'], ['te', 'trailers']],
      [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['host', 'h'], ['x-dup', '1'], ['x-dup', '2']],
      [[':method', 'POST'], [':scheme', 'https'], [':path', '/x'], ['content-length', '4']],
      [[':method', 'GET'], [':path', '/']],
      [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['Upper', '1']],
      [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['te', 'gzip']],
      [[':method', 'CONNECT'], [':authority', 'a:1']],
      [[':path', '/'], [':method', 'GET'], [':scheme', 'http'], [':path', '/']],
      [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['x', ' v']],
    ];
    const started = Date.now();
    let iterations = 0;
    const streamsBefore: number[] = [];
    for (let iter = 0; iter < 300; iter++) {
      const rnd = prng(1000 + iter);
      pick = prng(5000 + iter);
      const int = (n: number): number => Math.floor(rnd() * n);
      const parts: Buffer[] = [];
      const count = 1 + int(30);
      const sid = (): number => [1, 3, 5, 7][int(4)] as number;
      for (let k = 0; k < count; k++) {
        const roll = rnd();
        if (roll < 0.3) {
          // A request (valid or one of the malformed variants), maybe ending the stream.
          const v = variants[int(variants.length)] as [string, string][];
          parts.push(frame(HEADERS, FLAG_END_HEADERS | (rnd() < 0.5 ? FLAG_END_STREAM : 0), sid(), block(v)));
        } else if (roll < 0.5) {
          parts.push(data(sid(), randomBytesFrom(rnd, int(40)), rnd() < 0.4));
        } else if (roll < 0.58) {
          // Trailers, sometimes with a pseudo-header in them.
          parts.push(headers(sid(), block(rnd() < 0.7 ? [['x-t', 'v']] : [[':path', '/t']]), rnd() < 0.8));
        } else if (roll < 0.72) {
          const t = [WINDOW_UPDATE, RST_STREAM][int(2)] as number;
          parts.push(u32Frame(t, sid(), int(4) === 0 ? 0 : 1 + int(100_000)));
        } else {
          const ids = [0, 1, 3, 5, int(0x7fff_ffff)];
          const flags = rnd() < 0.5 ? ([0, 1, 4, 5, 8, 0x20, 0x25][int(7)] as number) : int(256);
          parts.push(frame(int(11), flags, ids[int(ids.length)] as number, randomBytesFrom(rnd, int(81))));
        }
      }
      streamsBefore.push(h.seen.length);
      const c = await RawClient.connect(h.port);
      const sentinel = pingFrame(0xfeed);
      c.send(...parts, sentinel);
      // Until the server answered the sentinel PING (all frames processed) or gave up.
      await c.wait((f) => f.type === PING && f.payload.readUInt32BE(4) === 0xfeed, 300);
      c.destroy();
      const conn = await (async () => {
        await until(() => h.conns.length === iter + 1, 1000, `connection ${iter}`);
        return h.conns[iter] as H2ServerConnection;
      })();
      await until(() => (h.closes.get(conn) ?? 0) >= 1, 2000, `onClose of connection ${iter}`);
      iterations++;
      if (Date.now() - started > 10_000) break;
    }
    await sleep(20);
    for (let i = 0; i < h.conns.length; i++) {
      const n = h.closes.get(h.conns[i] as H2ServerConnection);
      if (n !== 1) bad.push(`connection ${i}: onClose ${n ?? 0} times`);
    }
    h.seen.forEach((s, i) => {
      const why = malformed(s.fields);
      const conn = streamsBefore.findLastIndex((n) => n <= i);
      if (why !== null) bad.push(`connection ${conn} stream ${s.stream.id}: malformed request reached onStream (${why}): ${JSON.stringify(s.fields)}`);
      if (s.closes !== 1) bad.push(`connection ${conn} stream ${s.stream.id}: ${s.closes} close events`);
    });
    expect(bad).toEqual([]);
    expect(iterations).toBeGreaterThanOrEqual(100);
    console.log(`[fuzz] ${iterations} connections, ${h.seen.length} requests seen, ${Date.now() - started} ms`);
  }, 30_000);
});

function randomBytesFrom(rnd: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}
