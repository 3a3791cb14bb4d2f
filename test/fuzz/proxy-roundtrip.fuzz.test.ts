import http, { type IncomingHttpHeaders } from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound, type Outbound } from '../../src/outbound/server.ts';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, startWard, type Ward } from '../security/support/ward.ts';
import { pattern, sha256 } from './support.ts';

/**
 * A call's round trip through the sidecar, for every pair of protocols: HTTP/1.1 or HTTP/2
 * callers, HTTP/1.1 or h2c apps; into the workload (inbound) and out of it, through the egress
 * listener to a declared destination (with a scripted token source). Random methods, bodies (Content-Length or chunked on HTTP/1.1,
 * written in random pieces), request trailers, extra fields; the app answers with a chosen
 * status, a body of a chosen size (Content-Length or chunked on HTTP/1.1) and trailers or not.
 * What must hold is what docs/http2.md and src/inbound/forward.ts promise: the app gets the
 * method, fields and every octet of the body, and the request trailers (in the last chunk to an
 * HTTP/1.1 app); the caller gets the status, fields and every octet of the answer
 * (none for HEAD, 204 and 304); response trailers reach an HTTP/2 caller, and an HTTP/1.1 caller
 * that sent `TE: trailers`.
 */

const LIMIT = { numRuns: 150, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: false } as const;

interface AppAnswer {
  readonly status: number;
  readonly respLen: number;
  readonly chunked: boolean;
  readonly trailers: boolean;
}

function answerOf(h: IncomingHttpHeaders | http2.IncomingHttpHeaders): AppAnswer {
  return {
    status: Number(h['x-app-status'] ?? 200),
    respLen: Number(h['x-app-resp-len'] ?? 0),
    chunked: h['x-app-chunked'] === '1',
    trailers: h['x-app-trailers'] === '1',
  };
}

function echoFields(method: string, h: IncomingHttpHeaders | http2.IncomingHttpHeaders, body: Buffer, trailer: string | undefined): Record<string, string> {
  const out: Record<string, string> = { 'x-echo-method': method, 'x-echo-len': String(body.length), 'x-echo-sha': sha256(body) };
  for (const [k, v] of Object.entries(h)) if (k.startsWith('x-fuzz-') && typeof v === 'string') out[`x-echo-${k.slice(2)}`] = v;
  if (trailer !== undefined) out['x-echo-trailer'] = trailer;
  return out;
}

const noBody = (method: string, status: number): boolean => method === 'HEAD' || status === 204 || status === 304;

async function startH1App(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const a = answerOf(req.headers);
      const trailer = req.trailers['x-req-trailer'];
      const fields: http.OutgoingHttpHeaders = echoFields(req.method ?? '', req.headers, Buffer.concat(chunks), trailer);
      const body = noBody(req.method ?? '', a.status) ? Buffer.alloc(0) : pattern(a.respLen);
      if (!noBody(req.method ?? '', a.status)) {
        if (a.chunked) fields['transfer-encoding'] = 'chunked';
        else fields['content-length'] = String(body.length);
      }
      if (a.chunked && a.trailers && !noBody(req.method ?? '', a.status)) fields.trailer = 'x-done';
      res.writeHead(a.status, fields);
      if (a.chunked && body.length > 1) {
        res.write(body.subarray(0, body.length >> 1));
        res.write(body.subarray(body.length >> 1));
      } else if (body.length > 0) res.write(body);
      if (a.chunked && a.trailers && !noBody(req.method ?? '', a.status)) res.addTrailers({ 'x-done': 'yes' });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

async function startH2App(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    let trailer: string | undefined;
    stream.on('error', () => {});
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('trailers', (t: http2.IncomingHttpHeaders) => (trailer = t['x-req-trailer'] as string | undefined));
    stream.on('end', () => {
      if (stream.destroyed) return;
      const method = headers[':method'] as string;
      const a = answerOf(headers);
      const body = noBody(method, a.status) ? Buffer.alloc(0) : pattern(a.respLen);
      const withTrailers = a.trailers && !noBody(method, a.status);
      stream.respond({ ':status': a.status, ...echoFields(method, headers, Buffer.concat(chunks), trailer) }, { waitForTrailers: withTrailers, endStream: body.length === 0 && !withTrailers });
      if (withTrailers) stream.once('wantTrailers', () => stream.sendTrailers({ 'x-done': 'yes' }));
      if (body.length > 0 || withTrailers) stream.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  readonly trailers: Record<string, string | string[] | undefined>;
}

interface Call {
  readonly method: string;
  readonly body: number;
  readonly pieces: number;
  readonly chunked: boolean;
  readonly requestTrailer: string | null;
  readonly te: boolean;
  readonly fuzz: string[];
  readonly answer: AppAnswer;
}

function fieldsOf(c: Call, token: string): Record<string, string> {
  const f: Record<string, string> = {
    authorization: `Bearer ${token}`,
    'x-app-status': String(c.answer.status),
    'x-app-resp-len': String(c.answer.respLen),
    'x-app-chunked': c.answer.chunked ? '1' : '0',
    'x-app-trailers': c.answer.trailers ? '1' : '0',
  };
  c.fuzz.forEach((v, i) => (f[`x-fuzz-${i}`] = v));
  return f;
}

function writeBody(w: { write(b: Buffer): unknown }, body: Buffer, pieces: number): void {
  const step = Math.max(1, Math.ceil(body.length / pieces));
  for (let off = 0; off < body.length; off += step) w.write(body.subarray(off, off + step));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function h1Call(port: number, c: Call, token: string, host?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const body = pattern(c.body);
    const headers: http.OutgoingHttpHeaders = fieldsOf(c, token);
    if (host !== undefined) headers.host = host;
    if (c.te) headers.te = 'trailers';
    const chunked = c.chunked || c.requestTrailer !== null;
    if (!chunked && c.method !== 'GET' && c.method !== 'HEAD') headers['content-length'] = String(body.length);
    if (c.requestTrailer !== null) headers.trailer = 'x-req-trailer';
    const req = http.request({ host: '127.0.0.1', port, method: c.method, path: '/api/echo', headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (chunked) req.setHeader('transfer-encoding', 'chunked');
    writeBody(req, body, c.pieces);
    if (c.requestTrailer !== null) req.addTrailers({ 'x-req-trailer': c.requestTrailer });
    req.end();
  });
}

function h2Call(session: http2.ClientHttp2Session, c: Call, token: string, authority?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const body = pattern(c.body);
    const withBody = c.method !== 'GET' && c.method !== 'HEAD';
    const req = session.request({ ':method': c.method, ':path': '/api/echo', ...(authority === undefined ? {} : { ':authority': authority }), ...fieldsOf(c, token) }, { waitForTrailers: c.requestTrailer !== null, endStream: !withBody && c.requestTrailer === null });
    if (c.requestTrailer !== null) req.once('wantTrailers', () => req.sendTrailers({ 'x-req-trailer': c.requestTrailer as string }));
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => (headers = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks), trailers }));
    req.on('error', reject);
    if (withBody) writeBody(req, body, c.pieces);
    if (withBody || c.requestTrailer !== null) req.end();
  });
}

/** A field value RFC 9110 §5.5 lets through: visible ASCII and obs-text (0x80-0xFF), no edge whitespace. */
const VALUE = fc.stringMatching(/^[!-~\x80-\xff]([ -~\x80-\xff]{0,30}[!-~\x80-\xff])?$/);
const CALL = fc
  .record({
    method: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
    body: fc.oneof(fc.constantFrom(0, 1), fc.nat(3000), fc.nat(80_000)),
    pieces: fc.integer({ min: 1, max: 20 }),
    chunked: fc.boolean(),
    requestTrailer: fc.option(VALUE, { nil: null, freq: 3 }),
    te: fc.boolean(),
    fuzz: fc.array(VALUE, { maxLength: 2 }),
    answer: fc.record({
      status: fc.constantFrom(200, 200, 201, 202, 204, 304, 404, 500, 503),
      respLen: fc.oneof(fc.constantFrom(0, 1), fc.nat(3000), fc.nat(100_000)),
      chunked: fc.boolean(),
      trailers: fc.boolean(),
    }),
  })
  // GET and HEAD carry no body (nor trailers, which need one on HTTP/1.1).
  .map((c) => (c.method === 'GET' || c.method === 'HEAD' ? { ...c, body: 0, requestTrailer: null } : c));

let issuer: TestIssuer;
let token: string;
const apps: { port: number; close: () => Promise<void> }[] = [];
const wards: Record<'h1' | 'h2c', Ward> = {} as Record<'h1' | 'h2c', Ward>;
const sessions: http2.ClientHttp2Session[] = [];
let egress: Outbound;

beforeAll(async () => {
  issuer = await startTestIssuer();
  token = issuer.token();
  const h1 = await startH1App();
  const h2 = await startH2App();
  apps.push(h1, h2);
  wards.h1 = await startWard({ issuer: issuer.issuer, app: { port: h1.port, protocol: 'http1' } });
  wards.h2c = await startWard({ issuer: issuer.issuer, app: { port: h2.port, protocol: 'h2c' } });
  // The egress listener, with a scripted token source: the app's token is exchanged for one per
  // destination, which reaches the destination in its place.
  egress = await createOutbound({
    service: 'frontend',
    config: outboundConfigSchema.parse({
      listen: { host: '127.0.0.1', port: 0 },
      destinations: [
        { name: 'dest-h1', url: `http://127.0.0.1:${h1.port}`, protocol: 'http1', audience: 'dest-h1' },
        { name: 'dest-h2c', url: `http://127.0.0.1:${h2.port}`, protocol: 'h2c', audience: 'dest-h2c' },
      ],
    }),
    identityPrefix: 'x-ward-',
    maxTokenBytes: 8192,
    extractBearer,
    tokens: { token: (t, subject) => ({ ok: true, token: `for-${t.name}`, authorization: `Bearer for-${t.name}-${subject ?? ''}`, via: 'exchange' }) },
    log: silentLogger,
    clock: Date.now,
    onDecision: () => {},
  });
});
afterAll(async () => {
  for (const s of sessions) s.close();
  await egress.close();
  agent.destroy();
  for (const w of Object.values(wards)) await w.close();
  for (const a of apps) await a.close();
  await issuer.close();
});

describe('a call through the sidecar and back, for every pair of protocols, inbound and through the egress listener', () => {
  const pairs = (['inbound', 'egress'] as const).flatMap((leg) => (['h1', 'h2'] as const).flatMap((caller) => (['h1', 'h2c'] as const).map((appProto) => ({ leg, caller, appProto }))));
  for (const { leg, caller, appProto } of pairs) {
    it(`${leg}: ${caller === 'h1' ? 'HTTP/1.1' : 'HTTP/2'} caller, ${appProto === 'h1' ? 'HTTP/1.1' : 'h2c'} app`, { timeout: 90_000 }, async () => {
      const inbound = leg === 'inbound';
      const ward = wards[appProto];
      const port = inbound ? ward.port : egress.port;
      const authority = inbound ? undefined : `dest-${appProto}`;
      const session = http2.connect(`http://127.0.0.1:${port}`);
      sessions.push(session);
      // What the runs exercised, so that a generator that stopped reaching a feature shows.
      const seen = { calls: 0, bodies: 0, bodyOnBodylessMethod: 0, requestTrailers: 0, trailersRelayed: 0, noBodyAnswers: 0, chunkedAnswers: 0 };
      await fc.assert(
        fc.asyncProperty(fc.array(CALL, { minLength: 1, maxLength: 3 }), async (calls) => {
          const replies = await Promise.all(calls.map((c) => (caller === 'h1' ? h1Call(port, c, token, authority) : h2Call(session, c, token, authority))));
          calls.forEach((c, i) => {
            const r = replies[i] as Reply;
            const what = `${c.method} → ${c.answer.status}: ${String(r.headers['x-ward-reason'] ?? '')}`;
            expect(r.status, what).toBe(c.answer.status);
            expect(r.headers['x-echo-method'], what).toBe(c.method);
            expect(r.headers['x-echo-len'], what).toBe(String(c.body));
            expect(r.headers['x-echo-sha'], what).toBe(sha256(pattern(c.body)));
            c.fuzz.forEach((v, j) => expect(r.headers[`x-echo-fuzz-${j}`], what).toBe(v));
            // Request trailers reach the app: an h2c one, and an HTTP/1.1 one in the last chunk
            // (no call here sends a Content-Length with them).
            expect(r.headers['x-echo-trailer'], what).toBe(c.requestTrailer ?? undefined);
            const empty = noBody(c.method, c.answer.status);
            expect(r.body.length, what).toBe(empty ? 0 : c.answer.respLen);
            if (!empty) expect(sha256(r.body), what).toBe(sha256(pattern(c.answer.respLen)));
            // Response trailers: sent by an h2c app whenever asked, by an HTTP/1.1 app on a
            // chunked answer; relayed to an HTTP/2 caller, and to an HTTP/1.1 one that sent TE.
            const sent = !empty && c.answer.trailers && (appProto === 'h2c' || c.answer.chunked);
            const relayed = sent && (caller === 'h2' || c.te);
            expect(r.trailers['x-done'], what).toBe(relayed ? 'yes' : undefined);
            seen.calls++;
            if (c.body > 0) seen.bodies++;
            if (c.body > 0 && (c.method === 'DELETE' || c.method === 'OPTIONS')) seen.bodyOnBodylessMethod++;
            if (c.requestTrailer !== null) seen.requestTrailers++;
            if (relayed) seen.trailersRelayed++;
            if (empty) seen.noBodyAnswers++;
            if (c.answer.chunked && !empty) seen.chunkedAnswers++;
          });
        }),
        LIMIT,
      );
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(2);
      await eventually(() => (inbound ? ward.counters.activeStreams : egress.counters.activeStreams) === 0, 5000, 'every stream released');
    });
  }
});
