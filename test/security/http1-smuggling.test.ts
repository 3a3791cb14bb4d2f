import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RecordingApp, startRecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';
import { closeAllRaw, data, FrameType, headersFrame, rawH2, requestBlock } from './support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { eventually, startWard, type Ward } from './support/ward.ts';

/**
 * HTTP/1.1 request smuggling and framing ambiguity over raw sockets (RFC 9112 §6.1, §6.3,
 * §5.1–5.2; PortSwigger "HTTP Desync Attacks", 2019). The app behind the sidecar speaks
 * HTTP/1.1 keep-alive, the setting in which a framing disagreement between proxy and app lets a
 * smuggled request ride inside an allowed one. Every ambiguous message must be refused whole —
 * 400 with `x-ward-reason`, connection closed — and the app must see nothing of it.
 */

let iss: TestIssuer;
let app: RecordingApp;
let ward: Ward;
let token: string;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRecordingApp('http1');
  ward = await startWard({ issuer: iss.issuer, app });
  token = iss.token();
});
afterAll(async () => {
  await ward.close();
  await app.close();
  await iss.close();
});
beforeEach(() => {
  app.reset();
  ward.decisions.length = 0;
});

const SMUGGLED = 'GET /api/internal/smuggled HTTP/1.1\r\nHost: orders\r\n\r\n';

function req(head: string, body = ''): string {
  return `${head.replace('AUTH', `Authorization: Bearer ${token}`)}\r\n\r\n${body}`;
}

/** Refused as a whole: a 400 carrying a reason, nothing else answered, nothing forwarded. */
async function expectRefused(bytes: string | readonly string[], reasons: readonly string[] = ['ERR_REQUEST_INVALID']): Promise<void> {
  const x = await h1raw(ward.port, bytes);
  expect(x.replies.length, x.raw).toBeGreaterThanOrEqual(1);
  expect(x.replies[0]?.status, x.raw).toBe(400);
  expect(reasons).toContain(x.replies[0]?.headers['x-ward-reason']);
  expect(x.replies.filter((r) => r.status < 400), x.raw).toEqual([]);
  expect(x.closedByServer).toBe(true);
  await new Promise((r) => setTimeout(r, 50));
  expect(app.seen).toEqual([]);
  await eventually(() => ward.counters.activeStreams === 0 && ward.counters.h1Connections === 0, 3000, 'connections closed');
}

describe('CL.TE and TE.CL — PortSwigger "HTTP Desync Attacks" (2019); Node CVE-2022-32215, CVE-2022-35256; Envoy CVE-2019-18802', () => {
  it('CL.TE: Content-Length and Transfer-Encoding: chunked together', async () => {
    await expectRefused(req('POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nContent-Length: 6\r\nTransfer-Encoding: chunked', `0\r\n\r\n${SMUGGLED}`));
  });

  it('TE.CL: Transfer-Encoding first, then a short Content-Length', async () => {
    await expectRefused(req('POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: chunked\r\nContent-Length: 3', `8\r\nSMUGGLED\r\n0\r\n\r\n`));
  });

  it.each([
    ['chunked, identity'],
    ['identity, chunked'],
    ['identity'],
    ['xchunked'],
    ['chunked;q=1'],
    ['gzip, chunked'],
    ['\u000bchunked'],
  ])('Transfer-Encoding: %j (RFC 9112 §6.1: only a final chunked is framing; anything else is refused)', async (te) => {
    await expectRefused(req(`POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: ${te}`, `0\r\n\r\n${SMUGGLED}`));
  });

  it('two Transfer-Encoding fields (chunked + chunked)', async () => {
    await expectRefused(req('POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked', `0\r\n\r\n${SMUGGLED}`));
  });

  it('Transfer-Encoding on an HTTP/1.0 request (RFC 9112 §6.1: faulty framing)', async () => {
    const x = await h1raw(ward.port, req('POST /api/x HTTP/1.0\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: chunked', `0\r\n\r\n${SMUGGLED}`));
    // Either refused, or served once and closed: the smuggled request never runs.
    expect(x.replies.length).toBeLessThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(app.seen.map((s) => s.path)).not.toContain('/api/internal/smuggled');
  });
});

describe('Content-Length ambiguity — RFC 9112 §6.3 item 5; Node CVE-2018-7159 (spaces in CL), CVE-2022-32214', () => {
  it.each([
    ['two different values', 'Content-Length: 0\r\nContent-Length: 44'],
    ['two equal values', 'Content-Length: 4\r\nContent-Length: 4'],
    ['a list', 'Content-Length: 4, 4'],
    ['a sign', 'Content-Length: +4'],
    ['hex', 'Content-Length: 0x4'],
    ['negative', 'Content-Length: -1'],
    ['inner space', 'Content-Length: 1 2'],
    ['overflowing', 'Content-Length: 99999999999999999999999'],
  ])('%s', async (_name, field) => {
    await expectRefused(req(`POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\n${field}`, `body${SMUGGLED}`));
  });
});

describe('field syntax — RFC 9112 §5.1 (no whitespace before the colon), §5.2 (obs-fold); Node CVE-2023-30589 (bare CR), CVE-2022-32213 / CVE-2022-35256 (lax header parsing)', () => {
  it('whitespace between field name and colon', async () => {
    await expectRefused(req(`POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding : chunked`, `0\r\n\r\n${SMUGGLED}`));
  });

  it('obs-fold continuation of Transfer-Encoding', async () => {
    await expectRefused(req(`POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked`, `0\r\n\r\n${SMUGGLED}`));
  });

  it('obs-fold on an ordinary field', async () => {
    await expectRefused(req('GET /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nX-Note: a\r\n b'));
  });

  it('bare LF line endings', async () => {
    await expectRefused(`GET /api/x HTTP/1.1\nHost: orders\nAuthorization: Bearer ${token}\n\n`);
  });

  it('bare CR inside a field value', async () => {
    await expectRefused(req('GET /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nX-Note: a\rb'));
  });

  it('NUL inside a field value', async () => {
    await expectRefused(req('GET /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nX-Note: a\u0000b'));
  });

  it('a space inside a field name', async () => {
    await expectRefused(req('GET /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nX Note: a'));
  });

  it('two spaces in the request line: refused, or read as the one target both sides agree on', async () => {
    const x = await h1raw(ward.port, req('GET  /api/internal HTTP/1.1\r\nHost: orders\r\nAUTH'));
    expect(x.replies.filter((r) => r.status < 400)).toEqual([]);
    expect(app.seen).toEqual([]);
  });

  it('an unknown HTTP version', async () => {
    await expectRefused(req('GET /api/x HTTP/1.2\r\nHost: orders\r\nAUTH'));
  });
});

describe('chunked body syntax — Node CVE-2023-30589 (bare CR), CVE-2024-22019 (unbounded chunk extensions)', () => {
  it.each([
    ['chunk size with bare LF', '4\nbody\n0\n\n'],
    ['chunk size overflow', 'fffffffffffffffffff\r\nbody\r\n0\r\n\r\n'],
    ['chunk size with a sign', '+4\r\nbody\r\n0\r\n\r\n'],
    ['chunk extension with a bare CR', '4;ext=a\rb\r\nbody\r\n0\r\n\r\n'],
    ['missing CRLF after the chunk data', '4\r\nbodyX\r\n0\r\n\r\n'],
    ['last chunk with a bare-LF trailer section', '4\r\nbody\r\n0\r\n\n'],
  ])('%s', async (_name, body) => {
    const x = await h1raw(ward.port, req('POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: chunked', `${body}${SMUGGLED}`));
    // The head is valid, so the call may already be on its way to the app when the body
    // turns out bad; what must never happen is a second, smuggled request.
    expect(x.replies.filter((r) => r.status < 300).length, x.raw).toBeLessThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(app.seen.map((s) => s.path)).not.toContain('/api/internal/smuggled');
    expect(app.seen.length).toBeLessThanOrEqual(1);
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'calls closed');
  });

  it('a megabyte of chunk extensions (CVE-2024-22019): refused, connection closed', async () => {
    const x = await h1raw(ward.port, req('POST /api/x HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: chunked', `4;${'a'.repeat(1024 * 1024)}\r\nbody\r\n0\r\n\r\n`), 500);
    expect(x.closedByServer).toBe(true);
    expect(x.replies.filter((r) => r.status < 300)).toEqual(x.replies.filter((r) => r.status === 200).slice(0, 1));
    await new Promise((r) => setTimeout(r, 100));
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'calls closed');
  });
});

describe('Host — RFC 9112 §3.2, §3.2.3 (exactly one Host)', () => {
  it('HTTP/1.1 without Host', async () => {
    await expectRefused(req('GET /api/x HTTP/1.1\r\nAUTH'));
  });

  it('two Host fields', async () => {
    await expectRefused(req('GET /api/x HTTP/1.1\r\nHost: orders\r\nHost: evil\r\nAUTH'));
  });
});

describe('pipelining — a second request is a second decision', () => {
  it('an allowed request followed by a denied one on the same connection: only the first reaches the app', async () => {
    const x = await h1raw(ward.port, `${req('GET /api/ok HTTP/1.1\r\nHost: orders\r\nAUTH')}${req('GET /api/internal/x HTTP/1.1\r\nHost: orders\r\nAUTH')}`);
    expect(x.replies.map((r) => r.status)).toEqual([200, 403]);
    expect(x.replies[1]?.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
    expect(app.seen.map((s) => s.path)).toEqual(['/api/ok']);
  });

  it('a request hidden in the body of a GET without framing is parsed as the next request and judged on its own', async () => {
    const x = await h1raw(ward.port, `${req('GET /api/ok HTTP/1.1\r\nHost: orders\r\nAUTH')}${SMUGGLED}`);
    expect(x.replies.map((r) => r.status)).toEqual([200, 403]);
    expect(x.replies[1]?.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
    expect(app.seen.map((s) => s.path)).toEqual(['/api/ok']);
  });

  it.each(['OPTIONS', 'DELETE', 'GET', 'HEAD', 'POST'])('a chunked body on %s is forwarded framed, never as a request (node sends such bodies raw unless told to chunk)', async (method) => {
    const chunk = `${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`;
    const x = await h1raw(ward.port, req(`${method} /api/ok HTTP/1.1\r\nHost: orders\r\nAUTH\r\nTransfer-Encoding: chunked`, chunk));
    expect(x.replies.map((r) => r.status)).toEqual([200]);
    await new Promise((r) => setTimeout(r, 50));
    expect(app.seen.map((s) => `${s.method} ${s.path}`)).toEqual([`${method} /api/ok`]);
  });

  it('a body declared by Content-Length is forwarded as a body, never as a request', async () => {
    const x = await h1raw(ward.port, req(`POST /api/ok HTTP/1.1\r\nHost: orders\r\nAUTH\r\nContent-Length: ${SMUGGLED.length}`, SMUGGLED));
    expect(x.replies.map((r) => r.status)).toEqual([200]);
    await new Promise((r) => setTimeout(r, 50));
    expect(app.seen.map((s) => s.path)).toEqual(['/api/ok']);
  });
});

describe('protocol switching — h2c smuggling (BishopFox 2020), hop-by-hop header abuse (Nathan Davison 2019)', () => {
  it('Upgrade: h2c with HTTP2-Settings is not honoured; the app gets a plain request', async () => {
    const x = await h1raw(ward.port, req('GET /api/up HTTP/1.1\r\nHost: orders\r\nAUTH\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA'));
    expect(x.replies.map((r) => r.status)).toEqual([200]);
    expect(app.seen).toHaveLength(1);
    expect(app.seen[0]?.headers['upgrade']).toBeUndefined();
    expect(app.seen[0]?.headers['http2-settings']).toBeUndefined();
  });

  it('Connection naming identity and framing fields cannot remove the sidecar\'s own headers', async () => {
    const x = await h1raw(ward.port, req('GET /api/hop HTTP/1.1\r\nHost: orders\r\nAUTH\r\nConnection: x-ward-subject, x-ward-decision-id, x-ward-claims, keep-alive'));
    expect(x.replies.map((r) => r.status)).toEqual([200]);
    expect(app.seen[0]?.headers['x-ward-subject']).toBe('alice');
    expect(app.seen[0]?.headers['x-ward-decision-id']).toBe(ward.decisions[0]?.decisionId);
  });

  it('CONNECT is not a method the sidecar forwards: the tunnel is never opened', async () => {
    const x = await h1raw(ward.port, req('CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\nAUTH', 'GET /api/internal HTTP/1.1\r\nHost: orders\r\n\r\n'));
    expect(x.replies.filter((r) => r.status < 400)).toEqual([]);
    expect(x.closedByServer).toBe(true);
    expect(app.seen).toEqual([]);
  });

  it('Expect: 100-continue on a denied call: no 100, no body read, nothing forwarded', async () => {
    const x = await h1raw(ward.port, 'POST /api/internal/x HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    expect(x.replies.map((r) => r.status)).toEqual([403]);
    expect(x.replies[0]?.headers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
    expect(x.raw).not.toContain('100 Continue');
    expect(app.seen).toEqual([]);
  });
});

describe('HTTP/2 → HTTP/1.1 downgrade smuggling — PortSwigger "HTTP/2: The Sequel is Always Worse" (2021): H2.CL, H2.TE', () => {
  it.each([
    ['content-length 0 with a body', '0', SMUGGLED],
    ['content-length shorter than the body', '5', `hello${SMUGGLED}`],
    ['content-length longer than the body', '200', 'short'],
  ])('H2.CL, %s: the body never becomes a second request to the HTTP/1.1 app', async (_name, cl, body) => {
    try {
      const c = await rawH2(ward.port);
      c.write(headersFrame(1, requestBlock('/api/x', [['authorization', `Bearer ${token}`], ['content-length', cl]], 'POST'), { endStream: false }));
      await new Promise((r) => setTimeout(r, 50)); // headers first, body later: the hard case
      c.write(data(1, Buffer.from(body), true));
      const f = await c.waitFrame((x) => x.type === FrameType.GOAWAY || (x.streamId === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS)), 1000);
      // RFC 9113 §8.1.1: a content-length that does not match the DATA is malformed: a stream
      // or connection error, never a response from the app.
      expect(f === undefined || f.type !== FrameType.HEADERS).toBe(true);
      c.close();
      await new Promise((r) => setTimeout(r, 100));
      expect(app.seen.map((x) => x.path)).not.toContain('/api/internal/smuggled');
      expect(app.seen.length).toBeLessThanOrEqual(1);
      await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams closed');
    } finally {
      closeAllRaw();
    }
  });

  // Regression (found by test/fuzz/proxy-roundtrip.fuzz.test.ts): node's http.request sends a
  // GET, HEAD, DELETE, OPTIONS, TRACE or CONNECT body without Content-Length raw, unframed,
  // after the headers, where the app's parser reads it as the next request on the connection.
  it.each(['OPTIONS', 'DELETE', 'GET', 'HEAD', 'PUT', 'POST'])(
    'H2 body without content-length on %s: framed (chunked) to the HTTP/1.1 app, never a second request',
    async (method) => {
      try {
        const c = await rawH2(ward.port);
        c.write(headersFrame(1, requestBlock('/api/x', [['authorization', `Bearer ${token}`]], method), { endStream: false }));
        await new Promise((r) => setTimeout(r, 50)); // headers first, body later
        c.write(data(1, Buffer.from(SMUGGLED), true));
        const f = await c.waitFrame((x) => x.streamId === 1 && x.type === FrameType.HEADERS, 2000);
        expect(f, 'a response').toBeDefined();
        await new Promise((r) => setTimeout(r, 100));
        expect(app.seen.map((x) => `${x.method} ${x.path}`)).toEqual([`${method} /api/x`]);
        c.close();
        await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams closed');
      } finally {
        closeAllRaw();
      }
    },
  );

  it('H2.TE: transfer-encoding in an HTTP/2 request is a stream error (RFC 9113 §8.2.2), the app sees nothing', async () => {
    try {
      const c = await rawH2(ward.port);
      c.write(headersFrame(1, requestBlock('/api/x', [['authorization', `Bearer ${token}`], ['transfer-encoding', 'chunked']], 'POST'), { endStream: false }));
      c.write(data(1, Buffer.from(`0\r\n\r\n${SMUGGLED}`), true));
      const f = await c.waitFrame((x) => x.type === FrameType.GOAWAY || (x.streamId === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS)), 1000);
      expect(f?.type === FrameType.RST_STREAM || f?.type === FrameType.GOAWAY).toBe(true);
      c.close();
      await new Promise((r) => setTimeout(r, 50));
      expect(app.seen).toEqual([]);
    } finally {
      closeAllRaw();
    }
  });
});
