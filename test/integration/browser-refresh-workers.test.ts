import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebApp, type WebApp } from '../../src/demo/webapp.ts';
import { startWebTestIdp, type TestIdp } from '../support/idp.ts';
import { waitFor } from './harness.ts';
import { once, PAGE, signedInCookie, spawnWebSidecarWorkers } from './browser-flow.ts';

/**
 * docs/browser-sign-in.md "Refresh": requests that carry the same session while its token is due
 * share one refresh. Within one worker they always did (session/stage.ts `refreshing`); with
 * `concurrency: 2` each worker refreshed on its own, with the same refresh token. Against an IdP
 * that rotates refresh tokens (Keycloak's "Revoke Refresh Token", Auth0 and Okta rotation,
 * oidc-provider's `rotateRefreshToken`) the second use is reuse: the IdP refuses it and revokes
 * the grant, and the sidecar ended the session, so a user with two tabs (or one page with a few
 * requests on two connections) was signed out at the first refresh (found in review; now the
 * primary runs one refresh per session and token for all its workers, cluster/cluster.ts
 * `refresh-claim`).
 */

/** The web app's access tokens live this long; the sidecar refreshes them in their second half. */
const ACCESS_TTL = 8;

describe('session refresh with concurrency: 2 and an IdP that rotates refresh tokens', () => {
  let idp: TestIdp;
  let app: WebApp;
  let ward: Awaited<ReturnType<typeof spawnWebSidecarWorkers>>;
  let inbound = 0;
  let admin = 0;
  let lines: string[] = [];

  beforeAll(async () => {
    idp = await startWebTestIdp(ACCESS_TTL, { rotateRefreshTokens: true });
    app = await startWebApp();
    ward = await spawnWebSidecarWorkers(idp, app.port, { refreshBeforeSeconds: 4 });
    lines = ward.lines;
    inbound = ward.inbound;
    admin = ward.admin;
  }, 60_000);

  afterAll(async () => {
    ward?.close();
    await app?.close();
    await idp?.close();
  });

  it('refreshes once for both workers: every request with the old cookie is sent back with the new session, which both workers then serve', async () => {
    const origin = `http://127.0.0.1:${inbound}`;
    const old = await signedInCookie(origin);
    const signedIn = Date.now();

    // the token is due at half its life (refreshBeforeSeconds 4 of 8): wait for that, not for its expiry
    await new Promise((r) => setTimeout(r, Math.max(0, (ACCESS_TTL / 2) * 1000 + 300 - (Date.now() - signedIn))));

    // the old cookie on four new connections, so both workers see it while it is due: the first
    // refresh rotates the refresh token; a worker that refreshed again presented the retired one
    const bounced = [];
    for (let i = 0; i < 4; i++) bounced.push(await once(inbound, 'GET', '/', { ...PAGE, cookie: old }));
    expect(Date.now() - signedIn).toBeLessThan(ACCESS_TTL * 1000); // still within the token's life
    expect(new Set(bounced.map((r) => r.worker)).size).toBe(2);
    expect(bounced.map((r) => `${r.worker}:${r.status}`)).toEqual(bounced.map((r) => `${r.worker}:307`));
    const fresh = bounced.map((r) => r.setCookie.find((c) => c.startsWith('ward_session='))?.split(';')[0] ?? '');
    for (const c of fresh) expect(c).toMatch(/^ward_session=.{20,}/);

    // every refreshed cookie is served by both workers: the session was not ended anywhere
    for (const cookie of fresh) {
      const served = [];
      for (let i = 0; i < 2; i++) served.push(await once(inbound, 'GET', '/', { ...PAGE, cookie }));
      expect(served.map((r) => r.status)).toEqual([200, 200]);
    }
    expect(lines.filter((l) => l.includes('session refresh refused'))).toEqual([]);

    // one refresh at the IdP in all: the workers' counters, as the primary's /status lists them
    // (each worker re-sends its status every 2 s)
    const refreshes = async (): Promise<number[]> => {
      const st = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as { workers: { status?: { session?: { refreshes: number } } }[] };
      return st.workers.map((w) => w.status?.session?.refreshes ?? 0);
    };
    await waitFor(async () => (await refreshes()).reduce((a, b) => a + b, 0) > 0, 5_000, 'a refresh counted');
    await new Promise((r) => setTimeout(r, 2_500));
    expect((await refreshes()).reduce((a, b) => a + b, 0)).toBe(1);
  });
});
