import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { RunningSidecar } from '../cli/sidecar.ts';
import { parseSidecarConfig } from '../config/sidecar.ts';
import type { DevIdp } from '../devidp/provider.ts';
import type { Logger } from '../lib/log.ts';

/**
 * The demo's web app: a few HTML pages behind a ward sidecar with browser sign-in. The app does
 * no authentication of its own: it reads who the caller is from the identity headers the
 * sidecar sets (`x-ward-subject`, `x-ward-claims`) and never sees a credential or a cookie of
 * the sidecar's. It records every request it receives, so tests can check that a refused one
 * never reached it.
 *
 *   GET  /         "Hello, <name>", the caller's claims, the notes, a form to add one
 *   POST /notes    adds a note (a state-changing request: the sidecar checks its origin)
 *   GET  /admin    only for the `admin` role (the policy says so; the app does not check)
 *   GET  /healthz  no sign-in
 */

export const WEBAPP_SERVICE = 'webapp';
export const WEBAPP_AUDIENCE = 'urn:ward:webapp';
export const WEBAPP_CLIENT = 'webapp';
const MAX_BODY = 16 * 1024;

export interface WebAppCall {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
}

export interface WebApp {
  readonly port: number;
  readonly calls: WebAppCall[];
  close(): Promise<void>;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function claimsOf(h: string | undefined): Record<string, unknown> {
  if (h === undefined) return {};
  try {
    const v: unknown = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function flat(h: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

function html(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}code{background:#eee;padding:0 .2em}</style></head>
<body>${body}</body></html>
`;
}

export async function startWebApp(opts: { host?: string; port?: number } = {}): Promise<WebApp> {
  const calls: WebAppCall[] = [];
  const notes: { who: string; text: string }[] = [];
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    calls.push({ method: req.method ?? '', path, headers: flat(req.headers) });
    const subject = req.headers['x-ward-subject'];
    const who = typeof subject === 'string' ? subject : '(nobody)';
    const claims = claimsOf(typeof req.headers['x-ward-claims'] === 'string' ? req.headers['x-ward-claims'] : undefined);
    const name = typeof claims['name'] === 'string' ? claims['name'] : who;
    const send = (status: number, body: string, type = 'text/html; charset=utf-8'): void => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    };
    if (req.method === 'GET' && path === '/healthz') return send(200, 'ok\n', 'text/plain');
    if ((req.method === 'GET' || req.method === 'HEAD') && path === '/') {
      const roles = Array.isArray(claims['roles']) ? (claims['roles'] as unknown[]).map(String) : [];
      return send(
        200,
        html(
          'ward demo web app',
          `<h1 id="hello">Hello, ${escapeHtml(name)}</h1>
<p>Signed in as <code id="subject">${escapeHtml(who)}</code> (roles: <span id="roles">${escapeHtml(roles.join(', ') || 'none')}</span>), decision <code id="decision">${escapeHtml(String(req.headers['x-ward-decision-id'] ?? ''))}</code>.</p>
<p>The app received no credential: the ward sidecar signed you in and sends your identity in <code>x-ward-*</code> headers.</p>
<h2>Notes</h2><ul id="notes">${notes.map((n) => `<li>${escapeHtml(n.who)}: ${escapeHtml(n.text)}</li>`).join('')}</ul>
<form method="post" action="/notes"><input name="text" aria-label="note"> <button type="submit" id="add">Add note</button></form>
<p><a href="/admin" id="admin-link">Admin page</a> (needs the admin role)</p>
<form method="post" action="/.ward/logout"><button type="submit" id="sign-out">Sign out</button></form>`,
        ),
      );
    }
    if (req.method === 'POST' && path === '/notes') {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_BODY) chunks.push(c);
      });
      req.on('end', () => {
        const text = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('text') ?? '';
        if (text !== '' && size <= MAX_BODY) notes.push({ who, text: text.slice(0, 200) });
        res.writeHead(303, { location: '/', 'cache-control': 'no-store' }).end();
      });
      return;
    }
    if (req.method === 'GET' && path === '/admin') {
      return send(200, html('Admin', `<h1 id="admin">Admin page</h1><p>Hello, ${escapeHtml(name)}: only admins get here.</p><p><a href="/">Back</a></p>`));
    }
    req.resume();
    send(404, 'not found\n', 'text/plain');
  });
  await new Promise<void>((r) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    calls,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface WebAppFiles {
  readonly 'webapp.policy.yaml': string;
  readonly 'webapp-sidecar.yaml': string;
}

export interface WebSessionOptions {
  /** Where browsers sign in (default: the policy's issuer). */
  readonly signInIssuer?: string;
  readonly refreshBeforeSeconds?: number;
  readonly passAccessToken?: boolean;
  readonly cookieName?: string;
}

/** The web app's policy and sidecar config for an IdP at `issuer` and the app at `appPort`. */
export function webappFiles(p: { issuer: string; appPort: number; inboundPort: number; adminPort: number; session?: WebSessionOptions }): WebAppFiles {
  const o = p.session ?? {};
  const extra = [
    o.refreshBeforeSeconds === undefined ? '' : `\n  refreshBeforeSeconds: ${o.refreshBeforeSeconds}`,
    o.passAccessToken === undefined ? '' : `\n  passAccessToken: ${o.passAccessToken}`,
    o.cookieName === undefined ? '' : `\n  cookieName: ${o.cookieName}`,
  ].join('');
  const policy = `# The demo web app's policy (ward demo). Reference: docs/policy.md, docs/browser-sign-in.md
apiVersion: ward.dev/v1
kind: Policy
service: ${WEBAPP_SERVICE}
issuers:
  - issuer: ${p.issuer}
    audiences: [${WEBAPP_AUDIENCE}]
rules:
  - name: health
    action: allow
    token: optional
    match:
      http: [{ methods: [GET], exact: /healthz }]
  # signIn: browser -- a browser without a token is sent to sign in; its session's access token
  # is then judged by these same rules
  - name: admin
    description: The admin page needs the admin role.
    action: allow
    signIn: browser
    match:
      http: [{ methods: [GET, HEAD], prefix: /admin }]
    when:
      - claim: roles
        anyOf: [admin]
  - name: pages
    description: Viewers may read the start page and add notes.
    action: allow
    signIn: browser
    match:
      http: [{ methods: [GET, HEAD], exact: / }, { methods: [POST], exact: /notes }]
    when:
      - claim: roles
        anyOf: [viewer]
`;
  const sidecar = `# The web app's sidecar (ward demo): browser sign-in at the dev IdP. Reference: docs/sidecar-config.md
service: ${WEBAPP_SERVICE}
inbound:
  listen: { host: 127.0.0.1, port: ${p.inboundPort} }
upstream:
  url: http://127.0.0.1:${p.appPort}
  protocol: http1
policy:
  file: webapp.policy.yaml
admin: { host: 127.0.0.1, port: ${p.adminPort} }
session:
  issuer: ${o.signInIssuer ?? p.issuer}
  clientId: ${WEBAPP_CLIENT}
  clientSecretFile: webapp.secret
  secretFiles: [session.key]
  resource: ${WEBAPP_AUDIENCE}${extra}
drainTimeoutMs: 2000   # a demo: stop quickly
`;
  return { 'webapp.policy.yaml': policy, 'webapp-sidecar.yaml': sidecar };
}

/** Writes the web sidecar's files (config, policy, secrets) into `dir` and starts it. */
export async function startWebSidecar(p: { idp: DevIdp; dir: string; appPort: number; log: Logger; inboundPort?: number; session?: WebSessionOptions }): Promise<RunningSidecar> {
  const files = webappFiles({ issuer: p.idp.issuer, appPort: p.appPort, inboundPort: p.inboundPort ?? 0, adminPort: 0, ...(p.session === undefined ? {} : { session: p.session }) });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(p.dir, name), text);
  const secret = p.idp.config.clients.find((c) => c.clientId === WEBAPP_CLIENT)?.clientSecret ?? '';
  writeFileSync(join(p.dir, 'webapp.secret'), `${secret}\n`, { mode: 0o600 });
  writeFileSync(join(p.dir, 'session.key'), `${randomBytes(48).toString('base64')}\n`, { mode: 0o600 });
  const file = join(p.dir, 'webapp-sidecar.yaml');
  const { startSidecar } = await import('../cli/sidecar.ts');
  return startSidecar(parseSidecarConfig(files['webapp-sidecar.yaml'], file), { log: p.log, configFile: file });
}

// ---- a scripted browser, for `ward demo --once` (the tests drive a real Chromium)

/** Cookies by name, as a browser on one host keeps them (enough for loopback and one path). */
export class CookieJar {
  readonly cookies = new Map<string, string>();

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  store(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(';')[0] ?? '';
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      if (/;\s*max-age=0/i.test(c) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  async fetch(url: string | URL, init: Omit<RequestInit, 'headers'> & { headers?: Record<string, string> } = {}): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.cookies.size > 0) headers['cookie'] = this.header();
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    this.store(res);
    return res;
  }
}

export interface WebRow {
  readonly who: string;
  readonly request: string;
  readonly expected: string;
  readonly got: string;
  readonly ok: boolean;
}

const PAGE = { accept: 'text/html,application/xhtml+xml' };

/**
 * Signs in as `user` the way a browser does, following each redirect: the app's page -> the
 * sidecar's redirect to the IdP -> the login form -> back through `/.ward/callback`. Returns the
 * callback response's status and where it sent the browser.
 */
export async function scriptedSignIn(jar: CookieJar, appUrl: string, user: string, password: string, path = '/'): Promise<{ status: number; location: string | null }> {
  let res = await jar.fetch(new URL(path, appUrl), { headers: PAGE });
  let url = new URL(res.headers.get('location') ?? '', appUrl);
  // the IdP: authorization endpoint -> login page
  for (let hops = 0; hops < 10 && res.status >= 300 && res.status < 400; hops++) {
    res = await jar.fetch(url, { headers: PAGE });
    if (res.status >= 300 && res.status < 400) url = new URL(res.headers.get('location') ?? '', url);
  }
  await res.body?.cancel();
  res = await jar.fetch(url, {
    method: 'POST',
    headers: { ...PAGE, 'content-type': 'application/x-www-form-urlencoded', origin: url.origin },
    body: new URLSearchParams({ username: user, password }).toString(),
  });
  // login accepted -> /auth/<uid> -> consent (implied) -> ... -> the sidecar's callback
  for (let hops = 0; hops < 10 && res.status >= 300 && res.status < 400; hops++) {
    url = new URL(res.headers.get('location') ?? '', url);
    res = await jar.fetch(url, { headers: PAGE });
    if (url.pathname === '/.ward/callback') break;
  }
  await res.body?.cancel();
  return { status: res.status, location: res.headers.get('location') };
}

/** The browser sign-in part of `ward demo --once`: a few requests, each with what should happen. */
export async function runWebChecks(appUrl: string, app: WebApp): Promise<WebRow[]> {
  const rows: WebRow[] = [];
  const row = (who: string, request: string, expected: string, got: string): void => void rows.push({ who, request, expected, got, ok: got === expected });
  const describe = (res: Response): string => `${res.status}${res.headers.get('x-ward-reason') === null ? '' : ` ${res.headers.get('x-ward-reason')}`}`;

  const anon = new CookieJar();
  let res = await anon.fetch(appUrl, { headers: PAGE });
  await res.body?.cancel();
  const toIdp = res.status === 302 && (res.headers.get('location') ?? '').includes('code_challenge_method=S256');
  row('browser, no session', 'GET /', '302 to the IdP (PKCE)', toIdp ? '302 to the IdP (PKCE)' : describe(res));
  res = await fetch(appUrl);
  await res.body?.cancel();
  row('API caller, no token', 'GET /', '401 ERR_TOKEN_MISSING', describe(res));

  const alice = new CookieJar();
  const signIn = await scriptedSignIn(alice, appUrl, 'alice', 'alice-password');
  row('alice', 'sign in at the dev IdP login page', '302 back to /', `${signIn.status} back to ${signIn.location ?? '-'}`);
  const before = app.calls.length;
  res = await alice.fetch(appUrl, { headers: PAGE });
  const page = await res.text();
  row('alice', 'GET /', '200 Hello, Alice Example', `${res.status} ${/Hello, [^<]+/.exec(page)?.[0] ?? '-'}`);
  res = await alice.fetch(new URL('/admin', appUrl), { headers: PAGE });
  await res.body?.cancel();
  row('alice (viewer)', 'GET /admin', '403 ERR_POLICY_NO_MATCH', describe(res));
  res = await alice.fetch(new URL('/notes', appUrl), { method: 'POST', headers: { ...PAGE, origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' }, body: 'text=pwned' });
  await res.body?.cancel();
  row('alice, from another site', 'POST /notes', '403 ERR_SESSION_CSRF', describe(res));
  res = await alice.fetch(new URL('/notes', appUrl), { method: 'POST', headers: { ...PAGE, origin: new URL(appUrl).origin, 'content-type': 'application/x-www-form-urlencoded' }, body: 'text=hello' });
  await res.body?.cancel();
  row('alice', 'POST /notes', '303', describe(res));
  const old = new CookieJar();
  for (const [k, v] of alice.cookies) old.cookies.set(k, v);
  res = await alice.fetch(new URL('/.ward/logout', appUrl), { method: 'POST', headers: { ...PAGE, origin: new URL(appUrl).origin } });
  await res.body?.cancel();
  const endSession = res.status === 303 && (res.headers.get('location') ?? '').includes('/session/end');
  row('alice', 'POST /.ward/logout', '303 to the IdP end_session', endSession ? '303 to the IdP end_session' : describe(res));
  res = await old.fetch(appUrl);
  await res.body?.cancel();
  row('alice\'s cookie, replayed', 'GET /', '401 ERR_SESSION_INVALID', describe(res));
  const reached = app.calls.length - before;
  row('the app', 'requests that reached it', '2 (GET /, POST /notes)', `${reached} (${app.calls.slice(before).map((c) => `${c.method} ${c.path}`).join(', ')})`);
  return rows;
}

export function formatWebRows(rows: readonly WebRow[]): string {
  const head = ['result', 'who', 'request', 'expected', 'got'];
  const cells = rows.map((r) => [r.ok ? 'ok' : 'FAILED', r.who, r.request, r.expected, r.got]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: readonly string[]): string => c.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
}
