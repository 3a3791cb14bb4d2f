import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSidecar, startSidecar } from '../../src/cli/sidecar.ts';
import { parseSidecarConfig } from '../../src/config/sidecar.ts';
import { WEBAPP_CLIENT, webappFiles } from '../../src/demo/webapp.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { startWebTestIdp, type TestIdp } from '../support/idp.ts';
import { startWsApp, type WsApp } from '../support/ws-app.ts';
import { waitFor } from './harness.ts';

/**
 * A WebSocket from a real browser through the sidecar (docs/websockets.md): Chromium signs in at
 * the dev IdP, then a script on the app's page opens a WebSocket to the app's origin. Its
 * handshake carries the session cookie and the page's Origin; the sidecar judges it (the
 * session's token, the policy's `/ws` rule) and tunnels it, and Chromium accepts the app's 101
 * as relayed (it checks `Sec-WebSocket-Accept`). A page of another site opening the same
 * WebSocket gets nowhere near the app.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

/** In the page: opens `url`, sends `hello`, resolves with the first message, or `closed <code>` / `error`. */
function tryWebSocket(page: Page, url: string): Promise<string> {
  return page.evaluate(
    (u) =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(u);
        ws.onopen = () => ws.send('hello');
        ws.onmessage = (m) => {
          resolve(String(m.data));
          ws.close();
        };
        ws.onerror = () => resolve('error');
        ws.onclose = (e) => resolve(`closed ${e.code}`);
      }),
    url,
  );
}

describe('a WebSocket from Chromium, through the sidecar, with the browser session', () => {
  let idp: TestIdp;
  let app: WsApp;
  let sidecar: RunningSidecar;
  let other: http.Server;
  let context: BrowserContext;
  let page: Page;
  let url: string;
  const dirs: string[] = [];

  beforeAll(async () => {
    idp = await startWebTestIdp();
    app = await startWsApp();
    const dir = mkdtempSync(join(tmpdir(), 'ward-browser-ws-'));
    dirs.push(dir);
    const files = webappFiles({ issuer: idp.issuer, appPort: app.port, inboundPort: 0, adminPort: 0 });
    // the demo web app's policy, plus its WebSocket endpoint for viewers
    const policy = `${files['webapp.policy.yaml']}  - name: live
    action: allow
    signIn: browser
    match:
      http: [{ methods: [GET], exact: /ws }]
    when:
      - claim: roles
        anyOf: [viewer]
`;
    writeFileSync(join(dir, 'webapp.policy.yaml'), policy);
    writeFileSync(join(dir, 'webapp.secret'), `${idp.config.clients.find((c) => c.clientId === WEBAPP_CLIENT)?.clientSecret ?? ''}\n`);
    writeFileSync(join(dir, 'session.key'), `${randomBytes(48).toString('base64')}\n`);
    const file = join(dir, 'webapp-sidecar.yaml');
    writeFileSync(file, files['webapp-sidecar.yaml']);
    sidecar = await startSidecar(parseSidecarConfig(files['webapp-sidecar.yaml'], file), { log: silentLogger, configFile: file });
    await waitFor(() => sidecar.ready(), 10_000, 'web sidecar ready');
    url = `http://127.0.0.1:${sidecar.ports.inbound}`;

    // another site: `localhost` is not the same site as `127.0.0.1` to a browser
    other = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>other</title>'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));

    const profile = mkdtempSync(join(tmpdir(), 'ward-chromium-ws-'));
    dirs.push(profile);
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    page = context.pages()[0] ?? (await context.newPage());
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await new Promise<void>((r) => (other === undefined ? r() : other.close(() => r())));
    await sidecar?.stop();
    await app?.close();
    await idp?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('signs in, then the page\'s WebSocket is judged and tunnelled; another site\'s page cannot open it', async () => {
    const ws = `ws://127.0.0.1:${sidecar.ports.inbound}/ws`;
    // before signing in: the handshake has no session, and is refused (the app sees nothing)
    await page.goto(`http://localhost:${(other.address() as AddressInfo).port}/`);
    expect(await tryWebSocket(page, ws)).toMatch(/^(error|closed 1006)$/);
    expect(app.handshakes).toEqual([]);

    await page.goto(`${url}/`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', 'alice-password');
    await Promise.all([page.waitForURL(`${url}/`), page.click('button[type=submit]')]);
    await expect(page.locator('body').textContent()).resolves.toBe('plain');

    expect(await tryWebSocket(page, ws)).toBe('echo:hello');
    expect(app.handshakes).toHaveLength(1);
    const h = app.handshakes[0]?.headers ?? {};
    expect(h['x-ward-subject']).toBe('alice');
    expect(h.origin).toBe(url);
    expect(h.cookie ?? '').not.toContain('ward_session'); // the sidecar's cookie is its own

    // a page of another site: SameSite=Lax keeps the session off its handshake; refused
    await page.goto(`http://localhost:${(other.address() as AddressInfo).port}/`);
    expect(await tryWebSocket(page, ws)).toMatch(/^(error|closed 1006)$/);
    expect(app.handshakes).toHaveLength(1);
  });
});
