import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  COMPRESSION_ERROR,
  CONTINUATION,
  DATA,
  ENHANCE_YOUR_CALM,
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
  NO_ERROR,
  PING,
  PRIORITY,
  PROTOCOL_ERROR,
  PUSH_PROMISE,
  REFUSED_STREAM,
  RST_STREAM,
  SETTINGS,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_FRAME_SIZE,
  settingsFrame,
  STREAM_CLOSED,
  u32Frame,
  WINDOW_UPDATE,
} from '../../../src/h2/frames.ts';
import { CONN_RECV_WINDOW } from '../../../src/h2/endpoint.ts';
import { H2ServerConnection, type H2ServerStream } from '../../../src/h2/server.ts';
import { block, requestBlock } from '../../security/support/h2raw.ts';
import { type Frame, RawClient } from './raw-client.ts';

/**
 * ward's HTTP/2 server connection (src/h2/server.ts) against the h2spec list of checks
 * ("generic" and "http2" sections, server side), frame by frame over a raw client: each case
 * sends what h2spec sends and expects what RFC 9113 requires -- a connection error (GOAWAY with
 * the code), a stream error (RST_STREAM, or GOAWAY: §5.4.1 lets any stream error be treated as
 * a connection error), or nothing wrong at all (the connection still answers a PING).
 * Where RFC 9113 changed what RFC 7540 (and h2spec) asked, the case says so.
 */


let port = 0;
let server: net.Server;
const sockets = new Set<net.Socket>();
const clients = new Set<RawClient>();

/**
 * The app: `/hold` is never answered (the stream stays open until the client ends or resets
 * it); anything else reads the request to its end and answers 200 "ok" (HEAD: no body).
 */
function onStream(s: H2ServerStream, fields: string[]): void {
  const path = fields[fields.indexOf(':path') + 1];
  if (path === '/hold') return;
  const head = fields[fields.indexOf(':method') + 1] === 'HEAD';
  s.on('end', () => {
    if (s.destroyed) return;
    if (head) s.respond({ ':status': 200 }, { endStream: true });
    else s.end('ok');
  });
  s.resume();
}

beforeAll(async () => {
  server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    new H2ServerConnection(socket, { maxConcurrentStreams: 100, maxHeaderListSize: 16_384, maxHeaderPairs: 128, encrypted: false, onStream });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const c of clients) c.destroy();
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

async function connect(settings: readonly (readonly [number, number])[] = []): Promise<RawClient> {
  const c = await RawClient.connect(port, { settings });
  clients.add(c);
  // The server's SETTINGS first: what the test then waits for is what its frames caused.
  await c.wait((f) => f.type === SETTINGS && (f.flags & FLAG_ACK) === 0);
  return c;
}

// ---- frames

const GET = requestBlock('/');
const HOLD = requestBlock('/hold', [], 'POST');

function headers(id: number, blk: Buffer, o: { end?: boolean; endHeaders?: boolean; padded?: number; priority?: readonly [dep: number, weight: number] } = {}): Buffer {
  let flags = (o.end === true ? FLAG_END_STREAM : 0) | (o.endHeaders === false ? 0 : FLAG_END_HEADERS);
  const parts: Buffer[] = [];
  if (o.padded !== undefined) {
    flags |= FLAG_PADDED;
    parts.push(Buffer.from([o.padded]));
  }
  if (o.priority !== undefined) {
    flags |= FLAG_PRIORITY;
    parts.push(priorityPayload(o.priority[0], o.priority[1]));
  }
  parts.push(blk);
  if (o.padded !== undefined) parts.push(Buffer.alloc(o.padded));
  return frame(HEADERS, flags, id, Buffer.concat(parts));
}

function data(id: number, payload: Buffer | string, o: { end?: boolean; padded?: number } = {}): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (o.padded === undefined) return frame(DATA, o.end === true ? FLAG_END_STREAM : 0, id, body);
  return frame(DATA, FLAG_PADDED | (o.end === true ? FLAG_END_STREAM : 0), id, Buffer.concat([Buffer.from([o.padded]), body, Buffer.alloc(o.padded)]));
}

function priorityPayload(dep: number, weight: number): Buffer {
  const p = Buffer.alloc(5);
  p.writeUInt32BE(dep);
  p[4] = weight;
  return p;
}

function priority(id: number, dep: number, weight = 255): Buffer {
  return frame(PRIORITY, 0, id, priorityPayload(dep, weight));
}

function continuation(id: number, blk: Buffer, endHeaders: boolean): Buffer {
  return frame(CONTINUATION, endHeaders ? FLAG_END_HEADERS : 0, id, blk);
}

function ping(n = 0, flags = 0): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(n, 4);
  return frame(PING, flags, 0, p);
}

function raw(type: number, flags: number, id: number, payload: Buffer): Buffer {
  return frame(type, flags, id, payload);
}

function isEnd(f: Frame): boolean {
  return (f.type === DATA || f.type === HEADERS) && (f.flags & FLAG_END_STREAM) !== 0;
}

// ---- what came back

/** A connection error: GOAWAY with one of `codes`, then the socket closes. */
async function expectConnectionError(c: RawClient, codes: readonly number[]): Promise<void> {
  const g = await c.goaway();
  expect(g === undefined ? 'no GOAWAY' : `GOAWAY ${g.code}`).toBe(`GOAWAY ${g?.code}`);
  expect(codes).toContain(g?.code);
  expect(await c.waitClosed()).toBe(true);
}

/** A stream error on `id`: RST_STREAM with one of `codes` (or a GOAWAY with one, §5.4.1). Returns which. */
async function expectStreamError(c: RawClient, id: number, codes: readonly number[]): Promise<'stream' | 'connection'> {
  const f = await c.wait((x) => (x.type === RST_STREAM && x.streamId === id) || x.type === GOAWAY);
  expect(f === undefined ? 'nothing' : f.type === GOAWAY ? `GOAWAY ${f.code}` : `RST_STREAM ${f.code}`).not.toBe('nothing');
  expect(codes).toContain(f?.code);
  return f?.type === RST_STREAM ? 'stream' : 'connection';
}

let pings = 1000;

/** Nothing went wrong: a PING is still answered, and no GOAWAY or error RST_STREAM came (after frame `from`). */
async function expectFine(c: RawClient, from = 0): Promise<void> {
  const n = ++pings;
  c.send(ping(n));
  const ack = await c.wait((f) => f.type === PING && (f.flags & FLAG_ACK) !== 0 && f.payload.readUInt32BE(4) === n);
  const bad = c.frames.slice(from).filter((f) => f.type === GOAWAY || (f.type === RST_STREAM && f.code !== NO_ERROR));
  expect(bad.map((f) => `${f.type === GOAWAY ? 'GOAWAY' : `RST_STREAM ${f.streamId}`} ${f.code}`)).toEqual([]);
  expect(ack).toBeDefined();
}

/** A request on `id` that ends both ways (the response ended with END_STREAM). */
async function completeRequest(c: RawClient, id: number): Promise<void> {
  c.send(headers(id, GET, { end: true }));
  expect(await c.wait((f) => f.streamId === id && isEnd(f))).toBeDefined();
}

// ---- 1. DATA on a stream that is not open (RFC 9113 §6.1, §5.1)

describe('DATA on a closed stream (RFC 9113 §6.1, §5.1)', () => {
  it('after the client reset the stream: stream error STREAM_CLOSED, the connection goes on (regression: ignored)', async () => {
    const c = await connect();
    c.send(headers(1, HOLD), u32Frame(RST_STREAM, 1, 0x8), data(1, 'late', { end: true }));
    expect(await expectStreamError(c, 1, [STREAM_CLOSED])).toBe('stream');
    await completeRequest(c, 3);
    await expectFine(c, c.frames.findIndex((f) => f.type === RST_STREAM) + 1);
  });

  it('after both sides ended it with END_STREAM: stream error STREAM_CLOSED, the connection goes on (regression: ignored)', async () => {
    const c = await connect();
    await completeRequest(c, 1);
    c.send(data(1, 'late', { end: true }));
    expect(await expectStreamError(c, 1, [STREAM_CLOSED])).toBe('stream');
    await completeRequest(c, 3);
    await expectFine(c, c.frames.findIndex((f) => f.type === RST_STREAM) + 1);
  });

  it('one RST_STREAM per closed stream: later DATA on it is ignored (§5.4.2)', async () => {
    const c = await connect();
    await completeRequest(c, 1);
    c.send(data(1, 'a'), data(1, 'b'), data(1, 'c', { end: true }));
    await expectStreamError(c, 1, [STREAM_CLOSED]);
    await expectFine(c, c.frames.findIndex((f) => f.type === RST_STREAM) + 1);
    expect(c.frames.filter((f) => f.type === RST_STREAM && f.streamId === 1)).toHaveLength(1);
  });

  it('a client that keeps drawing RST_STREAM with DATA on closed streams loses the connection (ENHANCE_YOUR_CALM, CVE-2019-9514 class)', async () => {
    const c = await connect();
    const bufs: Buffer[] = [];
    for (let id = 1; id <= 401; id += 2) bufs.push(headers(id, GET, { end: true }));
    c.send(...bufs);
    await c.wait((f) => f.streamId === 401 && isEnd(f));
    const late: Buffer[] = [];
    for (let id = 1; id <= 401; id += 2) late.push(data(id, 'x'));
    c.send(...late);
    await expectConnectionError(c, [ENHANCE_YOUR_CALM]);
    expect(c.frames.filter((f) => f.type === RST_STREAM).length).toBeLessThanOrEqual(101);
  });

  it('after the server reset the stream: ignored, as the client may have sent it before it saw the RST_STREAM (§5.1)', async () => {
    const c = await connect();
    // DATA past the declared content-length: the server resets the stream (§8.1.1).
    c.send(headers(1, requestBlock('/', [['content-length', '1']], 'POST')), data(1, 'toolong'));
    expect((await c.rst(1))?.code).toBe(PROTOCOL_ERROR);
    const mark = c.frames.length;
    c.send(data(1, 'more'), data(1, 'last', { end: true }));
    await expectFine(c, mark);
    expect(c.frames.filter((f) => f.type === RST_STREAM && f.streamId === 1)).toHaveLength(1);
  });

  it('ignored and refused DATA still count against, and are credited back to, the connection window (§6.9, §5.1): 24 MiB of padded DATA on closed streams', async () => {
    const c = await connect();
    // Stream 1: closed by the client (DATA on it refused once, then ignored); stream 3: reset by the server (ignored).
    c.send(headers(1, HOLD), u32Frame(RST_STREAM, 1, 0x8));
    c.send(headers(3, requestBlock('/', [['content-length', '1']], 'POST')), data(3, 'toolong'));
    expect((await c.rst(3))?.code).toBe(PROTOCOL_ERROR);
    const mark = c.frames.length;
    const chunk = Buffer.alloc(16_384 - 256, 0x61);
    const frames: Buffer[] = [];
    for (let i = 0; i < 16; i++) frames.push(data(i % 2 === 0 ? 1 : 3, chunk, { padded: 255 }));
    const batch = Buffer.concat(frames);
    const total = 24 * 1024 * 1024;
    let sent = 0;
    while (sent < total && !c.isClosed) {
      c.send(batch);
      sent += 16 * 16_384;
      if (c.socket.writableNeedDrain) await once(c.socket, 'drain');
    }
    expect(sent).toBeGreaterThan(CONN_RECV_WINDOW);
    const rst1 = await c.rst(1);
    await expectFine(c, Math.max(mark, c.frames.indexOf(rst1 as Frame) + 1));
    // Stream 1's first DATA drew the one STREAM_CLOSED; everything after it was ignored.
    expect(c.frames.filter((f) => f.type === RST_STREAM).map((f) => `${f.streamId} ${f.code}`)).toEqual([`3 ${PROTOCOL_ERROR}`, `1 ${STREAM_CLOSED}`]);
    const credited = c.frames.filter((f) => f.type === WINDOW_UPDATE && f.streamId === 0).reduce((n, f) => n + f.payload.readUInt32BE(0), 0);
    // The first WINDOW_UPDATE raises 65 535 to CONN_RECV_WINDOW; the rest give back what was received.
    expect(credited - (CONN_RECV_WINDOW - 65_535)).toBeGreaterThanOrEqual(sent - CONN_RECV_WINDOW / 2);
    await completeRequest(c, 5);
  });

});

// ---- 2. priority (RFC 9113 §5.3.2, §6.3; RFC 7540 §5.3.1)

describe('HEADERS on a closed stream (RFC 9113 §5.1)', () => {
  it('after both sides ended it: connection error STREAM_CLOSED (regression: PROTOCOL_ERROR)', async () => {
    const c = await connect();
    await completeRequest(c, 1);
    c.send(headers(1, GET, { end: true }));
    await expectConnectionError(c, [STREAM_CLOSED]);
  });

  it('after the client reset it: connection error STREAM_CLOSED', async () => {
    const c = await connect();
    c.send(headers(1, HOLD), u32Frame(RST_STREAM, 1, 0x8));
    await new Promise((r) => setTimeout(r, 20));
    c.send(headers(1, GET, { end: true }));
    await expectConnectionError(c, [STREAM_CLOSED]);
  });
});

describe('a stream that depends on itself (RFC 7540 §5.3.1; gone from RFC 9113)', () => {
  it('PRIORITY on an idle stream, depending on itself: connection error PROTOCOL_ERROR (regression: ignored)', async () => {
    const c = await connect();
    c.send(priority(1, 1));
    await expectConnectionError(c, [PROTOCOL_ERROR]);
  });

  it('PRIORITY on an open stream, depending on itself: connection error PROTOCOL_ERROR (regression: ignored)', async () => {
    const c = await connect();
    c.send(headers(1, HOLD));
    await sleep(10);
    c.send(priority(1, 1, 16));
    await expectConnectionError(c, [PROTOCOL_ERROR]);
  });

  it('PRIORITY on a closed stream, depending on itself (exclusive bit set): connection error PROTOCOL_ERROR', async () => {
    const c = await connect();
    await completeRequest(c, 1);
    c.send(priority(1, 0x8000_0001));
    await expectConnectionError(c, [PROTOCOL_ERROR]);
  });

  it('HEADERS with a priority block depending on itself: connection error PROTOCOL_ERROR', async () => {
    const c = await connect();
    c.send(headers(1, GET, { end: true, priority: [1, 255] }));
    await expectConnectionError(c, [PROTOCOL_ERROR]);
  });

  it('valid priority signals are accepted and ignored: PRIORITY on idle, open, closed streams; HEADERS with priority and padding', async () => {
    const c = await connect();
    c.send(priority(9, 0), priority(11, 9, 0), headers(1, HOLD), priority(1, 0x8000_0003, 7));
    await completeRequest(c, 3);
    c.send(priority(3, 1));
    c.send(headers(5, GET, { end: true, priority: [3, 10], padded: 8 }));
    expect(await c.wait((f) => f.streamId === 5 && isEnd(f))).toBeDefined();
    await expectFine(c);
  });
});

// ---- 3. the rest of h2spec, server side

type Expect = { readonly conn: readonly number[] } | { readonly stream: number; readonly codes: readonly number[] } | 'fine';

interface Case {
  readonly name: string;
  readonly settings?: readonly (readonly [number, number])[];
  /** Frames sent one batch after another; a function waits on the client between batches. */
  readonly steps: readonly (Buffer | ((c: RawClient) => Promise<void>))[];
  readonly expect: Expect;
}

const waitEnd = (id: number) => async (c: RawClient): Promise<void> => {
  await c.wait((f) => f.streamId === id && isEnd(f));
};

const BIG_BLOCK = block([[':method', 'GET'], [':scheme', 'http'], [':authority', 'a'], [':path', '/'], ['x-big', 'v'.repeat(16_400)]]);

const cases: readonly Case[] = [
  // 3.5 connection preface (the bad preface: server.test.ts)
  // 4.1 frame format
  { name: '4.1/1 a frame of unknown type is ignored', steps: [raw(0xfa, 0, 0, Buffer.from('x'))], expect: 'fine' },
  { name: '4.1/2 undefined flags are ignored', steps: [ping(7, 0x16)], expect: 'fine' },
  { name: '4.1/3 the reserved bit of the stream id is ignored', steps: [Buffer.concat([raw(PING, 0, 0, Buffer.alloc(8)).subarray(0, 5), Buffer.from([0x80, 0, 0, 0]), Buffer.alloc(8)])], expect: 'fine' },
  // 4.2 frame size
  { name: '4.2/1 DATA of 2^14 octets is accepted', steps: [headers(1, requestBlock('/', [], 'POST')), data(1, Buffer.alloc(16_384), { end: true }), waitEnd(1)], expect: 'fine' },
  { name: '4.2/2 DATA over SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR', steps: [headers(1, HOLD), data(1, Buffer.alloc(16_385))], expect: { stream: 1, codes: [FRAME_SIZE_ERROR] } },
  { name: '4.2/3 HEADERS over SETTINGS_MAX_FRAME_SIZE: connection FRAME_SIZE_ERROR', steps: [headers(1, BIG_BLOCK, { end: true })], expect: { conn: [FRAME_SIZE_ERROR] } },
  // 4.3 field section compression
  { name: '4.3/1 an invalid field block: COMPRESSION_ERROR', steps: [headers(1, Buffer.from([0x80]), { end: true })], expect: { conn: [COMPRESSION_ERROR] } },
  { name: '4.3/2 PRIORITY inside a field block: PROTOCOL_ERROR', steps: [headers(1, GET.subarray(0, 5), { end: true, endHeaders: false }), priority(1, 0), continuation(1, GET.subarray(5), true)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '4.3/3 HEADERS on another stream inside a field block: PROTOCOL_ERROR', steps: [headers(1, GET.subarray(0, 5), { end: true, endHeaders: false }), headers(3, GET, { end: true })], expect: { conn: [PROTOCOL_ERROR] } },
  { name: 'hpack: a table size update after a field: COMPRESSION_ERROR', steps: [headers(1, Buffer.concat([GET, Buffer.from([0x20])]), { end: true })], expect: { conn: [COMPRESSION_ERROR] } },
  { name: 'hpack: a table size update above SETTINGS_HEADER_TABLE_SIZE: COMPRESSION_ERROR', steps: [headers(1, Buffer.concat([Buffer.from([0x3f, 0xe2, 0x1f]), GET]), { end: true })], expect: { conn: [COMPRESSION_ERROR] } },
  // 5.1 stream states
  { name: '5.1/1 idle: DATA: PROTOCOL_ERROR', steps: [data(1, 'x', { end: true })], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '5.1/2 idle: RST_STREAM: PROTOCOL_ERROR', steps: [u32Frame(RST_STREAM, 1, 0x8)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '5.1/3 idle: WINDOW_UPDATE: PROTOCOL_ERROR', steps: [u32Frame(WINDOW_UPDATE, 1, 100)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '5.1/4 idle: CONTINUATION: PROTOCOL_ERROR', steps: [continuation(1, GET, true)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '5.1/5 half-closed (remote): DATA: STREAM_CLOSED', steps: [headers(1, requestBlock('/hold'), { end: true }), data(1, 'x', { end: true })], expect: { stream: 1, codes: [STREAM_CLOSED] } },
  { name: '5.1/6 half-closed (remote): HEADERS: STREAM_CLOSED', steps: [headers(1, requestBlock('/hold'), { end: true }), headers(1, requestBlock('/hold'), { end: true })], expect: { stream: 1, codes: [STREAM_CLOSED] } },
  { name: '5.1/7 half-closed (remote): CONTINUATION: STREAM_CLOSED or PROTOCOL_ERROR', steps: [headers(1, requestBlock('/hold'), { end: true }), continuation(1, GET, true)], expect: { stream: 1, codes: [STREAM_CLOSED, PROTOCOL_ERROR] } },
  { name: '5.1/8 closed after the client\'s RST_STREAM: DATA: STREAM_CLOSED', steps: [headers(1, HOLD), u32Frame(RST_STREAM, 1, 0x8), data(1, 'x', { end: true })], expect: { stream: 1, codes: [STREAM_CLOSED] } },
  { name: '5.1/10 closed after the client\'s RST_STREAM: CONTINUATION: STREAM_CLOSED or PROTOCOL_ERROR', steps: [headers(1, HOLD), u32Frame(RST_STREAM, 1, 0x8), continuation(1, block([['x-a', 'b']]), true)], expect: { stream: 1, codes: [STREAM_CLOSED, PROTOCOL_ERROR] } },
  // 5.1/11 "closed: DATA" -> RFC 7540 asked for a connection error; RFC 9113 §6.1 a stream error (§5.1: a connection error MAY): the describe block above.
  { name: '5.1/13 closed: CONTINUATION: STREAM_CLOSED or PROTOCOL_ERROR', steps: [headers(1, GET, { end: true }), waitEnd(1), continuation(1, block([['x-a', 'b']]), true)], expect: { conn: [STREAM_CLOSED, PROTOCOL_ERROR] } },
  // 5.1.1 stream identifiers (even id, lower id: server.test.ts)
  // 5.1.2 stream concurrency
  { name: '5.1.2/1 HEADERS past SETTINGS_MAX_CONCURRENT_STREAMS: REFUSED_STREAM or PROTOCOL_ERROR', steps: [Buffer.concat(Array.from({ length: 101 }, (_, i) => headers(1 + 2 * i, HOLD)))], expect: { stream: 201, codes: [REFUSED_STREAM, PROTOCOL_ERROR] } },
  // 5.4.1 connection error handling
  { name: '5.4.1/1 an invalid PING: GOAWAY, then the connection closes', steps: [raw(PING, 0, 0, Buffer.alloc(6))], expect: { conn: [FRAME_SIZE_ERROR] } },
  // 5.5 extending HTTP/2
  { name: '5.5/1 an unknown extension frame is ignored', steps: [raw(0xff, 0, 0, Buffer.alloc(8))], expect: 'fine' },
  { name: '5.5/2 an unknown extension frame inside a field block: PROTOCOL_ERROR', steps: [headers(1, GET.subarray(0, 5), { end: true, endHeaders: false }), raw(0xff, 0, 1, Buffer.alloc(8)), continuation(1, GET.subarray(5), true)], expect: { conn: [PROTOCOL_ERROR] } },
  // 6.1 DATA
  { name: '6.1/1 DATA on stream 0: PROTOCOL_ERROR', steps: [data(0, 'x', { end: true })], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.1/2 DATA on a half-closed (remote) stream: STREAM_CLOSED', steps: [headers(1, requestBlock('/hold'), { end: true }), data(1, 'x', { end: true })], expect: { stream: 1, codes: [STREAM_CLOSED] } },
  { name: '6.1/3 DATA with a pad length past its payload: PROTOCOL_ERROR', steps: [headers(1, HOLD), raw(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, Buffer.from([6, 0x61, 0x62, 0x63, 0, 0]))], expect: { conn: [PROTOCOL_ERROR] } },
  // 6.2 HEADERS
  { name: '6.2/1 HEADERS without END_HEADERS, then PRIORITY: PROTOCOL_ERROR', steps: [headers(1, GET, { end: true, endHeaders: false }), priority(1, 0)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.2/2 HEADERS without END_HEADERS, then HEADERS on another stream: PROTOCOL_ERROR', steps: [headers(1, GET, { end: true, endHeaders: false }), headers(3, GET, { end: true })], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.2/3 HEADERS on stream 0: PROTOCOL_ERROR', steps: [headers(0, GET, { end: true })], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.2/4 HEADERS with a pad length past its payload: PROTOCOL_ERROR', steps: [raw(HEADERS, FLAG_PADDED | FLAG_END_HEADERS | FLAG_END_STREAM, 1, Buffer.concat([Buffer.from([GET.length + 1]), GET]))], expect: { conn: [PROTOCOL_ERROR] } },
  // 6.3 PRIORITY
  { name: '6.3/1 PRIORITY on stream 0: PROTOCOL_ERROR', steps: [priority(0, 1)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.3/2 PRIORITY of 4 octets on an open stream: FRAME_SIZE_ERROR', steps: [headers(1, HOLD), raw(PRIORITY, 0, 1, Buffer.from([0x80, 0, 0, 1]))], expect: { stream: 1, codes: [FRAME_SIZE_ERROR] } },
  // 6.4 RST_STREAM
  { name: '6.4/1 RST_STREAM on stream 0: PROTOCOL_ERROR', steps: [u32Frame(RST_STREAM, 0, 0x8)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.4/2 RST_STREAM on an idle stream: PROTOCOL_ERROR', steps: [u32Frame(RST_STREAM, 1, 0x8)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.4/3 RST_STREAM of 3 octets: FRAME_SIZE_ERROR', steps: [headers(1, HOLD), raw(RST_STREAM, 0, 1, Buffer.from([0, 0, 8]))], expect: { conn: [FRAME_SIZE_ERROR] } },
  // 6.5 SETTINGS
  { name: '6.5/1 SETTINGS ACK with a payload: FRAME_SIZE_ERROR', steps: [raw(SETTINGS, FLAG_ACK, 0, Buffer.from([0, 1, 0, 0, 0x10, 0]))], expect: { conn: [FRAME_SIZE_ERROR] } },
  { name: '6.5/2 SETTINGS on a stream: PROTOCOL_ERROR', steps: [raw(SETTINGS, 0, 1, Buffer.from([0, 3, 0, 0, 0, 100]))], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.5/3 SETTINGS of 3 octets: FRAME_SIZE_ERROR', steps: [raw(SETTINGS, 0, 0, Buffer.from([0, 2, 0]))], expect: { conn: [FRAME_SIZE_ERROR] } },
  { name: '6.5.2/1 SETTINGS_ENABLE_PUSH 2: PROTOCOL_ERROR', steps: [settingsFrame([[SETTINGS_ENABLE_PUSH, 2]])], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.5.2/2 SETTINGS_INITIAL_WINDOW_SIZE 2^31: FLOW_CONTROL_ERROR', steps: [settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 2 ** 31]])], expect: { conn: [FLOW_CONTROL_ERROR] } },
  { name: '6.5.2/3 SETTINGS_MAX_FRAME_SIZE 16383: PROTOCOL_ERROR', steps: [settingsFrame([[SETTINGS_MAX_FRAME_SIZE, 16_383]])], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.5.2/4 SETTINGS_MAX_FRAME_SIZE 2^24: PROTOCOL_ERROR', steps: [settingsFrame([[SETTINGS_MAX_FRAME_SIZE, 2 ** 24]])], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.5.2/5 an unknown setting is ignored', steps: [settingsFrame([[0xff, 1]])], expect: 'fine' },
  { name: '6.5.3/1 SETTINGS_INITIAL_WINDOW_SIZE given twice: the last one counts', steps: [settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 100], [SETTINGS_INITIAL_WINDOW_SIZE, 1]]), headers(1, GET, { end: true }), async (c) => {
    const d = await c.wait((f) => f.type === DATA && f.streamId === 1);
    expect(d?.payload.length).toBe(1);
  }], expect: 'fine' },
  // 6.7 PING
  { name: '6.7/2 a PING ACK is not answered', steps: [ping(42, FLAG_ACK), async (c) => {
    await c.wait(() => false, 50);
    expect(c.frames.filter((f) => f.type === PING && f.payload.readUInt32BE(4) === 42)).toEqual([]);
  }], expect: 'fine' },
  { name: '6.7/3 PING on a stream: PROTOCOL_ERROR', steps: [raw(PING, 0, 1, Buffer.alloc(8))], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.7/4 PING of 6 octets: FRAME_SIZE_ERROR', steps: [raw(PING, 0, 0, Buffer.alloc(6))], expect: { conn: [FRAME_SIZE_ERROR] } },
  // 6.8 GOAWAY
  { name: '6.8/1 GOAWAY on a stream: PROTOCOL_ERROR', steps: [raw(GOAWAY, 0, 1, Buffer.alloc(8))], expect: { conn: [PROTOCOL_ERROR] } },
  // 6.9 WINDOW_UPDATE
  { name: '6.9/1 WINDOW_UPDATE of 0 on the connection: PROTOCOL_ERROR', steps: [u32Frame(WINDOW_UPDATE, 0, 0)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.9/2 WINDOW_UPDATE of 0 on a stream: PROTOCOL_ERROR', steps: [headers(1, HOLD), u32Frame(WINDOW_UPDATE, 1, 0)], expect: { stream: 1, codes: [PROTOCOL_ERROR] } },
  { name: '6.9/3 WINDOW_UPDATE of 3 octets: FRAME_SIZE_ERROR', steps: [raw(WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 1]))], expect: { conn: [FRAME_SIZE_ERROR] } },
  { name: '6.9.1/2 the connection window past 2^31-1: FLOW_CONTROL_ERROR', steps: [u32Frame(WINDOW_UPDATE, 0, 0x7fff_ffff)], expect: { conn: [FLOW_CONTROL_ERROR] } },
  { name: '6.9.1/3 a stream window past 2^31-1: FLOW_CONTROL_ERROR', steps: [headers(1, HOLD), u32Frame(WINDOW_UPDATE, 1, 0x7fff_ffff)], expect: { stream: 1, codes: [FLOW_CONTROL_ERROR] } },
  { name: '6.9.2/2 SETTINGS that make a stream window negative, then WINDOW_UPDATE: the response still comes', settings: [[SETTINGS_INITIAL_WINDOW_SIZE, 0]], steps: [headers(1, GET, { end: true }), settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 0]]), u32Frame(WINDOW_UPDATE, 1, 2), waitEnd(1)], expect: 'fine' },
  // 6.10 CONTINUATION
  { name: '6.10/1 several CONTINUATION frames after HEADERS are accepted', steps: [headers(1, GET.subarray(0, 3), { end: true, endHeaders: false }), continuation(1, GET.subarray(3, 8), false), continuation(1, GET.subarray(8), true), waitEnd(1)], expect: 'fine' },
  { name: '6.10/2 CONTINUATION followed by another frame: PROTOCOL_ERROR', steps: [headers(1, GET.subarray(0, 3), { end: true, endHeaders: false }), continuation(1, GET.subarray(3, 8), false), data(1, 'x')], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.10/3 CONTINUATION on stream 0: PROTOCOL_ERROR', steps: [headers(1, GET.subarray(0, 3), { end: true, endHeaders: false }), continuation(0, GET.subarray(3), true)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.10/4 CONTINUATION after HEADERS with END_HEADERS: PROTOCOL_ERROR', steps: [headers(1, HOLD), continuation(1, block([['x-a', 'b']]), true)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.10/5 CONTINUATION after CONTINUATION with END_HEADERS: PROTOCOL_ERROR', steps: [headers(1, GET.subarray(0, 3), { end: false, endHeaders: false }), continuation(1, requestBlock('/hold', [], 'POST').subarray(3), true), continuation(1, block([['x-a', 'b']]), true)], expect: { conn: [PROTOCOL_ERROR] } },
  { name: '6.10/6 CONTINUATION after DATA: PROTOCOL_ERROR', steps: [headers(1, HOLD), data(1, 'x'), continuation(1, block([['x-a', 'b']]), true)], expect: { conn: [PROTOCOL_ERROR] } },
  // 7 error codes
  // A client's GOAWAY ends the connection once no stream is open (as nghttp2): one is kept open here.
  { name: '7/1 GOAWAY with an unknown error code is accepted', steps: [headers(1, HOLD), raw(GOAWAY, 0, 0, Buffer.from([0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]))], expect: 'fine' },
  { name: '7/2 RST_STREAM with an unknown error code is accepted', steps: [headers(1, HOLD), u32Frame(RST_STREAM, 1, 0xffff_ffff)], expect: 'fine' },
  // 8.1 HTTP message framing
  { name: '8.1/1 a second HEADERS without END_STREAM: PROTOCOL_ERROR', steps: [headers(1, HOLD), data(1, 'x'), headers(1, block([['x-t', '1']]))], expect: { stream: 1, codes: [PROTOCOL_ERROR] } },
  { name: '8.1.2.6/1 content-length above the DATA: PROTOCOL_ERROR', steps: [headers(1, requestBlock('/', [['content-length', '1']], 'POST')), data(1, 'test', { end: true })], expect: { stream: 1, codes: [PROTOCOL_ERROR] } },
  { name: '8.1.2.6/2 content-length above the sum of the DATA frames: PROTOCOL_ERROR', steps: [headers(1, requestBlock('/', [['content-length', '1']], 'POST')), data(1, 'te'), data(1, 'st', { end: true })], expect: { stream: 1, codes: [PROTOCOL_ERROR] } },
  // 8.2 server push
  { name: '8.2/1 PUSH_PROMISE from a client: PROTOCOL_ERROR', steps: [raw(PUSH_PROMISE, FLAG_END_HEADERS, 1, Buffer.concat([Buffer.from([0, 0, 0, 2]), GET]))], expect: { conn: [PROTOCOL_ERROR] } },
  // generic
  { name: 'generic/2 WINDOW_UPDATE, PRIORITY and RST_STREAM on a half-closed (remote) stream are accepted', steps: [headers(1, requestBlock('/hold'), { end: true }), u32Frame(WINDOW_UPDATE, 1, 100), priority(1, 0), u32Frame(RST_STREAM, 1, 0x8)], expect: 'fine' },
  { name: 'generic/3 padded DATA, padded HEADERS with priority, PRIORITY of weight 256, RST_STREAM, SETTINGS, WINDOW_UPDATE', steps: [headers(1, requestBlock('/', [], 'POST'), { padded: 4, priority: [0, 255] }), data(1, 'abc', { end: true, padded: 10 }), waitEnd(1), priority(3, 0, 255), headers(5, HOLD), u32Frame(RST_STREAM, 5, 0x8), settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 100_000]]), u32Frame(WINDOW_UPDATE, 0, 1000)], expect: 'fine' },
  { name: 'generic/4 HEAD, POST with trailers', steps: [headers(1, requestBlock('/', [], 'HEAD'), { end: true }), waitEnd(1), headers(3, requestBlock('/', [], 'POST')), data(3, 'abc'), headers(3, block([['x-trailer', '1']]), { end: true }), waitEnd(3)], expect: 'fine' },
];

describe('h2spec, server side', () => {
  it.each(cases.map((x) => [x.name, x] as const))('%s', async (_name, x) => {
    const c = await connect(x.settings ?? []);
    for (const step of x.steps) {
      if (typeof step === 'function') await step(c);
      else c.send(step);
    }
    const e = x.expect;
    if (e === 'fine') await expectFine(c);
    else if ('conn' in e) await expectConnectionError(c, e.conn);
    else await expectStreamError(c, e.stream, e.codes);
  });
});
