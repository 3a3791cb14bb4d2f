import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSidecar, startSidecar } from '../../src/cli/sidecar.ts';
import { parseSidecarConfig } from '../../src/config/sidecar.ts';
import { CookieJar, startWebApp, startWebSidecar, WEBAPP_AUDIENCE, type WebApp, webappFiles } from '../../src/demo/webapp.ts';
import { createLogger } from '../../src/lib/log.ts';
import { startWebTestIdp, type TestIdp } from '../support/idp.ts';
import { makeSelfSignedCert } from '../unit/inbound/harness.ts';
import { startMesh, waitFor } from './harness.ts';
import { PAGE, toCallback } from './browser-flow.ts';

/**
 * Browser sign-in at the sidecar, driven over plain HTTP (node fetch, a cookie jar, no
 * redirects followed), for what a browser would never do on its own: tampered, foreign and
 * replayed cookies, forged `state`, a code used twice, open-redirect return URLs, cross-site
 * posts with a session. Each is refused, and the app sees nothing of it.
 *
 * Sidecar A and sidecar B guard the same web app with different session keys; the web app's
 * access tokens live ACCESS_TTL seconds and A refreshes them with a second left.
 */

const ACCESS_TTL = 3;

interface Reply {
  readonly status: number;
  readonly reason: string | null;
  readonly location: string | null;
  readonly setCookie: string[];
}

async function reply(res: Response): Promise<Reply> {
  await res.body?.cancel();
  return { status: res.status, reason: res.headers.get('x-ward-reason'), location: res.headers.get('location'), setCookie: res.headers.getSetCookie() };
}


async function signIn(sidecar: string, path = '/', user = 'alice'): Promise<CookieJar> {
  const jar = new CookieJar();
  const cb = await toCallback(jar, sidecar, path, user);
  const r = await reply(await jar.fetch(cb, { headers: PAGE }));
  expect(r.status).toBe(302);
  expect(jar.cookies.get('ward_session')).toBeDefined();
  return jar;
}

/** Only the sidecar's session cookie of `jar`, as a header value. */
function sessionOf(jar: CookieJar): string {
  return `ward_session=${jar.cookies.get('ward_session') ?? ''}`;
}

describe('browser sign-in over HTTP: what the sidecar refuses', () => {
  let idp: TestIdp;
  let app: WebApp;
  let a: RunningSidecar;
  let b: RunningSidecar;
  let A: string;
  let B: string;
  const dirs: string[] = [];
  const logs: string[] = [];
  const log = createLogger({ level: 'debug', sink: { write: (l) => logs.push(l) } });

  const calls = (): string[] => app.calls.map((c) => `${c.method} ${c.path}`);

  beforeAll(async () => {
    idp = await startWebTestIdp(ACCESS_TTL);
    app = await startWebApp();
    const start = async (opts: Parameters<typeof startWebSidecar>[0]['session']): Promise<RunningSidecar> => {
      const dir = mkdtempSync(join(tmpdir(), 'ward-web-'));
      dirs.push(dir);
      const s = await startWebSidecar({ idp, dir, appPort: app.port, log, ...(opts === undefined ? {} : { session: opts }) });
      await waitFor(() => s.ready(), 10_000, 'web sidecar ready');
      return s;
    };
    a = await start({ refreshBeforeSeconds: 1 });
    b = await start({ refreshBeforeSeconds: 1 }); // same app, same IdP client, its own session key
    A = `http://127.0.0.1:${a.ports.inbound}`;
    B = `http://127.0.0.1:${b.ports.inbound}`;
  });

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await app?.close();
    await idp?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('sends a browser without a session to the IdP (code flow, PKCE S256, state, nonce) and gives an API caller 401', async () => {
    const browser = await reply(await fetch(`${A}/?tab=notes`, { headers: PAGE, redirect: 'manual' }));
    expect(browser.status).toBe(302);
    expect(browser.reason).toBe('ERR_TOKEN_MISSING');
    const to = new URL(browser.location ?? '');
    expect(`${to.origin}${to.pathname}`).toBe(`${idp.issuer}/auth`);
    expect(Object.fromEntries(to.searchParams)).toMatchObject({
      response_type: 'code',
      client_id: 'webapp',
      code_challenge_method: 'S256',
      redirect_uri: `${A}/.ward/callback`,
      resource: WEBAPP_AUDIENCE,
      scope: 'openid',
    });
    expect(browser.setCookie).toEqual([expect.stringMatching(/^ward_session\.t\.[\w-]+=[\w-]+; Path=\/\.ward\/; Max-Age=600; HttpOnly; SameSite=Lax$/)]);

    const api = await reply(await fetch(`${A}/`, { redirect: 'manual' }));
    expect(api).toMatchObject({ status: 401, reason: 'ERR_TOKEN_MISSING', location: null });
    const json = await reply(await fetch(`${A}/`, { headers: { accept: 'application/json' }, redirect: 'manual' }));
    expect(json.status).toBe(401);
    expect(calls()).toEqual([]);
  });

  it('signs in and returns to the page asked for; the app gets the identity headers, no token and no cookie of the sidecar', async () => {
    const jar = new CookieJar();
    const cb = await toCallback(jar, A, '/?tab=notes');
    const done = await reply(await jar.fetch(cb, { headers: PAGE }));
    expect(done.status).toBe(302);
    expect(done.location).toBe('/?tab=notes');
    expect(done.setCookie.find((c) => c.startsWith('ward_session='))).toMatch(/; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
    expect(done.setCookie.find((c) => c.startsWith('ward_session.t.'))).toMatch(/Max-Age=0/); // transaction cleared
    const before = app.calls.length;
    const page = await fetch(`${A}/?tab=notes`, { headers: { ...PAGE, cookie: `${sessionOf(jar)}; theme=dark` }, redirect: 'manual' });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Hello, Alice Example');
    const seen = app.calls[before];
    expect(seen?.headers).toMatchObject({ 'x-ward-subject': 'alice', 'x-ward-issuer': idp.issuer, cookie: 'theme=dark' });
    expect(seen?.headers['authorization']).toBeUndefined(); // passAccessToken is off on A
  });

  it('refuses a tampered session cookie, clears it, and sends a browser to sign in again', async () => {
    const jar = await signIn(A);
    const value = jar.cookies.get('ward_session') ?? '';
    const before = app.calls.length;
    const flips = [10, Math.floor(value.length / 2), value.length - 2].map((i) => `${value.slice(0, i)}${value[i] === 'A' ? 'B' : 'A'}${value.slice(i + 1)}`);
    for (const bad of [...flips, value.slice(0, -8), `${value}AAAA`, 'not-a-session']) {
      const api = await reply(await fetch(`${A}/`, { headers: { cookie: `ward_session=${bad}` }, redirect: 'manual' }));
      expect(api).toMatchObject({ status: 401, reason: 'ERR_SESSION_INVALID' });
      expect(api.setCookie).toContainEqual(expect.stringMatching(/^ward_session=; Path=\/; Max-Age=0/));
    }
    const browser = await reply(await fetch(`${A}/`, { headers: { ...PAGE, cookie: `ward_session=${flips[1] ?? ''}` }, redirect: 'manual' }));
    expect(browser).toMatchObject({ status: 302, reason: 'ERR_SESSION_INVALID' });
    expect(browser.location?.startsWith(`${idp.issuer}/auth?`)).toBe(true);
    expect(browser.setCookie).toContainEqual(expect.stringMatching(/^ward_session=; .*Max-Age=0/));
    expect(app.calls.length).toBe(before);
    // the genuine cookie still works
    expect((await reply(await fetch(`${A}/`, { headers: { cookie: sessionOf(jar) }, redirect: 'manual' }))).status).toBe(200);
  });

  it('refuses a session sealed by another sidecar (another key), even for the same app and IdP client', async () => {
    const atB = await signIn(B);
    expect((await reply(await fetch(`${B}/`, { headers: { cookie: sessionOf(atB) }, redirect: 'manual' }))).status).toBe(200);
    const before = app.calls.length;
    const foreign = await reply(await fetch(`${A}/`, { headers: { cookie: sessionOf(atB) }, redirect: 'manual' }));
    expect(foreign).toMatchObject({ status: 401, reason: 'ERR_SESSION_INVALID' });
    expect(app.calls.length).toBe(before);
    expect(logs.some((l) => l.includes('session cookie unknown-key'))).toBe(true);
  });

  it('refuses a session replayed after logout, and logout needs a same-origin POST', async () => {
    const jar = await signIn(A);
    const cookie = sessionOf(jar);
    // a cross-site logout (a forged form) is refused, and the session lives on
    const forged = await reply(await fetch(`${A}/.ward/logout`, { method: 'POST', headers: { ...PAGE, cookie, origin: 'http://evil.example' }, redirect: 'manual' }));
    expect(forged).toMatchObject({ status: 403, reason: 'ERR_SESSION_CSRF' });
    expect((await reply(await fetch(`${A}/`, { headers: { cookie }, redirect: 'manual' }))).status).toBe(200);

    const out = await reply(await fetch(`${A}/.ward/logout`, { method: 'POST', headers: { ...PAGE, cookie, origin: A }, redirect: 'manual' }));
    expect(out.status).toBe(303);
    const end = new URL(out.location ?? '');
    expect(`${end.origin}${end.pathname}`).toBe(`${idp.issuer}/session/end`);
    expect(end.searchParams.get('post_logout_redirect_uri')).toBe(`${A}/.ward/signed-out`);
    expect(out.setCookie).toContainEqual(expect.stringMatching(/^ward_session=; .*Max-Age=0/));

    const before = app.calls.length;
    const replayed = await reply(await fetch(`${A}/`, { headers: { cookie }, redirect: 'manual' }));
    expect(replayed).toMatchObject({ status: 401, reason: 'ERR_SESSION_INVALID' });
    const replayedBrowser = await reply(await fetch(`${A}/`, { headers: { ...PAGE, cookie }, redirect: 'manual' }));
    expect(replayedBrowser.status).toBe(302); // to sign in again
    expect(app.calls.length).toBe(before);
  });

  it('refuses a forged state at the callback', async () => {
    const before = app.calls.length;
    const bare = await reply(await fetch(`${A}/.ward/callback?code=abc&state=forged`, { headers: PAGE, redirect: 'manual' }));
    expect(bare).toMatchObject({ status: 400, reason: 'ERR_SIGNIN_FAILED' });
    expect((await reply(await fetch(`${A}/.ward/callback?code=abc`, { redirect: 'manual' }))).status).toBe(400);

    // a real sign-in in flight, but the callback carries another state
    const jar = new CookieJar();
    const cb = await toCallback(jar, A);
    const other = new URL(cb);
    other.searchParams.set('state', 'x'.repeat(43));
    expect(await reply(await jar.fetch(other, { headers: PAGE }))).toMatchObject({ status: 400, reason: 'ERR_SIGNIN_FAILED' });
    // the transaction cookie of one sign-in presented under another's name
    const jar2 = new CookieJar();
    const cb2 = await toCallback(jar2, A);
    const txn2 = [...jar2.cookies].find(([k]) => k.startsWith('ward_session.t.'));
    const txn1 = [...jar.cookies].find(([k]) => k.startsWith('ward_session.t.'));
    const swapped = await reply(await fetch(cb2, { headers: { ...PAGE, cookie: `${txn2?.[0] ?? ''}=${txn1?.[1] ?? ''}` }, redirect: 'manual' }));
    expect(swapped).toMatchObject({ status: 400, reason: 'ERR_SIGNIN_FAILED' });
    expect(app.calls.length).toBe(before);
    expect(swapped.setCookie.some((c) => c.startsWith('ward_session='))).toBe(false);
  });

  it('refuses a code replayed twice, and a leaked callback URL without the browser\'s transaction cookie', async () => {
    const jar = new CookieJar();
    const cb = await toCallback(jar, A);
    const txnCookie = jar.header();
    const leaked = await reply(await fetch(cb, { headers: PAGE, redirect: 'manual' }));
    expect(leaked).toMatchObject({ status: 400, reason: 'ERR_SIGNIN_FAILED' });

    const first = await reply(await fetch(cb, { headers: { ...PAGE, cookie: txnCookie }, redirect: 'manual' }));
    expect(first.status).toBe(302);
    const session = first.setCookie.find((c) => c.startsWith('ward_session='))?.split(';')[0] ?? '';
    const again = await reply(await fetch(cb, { headers: { ...PAGE, cookie: txnCookie }, redirect: 'manual' }));
    expect(again).toMatchObject({ status: 400, reason: 'ERR_SIGNIN_FAILED' });
    expect(again.setCookie.some((c) => c.startsWith('ward_session='))).toBe(false);
    expect(logs.some((l) => l.includes('replayed callback'))).toBe(true);
    // and the code itself is spent at the IdP: exchanging it again is invalid_grant
    const code = cb.searchParams.get('code') ?? '';
    const direct = await idp.post('webapp', { grant_type: 'authorization_code', code, redirect_uri: `${A}/.ward/callback`, code_verifier: 'x'.repeat(43) });
    expect(direct.body['error']).toBe('invalid_grant');
    // the first sign-in's session works
    expect((await reply(await fetch(`${A}/`, { headers: { cookie: session }, redirect: 'manual' }))).status).toBe(200);
  });

  it('refuses return URLs that leave the origin (no open redirect), and honours a same-origin one', async () => {
    const before = app.calls.length;
    for (const target of ['https://evil.example/', '//evil.example/', '/\\evil.example', '/\t/evil.example', '/\n/evil.example', 'javascript:alert(1)', '/a/..//evil.example', '/.ward/logout', 'evil.example']) {
      const r = await reply(await fetch(`${A}/.ward/sign-in?return=${encodeURIComponent(target)}`, { headers: PAGE, redirect: 'manual' }));
      expect(r, target).toMatchObject({ status: 400, reason: 'ERR_RETURN_URL_INVALID', location: null });
    }
    // raw tab and CR/LF in the query, not percent-encoded
    const raw = await reply(await fetch(`${A}/.ward/sign-in?return=/%0D%0ALocation:%20https://evil.example`, { headers: PAGE, redirect: 'manual' }));
    expect(raw.status).toBe(400);

    const jar = new CookieJar();
    const cb = await toCallback(jar, A, '/.ward/sign-in?return=%2F%3Ftab%3Dnotes');
    const done = await reply(await jar.fetch(cb, { headers: PAGE }));
    expect(done).toMatchObject({ status: 302, location: '/?tab=notes' });
    expect(app.calls.length).toBe(before);
  });

  it('lets state-changing requests through only with a same-origin Origin or Referer', async () => {
    const jar = await signIn(A);
    const cookie = sessionOf(jar);
    const post = async (headers: Record<string, string>): Promise<Reply> =>
      reply(await fetch(`${A}/notes`, { method: 'POST', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: 'text=x', redirect: 'manual' }));
    const before = app.calls.length;
    for (const h of [{}, { origin: 'http://evil.example' }, { origin: 'null' }, { referer: 'http://evil.example/page' }, { origin: A, 'sec-fetch-site': 'cross-site' }, { origin: 'http://127.0.0.1:1' }]) {
      expect(await post(h), JSON.stringify(h)).toMatchObject({ status: 403, reason: 'ERR_SESSION_CSRF' });
    }
    expect(app.calls.length).toBe(before);
    expect((await post({ origin: A })).status).toBe(303);
    expect((await post({ referer: `${A}/` })).status).toBe(303);
    expect(calls().slice(before)).toEqual(['POST /notes', 'POST /notes']);
  });

  it('ends the session when the IdP refuses the refresh (its session ended)', async () => {
    const jar = await signIn(A);
    const signedIn = Date.now();
    const cookie = sessionOf(jar);
    // End the session at the IdP behind the sidecar's back (the user signed out of the IdP elsewhere).
    let res = await jar.fetch(`${idp.issuer}/session/end?client_id=webapp`, { headers: PAGE });
    const form = await res.text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(form)?.[1] ?? '';
    const action = /action="([^"]+)"/.exec(form)?.[1] ?? '';
    res = await jar.fetch(new URL(action, idp.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `xsrf=${xsrf}&logout=yes` });
    await res.body?.cancel();
    expect((await reply(await fetch(`${A}/`, { headers: { cookie }, redirect: 'manual' }))).status).toBe(200); // still within its access token
    // once the access token is due for refresh, the IdP refuses the refresh token: the session ends
    await new Promise((r) => setTimeout(r, Math.max(0, (ACCESS_TTL - 1) * 1000 + 200 - (Date.now() - signedIn))));
    const before = app.calls.length;
    const ended = await reply(await fetch(`${A}/`, { headers: { ...PAGE, cookie }, redirect: 'manual' }));
    expect(ended).toMatchObject({ status: 302, reason: 'ERR_SESSION_INVALID' });
    expect(ended.location?.startsWith(`${idp.issuer}/auth?`)).toBe(true);
    expect(ended.setCookie).toContainEqual(expect.stringMatching(/^ward_session=; .*Max-Age=0/));
    expect((await reply(await fetch(`${A}/`, { headers: { cookie }, redirect: 'manual' }))).reason).toBe('ERR_SESSION_INVALID');
    expect(app.calls.length).toBe(before);
    expect(logs.some((l) => l.includes('session refresh refused; session ended'))).toBe(true);
  });

  it('refreshes a session due for it with a 307 to the same URL carrying the new cookie', async () => {
    const jar = await signIn(A);
    const signedIn = Date.now();
    await new Promise((r) => setTimeout(r, Math.max(0, (ACCESS_TTL - 1) * 1000 + 200 - (Date.now() - signedIn))));
    const old = sessionOf(jar);
    const bounce = await reply(await fetch(`${A}/?tab=notes`, { headers: { ...PAGE, cookie: old }, redirect: 'manual' }));
    expect(bounce).toMatchObject({ status: 307, location: '/?tab=notes' });
    const fresh = bounce.setCookie.find((c) => c.startsWith('ward_session='))?.split(';')[0] ?? '';
    expect(fresh).not.toBe(old);
    // concurrent requests with the old cookie share that one refresh (the IdP is asked once)
    const again = await reply(await fetch(`${A}/`, { headers: { ...PAGE, cookie: old }, redirect: 'manual' }));
    expect(again.status).toBe(307);
    expect((a.status() as { session: { refreshes: number } }).session.refreshes).toBeGreaterThanOrEqual(1);
    expect((await reply(await fetch(`${A}/`, { headers: { cookie: fresh }, redirect: 'manual' }))).status).toBe(200);
  });
});

describe('browser sign-in next to gRPC and with the IdP down', () => {
  it('gives gRPC and API callers on a sign-in route 401, never a redirect; a browser on the same route is redirected', async () => {
    const idp = await startWebTestIdp();
    const dir = mkdtempSync(join(tmpdir(), 'ward-grpc-signin-'));
    writeFileSync(join(dir, 'webapp.secret'), 'webapp-secret\n');
    writeFileSync(join(dir, 'session.key'), `${'k'.repeat(48)}\n`);
    const mesh = await startMesh({
      idp,
      policy: (issuer) => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - { issuer: ${issuer}, audiences: [urn:ward:orders, ${WEBAPP_AUDIENCE}] }
rules:
  - name: everything-signed-in
    action: allow
    signIn: browser
    match:
      http: [{ prefix: / }]
      grpc: [/ward.demo.v1.Orders/*]
`,
      extraYaml: `session:
  issuer: ${idp.issuer}
  clientId: webapp
  clientSecretFile: ${join(dir, 'webapp.secret')}
  secretFiles: [${join(dir, 'session.key')}]
  resource: ${WEBAPP_AUDIENCE}
`,
    });
    try {
      const client = mesh.client();
      const r = await client.unary('GetOrder', { id: 'o-1' });
      expect(r.code).toBe(16); // UNAUTHENTICATED
      expect(r.trailers['x-ward-reason']).toBe('ERR_TOKEN_MISSING');
      const api = await fetch(`http://${mesh.target}/ward.demo.v1.Orders/GetOrder`, { redirect: 'manual' });
      await api.body?.cancel();
      expect(api.status).toBe(401);
      const browser = await fetch(`http://${mesh.target}/ward.demo.v1.Orders/GetOrder`, { headers: PAGE, redirect: 'manual' });
      await browser.body?.cancel();
      expect(browser.status).toBe(302);
      expect(browser.headers.get('location')?.startsWith(`${idp.issuer}/auth?`)).toBe(true);
      // a bearer token still works there, and wins over any cookie
      const token = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
      const ok = await client.unary('GetOrder', { id: 'o-1' }, token);
      expect(ok.code).toBe(0);
      expect(mesh.app.calls.map((c) => c.method)).toEqual(['GetOrder']);
    } finally {
      await mesh.close();
      await idp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers 503 when the IdP cannot be reached for a sign-in, and keeps serving the rest', async () => {
    const idp = await startWebTestIdp();
    const app = await startWebApp();
    const dir = mkdtempSync(join(tmpdir(), 'ward-web-down-'));
    const sidecar = await startWebSidecar({ idp, dir, appPort: app.port, log: createLogger({ level: 'error', sink: { write: () => {} } }), session: { signInIssuer: 'http://127.0.0.1:1' } });
    try {
      await waitFor(() => sidecar.ready(), 10_000, 'sidecar ready');
      const url = `http://127.0.0.1:${sidecar.ports.inbound}`;
      const r = await reply(await fetch(`${url}/`, { headers: PAGE, redirect: 'manual' }));
      expect(r).toMatchObject({ status: 503, reason: 'ERR_SIGNIN_UNAVAILABLE' });
      const health = await fetch(`${url}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.text()).toBe('ok\n');
      expect(app.calls.map((c) => c.path)).toEqual(['/healthz']);
    } finally {
      await sidecar.stop();
      await app.close();
      await idp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('browser sign-in over HTTP/2 and TLS', () => {
  it('answers over h2c and h2/TLS too; over TLS the cookies are Secure and the callback is https', async () => {
    const idp = await startWebTestIdp();
    const app = await startWebApp();
    const certs = makeSelfSignedCert();
    const dir = mkdtempSync(join(tmpdir(), 'ward-web-tls-'));
    const files = webappFiles({ issuer: idp.issuer, appPort: app.port, inboundPort: 0, adminPort: 0 });
    writeFileSync(join(dir, 'webapp.policy.yaml'), files['webapp.policy.yaml']);
    writeFileSync(join(dir, 'webapp.secret'), 'webapp-secret\n');
    writeFileSync(join(dir, 'session.key'), `${'s'.repeat(40)}\n`);
    const yaml = files['webapp-sidecar.yaml'].replace(
      '  listen: { host: 127.0.0.1, port: 0 }\n',
      `  listen: { host: 127.0.0.1, port: 0 }\n  tls: { host: 127.0.0.1, port: 0, certFile: ${certs.certFile}, keyFile: ${certs.keyFile} }\n`,
    );
    const sidecar = await startSidecar(parseSidecarConfig(yaml, join(dir, 'webapp-sidecar.yaml')), { log: createLogger({ level: 'error', sink: { write: () => {} } }) });
    const ca = readFileSync(certs.certFile);
    const h2get = (authority: string, options: http2.SecureClientSessionOptions): Promise<http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader> =>
      new Promise((resolve, reject) => {
        const session = http2.connect(authority, options);
        session.on('error', reject);
        const req = session.request({ ':path': '/', accept: 'text/html' });
        req.on('response', (h) => {
          req.resume();
          req.on('end', () => session.close());
          resolve(h);
        });
        req.on('error', reject);
        req.end();
      });
    try {
      await waitFor(() => sidecar.ready(), 10_000, 'sidecar ready');
      const tlsPort = sidecar.ports.tls ?? 0;
      const h2c = await h2get(`http://127.0.0.1:${sidecar.ports.inbound}`, {});
      expect(h2c[':status']).toBe(302);
      expect(String(h2c['set-cookie'])).not.toContain('Secure');
      const h2 = await h2get(`https://127.0.0.1:${tlsPort}`, { ca, servername: 'localhost' });
      expect(h2[':status']).toBe(302);
      // the callback is on the origin the client used (:authority; node's client sends the servername)
      expect(new URL(String(h2['location'])).searchParams.get('redirect_uri')).toBe(`https://localhost:${tlsPort}/.ward/callback`);
      expect(String(h2['set-cookie'])).toMatch(/HttpOnly; SameSite=Lax; Secure$/);
      const h1 = await new Promise<{ status: number; cookie: string }>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: tlsPort, path: '/', ca, servername: 'localhost', headers: { accept: 'text/html' } }, (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, cookie: String(res.headers['set-cookie']) });
          })
          .on('error', reject);
      });
      expect(h1.status).toBe(302);
      expect(h1.cookie).toMatch(/; Secure$/);
      expect(app.calls).toHaveLength(0);
    } finally {
      await sidecar.stop();
      await app.close();
      await idp.close();
      certs.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
