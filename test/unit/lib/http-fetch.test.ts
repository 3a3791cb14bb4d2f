import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpFetch } from '../../../src/lib/http-fetch.ts';
import { makeSelfSignedCert } from '../inbound/harness.ts';

/**
 * ward's fetch for identity providers (src/lib/http-fetch.ts), against real node:http and
 * node:https servers on loopback.
 */

const CAP = 64 * 1024;
const f = createHttpFetch(CAP);

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}
const seen: Seen[] = [];
let redirectTargetHits = 0;

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c: Buffer) => (body += c.toString()));
  req.on('end', () => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
    switch (req.url) {
      case '/json':
        res.writeHead(200, { 'content-type': 'application/json', 'x-idp': 'one' }).end('{"keys":[]}');
        return;
      case '/echo':
        res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
        return;
      case '/moved':
        res.writeHead(302, { location: '/target' }).end();
        return;
      case '/target':
        redirectTargetHits++;
        res.end('followed');
        return;
      case '/declared-huge':
        res.writeHead(200, { 'content-length': String(CAP + 1) }).write('x');
        return;
      case '/endless': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(16 * 1024, 0x20);
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        pump();
        return;
      }
      case '/gzip':
        res.writeHead(200, { 'content-encoding': 'gzip', 'content-type': 'application/json' }).end(gzipSync('{"zipped":true}'));
        return;
      case '/gzip-bomb':
        res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(Buffer.alloc(10 * 1024 * 1024)));
        return;
      case '/hang':
        return; // never answers
      case '/cut':
        res.writeHead(200, { 'content-length': '1000' }).write('partial');
        setTimeout(() => res.destroy(), 20);
        return;
      case '/empty':
        res.writeHead(204).end();
        return;
      case '/error':
        res.writeHead(503, 'Busy', { 'retry-after': '1' }).end('try later');
        return;
      default:
        res.writeHead(404).end();
    }
  });
});
let base = '';

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('createHttpFetch: what ward asks identity providers', () => {
  it('GET: sends the given headers, returns status, headers and body as a Response', async () => {
    const res = await f(`${base}/json`, { headers: { accept: 'application/jwk-set+json, application/json' }, redirect: 'manual', signal: AbortSignal.timeout(2000) });
    expect(res).toBeInstanceOf(Response);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-idp')).toBe('one');
    expect(await res.json()).toEqual({ keys: [] });
    const req = seen.at(-1);
    expect(req?.method).toBe('GET');
    expect(req?.headers['accept']).toBe('application/jwk-set+json, application/json');
  });

  it('POST: a URLSearchParams body is form-encoded, with its length and content type (what openid-client sends)', async () => {
    const form = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', audience: 'urn:x y' });
    const res = await f(new URL(`${base}/echo`), { method: 'POST', body: form, headers: { authorization: 'Basic Zm9vOmJhcg==' } });
    expect(await res.text()).toBe(form.toString());
    const req = seen.at(-1);
    expect(req?.method).toBe('POST');
    expect(req?.headers['content-type']).toBe('application/x-www-form-urlencoded;charset=UTF-8');
    expect(req?.headers['content-length']).toBe(String(form.toString().length));
    expect(req?.headers['authorization']).toBe('Basic Zm9vOmJhcg==');
  });

  it('a caller-set content type is kept; string and byte bodies are sent as given', async () => {
    await f(`${base}/echo`, { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
    expect(seen.at(-1)?.headers['content-type']).toBe('application/json');
    const res = await f(`${base}/echo`, { method: 'POST', body: new TextEncoder().encode('bytes') });
    expect(await res.text()).toBe('bytes');
  });

  it('never follows a redirect: the 3xx comes back as it is; with redirect "error" it rejects', async () => {
    const res = await f(`${base}/moved`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('/target');
    await expect(f(`${base}/moved`, { redirect: 'error' })).rejects.toThrow(TypeError);
    await expect(f(`${base}/moved`)).resolves.toHaveProperty('status', 302);
    expect(redirectTargetHits).toBe(0);
  });

  it('refuses a body over the cap, declared or streamed, and a compressed one that inflates past it', async () => {
    for (const path of ['/declared-huge', '/endless', '/gzip-bomb']) {
      const err = (await f(`${base}${path}`).catch((e: unknown) => e)) as TypeError;
      // The provider failing, as a cut connection is (openid-client passes TypeErrors through).
      expect([err.name, err.message, (err.cause as Error).message]).toEqual(['TypeError', 'fetch failed', `response larger than ${CAP} bytes`]);
    }
  });

  it('decodes a gzip body and drops the headers that described the encoded one', async () => {
    const res = await f(`${base}/gzip`);
    expect(await res.json()).toEqual({ zipped: true });
    expect(res.headers.get('content-encoding')).toBeNull();
  });

  it('an error status and a 204 come back as responses (null body for 204)', async () => {
    const busy = await f(`${base}/error`);
    expect([busy.status, busy.statusText, busy.headers.get('retry-after'), await busy.text()]).toEqual([503, 'Busy', '1', 'try later']);
    const empty = await f(`${base}/empty`);
    expect(empty.status).toBe(204);
    expect(empty.body).toBeNull();
  });

  it('a signal that fires rejects with its reason, like fetch; one already aborted sends nothing', async () => {
    const err = await f(`${base}/hang`, { signal: AbortSignal.timeout(100) }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('TimeoutError');
    const before = seen.length;
    const ctl = new AbortController();
    ctl.abort(new Error('stop'));
    await expect(f(`${base}/json`, { signal: ctl.signal })).rejects.toThrow('stop');
    await new Promise((r) => setTimeout(r, 50));
    expect(seen.length).toBe(before);
  });

  it('network failures reject with TypeError("fetch failed") and the socket error as cause', async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const err = (await f(`http://127.0.0.1:${port}/`).catch((e: unknown) => e)) as TypeError & { cause?: { code?: string } };
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe('fetch failed');
    expect(err.cause?.code).toBe('ECONNREFUSED');
    // A connection cut mid-body is a failure too, not a short document.
    await expect(f(`${base}/cut`)).rejects.toThrow('fetch failed');
  });

  it('refuses what it does not carry: other schemes, Request objects, stream bodies', async () => {
    await expect(f('ftp://127.0.0.1/x')).rejects.toThrow('unsupported protocol ftp:');
    await expect(f(new Request(`${base}/json`))).rejects.toThrow('Request object is not supported');
    await expect(f(`${base}/echo`, { method: 'POST', body: new ReadableStream() })).rejects.toThrow('request body must be');
  });
});

describe('createHttpFetch over https', () => {
  const MODULE = fileURLToPath(new URL('../../../src/lib/http-fetch.ts', import.meta.url));
  /** Fetches `url` in a child process (the CA store is read at start-up), printing status and body. */
  function fetchInChild(url: string, env: NodeJS.ProcessEnv): Promise<string> {
    const script = `import { createHttpFetch } from ${JSON.stringify(MODULE)};
      try { const r = await createHttpFetch(65536)(${JSON.stringify(url)}); console.log(r.status, await r.text()); }
      catch (e) { console.log('failed', e.message, e.cause?.code); }`;
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env } }, (err, stdout) => {
        if (err !== null) reject(new Error(`child failed: ${err.message}`));
        else resolve(stdout.trim());
      });
    });
  }

  it('verifies the server certificate against the CA store: trusted answers, untrusted fails closed', async () => {
    const tls = makeSelfSignedCert();
    const srv = https.createServer({ cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) }, (_req, res) => res.end('over tls'));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(srv.address() as AddressInfo).port}/`;
    try {
      expect(await fetchInChild(url, { NODE_EXTRA_CA_CERTS: tls.certFile })).toBe('200 over tls');
      const env: NodeJS.ProcessEnv = { NODE_EXTRA_CA_CERTS: '' };
      expect(await fetchInChild(url, env)).toBe('failed fetch failed DEPTH_ZERO_SELF_SIGNED_CERT');
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
      tls.cleanup();
    }
  });
});
