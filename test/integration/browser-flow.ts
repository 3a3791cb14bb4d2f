import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { CookieJar, WEBAPP_CLIENT, webappFiles, type WebSessionOptions } from '../../src/demo/webapp.ts';
import type { DevIdp } from '../../src/devidp/provider.ts';
import { type ClusteredWard, spawnClusteredWard, waitFor } from './harness.ts';

/** What a browser asks for when it loads a page. */
export const PAGE = { accept: 'text/html,application/xhtml+xml' } as const;

/**
 * Starts a sign-in at `sidecar` for `path` and walks the IdP (login form as `user`, then the
 * implied consent) up to the sidecar's callback, which it does not request: returns its URL.
 */
export async function toCallback(jar: CookieJar, sidecar: string, path = '/', user = 'alice'): Promise<URL> {
  let res = await jar.fetch(new URL(path, sidecar), { headers: PAGE });
  expect(res.status).toBe(302);
  let url = new URL(res.headers.get('location') ?? '');
  for (let hops = 0; hops < 12; hops++) {
    res = await jar.fetch(url, { headers: PAGE });
    if (res.status === 200 && url.pathname.startsWith('/interaction/')) {
      await res.text();
      res = await jar.fetch(url, {
        method: 'POST',
        headers: { ...PAGE, 'content-type': 'application/x-www-form-urlencoded', origin: url.origin },
        body: new URLSearchParams({ username: user, password: `${user}-password` }).toString(),
      });
    }
    await res.body?.cancel();
    const next = new URL(res.headers.get('location') ?? '', url);
    if (next.href.startsWith(`${sidecar}/.ward/callback`)) return next;
    url = next;
  }
  throw new Error('never reached the callback');
}

/** Signs in as alice at `sidecar` (the whole walk, callback included): the session cookie, as a `Cookie` field. */
export async function signedInCookie(sidecar: string): Promise<string> {
  const jar = new CookieJar();
  const cb = await toCallback(jar, sidecar);
  const done = await jar.fetch(cb, { headers: PAGE });
  await done.body?.cancel();
  expect(done.status).toBe(302);
  return `ward_session=${jar.cookies.get('ward_session') ?? ''}`;
}

/** One request on its own TCP connection (so the cluster hands it to the next worker). */
export function once(port: number, method: string, path: string, headers: Record<string, string>): Promise<{ status: number; reason: string | undefined; worker: string; setCookie: string[] }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { ...headers, connection: 'close' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          reason: res.headers['x-ward-reason'] as string | undefined,
          worker: String(res.headers['x-ward-decision-id'] ?? '').split('.')[0] ?? '',
          setCookie: (res.headers['set-cookie']) ?? [],
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The demo web app's sidecar for `appPort` with `concurrency: 2` (a primary and two workers, as a
 * process) and telemetry off, its files in a directory of its own; resolves once it serves.
 * `close` kills it and removes the directory.
 */
export async function spawnWebSidecarWorkers(idp: DevIdp, appPort: number, session?: WebSessionOptions): Promise<ClusteredWard & { close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'ward-web-workers-'));
  const files = webappFiles({ issuer: idp.issuer, appPort, inboundPort: 0, adminPort: 0, ...(session === undefined ? {} : { session }) });
  writeFileSync(join(dir, 'webapp.policy.yaml'), files['webapp.policy.yaml']);
  writeFileSync(join(dir, 'webapp-sidecar.yaml'), `${files['webapp-sidecar.yaml']}concurrency: 2\ntelemetry: { enabled: false }\n`);
  writeFileSync(join(dir, 'webapp.secret'), `${idp.config.clients.find((c) => c.clientId === WEBAPP_CLIENT)?.clientSecret ?? ''}\n`);
  writeFileSync(join(dir, 'session.key'), `${randomBytes(48).toString('base64')}\n`);
  const close = (w?: ClusteredWard): void => {
    if (w !== undefined && w.proc.exitCode === null) w.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  let ward: ClusteredWard | undefined;
  try {
    ward = await spawnClusteredWard(join(dir, 'webapp-sidecar.yaml'));
    const port = ward.inbound;
    await waitFor(async () => (await once(port, 'GET', '/healthz', {})).status === 200, 15_000, 'ready');
  } catch (err) {
    close(ward);
    throw err;
  }
  const w = ward;
  return { ...w, close: () => close(w) };
}
