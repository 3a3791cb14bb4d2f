import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RecordingApp, startRecordingApp } from './support/app.ts';
import {
  block,
  closeAllRaw,
  continuation,
  ErrorCodeH2,
  FrameType,
  headersFrame,
  indexed,
  literal,
  literalIndexed,
  ping,
  rawH2,
  type RawFrame,
  requestBlock,
  rstStream,
  settings,
} from './support/h2raw.ts';
import { HpackDecoder } from '../../src/h2/hpack.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { eventually, h2Once, settledHeap, startWard, type Ward } from './support/ward.ts';

/**
 * HTTP/2 abuse over raw frames (support/h2raw.ts). For each attack: the sidecar answers it the
 * way RFC 9113 says (stream or connection error, or a coded denial), the app sees nothing it
 * should not, every counter returns to 0, and a normal client is served right after.
 */

let iss: TestIssuer;
let app: RecordingApp;
let ward: Ward;
let token: string;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRecordingApp('h2c');
  ward = await startWard({ issuer: iss.issuer, app, inbound: { maxConcurrentStreams: 100 } });
  token = iss.token();
});
afterAll(async () => {
  await ward.close();
  await app.close();
  await iss.close();
});
afterEach(() => closeAllRaw());
beforeEach(async () => {
  await quiet();
  app.reset();
  ward.decisions.length = 0;
});

/** After an attack: nothing left open on either side, and a normal call goes through. */
async function survives(): Promise<void> {
  await eventually(() => ward.counters.activeStreams === 0, 5000, 'activeStreams back to 0');
  await eventually(() => app.open() === 0, 5000, 'app streams closed');
  await eventually(() => ward.counters.h2Sessions === 0, 5000, 'attacker sessions closed');
  await quiet();
  const r = await h2Once(ward.port, { ':path': '/api/after', authorization: `Bearer ${token}` });
  expect(r.status).toBe(200);
  expect(r.body).toBe('ok /api/after');
  expect(app.seen.at(-1)?.path).toBe('/api/after');
}

/**
 * Streams a client reset may still reach the app as HEADERS + RST_STREAM(CANCEL) after the
 * sidecar let go of them (the app's side is asynchronous): wait until the app hears nothing new.
 */
async function quiet(): Promise<void> {
  let n = -1;
  while (n !== app.seen.length) {
    n = app.seen.length;
    await new Promise((r) => setTimeout(r, 60));
  }
}

const auth: [string, string] = ['authorization', `Bearer ${'x'}`];
function authz(): [string, string] {
  return ['authorization', `Bearer ${token}`];
}

/** The frame that ended stream `id` (RST_STREAM, or a response HEADERS). */
function streamOutcome(frames: readonly RawFrame[], id: number): RawFrame | undefined {
  return frames.find((f) => f.streamId === id && (f.type === FrameType.RST_STREAM || f.type === FrameType.HEADERS));
}

describe('rapid reset — CVE-2023-44487', () => {
  it('thousands of HEADERS+RST_STREAM pairs: bounded work, cancellations reach the app, session cut off', async () => {
    const c = await rawH2(ward.port);
    const N = 4000;
    let id = 1;
    for (let batch = 0; batch < N / 200 && !c.isClosed(); batch++) {
      const bufs: Buffer[] = [];
      for (let i = 0; i < 200; i++, id += 2) bufs.push(headersFrame(id, requestBlock('/slow/reset', [authz()]), { endStream: true }), rstStream(id));
      c.write(...bufs);
      await new Promise((r) => setImmediate(r));
    }
    // Node's reset-rate guard (streamResetBurst/streamResetRate) ends the session with
    // ENHANCE_YOUR_CALM, or the flood simply completes; either way the app must not hold
    // thousands of abandoned calls.
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 1500))]);
    c.close();
    expect(app.seen.length).toBeLessThan(N);
    await survives();
  });
});

describe('CONTINUATION flood — CVE-2024-27316 class (VU#421644), CVE-2024-27983 (Node), CVE-2024-28182 (nghttp2)', () => {
  it('HEADERS without END_HEADERS followed by endless CONTINUATION frames: connection closed, memory bounded', async () => {
    const heap0 = await settledHeap();
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock('/api/x', [authz()]), { endHeaders: false }));
    const piece = Buffer.concat(Array.from({ length: 16 }, (_, i) => literal(`x-flood-${i}`, 'v'.repeat(900))));
    let sent = 0;
    while (!c.isClosed() && sent < 32 * 1024 * 1024) {
      if (!c.write(continuation(1, piece, false))) await new Promise((r) => setTimeout(r, 1));
      sent += piece.length;
      if (sent % (1024 * 1024) < piece.length) await new Promise((r) => setImmediate(r));
    }
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 2000))]);
    expect(c.isClosed()).toBe(true);
    expect(sent).toBeLessThan(32 * 1024 * 1024);
    expect(app.seen).toEqual([]);
    expect(await settledHeap()).toBeLessThan(heap0 + 64 * 1024 * 1024);
    await survives();
  });

  it('empty CONTINUATION frames (no header bytes at all) do not keep the sidecar busy forever', async () => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock('/api/x', [authz()]), { endHeaders: false }));
    const empty = Buffer.concat(Array.from({ length: 1000 }, () => continuation(1, Buffer.alloc(0), false)));
    for (let i = 0; i < 200 && !c.isClosed(); i++) {
      c.write(empty);
      await new Promise((r) => setImmediate(r));
    }
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 1000))]);
    c.close();
    expect(app.seen).toEqual([]);
    await survives();
  });
});

describe('oversized header lists — CVE-2019-9516 (0-length headers leak), RFC 9113 §10.5.1 (SETTINGS_MAX_HEADER_LIST_SIZE)', () => {
  it('a header list far past maxHeaderListBytes is refused before the stack with a 431: the app sees nothing', async () => {
    const c = await rawH2(ward.port);
    const big = Array.from({ length: 100 }, (_, i) => [`x-big-${i}`, 'v'.repeat(1000)] as [string, string]);
    // ~100 KB of fields: HEADERS and CONTINUATION frames of 16 KiB, the largest a frame may be.
    const blk = requestBlock('/api/x', [authz(), ...big]);
    const parts = [headersFrame(1, blk.subarray(0, 16_384), { endStream: true, endHeaders: false })];
    for (let at = 16_384; at < blk.length; at += 16_384) parts.push(continuation(1, blk.subarray(at, at + 16_384), at + 16_384 >= blk.length));
    c.write(Buffer.concat(parts));
    const f = await c.waitFrame((x) => x.type === FrameType.RST_STREAM || x.type === FrameType.GOAWAY || x.type === FrameType.HEADERS);
    expect(f?.type).toBe(FrameType.HEADERS);
    expect(f?.streamId).toBe(1);
    const fields: string[] = [];
    new HpackDecoder().decode(f?.payload ?? Buffer.alloc(0), 0, f?.payload.length ?? 0, fields);
    expect(fields.slice(0, 7)).toEqual([':status', '431', 'content-length', '0', 'x-ward-reason', 'ERR_REQUEST_HEADERS_TOO_LARGE', 'x-ward-decision-id']);
    expect(fields[7]).toMatch(/^\S+$/);
    expect(fields).toHaveLength(8);
    c.close();
    expect(app.seen).toEqual([]);
    await survives();
  });

  it('a gRPC call gets the same refusal as gRPC: trailers-only, HTTP 200, grpc-status 8 (regression: a bare 431, which gRPC clients read as UNKNOWN)', async () => {
    for (const extra of [
      Array.from({ length: 100 }, (_, i) => [`x-big-${i}`, 'v'.repeat(1000)] as [string, string]), // past maxHeaderListBytes
      Array.from({ length: 400 }, (_, i) => [`x-${i}`, ''] as [string, string]), // past maxHeaderPairs
    ]) {
      const c = await rawH2(ward.port);
      const blk = requestBlock('/ward.demo.v1.Orders/GetOrder', [['content-type', 'application/grpc'], ['te', 'trailers'], authz(), ...extra], 'POST');
      const parts = [headersFrame(1, blk.subarray(0, 16_384), { endStream: false, endHeaders: blk.length <= 16_384 })];
      for (let at = 16_384; at < blk.length; at += 16_384) parts.push(continuation(1, blk.subarray(at, at + 16_384), at + 16_384 >= blk.length));
      c.write(Buffer.concat(parts));
      const f = await c.waitFrame((x) => x.type === FrameType.RST_STREAM || x.type === FrameType.GOAWAY || x.type === FrameType.HEADERS);
      expect(f?.type).toBe(FrameType.HEADERS);
      expect((f?.flags ?? 0) & 0x1).toBe(0x1); // END_STREAM: trailers-only
      const fields: string[] = [];
      new HpackDecoder().decode(f?.payload ?? Buffer.alloc(0), 0, f?.payload.length ?? 0, fields);
      const h = Object.fromEntries(fields.reduce<[string, string][]>((acc, v, i, all) => (i % 2 === 0 ? [...acc, [v, all[i + 1] as string]] : acc), []));
      expect(h).toMatchObject({ ':status': '200', 'content-type': 'application/grpc', 'grpc-status': '8', 'x-ward-reason': 'ERR_REQUEST_HEADERS_TOO_LARGE', 'x-ward-decision-id': expect.stringMatching(/^\S+$/) });
      c.close();
    }
    expect(app.seen).toEqual([]);
    await survives();
  });

  it('more fields than maxHeaderListPairs (128), each tiny: refused', async () => {
    const c = await rawH2(ward.port);
    const many = Array.from({ length: 400 }, (_, i) => [`x-${i}`, ''] as [string, string]);
    c.write(headersFrame(1, requestBlock('/api/x', [authz(), ...many]), { endStream: true }));
    const f = await c.waitFrame((x) => x.type === FrameType.RST_STREAM || x.type === FrameType.GOAWAY || x.type === FrameType.HEADERS);
    expect(f?.type).toBe(FrameType.HEADERS);
    c.close();
    expect(app.seen).toEqual([]);
    await survives();
  });
});

describe('HPACK bomb — CVE-2016-6581 (HPACK bomb), CVE-2023-35945 (Envoy nghttp2 memory leak) class', () => {
  it('one 4 KB dynamic-table entry referenced thousands of times: decoded size capped, nothing reaches the app', async () => {
    const heap0 = await settledHeap();
    const c = await rawH2(ward.port);
    const seed = literalIndexed('x-bomb', 'b'.repeat(4000));
    const refs = Buffer.concat(Array.from({ length: 4000 }, () => indexed(62)));
    let id = 1;
    for (let i = 0; i < 20 && !c.isClosed(); i++, id += 2) {
      c.write(headersFrame(id, Buffer.concat([requestBlock('/api/x', [authz()]), i === 0 ? seed : Buffer.alloc(0), refs]), { endStream: true }));
      await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 200));
    c.close();
    expect(app.seen).toEqual([]);
    expect(await settledHeap()).toBeLessThan(heap0 + 64 * 1024 * 1024);
    await survives();
  });
});

describe('connection-specific fields in HTTP/2 — RFC 9113 §8.2.2; h2c smuggling (BishopFox 2020)', () => {
  it.each([
    ['connection', 'keep-alive'],
    ['keep-alive', 'timeout=5'],
    ['proxy-connection', 'keep-alive'],
    ['transfer-encoding', 'chunked'],
    ['upgrade', 'h2c'],
    ['te', 'gzip'],
  ])('%s: %s → stream error, the app sees nothing', async (name, value) => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock('/api/x', [authz(), [name, value]]), { endStream: true }));
    const f = await c.waitFrame((x) => (x.streamId === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS)) || x.type === FrameType.GOAWAY);
    expect(f?.type === FrameType.RST_STREAM || f?.type === FrameType.GOAWAY).toBe(true);
    expect(f?.code).toBe(ErrorCodeH2.PROTOCOL_ERROR);
    c.close();
    expect(app.seen).toEqual([]);
    expect(ward.decisions).toEqual([]);
    await survives();
  });

  it('te: trailers is the one allowed value, and is forwarded', async () => {
    const r = await h2Once(ward.port, { ':path': '/api/te', authorization: `Bearer ${token}`, te: 'trailers' });
    expect(r.status).toBe(200);
    expect(app.seen[0]?.headers['te']).toBe('trailers');
  });
});

describe('pseudo-header confusion — RFC 9113 §8.3.1; Envoy CVE-2019-9900/CVE-2021-32777 parser-differential class', () => {
  const cases: readonly (readonly [string, readonly (readonly [string, string])[]])[] = [
    ['duplicate :path (allowed then denied)', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/public/x'], [':path', '/api/internal/x']]],
    ['pseudo-header after a regular field', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], ['x-a', '1'], [':path', '/api/internal']]],
    ['missing :method', [[':scheme', 'http'], [':authority', 'orders'], [':path', '/api/x']]],
    ['missing :scheme', [[':method', 'GET'], [':authority', 'orders'], [':path', '/api/x']]],
    ['missing :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders']]],
    ['empty :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '']]],
    ['unknown pseudo-header :x-path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/public/x'], [':x-path', '/api/internal']]],
    ['response pseudo-header :status in a request', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/api/x'], [':status', '200']]],
    ['upper-case field name', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/api/x'], ['X-Ward-Subject', 'root']]],
    ['NUL in :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/public\u0000/../api/internal']]],
    ['CR LF in :authority', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders\r\nx-ward-subject: root'], [':path', '/api/x']]],
    ['NUL in :method', [[':method', 'GET\u0000'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/api/x']]],
    ['space in :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/public/x /api/internal']]],
    [':protocol without the extended CONNECT setting (RFC 8441)', [[':method', 'CONNECT'], [':protocol', 'websocket'], [':scheme', 'http'], [':authority', 'orders'], [':path', '/api/x']]],
  ];

  it.each(cases)('%s → refused, the app sees nothing', async (_name, fields) => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, block([...fields, authz()]), { endStream: true }));
    const f = await c.waitFrame((x) => (x.streamId === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS)) || x.type === FrameType.GOAWAY);
    expect(f).toBeDefined();
    if (f?.type === FrameType.HEADERS) {
      // It reached the stack: then it must be a coded denial, never an allow.
      expect(ward.decisions).toHaveLength(1);
      expect(ward.decisions[0]?.decision).toBe('deny');
      expect(['ERR_REQUEST_INVALID', 'ERR_PATH_INVALID']).toContain(ward.decisions[0]?.code);
    } else {
      expect(f?.code).toBe(ErrorCodeH2.PROTOCOL_ERROR);
    }
    c.close();
    expect(app.seen).toEqual([]);
    await survives();
  });

  it.each([
    ['CR LF', 'v\r\nx-ward-subject: root'],
    ['NUL', 'a\u0000b'],
    ['leading space', ' v'],
    ['trailing space', 'v '],
  ])('%s in a field value (RFC 9113 §8.2.1; header injection, Node CVE-2022-32213 class): the field never reaches the app', async (_name, value) => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock('/api/inj', [authz(), ['x-inj', value]]), { endStream: true }));
    const f = await c.waitFrame((x) => (x.streamId === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS)) || x.type === FrameType.GOAWAY);
    expect(f).toBeDefined();
    c.close();
    await quiet();
    // nghttp2 drops an invalid regular field (RFC 9113 §8.2.1 allows treating it as malformed);
    // either way no byte of it, and no injected field, is forwarded.
    for (const s of app.seen) {
      expect(s.headers['x-inj']).toBeUndefined();
      expect(s.headers['x-ward-subject']).toBe('alice');
    }
    await survives();
  });

  it.each([
    ['absolute-form :path', 'http://orders/api/internal/x', 'ERR_PATH_INVALID'],
    ['asterisk :path with GET', '*', 'ERR_PATH_INVALID'],
    [':path without leading slash', 'api/internal', 'ERR_PATH_INVALID'],
  ])('%s reaches the stack and is denied with its code', async (_name, path, code) => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock(path, [authz()]), { endStream: true }));
    const f = await c.waitFrame((x) => x.streamId === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS));
    expect(f).toBeDefined();
    c.close();
    if (f?.type === FrameType.HEADERS) expect(ward.lastCode()).toBe(code);
    else expect(f?.code).toBe(ErrorCodeH2.PROTOCOL_ERROR);
    expect(app.seen).toEqual([]);
    await survives();
  });

  it('Host disagreeing with :authority → 400 ERR_REQUEST_INVALID (RFC 9113 §8.3.1)', async () => {
    const r = await h2Once(ward.port, { ':path': '/api/x', host: 'evil', authorization: `Bearer ${token}` });
    expect(r.status).toBe(400);
    expect(r.reason).toBe('ERR_REQUEST_INVALID');
    expect(app.seen).toEqual([]);
  });
});

describe('stream and control-frame floods — CVE-2019-9511..9518 (Netflix HTTP/2 advisories)', () => {
  it('more concurrent streams than advertised: refused (REFUSED_STREAM or GOAWAY), bounded', async () => {
    const c = await rawH2(ward.port);
    const bufs: Buffer[] = [];
    for (let i = 0, id = 1; i < 300; i++, id += 2) bufs.push(headersFrame(id, requestBlock('/slow/many', [authz()]), { endStream: true }));
    c.write(...bufs);
    await c.waitFrame((f) => f.type === FrameType.RST_STREAM || f.type === FrameType.GOAWAY, 2000);
    await new Promise((r) => setTimeout(r, 200));
    expect(app.seen.length).toBeLessThanOrEqual(100);
    c.close();
    await survives();
  });

  it('ping flood (CVE-2019-9512): session ended, sidecar unaffected', async () => {
    const c = await rawH2(ward.port);
    const flood = Buffer.concat(Array.from({ length: 5000 }, () => ping()));
    // Never read the PING ACKs: outbound queue grows unless the guard trips.
    c.socket.pause();
    for (let i = 0; i < 20 && !c.isClosed(); i++) {
      c.write(flood);
      await new Promise((r) => setImmediate(r));
    }
    c.close();
    await survives();
  });

  it('settings flood (CVE-2019-9515, CVE-2020-11080): session ended or absorbed, sidecar unaffected', async () => {
    const c = await rawH2(ward.port);
    c.socket.pause();
    const flood = Buffer.concat(Array.from({ length: 5000 }, () => settings([[0x4, 65535]])));
    for (let i = 0; i < 20 && !c.isClosed(); i++) {
      c.write(flood);
      await new Promise((r) => setImmediate(r));
    }
    c.close();
    await survives();
  });

  it('DATA on a stream the client never opened / after END_STREAM: connection error, no crash', async () => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock('/api/x', [authz()]), { endStream: true }));
    c.write(Buffer.concat([Buffer.from([0, 0, 4, FrameType.DATA, 0, 0, 0, 0, 1]), Buffer.from('late')]));
    c.write(Buffer.concat([Buffer.from([0, 0, 4, FrameType.DATA, 0, 0, 0, 0, 99]), Buffer.from('none')]));
    const f = await c.waitFrame((x) => x.type === FrameType.GOAWAY || (x.type === FrameType.RST_STREAM && x.code !== ErrorCodeH2.NO_ERROR));
    expect(f).toBeDefined();
    c.close();
    expect(app.seen.length).toBeLessThanOrEqual(1);
    await survives();
  });
});

it('an unauthenticated stream with a junk token is denied without touching the app (baseline for the raw client)', async () => {
  const c = await rawH2(ward.port);
  c.write(headersFrame(1, requestBlock('/api/x', [auth]), { endStream: true }));
  const f = await c.waitFrame((x) => x.streamId === 1 && x.type === FrameType.HEADERS);
  expect(streamOutcome(c.frames, 1)?.type).toBe(FrameType.HEADERS);
  expect(f).toBeDefined();
  c.close();
  expect(ward.lastCode()).toBe('ERR_TOKEN_MALFORMED');
  expect(app.seen).toEqual([]);
  await survives();
});
