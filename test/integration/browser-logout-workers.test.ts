import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebApp, type WebApp } from '../../src/demo/webapp.ts';
import { startWebTestIdp, type TestIdp } from '../support/idp.ts';
import { once, PAGE, signedInCookie, spawnWebSidecarWorkers } from './browser-flow.ts';

/**
 * docs/browser-sign-in.md: logout "ends the session on this replica"; a session replayed after
 * logout is refused (ERR_SESSION_INVALID). With `concurrency: 2` one sidecar is a primary and two
 * node:cluster workers, connections handed round-robin, and each worker has its own logged-out
 * list (session/stage.ts `loggedOut`): a cookie signed out through one worker was still accepted
 * by the other worker of the very same sidecar, on every other new connection (found in review;
 * now the primary tells every worker, cluster/cluster.ts `session-ended`).
 */


describe('logout with concurrency: 2', () => {
  let idp: TestIdp;
  let app: WebApp;
  let ward: Awaited<ReturnType<typeof spawnWebSidecarWorkers>>;
  let inbound = 0;

  beforeAll(async () => {
    idp = await startWebTestIdp();
    app = await startWebApp();
    ward = await spawnWebSidecarWorkers(idp, app.port);
    inbound = ward.inbound;
  }, 60_000);

  afterAll(async () => {
    ward?.close();
    await app?.close();
    await idp?.close();
  });

  it('refuses a session cookie replayed after logout on every connection of the sidecar, whichever worker takes it', async () => {
    const origin = `http://127.0.0.1:${inbound}`;
    const cookie = await signedInCookie(origin);

    // both workers serve the session before logout
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await once(inbound, 'GET', '/', { cookie });
      expect(r.status).toBe(200);
      seen.add(r.worker);
    }
    expect(seen.size).toBe(2);

    const out = await once(inbound, 'POST', '/.ward/logout', { ...PAGE, cookie, origin });
    expect(out.status).toBe(303);
    expect(out.setCookie.some((c) => /^ward_session=; .*Max-Age=0/.test(c))).toBe(true);

    // the copied cookie, replayed: refused on every new connection (the other worker hears of
    // the logout through the primary, within milliseconds)
    await new Promise((r) => setTimeout(r, 200));
    const replays = [];
    for (let i = 0; i < 6; i++) replays.push(await once(inbound, 'GET', '/', { cookie }));
    expect(new Set(replays.map((r) => r.worker)).size).toBe(2);
    expect(replays.map((r) => `${r.worker}:${r.status}`)).toEqual(replays.map((r) => `${r.worker}:401`));
  });
});
