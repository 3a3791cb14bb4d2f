import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { sessionConfigSchema, type SessionConfig } from '../../../src/config/session.ts';
import { createLogger, type Logger, silentLogger } from '../../../src/lib/log.ts';
import { isSignInRoute } from '../../../src/policy/evaluate.ts';
import { identityFromClaims } from '../../../src/policy/identity.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import type { ProviderResult, SignInClient, TokenSet } from '../../../src/session/oidc.ts';
import type { SessionCall } from '../../../src/session/respond.ts';
import { acceptsHtml, asRefreshOutcome, createSessionStage, type SessionAuthResult, type SessionResume, type SessionStage, type SessionStageOptions } from '../../../src/session/stage.ts';

/**
 * The session stage with a fake provider client and a fake clock: what it answers, when it
 * refreshes, and how it fails. (test/integration/browser-*.test.ts run it against the real dev
 * IdP and a real Chromium.)
 */

const ISSUER = 'https://idp.example.com';
const ORIGIN = 'http://app.test:8080';
const T0 = 1_900_000_000_000;

const policy = parsePolicyText(
  `apiVersion: ward.dev/v1
kind: Policy
service: web
issuers: [{ issuer: ${ISSUER}, audiences: [urn:web] }]
rules:
  - name: pages
    action: allow
    signIn: browser
    match: { http: [{ prefix: /app }] }
  - name: api
    action: allow
    match: { http: [{ prefix: /api }] }
`,
  'p.yaml',
);

interface Written {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

type FakeCall = SessionCall & { written: () => Written | null };

function call(p: { method?: string; path: string; query?: string; headers?: Record<string, string>; grpc?: boolean; upgrade?: boolean }): FakeCall {
  let out: Written | null = null;
  const res = {
    headersSent: false,
    writeHead(status: number, headers: Record<string, unknown>) {
      out = { status, headers, body: '' };
      this.headersSent = true;
      return this;
    },
    end(body?: Buffer) {
      if (out !== null && body !== undefined) out.body = body.toString();
    },
    destroy() {},
  };
  return {
    h2: null,
    req: null,
    res: res as unknown as ServerResponse,
    grpc: p.grpc ?? false,
    decisionId: 'd-1',
    method: p.method ?? 'GET',
    path: p.path,
    query: p.query ?? '',
    authority: 'app.test:8080',
    upgrade: p.upgrade === true ? {} : null,
    fwdHeaders: { ...p.headers },
    closed: false,
    finished: false,
    responseStarted: false,
    written: () => out,
  };
}

const PAGE = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };

/** An access token of this fake world: `at:<sub>:<exp>`. */
function token(sub: string, exp: number): string {
  return `at:${sub}:${exp}`;
}

function authenticate(t: string): SessionAuthResult {
  const [kind, sub, exp] = t.split(':');
  if (kind !== 'at' || sub === undefined) return { ok: false, error: { code: 'ERR_TOKEN_MALFORMED' } };
  return { ok: true, identity: identityFromClaims({ iss: ISSUER, sub, exp: Number(exp) }) };
}

interface World {
  stage: SessionStage;
  now: { t: number };
  client: FakeClient;
  /** Replaces the authenticator's answer while set. */
  auth: { override: ((t: string) => SessionAuthResult) | null };
}

interface FakeClient extends SignInClient {
  refreshCalls: number;
  refreshWith: () => Promise<ProviderResult<TokenSet>>;
  tokens: () => TokenSet;
  codes: string[];
}

function world(over: Partial<SessionConfig> = {}, ttl = 300, shareRefresh?: SessionStageOptions['shareRefresh'], log: Logger = silentLogger): World {
  const now = { t: T0 };
  const auth: World['auth'] = { override: null };
  const s = () => Math.floor(now.t / 1000);
  const client: FakeClient = {
    counters: { discoveryOk: 0, discoveryFailed: 0, codeExchanges: 0, codeExchangeFailures: 0, refreshes: 0, refreshFailures: 0 },
    refreshCalls: 0,
    codes: [],
    tokens: () => ({ accessToken: token('alice', s() + ttl), expiresAt: s() + ttl, refreshToken: 'rt-1', idClaims: { sub: 'alice' } }),
    refreshWith: async () => ({ ok: true, value: { accessToken: token('alice', s() + ttl), expiresAt: s() + ttl, refreshToken: 'rt-1', idClaims: undefined } }),
    async authorizationUrl(r) {
      const u = new URL(`${ISSUER}/auth`);
      for (const [k, v] of Object.entries({ state: r.state, nonce: r.nonce, redirect_uri: r.redirectUri, code_challenge_method: 'S256' })) u.searchParams.set(k, v);
      return { ok: true, value: u };
    },
    async exchangeCode(cb, checks) {
      client.codes.push(cb.searchParams.get('code') ?? '');
      if (cb.searchParams.get('state') !== checks.state) return { ok: false, failure: { kind: 'invalid', detail: 'state' } };
      return { ok: true, value: client.tokens() };
    },
    async refresh() {
      client.refreshCalls++;
      return client.refreshWith();
    },
    async revoke() {
      return true;
    },
    async endSessionUrl(post) {
      return new URL(`${ISSUER}/session/end?post_logout_redirect_uri=${encodeURIComponent(post)}`);
    },
  };
  const config = sessionConfigSchema.parse({ issuer: ISSUER, clientId: 'web', clientSecretEnv: 'X', secretFiles: ['k'], ...over });
  const stage = createSessionStage({
    service: 'web',
    config,
    secrets: { clientSecret: 's', sealing: [randomBytes(32)] },
    authenticate: (t) => (auth.override === null ? authenticate(t) : auth.override(t)),
    signInRoute: isSignInRoute,
    log,
    clock: () => now.t,
    client,
    shareRefresh,
  });
  return { stage, now, client, auth };
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

function cookiesOf(w: Written | null): Map<string, string> {
  const list = (w?.headers['set-cookie'] as string[] | undefined) ?? [];
  return new Map(list.map((c) => (c.split(';')[0] ?? '').split('=') as [string, string]));
}

async function resume(w: World, c: FakeCall): Promise<SessionResume> {
  w.stage.handle(c);
  return w.stage.resume(c, policy);
}

/**
 * A browser call that is sent to sign in, then the provider's redirect back to the callback with
 * the transaction cookie: the redirect written by the start, and the callback call, handled.
 */
async function startAndCallback(w: World, path: string, code: string, cbHeaders: Record<string, string> = {}): Promise<{ redirect: Written | null; cb: FakeCall }> {
  const c = call({ path, headers: PAGE });
  expect(await resume(w, c)).toEqual({ kind: 'none' });
  expect(w.stage.writeDenial(c, 'ERR_TOKEN_MISSING')).toBe(true);
  await settle();
  const redirect = c.written();
  const state = new URL(String(redirect?.headers['location'])).searchParams.get('state') ?? '';
  const txn = [...cookiesOf(redirect)].map(([k, v]) => `${k}=${v}`).join('; ');
  const cb = call({ path: '/.ward/callback', query: `?code=${code}&state=${state}`, headers: { ...cbHeaders, cookie: txn } });
  expect(w.stage.handle(cb)).toBe(true);
  await settle();
  return { redirect, cb };
}

/** Sign-in start + callback: the session cookie header value. */
async function signIn(w: World, path = '/app/x'): Promise<string> {
  const { redirect, cb } = await startAndCallback(w, path, 'c1', PAGE);
  expect(redirect?.status).toBe(302);
  const done = cb.written();
  expect(done?.status).toBe(302);
  expect(done?.headers['location']).toBe(path);
  return `ward_session=${cookiesOf(done).get('ward_session') ?? ''}`;
}

describe('session stage', () => {
  it('recognizes a browser by Accept: text/html (not */*, not q=0)', () => {
    expect(acceptsHtml('text/html,application/xhtml+xml,*/*;q=0.8')).toBe(true);
    expect(acceptsHtml('application/xhtml+xml')).toBe(true);
    expect(acceptsHtml('*/*')).toBe(false);
    expect(acceptsHtml('application/json')).toBe(false);
    expect(acceptsHtml('text/html;q=0, */*')).toBe(false);
    expect(acceptsHtml(undefined)).toBe(false);
  });

  it('looks at no cookie off sign-in routes and on gRPC calls, but always hides its cookies from the app', async () => {
    const w = world();
    const c = call({ path: '/api/x', headers: { cookie: 'a=1; ward_session=zzz; ward_session.t.abc=t' } });
    expect(w.stage.handle(c)).toBe(false);
    expect(c.fwdHeaders['cookie']).toBe('a=1');
    expect(await w.stage.resume(c, policy)).toEqual({ kind: 'none' });
    expect(w.stage.writeDenial(c, 'ERR_TOKEN_MISSING')).toBe(false); // the plain 401
    const g = call({ path: '/app/x', grpc: true, headers: { cookie: 'ward_session=zzz' } });
    w.stage.handle(g);
    expect(g.fwdHeaders['cookie']).toBeUndefined();
    expect(await w.stage.resume(g, policy)).toEqual({ kind: 'none' });
  });

  it('redirects a browser page view without a session to sign in, and gives API calls the plain 401', async () => {
    const w = world();
    const api = call({ path: '/app/x', headers: { accept: '*/*' } });
    await resume(w, api);
    expect(w.stage.writeDenial(api, 'ERR_TOKEN_MISSING')).toBe(false);
    const post = call({ method: 'POST', path: '/app/x', headers: PAGE });
    await resume(w, post);
    expect(w.stage.writeDenial(post, 'ERR_TOKEN_MISSING')).toBe(true); // a page, not a redirect that would lose the form
    expect(post.written()?.status).toBe(401);
    const page = call({ path: '/app/x', query: '?q=1', headers: PAGE });
    await resume(w, page);
    expect(w.stage.writeDenial(page, 'ERR_TOKEN_MISSING')).toBe(true);
    await settle();
    const out = page.written();
    expect(out?.status).toBe(302);
    expect(out?.headers['x-ward-reason']).toBe('ERR_TOKEN_MISSING');
    const to = new URL(String(out?.headers['location']));
    expect(to.searchParams.get('redirect_uri')).toBe(`${ORIGIN}/.ward/callback`);
    expect((out?.headers['set-cookie'] as string[])[0]).toMatch(/^ward_session\.t\.\S+; Path=\/\.ward\/; Max-Age=600; HttpOnly; SameSite=Lax$/);
  });

  it('completes a sign-in and lets the session\'s access token stand in for a bearer token', async () => {
    const w = world({ passAccessToken: true });
    const cookie = await signIn(w);
    const c = call({ path: '/app/x', headers: { cookie, accept: '*/*' } });
    const r = await resume(w, c);
    expect(r).toEqual({ kind: 'token', token: token('alice', Math.floor(T0 / 1000) + 300) });
    expect(c.fwdHeaders['authorization']).toBe(`Bearer ${token('alice', Math.floor(T0 / 1000) + 300)}`);
    expect(c.fwdHeaders['cookie']).toBeUndefined();
    expect(w.stage.counters.signInsCompleted).toBe(1);
  });

  it('turns a policy denial into a 403 page for a signed-in browser, with a sign-out button', async () => {
    const w = world();
    const cookie = await signIn(w);
    const c = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    await resume(w, c);
    expect(w.stage.writeDenial(c, 'ERR_POLICY_NO_MATCH')).toBe(true);
    const out = c.written();
    expect(out?.status).toBe(403);
    expect(out?.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(out?.body).toContain('ERR_POLICY_NO_MATCH');
    expect(out?.body).toContain('action="/.ward/logout"');
  });

  it('clears a session whose access token the authenticator refuses, and sends the browser to sign in', async () => {
    const w = world();
    const cookie = await signIn(w);
    const c = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    expect(await resume(w, c)).toMatchObject({ kind: 'token' });
    expect(w.stage.writeDenial(c, 'ERR_TOKEN_AUDIENCE')).toBe(true); // e.g. the policy no longer accepts its audience
    await settle();
    expect(c.written()?.status).toBe(302);
    expect((c.written()?.headers['set-cookie'] as string[])[0]).toMatch(/^ward_session=; .*Max-Age=0/);
  });

  it('refuses a state-changing request on a session without a same-origin Origin or Referer', async () => {
    const w = world();
    const cookie = await signIn(w);
    expect(await resume(w, call({ method: 'POST', path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_CSRF' });
    expect(await resume(w, call({ method: 'DELETE', path: '/app/x', headers: { cookie, origin: 'http://evil.test' } }))).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_CSRF' });
    expect(await resume(w, call({ method: 'POST', path: '/app/x', headers: { cookie, origin: ORIGIN } }))).toMatchObject({ kind: 'token' });
    expect(w.stage.counters.csrfRefused).toBe(2);
  });

  it('uses baseUrl for the redirect URI, the origin check and Secure cookies', async () => {
    const w = world({ baseUrl: 'https://app.example.com' });
    const c = call({ path: '/app/x', headers: PAGE });
    await resume(w, c);
    w.stage.writeDenial(c, 'ERR_TOKEN_MISSING');
    await settle();
    const out = c.written();
    expect(new URL(String(out?.headers['location'])).searchParams.get('redirect_uri')).toBe('https://app.example.com/.ward/callback');
    expect((out?.headers['set-cookie'] as string[])[0]).toMatch(/; Secure$/);
  });

  it('with shareRefresh (concurrency above 1) a refresh runs through it: kept 30 s when it gave a session, not kept when the provider was down', async () => {
    const kept: number[] = [];
    const share: SessionStageOptions['shareRefresh'] = async (_key, run) => {
      const r = await run();
      kept.push(r.keepMs);
      return r.value;
    };
    const w = world({ refreshBeforeSeconds: 60 }, 300, share);
    const cookie = await signIn(w);
    w.now.t += 250_000;
    const c = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    expect(await resume(w, c)).toEqual({ kind: 'answered' });
    expect(c.written()?.status).toBe(307);
    w.client.refreshWith = async () => ({ ok: false, failure: { kind: 'unavailable', detail: 'down' } });
    w.now.t += 31_000; // past the reuse window, still due, still valid: carries on with its token
    expect((await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }))).kind).toBe('token');
    expect(kept).toEqual([30_000, 0]);
    expect(w.client.refreshCalls).toBe(2);
  });

  it('with shareRefresh, the session another worker refreshed is used as is (no refresh here); a malformed or missing outcome counts as the provider down', async () => {
    // what another worker's refresh gave: a session for the same subject with a new token
    let given: unknown = null;
    const w = world({ refreshBeforeSeconds: 60 }, 300, async (key) => {
      const sid = key.slice(0, key.indexOf(':')); // the key is the session id and a hash of its token
      return typeof given === 'function' ? (given as (id: string) => unknown)(sid) : given;
    });
    const cookie = await signIn(w);
    w.now.t += 250_000;
    const s = Math.floor(w.now.t / 1000);
    given = (id: string) => ({ ok: true, session: { i: id, s: 'alice', a: token('alice', s + 300), x: s + 300, f: s + 240, e: s + 3600 } });
    const c = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    expect(await resume(w, c)).toEqual({ kind: 'answered' });
    expect(c.written()).toMatchObject({ status: 307, headers: { location: '/app/x' } });
    const fresh = `ward_session=${cookiesOf(c.written()).get('ward_session') ?? ''}`;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie: fresh } }))).toEqual({ kind: 'token', token: token('alice', s + 300) });
    expect(w.client.refreshCalls).toBe(0);

    // malformed outcomes: the token still valid, the call goes on with it; expired, refused (503)
    w.now.t += 31_000; // past the reuse window of the outcome above
    const otherSession = (id: string): unknown => ({ ok: true, session: { i: `${id}x`, s: 'alice', a: token('alice', s + 300), x: s + 300, f: s + 240, e: s + 3600 } });
    const otherSubject = (id: string): unknown => ({ ok: true, session: { i: id, s: 'mallory', a: token('mallory', s + 300), x: s + 300, f: s + 240, e: s + 3600 } });
    for (const bad of [null, { ok: true, session: { i: 'sid' } }, { ok: false, code: 'ERR_NOPE', detail: 'x', ended: true }, { ok: 'yes' }, otherSession, otherSubject]) {
      given = bad;
      w.now.t += 1_000;
      expect((await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }))).kind).toBe('token');
    }
    w.now.t += 20_000; // expired now
    const late = await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }));
    expect(late).toMatchObject({ kind: 'deny', code: 'ERR_SIGNIN_UNAVAILABLE' });
    expect(w.client.refreshCalls).toBe(0);
  });

  it('asRefreshOutcome takes only the two shapes a refresh ends in', () => {
    const session = { i: 'i', s: 's', a: 'a', x: 1, f: 1, e: 2 };
    expect(asRefreshOutcome({ ok: true, session })).toEqual({ ok: true, session });
    expect(asRefreshOutcome({ ok: false, code: 'ERR_SESSION_INVALID', detail: 'd', ended: true })).toEqual({ ok: false, code: 'ERR_SESSION_INVALID', detail: 'd', ended: true });
    for (const bad of [undefined, 'x', { ok: true }, { ok: true, session: { ...session, x: '1' } }, { ok: false, code: 'toString', detail: 'd', ended: true }, { ok: false, code: 'ERR_SESSION_INVALID', detail: 'd' }]) {
      expect(asRefreshOutcome(bad)).toBeNull();
    }
  });

  it('a WebSocket handshake with the session cookie: refused from another origin (cross-site WebSocket hijacking), never bounced for a refresh, refused once expired without ending the session', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    const ws = (origin?: string): FakeCall => call({ path: '/app/socket', upgrade: true, headers: { cookie, ...(origin === undefined ? {} : { origin }) } });
    // a sibling subdomain is same-site (SameSite=Lax sends the cookie), not same-origin
    for (const origin of ['http://evil.app.test:8080', 'null', undefined]) {
      expect(await resume(w, ws(origin)), String(origin)).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_CSRF' });
    }
    const good = 'http://app.test:8080';
    expect(await resume(w, ws(good))).toEqual({ kind: 'token', token: token('alice', Math.floor(w.now.t / 1000) + 300) });
    w.now.t += 250_000; // due: a page view would be bounced (307); a handshake goes on with its token
    const due = ws(good);
    expect((await resume(w, due)).kind).toBe('token');
    expect(due.written()).toBeNull();
    expect(w.client.refreshCalls).toBe(0);
    w.now.t += 60_000; // expired: refused, the cookie kept (the next page view refreshes it)
    const late = ws(good);
    expect(await resume(w, late)).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_INVALID' });
    expect(w.stage.writeDenial(late, 'ERR_SESSION_INVALID')).toBe(false);
    const page = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    expect(await resume(w, page)).toEqual({ kind: 'answered' });
    expect(page.written()?.status).toBe(307);
    expect(w.client.refreshCalls).toBe(1);
  });

  it('refreshes a token due for it once for concurrent requests, with a 307 to the same URL', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    w.now.t += 250_000; // 50 s left of 300: due
    const c1 = call({ path: '/app/x', query: '?a=1', headers: { cookie, ...PAGE } });
    const c2 = call({ path: '/app/y', headers: { cookie, ...PAGE } });
    const [r1, r2] = await Promise.all([resume(w, c1), resume(w, c2)]);
    expect([r1, r2]).toEqual([{ kind: 'answered' }, { kind: 'answered' }]);
    expect(w.client.refreshCalls).toBe(1);
    expect(c1.written()).toMatchObject({ status: 307, headers: { location: '/app/x?a=1' } });
    const fresh = `ward_session=${cookiesOf(c1.written()).get('ward_session') ?? ''}`;
    expect(fresh).not.toBe(cookie);
    const next = await resume(w, call({ path: '/app/x', headers: { cookie: fresh } }));
    expect(next).toEqual({ kind: 'token', token: token('alice', Math.floor(w.now.t / 1000) + 300) });
  });

  it('with cookieName __Host-ward_session a sign-in completes: its transaction cookie keeps the prefix with Path=/, as a __Host- cookie must have (regression: Path=/.ward/, which browsers dropped)', async () => {
    const w = world({ cookieName: '__Host-ward_session', baseUrl: 'https://app.example.com' });
    const { redirect, cb } = await startAndCallback(w, '/app/x', 'c1', PAGE);
    const txn = (redirect?.headers['set-cookie'] as string[])[0] ?? '';
    // What RFC 6265bis §4.1.3.2 asks of a __Host- cookie: Secure, Path=/, no Domain. The prefix
    // also keeps a sibling subdomain from planting one (sign-in CSRF by cookie tossing).
    expect(txn).toMatch(/^__Host-ward_session\.t\.[^=]+=[^;]+; Path=\/; /);
    expect(txn).toMatch(/; Secure(;|$)/);
    expect(txn).not.toMatch(/; Domain=/i);
    const done = cb.written();
    expect(done?.status).toBe(302);
    const set = (done?.headers['set-cookie'] as string[]) ?? [];
    const session = set.find((c) => c.startsWith('__Host-ward_session=')) ?? '';
    // What RFC 6265bis §4.1.3.2 asks of a __Host- cookie: Secure, Path=/, no Domain.
    expect(session).toMatch(/; Path=\/(;|$)/);
    expect(session).toMatch(/; Secure(;|$)/);
    expect(session).not.toMatch(/; Domain=/i);
    // The transaction cookie is cleared under its own name and path.
    expect(set.some((c) => c.startsWith('__Host-ward_session.t.') && /Path=\/;/.test(c) && /Max-Age=0/.test(c))).toBe(true);
  });

  it('the refresh bounce for a path starting // goes out absolute, never protocol-relative (regression: open redirect with paths.mergeSlashes: false)', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    w.now.t += 250_000;
    const everywhere = parsePolicyText(
      `apiVersion: ward.dev/v1\nkind: Policy\nservice: web\nissuers: [{ issuer: ${ISSUER}, audiences: [urn:web] }]\nrules:\n  - { name: site, action: allow, signIn: browser, match: { http: [{ prefix: / }] } }\n`,
      'p.yaml',
    );
    const c = call({ path: '//evil.example/', headers: { cookie, ...PAGE } });
    w.stage.handle(c);
    expect(await w.stage.resume(c, everywhere)).toEqual({ kind: 'answered' });
    const location = String(c.written()?.headers['location']);
    expect(c.written()?.status).toBe(307);
    expect(location).toBe(`http://${String(c.authority)}//evil.example/`);
    expect(new URL(location, 'http://elsewhere.example/').host).toBe(String(c.authority));
  });

  it('does not refresh on every request when tokens live shorter than refreshBeforeSeconds', async () => {
    const w = world({ refreshBeforeSeconds: 60 }, 10);
    const cookie = await signIn(w);
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'token' });
    w.now.t += 4_000;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'token' });
    w.now.t += 1_000; // half its life: now it is refreshed
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toEqual({ kind: 'answered' });
    expect(w.client.refreshCalls).toBe(1);
  });

  it('ends the session when the provider refuses the refresh; the cookie stays refused', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    w.client.refreshWith = async () => ({ ok: false, failure: { kind: 'refused', error: 'invalid_grant' } });
    w.now.t += 290_000;
    const c = call({ path: '/app/x', headers: { cookie } });
    expect(await resume(w, c)).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_INVALID' });
    expect(w.stage.writeDenial(c, 'ERR_SESSION_INVALID')).toBe(true);
    expect(c.written()?.status).toBe(401);
    expect((c.written()?.headers['set-cookie'] as string[])[0]).toMatch(/^ward_session=; .*Max-Age=0/);
    w.client.refreshWith = async () => ({ ok: true, value: w.client.tokens() });
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_INVALID' });
  });

  it('carries on with a still-valid token while the provider is down, and says 503 once it has expired', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    w.client.refreshWith = async () => ({ ok: false, failure: { kind: 'unavailable', detail: 'ECONNREFUSED' } });
    w.now.t += 250_000;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'token' });
    w.now.t += 60_000;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'deny', code: 'ERR_SIGNIN_UNAVAILABLE' });
    // the provider is back: the very next request refreshes
    w.client.refreshWith = async () => ({ ok: true, value: w.client.tokens() });
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toEqual({ kind: 'answered' });
    expect(w.client.refreshCalls).toBe(3);
  });

  it('ends a session at its absolute maximum age whatever the refresh token allows', async () => {
    const w = world({ maxAgeSeconds: 600 });
    const cookie = await signIn(w);
    w.now.t += 600_000;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_INVALID', detail: 'session cookie expired' });
  });

  it('refuses a sign-in whose ID token and access token name different subjects', async () => {
    const w = world();
    w.client.tokens = () => ({ accessToken: token('mallory', Math.floor(w.now.t / 1000) + 300), expiresAt: undefined, refreshToken: undefined, idClaims: { sub: 'alice' } });
    const { cb } = await startAndCallback(w, '/app/x', 'c');
    expect(cb.written()).toMatchObject({ status: 400, headers: { 'x-ward-reason': 'ERR_SIGNIN_FAILED' } });
    expect(cookiesOf(cb.written()).has('ward_session')).toBe(false);
  });

  it('keeps large tokens in several cookies and reads them back', async () => {
    const w = world();
    const big = `at:alice:${Math.floor(T0 / 1000) + 300}:${'x'.repeat(6000)}`;
    w.client.tokens = () => ({ accessToken: big, expiresAt: Math.floor(w.now.t / 1000) + 300, refreshToken: 'rt', idClaims: { sub: 'alice' } });
    const { cb } = await startAndCallback(w, '/app/x', 'c');
    const set = cookiesOf(cb.written());
    expect([...set.keys()].filter((k) => /^ward_session(\.\d)?$/.test(k))).toEqual(['ward_session', 'ward_session.1', 'ward_session.2']);
    const cookie = [...set].filter(([k]) => /^ward_session(\.\d)?$/.test(k)).map(([k, v]) => `${k}=${v}`).join('; ');
    expect(await resume(w, call({ path: '/app/x', headers: { cookie } }))).toEqual({ kind: 'token', token: big });
  });

  it('serves the signed-out page and a sign-out form, and 404s unknown /.ward/ paths', async () => {
    const w = world();
    const out = call({ path: '/.ward/signed-out' });
    expect(w.stage.handle(out)).toBe(true);
    expect(out.written()?.status).toBe(200);
    const form = call({ path: '/.ward/logout' });
    w.stage.handle(form);
    expect(form.written()?.body).toContain('method="post" action="/.ward/logout"');
    const nope = call({ path: '/.ward/nope' });
    w.stage.handle(nope);
    expect(nope.written()?.status).toBe(404);
    const put = call({ method: 'PUT', path: '/.ward/callback' });
    w.stage.handle(put);
    expect(put.written()?.status).toBe(405);
  });
});

/**
 * docs/browser-sign-in.md "Refresh": the IdP unreachable, the still-valid token keeps being used;
 * only a refusal ends a session. Checking the refreshed (or first) access token can fail for a
 * transient reason too: keys or introspection unavailable (503 codes).
 */
describe('the authenticator unavailable while a token of the session is checked (regression: the session was ended for good)', () => {
  for (const code of ['ERR_KEYS_UNAVAILABLE', 'ERR_INTROSPECTION_UNAVAILABLE'] as const) {
    it(`a transient ${code} while checking the refreshed token does not end the session`, async () => {
      const w = world({ refreshBeforeSeconds: 60 });
      const cookie = await signIn(w);
      const first = token('alice', Math.floor(T0 / 1000) + 300); // verified before: cached in the real authenticator
      w.now.t += 250_000; // 50 s left of 300: due, still valid
      w.auth.override = (t) => (t === first ? authenticate(t) : { ok: false, error: { code, detail: 'connect ECONNREFUSED' } });
      const during = await resume(w, call({ path: '/app/x', headers: { cookie } }));
      expect(during).toMatchObject({ kind: 'token' }); // carries on with the still-valid token
      w.auth.override = null;
      // the outage over: the same session refreshes (the browser is sent to repeat the call with
      // the new cookie), where it had been ended
      const c = call({ path: '/app/x', headers: { cookie } });
      expect(await resume(w, c)).toEqual({ kind: 'answered' });
      expect(c.written()?.status).toBe(307);
      expect(cookiesOf(c.written()).get('ward_session')).toBeTruthy();
    });
  }

  it('a sign-in whose access token cannot be checked (keys unavailable) is 503 ERR_SIGNIN_UNAVAILABLE, not 400 ERR_SIGNIN_FAILED', async () => {
    const w = world();
    w.auth.override = () => ({ ok: false, error: { code: 'ERR_KEYS_UNAVAILABLE', detail: 'jwks timeout' } });
    const { cb } = await startAndCallback(w, '/app/x', 'c1');
    expect(cb.written()?.status).toBe(503);
    expect(cb.written()?.headers['x-ward-reason']).toBe('ERR_SIGNIN_UNAVAILABLE');
  });
});

/**
 * docs/browser-sign-in.md "Refresh": only `invalid_grant` ends a session. A rate limit or "try
 * later" is an outage (oidc.ts classify; test/unit/session/oidc-errors.test.ts); any other
 * refusal names the client or the request, not this user's grant.
 */
describe('refresh and callback failures that are not the grant refused (regression: a rate-limited refresh ended the session for good)', () => {
  it('a refresh refused for another reason (invalid_client) keeps the session on its still-valid token, and once expired sends the browser to sign in without ending the session', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    w.client.refreshWith = async () => ({ ok: false, failure: { kind: 'refused', error: 'invalid_client' } });
    w.now.t += 250_000; // 50 s left of 300: due, still valid
    expect(await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }))).toMatchObject({ kind: 'token' });
    expect(await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }))).toMatchObject({ kind: 'token' });
    expect(w.client.refreshCalls).toBe(1); // an answer, not an outage: not asked again within 30 s
    w.now.t += 60_000; // expired
    const c = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    expect(await resume(w, c)).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_INVALID', detail: 'provider refused: invalid_client' });
    expect(w.stage.writeDenial(c, 'ERR_SESSION_INVALID')).toBe(true);
    await settle();
    expect(c.written()?.status).toBe(302); // sent to sign in again
    expect(w.client.refreshCalls).toBe(2);
    // the provider fixed within the session's lifetime: the same cookie refreshes (not logged out)
    w.client.refreshWith = async () => ({ ok: true, value: w.client.tokens() });
    w.now.t += 31_000;
    const again = call({ path: '/app/x', headers: { cookie, ...PAGE } });
    expect(await resume(w, again)).toEqual({ kind: 'answered' });
    expect(again.written()?.status).toBe(307);
  });

  it('a refresh refused with invalid_grant still ends the session at once, its token still valid', async () => {
    const w = world({ refreshBeforeSeconds: 60 });
    const cookie = await signIn(w);
    w.client.refreshWith = async () => ({ ok: false, failure: { kind: 'refused', error: 'invalid_grant' } });
    w.now.t += 250_000;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }))).toMatchObject({ kind: 'deny', code: 'ERR_SESSION_INVALID' });
    w.client.refreshWith = async () => ({ ok: true, value: w.client.tokens() });
    w.now.t += 31_000;
    expect(await resume(w, call({ path: '/app/x', headers: { cookie, ...PAGE } }))).toMatchObject({ kind: 'deny', detail: 'session was logged out' });
  });

  it.each([
    ['temporarily_unavailable', 503, 'ERR_SIGNIN_UNAVAILABLE'],
    ['server_error', 503, 'ERR_SIGNIN_UNAVAILABLE'],
    ['access_denied', 400, 'ERR_SIGNIN_FAILED'],
  ])('the provider sends the browser back with error=%s: %i %s', async (error, status, code) => {
    const w = world();
    const c = call({ path: '/app/x', headers: PAGE });
    await resume(w, c);
    w.stage.writeDenial(c, 'ERR_TOKEN_MISSING');
    await settle();
    const state = new URL(String(c.written()?.headers['location'])).searchParams.get('state') ?? '';
    const txn = [...cookiesOf(c.written())].map(([k, v]) => `${k}=${v}`).join('; ');
    const cb = call({ path: '/.ward/callback', query: `?error=${error}&state=${state}`, headers: { ...PAGE, cookie: txn } });
    expect(w.stage.handle(cb)).toBe(true);
    await settle();
    expect(cb.written()).toMatchObject({ status, headers: { 'x-ward-reason': code } });
  });
});

describe('the return path, as the sidecar routes it (regression: /%2Eward/ passed the reserved-prefix check)', () => {
  it('GET /.ward/sign-in?return=/%252Eward/logout (return=/%2Eward/logout, served as /.ward/logout) is 400 ERR_RETURN_URL_INVALID', async () => {
    const w = world();
    for (const r of ['/%252Eward/logout', '/%252E%2577ard/callback', '/.%2577ard/sign-in%3Freturn%3D/x']) {
      const c = call({ path: '/.ward/sign-in', query: `?return=${r}`, headers: PAGE });
      expect(w.stage.handle(c)).toBe(true);
      await settle();
      expect(c.written(), r).toMatchObject({ status: 400, headers: { 'x-ward-reason': 'ERR_RETURN_URL_INVALID' } });
    }
    expect(w.stage.counters.signInsStarted).toBe(0);
  });
});

/** A browser's cookie jar for one origin, as far as these tests need: set, replace, expire. */
function applySetCookies(jar: Map<string, string>, w: Written | null): void {
  for (const c of (w?.headers['set-cookie'] as string[] | undefined) ?? []) {
    const [pair = ''] = c.split(';');
    const eq = pair.indexOf('=');
    if (/; Max-Age=0(;|$)/.test(c)) jar.delete(pair.slice(0, eq));
    else jar.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
}

const header = (jar: Map<string, string>): string => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

describe('sign-in transaction cookies are bounded (regression: one per signed-out page view, piling up past the header limit)', () => {
  it('with a __Host- name (Path=/, sent with every request), 25 signed-out page views of long paths leave at most 3, small, and the newest sign-ins complete', async () => {
    const w = world({ cookieName: '__Host-ward_session', baseUrl: 'https://app.example.com' });
    const jar = new Map<string, string>();
    const states: string[] = [];
    for (let i = 0; i < 25; i++) {
      w.now.t += 1_000;
      const c = call({ path: `/app/${'a'.repeat(2000)}${i}`, headers: jar.size === 0 ? PAGE : { ...PAGE, cookie: header(jar) } });
      await resume(w, c);
      expect(w.stage.writeDenial(c, 'ERR_TOKEN_MISSING')).toBe(true);
      await settle();
      expect(c.written()?.status).toBe(302);
      states.push(new URL(String(c.written()?.headers['location'])).searchParams.get('state') ?? '');
      applySetCookies(jar, c.written());
      expect(jar.size).toBeLessThanOrEqual(3);
    }
    // a return path over 512 characters is not sealed in: each cookie stays near 1 KB
    expect(`cookie${header(jar)}`.length).toBeLessThan(4_000);
    const callback = async (state: string | undefined): Promise<Written | null> => {
      const cb = call({ path: '/.ward/callback', query: `?code=c&state=${state ?? ''}`, headers: { ...PAGE, cookie: header(jar) } });
      expect(w.stage.handle(cb)).toBe(true);
      await settle();
      return cb.written();
    };
    // the two newest sign-ins (two tabs) both complete, back to / (their paths were too long to keep)
    for (const state of [states[24], states[23]]) {
      const done = await callback(state);
      expect(done).toMatchObject({ status: 302, headers: { location: '/' } });
    }
    // the oldest one's cookie was expired long ago
    expect(await callback(states[0])).toMatchObject({ status: 400, headers: { 'x-ward-reason': 'ERR_SIGNIN_FAILED' } });
  });

  it('without a __Host- name (Path=/.ward/, not sent with page views), /.ward/sign-in and the callback expire all but the newest', async () => {
    const w = world();
    const jar = new Map<string, string>();
    for (let i = 0; i < 6; i++) {
      w.now.t += 1_000;
      const c = call({ path: '/app/x', headers: PAGE }); // a page view: the jar's Path=/.ward/ cookies are not sent
      await resume(w, c);
      w.stage.writeDenial(c, 'ERR_TOKEN_MISSING');
      await settle();
      applySetCookies(jar, c.written());
    }
    expect(jar.size).toBe(6);
    const start = call({ path: '/.ward/sign-in', query: '?return=/app/y', headers: { ...PAGE, cookie: header(jar) } });
    expect(w.stage.handle(start)).toBe(true);
    await settle();
    expect(start.written()?.status).toBe(302);
    const newest = [...jar.keys()].slice(-2);
    applySetCookies(jar, start.written());
    expect(jar.size).toBe(3); // the two newest and the new one
    expect([...jar.keys()].slice(0, 2)).toEqual(newest);
    const set = start.written()?.headers['set-cookie'] as string[];
    expect(set.filter((x) => /Max-Age=0/.test(x)).every((x) => x.includes('; Path=/.ward/;'))).toBe(true);
  });
});

describe('refusals at the sidecar\'s endpoints are logged within a budget (regression: one info line per refused request)', () => {
  it('at info, 10 lines a second; the next says how many were left out', async () => {
    const lines: { msg: string; notLogged?: number; level: string }[] = [];
    const sink = { write: (l: string) => void lines.push(JSON.parse(l) as { msg: string; level: string }) };
    const w = world({}, 300, undefined, createLogger({ level: 'info', sink }));
    for (let i = 0; i < 1000; i++) w.stage.handle(call({ path: '/.ward/callback', query: `?state=forged${i}&code=c`, headers: PAGE }));
    for (let i = 0; i < 1000; i++) w.stage.handle(call({ path: '/.ward/sign-in', query: '?return=//evil.example', headers: PAGE }));
    await settle();
    const refusals = (): typeof lines => lines.filter((l) => l.msg === 'sign-in refused' || l.msg === 'sign-in: return URL refused');
    expect(refusals()).toHaveLength(10);
    w.now.t += 1_000;
    w.stage.handle(call({ path: '/.ward/sign-in', query: '?return=//evil.example', headers: PAGE }));
    expect(refusals()).toHaveLength(11);
    expect(refusals()[10]).toMatchObject({ level: 'info', msg: 'sign-in: return URL refused', notLogged: 1990 });
  });

  it('at debug, every refusal is logged at debug', async () => {
    const lines: { msg: string; level: string }[] = [];
    const w = world({}, 300, undefined, createLogger({ level: 'debug', sink: { write: (l) => void lines.push(JSON.parse(l) as { msg: string; level: string }) } }));
    for (let i = 0; i < 50; i++) w.stage.handle(call({ path: '/.ward/sign-in', query: '?return=//evil.example', headers: PAGE }));
    const refused = lines.filter((l) => l.msg === 'sign-in: return URL refused');
    expect(refused).toHaveLength(50);
    expect(refused.every((l) => l.level === 'debug')).toBe(true);
  });
});
