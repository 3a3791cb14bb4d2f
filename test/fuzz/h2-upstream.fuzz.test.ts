import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import http2 from 'node:http2';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, startWard, type Ward } from '../security/support/ward.ts';
import { pattern, sha256 } from './support.ts';

/**
 * ward's own HTTP/2 client (the leg to the app) against an independent, strict server: an app
 * served by Python's h2 (Debian python3-h2; test/fuzz/python/h2_app.py). Per call, the app
 * changes its SETTINGS mid-connection (a receive window from 1 octet, frame sizes up to 1 MiB,
 * HPACK tables from 0), answers through h2's own encoder (dynamic table, Huffman), splits a large
 * response field into CONTINUATION frames, sends its DATA in random sizes, padded or not, and
 * trailers or not. h2 checks everything ward sends (frame sizes, flow control against the
 * windows it grants, stream states, header validity); an error there fails the run, as does any
 * octet or field that does not make the trip from a node:http2 caller to the app and back.
 */

const APP = fileURLToPath(new URL('python/h2_app.py', import.meta.url));
const LIMIT = { numRuns: 80, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: false } as const;

let issuer: TestIssuer;
let app: ChildProcessWithoutNullStreams;
const appErrors: string[] = [];
let ward: Ward;
let session: http2.ClientHttp2Session;
let token: string;

beforeAll(async () => {
  issuer = await startTestIssuer();
  token = issuer.token();
  app = spawn('/usr/bin/python3', [APP]);
  let stderr = '';
  app.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: app.stdout });
    lines.once('line', (l) => resolve(Number(l)));
    lines.on('line', (l) => {
      if (l.startsWith('ERROR')) appErrors.push(l);
    });
    app.once('exit', () => reject(new Error(`the Python h2 app exited: ${stderr}`)));
  });
  ward = await startWard({ issuer: issuer.issuer, app: { port, protocol: 'h2c' } });
  session = http2.connect(ward.url);
});
afterAll(async () => {
  session.close();
  await ward.close();
  app.kill();
  await issuer.close();
});

interface Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders | null;
}

function call(fields: Record<string, string>, body: Buffer, chunk: number, trailer: string | null): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = session.request(
      { ':method': 'POST', ':path': '/api/echo', authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', te: 'trailers', ...fields },
      { waitForTrailers: trailer !== null },
    );
    if (trailer !== null) req.once('wantTrailers', () => req.sendTrailers({ 'x-req-trailer': trailer }));
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | null = null;
    const chunks: Buffer[] = [];
    req.on('response', (h) => (headers = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks), trailers }));
    req.on('error', reject);
    for (let off = 0; off < body.length; off += chunk) req.write(body.subarray(off, off + chunk));
    req.end();
  });
}

const VALUE = fc.stringMatching(/^[!-~]([ -~]{0,40}[!-~])?$/);
const CALL = fc.record({
  body: fc.oneof(fc.constantFrom(0, 1, 65_535, 65_536), fc.nat(4000), fc.nat(150_000)),
  chunk: fc.integer({ min: 1, max: 40_000 }),
  requestTrailer: fc.option(VALUE, { nil: null }),
  fuzz: fc.array(VALUE, { maxLength: 3 }),
  respLen: fc.oneof(fc.constantFrom(0, 1, 65_535, 65_536), fc.nat(4000), fc.nat(200_000)),
  respChunk: fc.oneof(fc.constant(16_384), fc.integer({ min: 1, max: 20_000 })),
  pad: fc.option(fc.nat(255), { nil: null }),
  trailers: fc.boolean(),
  big: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 30_000 }) }),
});
const RUN = fc.record({
  settings: fc.record({
    window: fc.oneof(fc.constantFrom(1, 16, 1000, 16_384, 65_535), fc.integer({ min: 1, max: 1 << 20 })),
    frame: fc.oneof(fc.constant(16_384), fc.integer({ min: 16_384, max: 1 << 20 })),
    table: fc.oneof(fc.constantFrom(0, 4096), fc.nat(4096)),
  }),
  calls: fc.array(CALL, { minLength: 1, maxLength: 4 }),
});

describe("ward's HTTP/2 client against a Python h2 app (RFC 9113)", () => {
  it('every call reaches the app whole and its answer comes back whole, whatever the app sets and sends', { timeout: 90_000 }, async () => {
    const seen = { tinyWindow: 0, smallTable: 0, padded: 0, continuation: 0, trailers: 0, requestTrailers: 0, uploadPastWindow: 0 };
    await fc.assert(
      fc.asyncProperty(RUN, async (r) => {
        // Every pooled connection back to the defaults first (the pool takes them in turn), so
        // that this run's sizes are bounded by this run's window alone.
        for (let i = 0; i < 4; i++) await call({ 'x-app-settings': '65535,16384,4096' }, Buffer.alloc(0), 1, null);
        const settings = `${r.settings.window},${r.settings.frame},${r.settings.table}`;
        const calls = r.calls.map((c) => ({ ...c, body: Math.min(c.body, r.settings.window * 200) }));
        const replies = await Promise.all(
          calls.map((c) => {
            const fields: Record<string, string> = {
              'x-app-settings': settings,
              'x-app-resp-len': String(c.respLen),
              'x-app-chunk': String(c.respChunk),
              'x-app-trailers': c.trailers ? '1' : '0',
              'x-app-big': String(c.big),
            };
            if (c.pad !== null) fields['x-app-pad'] = String(c.pad);
            c.fuzz.forEach((v, i) => (fields[`x-fuzz-${i}`] = v));
            return call(fields, pattern(c.body), c.chunk, c.requestTrailer);
          }),
        );
        expect(appErrors).toEqual([]);
        calls.forEach((c, i) => {
          const got = replies[i] as Reply;
          expect(got.status, `call ${i}: ${String(got.headers['x-ward-reason'])}`).toBe(200);
          expect(got.headers['x-echo-len']).toBe(String(c.body));
          expect(got.headers['x-echo-sha']).toBe(sha256(pattern(c.body)));
          c.fuzz.forEach((v, j) => expect(got.headers[`x-echo-fuzz-${j}`]).toBe(v));
          expect(got.headers['x-echo-trailer']).toBe(c.requestTrailer ?? undefined);
          expect(got.headers['x-big']?.length ?? 0).toBe(c.big);
          expect(got.body.length).toBe(c.respLen);
          expect(sha256(got.body)).toBe(sha256(pattern(c.respLen)));
          expect(got.trailers?.['x-done']).toBe(c.trailers ? 'yes' : undefined);
        });
        if (r.settings.window < 100) seen.tinyWindow++;
        if (r.settings.table < 4096) seen.smallTable++;
        for (const c of calls) {
          if (c.pad !== null && c.respLen > 0) seen.padded++;
          if (c.big > 16_000) seen.continuation++;
          if (c.trailers) seen.trailers++;
          if (c.requestTrailer !== null) seen.requestTrailers++;
          if (c.body > r.settings.window) seen.uploadPastWindow++;
        }
      }),
      LIMIT,
    );
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(0);
    expect(appErrors).toEqual([]);
    await eventually(() => ward.counters.activeStreams === 0, 5000, 'every stream released');
  });
});
