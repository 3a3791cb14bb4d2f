import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningSidecar } from '../../src/cli/sidecar.ts';
import { startWebApp, startWebSidecar, WEBAPP_AUDIENCE, type WebApp } from '../../src/demo/webapp.ts';
import { createLogger } from '../../src/lib/log.ts';
import { startWebTestIdp, type TestIdp } from '../support/idp.ts';
import { waitFor } from './harness.ts';

/**
 * Browser sign-in in a real headless Chromium (Debian's `chromium`, driven by playwright-core;
 * no browser is downloaded): the demo web app behind a ward sidecar with a `session` section,
 * the dev IdP's login page, and everything a person does — sign in, be refused a page by policy,
 * post a form, keep working across an access-token expiry (refresh), be protected from a
 * cross-site form, sign out (here and at the IdP).
 *
 * The web app's access tokens live ACCESS_TTL seconds, and the sidecar refreshes one when it has
 * less than a second left, so the refresh happens within the test.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
const ACCESS_TTL = 3;

interface SessionStatus {
  readonly session: { readonly refreshes: number; readonly signInsCompleted: number; readonly logouts: number } | null;
}

describe('browser sign-in at the sidecar, in Chromium', () => {
  let idp: TestIdp;
  let app: WebApp;
  let sidecar: RunningSidecar;
  let evil: http.Server;
  let context: BrowserContext;
  let page: Page;
  let url: string;
  let evilUrl: string;
  const dirs: string[] = [];
  const logs: string[] = [];

  beforeAll(async () => {
    idp = await startWebTestIdp(ACCESS_TTL);
    app = await startWebApp();
    const dir = mkdtempSync(join(tmpdir(), 'ward-browser-'));
    dirs.push(dir);
    const log = createLogger({ level: 'debug', sink: { write: (l) => logs.push(l) } });
    sidecar = await startWebSidecar({ idp, dir, appPort: app.port, log, session: { refreshBeforeSeconds: 1, passAccessToken: true } });
    await waitFor(() => sidecar.ready(), 10_000, 'web sidecar ready');
    url = `http://127.0.0.1:${sidecar.ports.inbound}`;

    // Another site: `localhost` is not the same site as `127.0.0.1` to a browser.
    evil = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' }).end(
        `<!doctype html><form id="f" method="post" action="${url}/notes"><input name="text" value="forged by another site"></form><script>document.getElementById('f').submit()</script>`,
      );
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    evilUrl = `http://localhost:${(evil.address() as AddressInfo).port}/`;

    const profile = mkdtempSync(join(tmpdir(), 'ward-chromium-'));
    dirs.push(profile);
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    page = context.pages()[0] ?? (await context.newPage());
  });

  afterAll(async () => {
    await context?.close();
    await new Promise<void>((r) => (evil === undefined ? r() : evil.close(() => r())));
    await sidecar?.stop();
    await app?.close();
    await idp?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const status = (): SessionStatus => sidecar.status() as SessionStatus;
  const appPaths = (): string[] => app.calls.map((c) => `${c.method} ${c.path}`);

  it('signs in through the dev IdP, is refused by policy, refreshes without a trace, resists CSRF, and signs out', async () => {
    // 1. An unauthenticated page view goes to the IdP's login page (authorization code + PKCE).
    const authRequests: string[] = [];
    page.on('request', (r) => {
      if (r.url().startsWith(`${idp.issuer}/auth?`)) authRequests.push(r.url());
    });
    await page.goto(`${url}/`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    await expect(page.locator('body').textContent()).resolves.toContain('DEVELOPMENT ONLY');
    const auth = new URL(authRequests[0] ?? 'http://x');
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('redirect_uri')).toBe(`${url}/.ward/callback`);
    for (const p of ['state', 'nonce', 'code_challenge']) expect(auth.searchParams.get(p)?.length ?? 0).toBeGreaterThanOrEqual(43);
    expect(app.calls).toHaveLength(0);

    // A wrong password is refused by the login page.
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', 'not-her-password');
    await page.click('button[type=submit]');
    await expect(page.locator('#error').textContent()).resolves.toContain('wrong password');

    // 2. Signing in brings the browser back to the page it asked for, with the app's content.
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', 'alice-password');
    await Promise.all([page.waitForURL(`${url}/`), page.click('button[type=submit]')]);
    const signedInAt = Date.now();
    await expect(page.locator('#hello').textContent()).resolves.toBe('Hello, Alice Example');
    await expect(page.locator('#subject').textContent()).resolves.toBe('alice');
    const first = app.calls.at(-1);
    expect(first?.headers['x-ward-subject']).toBe('alice');
    expect(first?.headers['x-ward-issuer']).toBe(idp.issuer);
    const claims = JSON.parse(Buffer.from(first?.headers['x-ward-claims'] ?? '', 'base64url').toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ sub: 'alice', aud: WEBAPP_AUDIENCE, roles: ['viewer'] });
    const firstToken = first?.headers['authorization'] ?? '';
    expect(firstToken).toMatch(/^Bearer ey/); // passAccessToken: the session's access token, for the app
    expect(first?.headers['cookie'] ?? '').not.toContain('ward_session'); // the sidecar's cookie is its own
    const cookies = await context.cookies(url);
    const session = cookies.find((c) => c.name === 'ward_session');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'Lax', secure: false, path: '/' });
    expect(cookies.filter((c) => c.name.startsWith('ward_session.t.'))).toHaveLength(0); // the sign-in transaction is cleared
    expect(status().session?.signInsCompleted).toBe(1);

    // 3. A page the policy does not allow her: a minimal 403 page, and the app never sees it.
    const admin = await page.goto(`${url}/admin`);
    expect(admin?.status()).toBe(403);
    await expect(page.locator('h1').textContent()).resolves.toBe('Access denied');
    await expect(page.locator('#reason').textContent()).resolves.toBe('ERR_POLICY_NO_MATCH');
    expect(admin?.headers()['x-ward-reason']).toBe('ERR_POLICY_NO_MATCH');
    expect(appPaths()).not.toContain('GET /admin');

    // 4. A same-origin form post (state-changing): Origin matches, it goes through.
    await page.goto(`${url}/`);
    await page.fill('input[name=text]', 'hello from chromium');
    await Promise.all([page.waitForURL(`${url}/`), page.click('#add')]);
    await expect(page.locator('#notes').textContent()).resolves.toContain('alice: hello from chromium');
    expect(app.calls.find((c) => c.method === 'POST')?.headers['origin']).toBe(url);

    // 5. Another site posts a form to the app: SameSite=Lax keeps the session cookie off it, so
    // the sidecar sees no session and the app nothing.
    const postsBefore = app.calls.filter((c) => c.method === 'POST').length;
    await Promise.all([page.waitForURL(`${url}/notes`), page.goto(evilUrl)]);
    await expect(page.locator('h1').textContent()).resolves.toBe('Sign-in required');
    expect(app.calls.filter((c) => c.method === 'POST')).toHaveLength(postsBefore);

    // 6. The access token expires; the next page view refreshes it without the user noticing.
    await new Promise((r) => setTimeout(r, Math.max(0, ACCESS_TTL * 1000 + 300 - (Date.now() - signedInAt))));
    const refreshesBefore = status().session?.refreshes ?? 0;
    const after = await page.goto(`${url}/`);
    expect(after?.status()).toBe(200);
    expect(page.url()).toBe(`${url}/`);
    await expect(page.locator('#hello').textContent()).resolves.toBe('Hello, Alice Example');
    expect(status().session?.refreshes).toBeGreaterThan(refreshesBefore);
    const refreshedToken = app.calls.at(-1)?.headers['authorization'] ?? '';
    expect(refreshedToken).toMatch(/^Bearer ey/);
    expect(refreshedToken).not.toBe(firstToken);

    // 7. Sign out: the session ends here and at the IdP (RP-initiated logout).
    await Promise.all([page.waitForURL(`${url}/.ward/signed-out`), page.click('#sign-out')]);
    await expect(page.locator('#signed-out').textContent()).resolves.toBe('You are signed out.');
    expect((await context.cookies(url)).find((c) => c.name === 'ward_session')).toBeUndefined();
    expect(status().session?.logouts).toBe(1);
    // the IdP's session is gone too: the next page view asks for a password again
    await page.goto(`${url}/`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));

    // 8. The sidecar's own sign-out buttons work too: on its 403 page and on GET /.ward/logout
    // (regression: its pages said Referrer-Policy: no-referrer, so the browser posted them with
    // Origin: null, which the CSRF check refused).
    for (const [n, where] of [[2, `${url}/admin`], [3, `${url}/.ward/logout`]] as const) {
      await page.fill('input[name=username]', 'alice');
      await page.fill('input[name=password]', 'alice-password');
      await Promise.all([page.waitForURL(`${url}/`), page.click('button[type=submit]')]);
      await page.goto(where);
      const [resp] = await Promise.all([page.waitForResponse(`${url}/.ward/logout`), page.click('form[action="/.ward/logout"] button[type=submit]')]);
      expect({ where, reason: resp.headers()['x-ward-reason'], status: resp.status() }).toEqual({ where, reason: undefined, status: 303 });
      await page.waitForURL(`${url}/.ward/signed-out`);
      expect((await context.cookies(url)).find((c) => c.name === 'ward_session')).toBeUndefined();
      expect(status().session?.logouts).toBe(n);
      await page.goto(`${url}/`);
      expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    }

    // No access token ever reached the sidecar's log.
    for (const t of [firstToken, refreshedToken]) expect(logs.join('\n')).not.toContain(t.slice('Bearer '.length));
  });
});
