import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, startWard, type Ward } from '../security/support/ward.ts';
import { pattern, PythonPeer, sha256 } from './support.ts';

/**
 * ward's own HTTP/2 server against an independent, strict client: Python's h2 (Debian
 * python3-h2), on random connections. The client picks its SETTINGS (a receive window from 1
 * octet up, frame sizes up to 1 MiB, any HPACK table size), opens up to four streams at once,
 * interleaves their DATA frame by frame in random sizes, pads frames, and sends request trailers;
 * the app echoes a digest of what reached it and answers with a body of a chosen size, with
 * trailers or not. h2 checks everything ward sends against RFC 9113 (frame sizes against its
 * SETTINGS, flow control against the windows it grants, stream states, header validity): a
 * violation fails the run, as do a reset, a GOAWAY, a lost or altered octet, or a field that did
 * not make the trip.
 */

const CLIENT = fileURLToPath(new URL('python/h2_client.py', import.meta.url));
const LIMIT = { numRuns: 100, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: false } as const;

interface StreamSpec {
  readonly headers: [string, string][];
  readonly body: number;
  readonly chunk: number;
  readonly pad: number | null;
  readonly trailers: [string, string][] | null;
  readonly cancelAt: number | null;
}
interface StreamResult {
  readonly status: string | null;
  readonly headers: Record<string, string>;
  readonly bodyLength: number;
  readonly bodySha256: string;
  readonly trailers: Record<string, string> | null;
  readonly reset: number | null;
  readonly cancelled: boolean;
}
interface ConnectionResult {
  readonly streams: StreamResult[];
  readonly protocolError: string | null;
  readonly goaway: number | null;
}

/**
 * The app: answers once the whole request body is in, with its length and digest, the `x-fuzz-*`
 * fields and request trailer it saw, `x-resp-len` octets of body and, with `x-want-trailers: 1`,
 * trailers.
 */
async function startEchoApp(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const hash = createHash('sha256');
    let n = 0;
    let trailer: string | undefined;
    stream.on('data', (c: Buffer) => {
      hash.update(c);
      n += c.length;
    });
    stream.on('trailers', (t: http2.IncomingHttpHeaders) => (trailer = t['x-req-trailer'] as string | undefined));
    stream.on('error', () => {}); // a stream the sidecar reset: nothing to answer
    stream.on('end', () => {
      if (stream.destroyed) return;
      const out: http2.OutgoingHttpHeaders = { ':status': 200, 'x-echo-len': String(n), 'x-echo-sha': hash.digest('hex') };
      for (const [k, v] of Object.entries(headers)) if (k.startsWith('x-fuzz-')) out[`x-echo-${k.slice(2)}`] = v;
      if (trailer !== undefined) out['x-echo-trailer'] = trailer;
      const wantTrailers = headers['x-want-trailers'] === '1';
      stream.respond(out, { waitForTrailers: wantTrailers });
      if (wantTrailers) stream.once('wantTrailers', () => stream.sendTrailers({ 'x-done': 'yes' }));
      stream.end(pattern(Number(headers['x-resp-len'] ?? 0)));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** The same app over HTTP/1.1 (request trailers do not reach it; its trailers go out chunked). */
async function startH1EchoApp(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let n = 0;
    res.on('error', () => {});
    req.on('data', (c: Buffer) => {
      hash.update(c);
      n += c.length;
    });
    req.on('end', () => {
      if (res.destroyed) return;
      const out: http.OutgoingHttpHeaders = { 'x-echo-len': String(n), 'x-echo-sha': hash.digest('hex') };
      for (const [k, v] of Object.entries(req.headers)) if (k.startsWith('x-fuzz-')) out[`x-echo-${k.slice(2)}`] = v;
      const trailer = req.trailers['x-req-trailer'];
      if (trailer !== undefined) out['x-echo-trailer'] = trailer;
      const wantTrailers = req.headers['x-want-trailers'] === '1';
      const body = pattern(Number(req.headers['x-resp-len'] ?? 0));
      if (wantTrailers) {
        out['transfer-encoding'] = 'chunked';
        out.trailer = 'x-done';
      } else out['content-length'] = String(body.length);
      res.writeHead(200, out);
      if (body.length > 0) res.write(body);
      if (wantTrailers) res.addTrailers({ 'x-done': 'yes' });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

let issuer: TestIssuer;
const apps: { port: number; close: () => Promise<void> }[] = [];
const wards = {} as Record<'h2c' | 'http1', Ward>;
let client: PythonPeer;
beforeAll(async () => {
  issuer = await startTestIssuer();
  const h2c = await startEchoApp();
  const h1 = await startH1EchoApp();
  apps.push(h2c, h1);
  wards.h2c = await startWard({ issuer: issuer.issuer, app: { port: h2c.port, protocol: 'h2c' } });
  wards.http1 = await startWard({ issuer: issuer.issuer, app: { port: h1.port, protocol: 'http1' } });
  client = new PythonPeer(CLIENT);
});
afterAll(async () => {
  client.close();
  for (const w of Object.values(wards)) await w.close();
  for (const a of apps) await a.close();
  await issuer.close();
});

/** Visible ASCII without edge spaces: a value RFC 9113 §8.2.1 lets through. */
const VALUE = fc.stringMatching(/^[!-~]([ -~]{0,40}[!-~])?$/);
const STREAM = fc.record({
  body: fc.oneof(fc.constantFrom(0, 1, 65_535, 65_536), fc.nat(4000), fc.nat(150_000)),
  chunk: fc.oneof(fc.constantFrom(1, 16_384), fc.integer({ min: 1, max: 20_000 })),
  pad: fc.option(fc.nat(255), { nil: null }),
  respLen: fc.oneof(fc.constantFrom(0, 1, 65_535, 65_536), fc.nat(4000), fc.nat(200_000)),
  wantTrailers: fc.boolean(),
  requestTrailer: fc.option(VALUE, { nil: null }),
  fuzz: fc.array(VALUE, { maxLength: 3 }),
  /** Reset by the client once this share (percent) of a long response came (two streams in five). */
  cancelPercent: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.nat(50) }),
});
const SETTINGS = fc.record({
  initialWindowSize: fc.oneof(fc.constantFrom(1, 16, 1000, 16_384, 65_535), fc.integer({ min: 1, max: 1 << 20 })),
  maxFrameSize: fc.oneof(fc.constant(16_384), fc.integer({ min: 16_384, max: 1 << 20 })),
  headerTableSize: fc.nat(4096),
});
const CONNECTION = fc
  .record({
    settings: SETTINGS,
    /** New SETTINGS once the streams are open: a window that shrinks or grows under open streams. */
    settingsLater: fc.option(SETTINGS, { nil: null, freq: 3 }),
    streams: fc.array(STREAM, { minLength: 1, maxLength: 4 }),
  })
  // Never a larger MAX_FRAME_SIZE later. h2 (4.1) sets the frame limit once per read, so when
  // the acknowledgement of a larger limit and a frame that uses it arrive in one read, it refuses
  // the frame, though the sidecar sent it after the acknowledgement, as RFC 9113 §6.5.3 allows.
  .map((c) =>
    c.settingsLater === null ? c : { ...c, settingsLater: { ...c.settingsLater, maxFrameSize: Math.min(c.settingsLater.maxFrameSize, c.settings.maxFrameSize) } },
  );

describe("ward's HTTP/2 server against Python h2 (RFC 9113)", () => {
  for (const appProto of ['h2c', 'http1'] as const) {
    it(`every stream arrives whole at the ${appProto} app and comes back whole, within what the client allowed`, { timeout: 90_000 }, async () => {
      const ward = wards[appProto];
      const token = issuer.token();
      // What the runs exercised, so that a generator that stopped reaching a feature shows.
      const seen = { tinyWindow: 0, padded: 0, requestTrailers: 0, responseTrailers: 0, concurrent: 0, bodyPastWindow: 0, responsePastWindow: 0, smallTable: 0, settingsLater: 0, cancelled: 0 };
      await fc.assert(
        fc.asyncProperty(CONNECTION, async (c) => {
          // Sizes within reach of the windows and frame sizes drawn: a 1-octet window moves one
          // octet per round trip.
          const w = Math.min(c.settings.initialWindowSize, c.settingsLater?.initialWindowSize ?? Infinity);
          const sized = c.streams.map((s) => ({ ...s, body: Math.min(s.body, s.chunk * 200), respLen: Math.min(s.respLen, w * 200) }));
          const streams: StreamSpec[] = sized.map((s) => ({
            headers: [
              [':method', 'POST'],
              [':scheme', 'http'],
              [':authority', `127.0.0.1:${ward.port}`],
              [':path', '/api/echo'],
              ['authorization', `Bearer ${token}`],
              ['content-type', 'application/octet-stream'],
              ['te', 'trailers'],
              ['x-resp-len', String(s.respLen)],
              ['x-want-trailers', s.wantTrailers ? '1' : '0'],
              ...s.fuzz.map((v, i): [string, string] => [`x-fuzz-${i}`, v]),
            ],
            body: s.body,
            chunk: s.chunk,
            pad: s.pad,
            trailers: s.requestTrailer === null ? null : [['x-req-trailer', s.requestTrailer]],
            // Early in a long answer, so that most of it is still to come when the reset goes out.
            cancelAt: s.cancelPercent !== null && s.respLen >= 20_000 ? Math.floor((s.respLen * s.cancelPercent) / 100) : null,
          }));
          const r = await client.request<ConnectionResult>({ port: ward.port, settings: c.settings, settingsLater: c.settingsLater, streams });
          if (w < 100) seen.tinyWindow++;
          if (c.settings.headerTableSize < 4096) seen.smallTable++;
          if (c.settingsLater !== null) seen.settingsLater++;
          if (sized.length > 1) seen.concurrent++;
          for (const x of sized) {
            if (x.pad !== null && x.body > 0) seen.padded++;
            if (x.requestTrailer !== null) seen.requestTrailers++;
            if (x.wantTrailers) seen.responseTrailers++;
            if (x.body > 65_535) seen.bodyPastWindow++;
            if (x.respLen > w) seen.responsePastWindow++;
          }
          expect(r.protocolError).toBeNull();
          expect(r.goaway).toBeNull();
          expect(r.streams).toHaveLength(sized.length);
          sized.forEach((s, i) => {
            const got = r.streams[i] as StreamResult;
            expect(got.reset, `stream ${i}`).toBeNull();
            // A stream the client cancelled partway: only that nothing went wrong on it (checked
            // above and below: no reset from the sidecar, no protocol error, no GOAWAY).
            if (got.cancelled) {
              expect(streams[i]?.cancelAt).not.toBeNull();
              seen.cancelled++;
              return;
            }
            expect(got.status, `stream ${i}`).toBe('200');
            expect(got.headers['x-echo-len']).toBe(String(s.body));
            expect(got.headers['x-echo-sha']).toBe(sha256(pattern(s.body)));
            s.fuzz.forEach((v, j) => expect(got.headers[`x-echo-fuzz-${j}`]).toBe(v));
            // Request trailers reach the app: an h2c one, and an HTTP/1.1 one in the last chunk
            // (these calls send no Content-Length).
            expect(got.headers['x-echo-trailer']).toBe(s.requestTrailer ?? undefined);
            expect(got.bodyLength).toBe(s.respLen);
            expect(got.bodySha256).toBe(sha256(pattern(s.respLen)));
            expect(got.trailers).toEqual(s.wantTrailers ? { 'x-done': 'yes' } : null);
          });
        }),
        LIMIT,
      );
      for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(0);
      // The sidecar let go of every stream.
      await client.idle();
      await eventually(() => ward.counters.activeStreams === 0, 5000, 'every stream released');
    });
  }
});
